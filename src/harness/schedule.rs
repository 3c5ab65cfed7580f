//! When each stage of a lesson runs.
//!
//! Most of a stage is waiting: for a program to start, for bytes on a
//! socket, for a deadline to show that nothing more comes. Run one after
//! another, a lesson's waits add up; run at the same time, the lesson takes
//! about as long as its slowest stage. So the stages a run has chosen start
//! at once, at most [`AT_ONCE`] together, in the order of their numbers,
//! and a stage that `runs_alone` (it measures time, or loads the machine
//! with hundreds of connections or processes) runs after them, with no
//! other stage beside it.
//!
//! Each stage has its own programs, ports and folders, so running them
//! together changes nothing they see but the load of the machine. The
//! runner still reports them one at a time, in order: a trial waits here
//! for its stage's result ([`Schedule::wait_for`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness::check::{check_stage, Checked};
use crate::harness::failure::Failure;
use crate::harness::setup::Setup;
use crate::harness::stage::Stage;

/// How many stages may run together, unless `COURSE_STAGES_AT_ONCE` says.
/// Enough to overlap every wait of a lesson; few enough that a slow machine
/// is not swamped by one lesson's programs.
pub const AT_ONCE: usize = 8;

/// `COURSE_STAGES_AT_ONCE`, or [`AT_ONCE`]. `1` runs one stage at a time,
/// in order, as a student may want while reading a stage's program output.
pub fn at_once_from_env() -> usize {
    std::env::var("COURSE_STAGES_AT_ONCE")
        .ok()
        .and_then(|value| value.trim().parse::<usize>().ok())
        .map_or(AT_ONCE, |at_once| at_once.max(1))
}

/// The stages of one run, running in the background; cloned by each trial.
#[derive(Clone)]
pub struct Schedule {
    shared: Arc<Shared>,
}

struct Shared {
    /// Each stage's result, by its number less one, until a trial takes it.
    results: Mutex<Vec<Option<Checked>>>,
    ready: Condvar,
    /// No stage starts any more: the run has stopped at a failure.
    stopped: AtomicBool,
}

impl Schedule {
    /// Start the `chosen` stages (their numbers, in order) in the background.
    pub fn start(setup: &Setup, stages: &[Stage], chosen: &[usize], at_once: usize) -> Schedule {
        let shared = Arc::new(Shared {
            results: Mutex::new((0..stages.len()).map(|_| None).collect()),
            ready: Condvar::new(),
            stopped: AtomicBool::new(false),
        });
        let schedule = Schedule { shared };
        let (alone, together): (Vec<usize>, Vec<usize>) = if at_once == 1 {
            (chosen.to_vec(), Vec::new())
        } else {
            chosen
                .iter()
                .partition(|&&number| stages[number - 1].runs_alone)
        };
        let setup = setup.clone();
        let stages = stages.to_vec();
        let background = schedule.clone();
        thread::spawn(move || {
            let queue = Mutex::new(VecDeque::from(together));
            thread::scope(|scope| {
                for _ in 0..at_once {
                    scope.spawn(|| {
                        while let Some(number) = next(&queue) {
                            background.run(&setup, &stages, number);
                        }
                    });
                }
            });
            for number in alone {
                background.run(&setup, &stages, number);
            }
        });
        schedule
    }

    /// Run stage `number` unless the run has stopped, and keep its result.
    fn run(&self, setup: &Setup, stages: &[Stage], number: usize) {
        if self.shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let stage = &stages[number - 1];
        let checked = std::panic::catch_unwind(|| check_stage(setup, number, stage))
            .unwrap_or_else(|_| harness_failed(number));
        let mut results = lock(&self.shared.results);
        results[number - 1] = Some(checked);
        self.shared.ready.notify_all();
    }

    /// Stage `number`'s result, once it has run. A stage the run chose
    /// always runs, unless [`Schedule::stop`] was called: then only the
    /// stages before the failure are waited for.
    pub fn wait_for(&self, number: usize) -> Checked {
        let mut results = lock(&self.shared.results);
        loop {
            if let Some(checked) = results[number - 1].take() {
                return checked;
            }
            results = self
                .shared
                .ready
                .wait(results)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Start no more stages. Those running go on until they end, or until
    /// the run ends their programs.
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
    }
}

fn next(queue: &Mutex<VecDeque<usize>>) -> Option<usize> {
    lock(queue).pop_front()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The result of a stage whose harness itself panicked, outside the check
/// (which has its own guard): a failure, never a silent pass or a hang.
fn harness_failed(number: usize) -> Checked {
    let failure = Failure::new("the test itself failed while it ran this stage")
        .hint("This is a bug in the course's tests, not in your program. Please report it.");
    let report = format!("stage {number}: {}", failure.what);
    Checked {
        number,
        took: Duration::ZERO,
        outcome: Err((vec![failure], report)),
    }
}
