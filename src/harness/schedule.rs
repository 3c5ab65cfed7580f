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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    use super::*;
    use crate::harness::check::Completed;
    use crate::harness::ctx::Ctx;
    use crate::harness::failure::Check;
    use crate::harness::setup::Patience;

    fn setup(total: usize) -> Setup {
        Setup {
            lesson: crate::harness::lesson::find("01").expect("lesson 01 is listed"),
            program: vec!["true".to_string()],
            target: "solutions".to_string(),
            seed: 1,
            patience: Patience::from_env(),
            total,
        }
    }

    fn stage(slug: &'static str, check: fn(&mut Ctx) -> Check<()>, runs_alone: bool) -> Stage {
        Stage {
            slug,
            title: slug,
            slide: "connect",
            check,
            runs_alone,
        }
    }

    /// Wait, 5 s at most, until `count` reaches `wanted`: stages that meet
    /// here pass only when they run at the same time.
    fn meet(count: &AtomicUsize, wanted: usize) -> Check<()> {
        count.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < wanted {
            if Instant::now() >= deadline {
                return Err(Failure::new("the other stages did not run beside this one"));
            }
            thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn passed(checked: &Checked) -> bool {
        matches!(checked.outcome, Ok(Completed::Passed))
    }

    static MET: AtomicUsize = AtomicUsize::new(0);
    fn meets_three(_ctx: &mut Ctx) -> Check<()> {
        meet(&MET, 3)
    }

    #[test]
    fn stages_run_at_the_same_time_and_come_in_order() {
        let stages = [
            stage("one", meets_three, false),
            stage("two", meets_three, false),
            stage("three", meets_three, false),
        ];
        let schedule = Schedule::start(&setup(3), &stages, &[1, 2, 3], AT_ONCE);
        for number in 1..=3 {
            let checked = schedule.wait_for(number);
            assert_eq!(checked.number, number);
            assert!(passed(&checked), "stage {number} did not meet the others");
        }
    }

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static TOGETHER_MET: AtomicUsize = AtomicUsize::new(0);
    fn together(_ctx: &mut Ctx) -> Check<()> {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        let met = meet(&TOGETHER_MET, 2);
        RUNNING.fetch_sub(1, Ordering::SeqCst);
        met
    }
    fn alone(_ctx: &mut Ctx) -> Check<()> {
        let running = RUNNING.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(50));
        let after = RUNNING.fetch_sub(1, Ordering::SeqCst);
        if running != 0 || after != 1 {
            return Err(Failure::new("another stage ran beside the lone one"));
        }
        Ok(())
    }

    #[test]
    fn a_stage_that_runs_alone_has_no_company() {
        let stages = [
            stage("first", together, false),
            stage("lone", alone, true),
            stage("third", together, false),
        ];
        let schedule = Schedule::start(&setup(3), &stages, &[1, 2, 3], AT_ONCE);
        for number in 1..=3 {
            let checked = schedule.wait_for(number);
            assert!(passed(&checked), "stage {number} failed");
        }
    }

    static STARTED: AtomicUsize = AtomicUsize::new(0);
    fn counts_its_start(_ctx: &mut Ctx) -> Check<()> {
        STARTED.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[test]
    fn only_the_chosen_stages_run_and_one_at_a_time_keeps_order() {
        let stages = [
            stage("a", counts_its_start, false),
            stage("b", counts_its_start, false),
            stage("c", counts_its_start, false),
        ];
        let schedule = Schedule::start(&setup(3), &stages, &[1, 3], 1);
        assert!(passed(&schedule.wait_for(1)));
        assert!(passed(&schedule.wait_for(3)));
        assert_eq!(STARTED.load(Ordering::SeqCst), 2, "stage 2 was not chosen");
    }
}
