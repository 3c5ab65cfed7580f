//! One stage, run: its checks, the programs it started ended, and its
//! outcome, not yet recorded (the runner records stages in order, while
//! they run at once: see the schedule).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::ctx::Ctx;
use crate::harness::failure::{Failure, MissingTool};
use crate::harness::progress;
use crate::harness::setup::{switched_on, test_name, Setup};
use crate::harness::stage::Stage;

/// How a stage that did not fail ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    Passed,
    /// It could not be checked: a client it uses is not installed.
    Skipped(MissingTool),
}

/// Whether a missing client fails its stage (`COURSE_REQUIRE_CLIENTS=1`, as
/// CI sets) rather than skipping it.
fn clients_required() -> bool {
    switched_on("COURSE_REQUIRE_CLIENTS")
}

/// The longest one stage may run: many times the slowest stage of the
/// course on a busy machine. Every wait in a stage has its own deadline, so
/// only a stage whose own loop never ends (a bug in the course's tests) gets
/// here; the run then stops, rather than hang a class's grading or a CI job.
const STAGE_LIMIT: Duration = Duration::from_secs(300);

/// Stop the whole run, with every program it started, if stage `number` is
/// still running after [`STAGE_LIMIT`] (stretched by `COURSE_PATIENCE`);
/// dropping the returned sender says it finished in time.
fn stage_limit(setup: &Setup, number: usize, slug: &'static str) -> mpsc::Sender<()> {
    let limit = STAGE_LIMIT.mul_f64(setup.patience.scale());
    let replay = replay_command(setup, number, slug);
    let (finished, watched) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watched.recv_timeout(limit) {
            eprintln!(
                "error: stage {number} ({slug}) is still running after {} s, far past every \
                 deadline it has: the course's test is stuck, not your program. The run \
                 stops here; please report it, with: {replay}",
                // Whole seconds print as `300`, a test's short limit as `0.6`.
                limit.as_secs_f64()
            );
            crate::harness::process::end_everything();
            std::process::exit(101);
        }
    });
    finished
}

/// The command that runs stage `number` again with the same data.
pub(crate) fn replay_command(setup: &Setup, number: usize, slug: &str) -> String {
    format!(
        "COURSE_SEED={} cargo test --test {} {}",
        setup.seed,
        setup.lesson.test_target(),
        test_name(number, slug)
    )
}

/// What a panic said, when it said it in words.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
        .unwrap_or_default()
}

/// One stage's outcome, before it is recorded: passed, skipped or its
/// failures, and how long it took.
pub struct Checked {
    pub number: usize,
    pub took: Duration,
    pub outcome: Result<Completed, (Vec<Failure>, String)>,
}

/// Run one stage. Every program it started, and every process those left
/// behind, has ended when it returns. Nothing is recorded yet: stages run
/// at once, and are recorded in order (the runner's `record`).
pub fn check_stage(setup: &Setup, number: usize, stage: &Stage) -> Checked {
    let started = Instant::now();
    let mut ctx = Ctx::new(setup, number);
    let _watch = progress::watch(number, stage.slug, ctx.journal().clone());
    let _limit = stage_limit(setup, number, stage.slug);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (stage.check)(&mut ctx)));
    let mut failures = ctx.take_soft_failures();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failure)) => failures.push(failure),
        Err(panic) => {
            let message = panic_text(panic.as_ref());
            failures.push(
                Failure::new(format!("the test itself failed: {message}")).hint(
                    "This is a bug in the course's tests, not in your program. Please report \
                     it with the replay command below.",
                ),
            )
        }
    };
    ctx.mark_output();
    if !failures.is_empty() {
        ctx.let_exits_show();
    }
    failures.extend(ctx.stop_all());
    crate::harness::process::end_strays();
    let took = started.elapsed();
    let skipped = match failures.as_slice() {
        [] => None,
        all if !clients_required() => all
            .iter()
            .map(|failure| failure.missing_tool.clone())
            .collect::<Option<Vec<_>>>()
            .and_then(|missing| missing.into_iter().next()),
        _ => None,
    };
    let outcome = if let Some(missing) = skipped {
        Ok(Completed::Skipped(missing))
    } else if failures.is_empty() {
        Ok(Completed::Passed)
    } else {
        let report = ctx.report(stage.slug, stage.title, stage.slide, &failures);
        Err((failures, report))
    };
    Checked {
        number,
        took,
        outcome,
    }
}
