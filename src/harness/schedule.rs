//! When each stage of a lesson runs.
//!
//! Most of a stage is waiting: for a program to start, for bytes on a
//! socket, for a deadline to show that nothing more comes. Run one after
//! another, a lesson's waits add up; run at the same time, the lesson takes
//! about as long as its slowest stage. So:
//!
//! 1. The first stage chosen runs by itself. Where it fails (an untouched
//!    starter, a program that does not start), a run that stops at the
//!    first failure starts nothing else: the answer comes as fast as
//!    before, and a board of nine starters does not start every stage.
//! 2. Then the others start at once, at most [`AT_ONCE`] together, in the
//!    order of their numbers.
//! 3. Last, each stage that `runs_alone` (a bound on time so tight that
//!    the others' load could break it), with no other stage beside it.
//!
//! In a run that stops at the first failure, no stage numbered after a
//! failed one starts once it has failed.
//!
//! Each stage has its own programs, ports and folders, so running them
//! together changes nothing they see but the load of the machine. The
//! runner still reports them one at a time, in order: a trial waits here
//! for its stage's result ([`Schedule::wait_for`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crate::harness::check::{check_stage, panic_text, replay_command, Checked};
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
    /// The lowest number of a stage that failed, in a run that stops at a
    /// failure: no stage after it starts any more. Stages before it still
    /// run (one that runs alone may come before it and start after it), as
    /// the runner reports every stage up to the first failure.
    stop_after: AtomicUsize,
    /// Whether a failure stops the run (not under `COURSE_ALL_STAGES=1`).
    stop_at_failure: bool,
    /// Every stage that was to run has run (or was not started).
    finished: AtomicBool,
}

impl Schedule {
    /// Start the `chosen` stages (their numbers, in order) in the background.
    pub fn start(
        setup: &Setup,
        stages: &[Stage],
        chosen: &[usize],
        at_once: usize,
        stop_at_failure: bool,
    ) -> Schedule {
        let shared = Arc::new(Shared {
            results: Mutex::new((0..stages.len()).map(|_| None).collect()),
            ready: Condvar::new(),
            stop_after: AtomicUsize::new(usize::MAX),
            stop_at_failure,
            finished: AtomicBool::new(false),
        });
        let schedule = Schedule { shared };
        let (first, rest) = chosen
            .split_first()
            .map_or((None, &[][..]), |(first, rest)| (Some(*first), rest));
        let (alone, together): (Vec<usize>, Vec<usize>) = if at_once == 1 {
            (rest.to_vec(), Vec::new())
        } else {
            rest.iter()
                .partition(|&&number| stages[number - 1].runs_alone)
        };
        let setup = setup.clone();
        let stages = stages.to_vec();
        let background = schedule.clone();
        thread::spawn(move || {
            // Whatever ends this thread, a panic too, every trial waiting in
            // `wait_for` is told: without it, they would wait for ever.
            let _finished = Finished(&background.shared);
            if let Some(first) = first {
                background.run(&setup, &stages, first);
            }
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

    /// Run stage `number` unless an earlier stage has stopped the run, and
    /// keep its result.
    fn run(&self, setup: &Setup, stages: &[Stage], number: usize) {
        if number > self.shared.stop_after.load(Ordering::SeqCst) {
            return;
        }
        let stage = &stages[number - 1];
        let checked = std::panic::catch_unwind(|| check_stage(setup, number, stage))
            .unwrap_or_else(|panic| harness_failed(setup, number, stage, panic.as_ref()));
        if self.shared.stop_at_failure && checked.outcome.is_err() {
            self.shared.stop_after.fetch_min(number, Ordering::SeqCst);
        }
        let mut results = lock(&self.shared.results);
        results[number - 1] = Some(checked);
        self.shared.ready.notify_all();
    }

    /// Stage `number`'s result, once it has run; `None` for a stage that
    /// will not run, because an earlier one stopped the run (the runner
    /// reports such a stage as not run, never as passed).
    pub fn wait_for(&self, number: usize) -> Option<Checked> {
        let mut results = lock(&self.shared.results);
        loop {
            if let Some(checked) = results[number - 1].take() {
                return Some(checked);
            }
            if self.shared.finished.load(Ordering::SeqCst) {
                return None;
            }
            results = self
                .shared
                .ready
                .wait(results)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Wait until no stage runs or will start: for the schedule's tests.
    #[cfg(test)]
    fn wait_until_finished(&self) {
        let mut results = lock(&self.shared.results);
        while !self.shared.finished.load(Ordering::SeqCst) {
            results = self
                .shared
                .ready
                .wait(results)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Start no more stages: the run is over.
    pub fn stop(&self) {
        self.shared.stop_after.store(0, Ordering::SeqCst);
    }
}

/// Marks the run finished when dropped, and wakes every waiting trial.
struct Finished<'a>(&'a Shared);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::SeqCst);
        let _results = lock(&self.0.results);
        self.0.ready.notify_all();
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

/// What a student is asked to do when the course's tests fail by themselves.
const REPORT_IT: &str = "This is a bug in the course's tests, not in your program. Please \
                         report it, with the command that replays it:";

/// The result of a stage whose harness itself panicked, outside the check
/// (which has its own guard): a failure, never a silent pass or a hang.
fn harness_failed(
    setup: &Setup,
    number: usize,
    stage: &Stage,
    panic: &(dyn std::any::Any + Send),
) -> Checked {
    let said = match panic_text(panic) {
        text if text.is_empty() => "it gave no reason".to_string(),
        text => text,
    };
    let replay = replay_command(setup, number, stage.slug);
    let failure = Failure::new(format!(
        "the test itself failed while it ran this stage: {said}"
    ))
    .hint(format!("{REPORT_IT} {replay}"));
    // The report is what the student reads: the reason, and the replay
    // command on a line of its own, whole, to copy.
    let report = format!(
        "stage {number} of {}: {} ({})\n\n{}\n\n{}\n  {replay}",
        setup.total,
        stage.title,
        stage.slug,
        crate::harness::report::wrap(&failure.what, "  "),
        crate::harness::report::wrap(REPORT_IT, "  ")
    );
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

    fn passes(_ctx: &mut Ctx) -> Check<()> {
        Ok(())
    }

    static MET: AtomicUsize = AtomicUsize::new(0);
    fn meets_three(_ctx: &mut Ctx) -> Check<()> {
        meet(&MET, 3)
    }

    #[test]
    fn stages_after_the_first_run_at_the_same_time_and_come_in_order() {
        let stages = [
            stage("first", passes, false),
            stage("two", meets_three, false),
            stage("three", meets_three, false),
            stage("four", meets_three, false),
        ];
        let schedule = Schedule::start(&setup(4), &stages, &[1, 2, 3, 4], AT_ONCE, false);
        for number in 1..=4 {
            let checked = schedule.wait_for(number).expect("every stage runs");
            assert_eq!(checked.number, number);
            assert!(passed(&checked), "stage {number} did not meet the others");
        }
    }

    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static TOGETHER_MET: AtomicUsize = AtomicUsize::new(0);
    fn together(_ctx: &mut Ctx) -> Check<()> {
        RUNNING.fetch_add(1, Ordering::SeqCst);
        let met = meet(&TOGETHER_MET, 2);
        // Still running for longer than the lone stage sleeps: had it been
        // started beside these, it would see them, whoever started first.
        thread::sleep(Duration::from_millis(100));
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
            stage("first", alone, false),
            stage("lone", alone, true),
            stage("third", together, false),
            stage("fourth", together, false),
        ];
        let schedule = Schedule::start(&setup(4), &stages, &[1, 2, 3, 4], AT_ONCE, false);
        for number in 1..=4 {
            let checked = schedule.wait_for(number).expect("every stage runs");
            assert!(passed(&checked), "stage {number} failed");
        }
    }

    #[test]
    fn a_panic_outside_a_check_fails_its_stage_in_its_words_with_a_replay() {
        let first = stage("first", passes, false);
        let checked = harness_failed(&setup(1), 1, &first, &"a planted panic");
        let Err((failures, report)) = checked.outcome else {
            panic!("a panic passed its stage");
        };
        assert!(failures[0].what.contains("a planted panic"), "{report}");
        // What the student reads: the panic's words, and the replay whole
        // on one line.
        assert!(report.contains("a planted panic"), "{report}");
        assert!(
            report
                .lines()
                .any(|line| line.trim() == "COURSE_SEED=1 cargo test --test 01_echo stage_01_first"),
            "{report}"
        );
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
        let schedule = Schedule::start(&setup(3), &stages, &[1, 3], 1, false);
        assert!(schedule.wait_for(1).is_some_and(|checked| passed(&checked)));
        assert!(schedule.wait_for(3).is_some_and(|checked| passed(&checked)));
        assert_eq!(STARTED.load(Ordering::SeqCst), 2, "stage 2 was not chosen");
    }

    fn fails(_ctx: &mut Ctx) -> Check<()> {
        Err(Failure::new("a planted failure"))
    }
    static STARTED_AFTER_FAILURE: AtomicUsize = AtomicUsize::new(0);
    fn counts_a_start_after_failure(_ctx: &mut Ctx) -> Check<()> {
        STARTED_AFTER_FAILURE.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[test]
    fn a_failing_first_stage_starts_nothing_else_when_the_run_stops_at_failures() {
        let stages = [
            stage("fails", fails, false),
            stage("b", counts_a_start_after_failure, false),
            stage("c", counts_a_start_after_failure, true),
        ];
        let schedule = Schedule::start(&setup(3), &stages, &[1, 2, 3], AT_ONCE, true);
        assert!(schedule
            .wait_for(1)
            .is_some_and(|checked| checked.outcome.is_err()));
        schedule.wait_until_finished();
        assert_eq!(STARTED_AFTER_FAILURE.load(Ordering::SeqCst), 0);
    }

    static LONE_RAN: AtomicUsize = AtomicUsize::new(0);
    fn lone_passes(_ctx: &mut Ctx) -> Check<()> {
        LONE_RAN.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    // A counter of its own: tests run at once, and one that shared the
    // other's counter would fail for the other's fault.
    static STARTED_AFTER_LONE_AND_FAILURE: AtomicUsize = AtomicUsize::new(0);
    fn counts_a_start_after_lone_and_failure(_ctx: &mut Ctx) -> Check<()> {
        STARTED_AFTER_LONE_AND_FAILURE.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// A stage that runs alone starts after the others; when one of those,
    /// numbered after it, fails, it must still run: the runner reports it
    /// before the failure, and waits for it.
    #[test]
    fn a_lone_stage_before_a_failure_still_runs() {
        let stages = [
            stage("first", passes, false),
            stage("lone", lone_passes, true),
            stage("fails", fails, false),
            stage("after", counts_a_start_after_lone_and_failure, true),
        ];
        let schedule = Schedule::start(&setup(4), &stages, &[1, 2, 3, 4], AT_ONCE, true);
        assert!(schedule.wait_for(1).is_some_and(|checked| passed(&checked)));
        assert!(schedule.wait_for(2).is_some_and(|checked| passed(&checked)));
        assert!(schedule
            .wait_for(3)
            .is_some_and(|checked| checked.outcome.is_err()));
        assert!(
            schedule.wait_for(4).is_none(),
            "a stage after the failure ran"
        );
        assert_eq!(LONE_RAN.load(Ordering::SeqCst), 1);
        schedule.wait_until_finished();
        assert_eq!(STARTED_AFTER_LONE_AND_FAILURE.load(Ordering::SeqCst), 0);
    }
}
