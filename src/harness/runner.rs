//! The runner that grades a lesson's stages.
//!
//! Each stage becomes one test named `stage_NN_slug`, so `cargo test --test
//! 01_echo listens` runs one stage and the list reads in the order a student
//! builds them. Stages run one at a time, in order.
//!
//! When `COURSE_REPORT` names a file, each stage also appends one JSON line to
//! it; that is how `course grade` and the board learn the results. With
//! `COURSE_FAIL_FAST=1` the stages after the first failure are not run (the
//! board needs only where a student stands).

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};

use crate::harness::ctx::Ctx;
use crate::harness::failure::Failure;
use crate::harness::lesson;
use crate::harness::seed;
use crate::harness::setup::{test_name, Patience, Programs, Setup};
use crate::harness::stage::{Stage, StageRecord};
use crate::harness::target::{split_command, Target};

/// Run a lesson's stages as a test binary: libtest's command line (filters,
/// `--list`, `--exact`), its output, its summary line and its exit status.
pub fn run_stages(lesson_number: &str, programs: Programs, stages: &[Stage]) -> ! {
    let setup = match setup(lesson_number, programs, stages.len()) {
        Ok(setup) => setup,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::exit(2);
        }
    };
    crate::harness::resources::raise_open_file_limit();
    crate::harness::process::end_all_on_interrupt();
    let mut arguments = Arguments::from_args();
    // One stage at a time, in order: stages start servers and measure time,
    // and a student reads the results top to bottom.
    arguments.test_threads = Some(1);
    let fail_fast = std::env::var_os("COURSE_FAIL_FAST").is_some_and(|value| value == "1");
    let trials = stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            let stage = *stage;
            let setup = setup.clone();
            Trial::ignorable_test(test_name(index + 1, stage.slug), move || {
                let first_failed = FIRST_FAILED.load(Ordering::SeqCst);
                if fail_fast && first_failed != 0 {
                    let skipped = format!("not run: stage {first_failed} failed first");
                    write_record(&setup, index + 1, &stage, Duration::ZERO, Some(&skipped));
                    return Err(Failed::from(skipped));
                }
                match run_one(&setup, index + 1, &stage) {
                    Ok(()) => Ok(Completion::Completed),
                    // libtest shows it as `ignored, <reason>`: not a pass.
                    Err(failure) if failure.skipped => Ok(Completion::ignored_with(failure.what)),
                    Err(failure) => Err(Failed::from(shown_failure(
                        &setup,
                        index + 1,
                        &stage,
                        failure,
                    ))),
                }
            })
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit()
}

fn setup(lesson_number: &str, programs: Programs, total: usize) -> Result<Setup, String> {
    let lesson = lesson::find(lesson_number)
        .ok_or_else(|| format!("lesson {lesson_number} is not in src/harness/lesson.rs"))?;
    let target = Target::from_env()?;
    let (program, target) = match std::env::var("COURSE_CMD") {
        Ok(command) if !command.trim().is_empty() => {
            (split_command(&command)?, "command".to_string())
        }
        _ => {
            let path = match target {
                Target::Lessons => programs.lessons,
                Target::Solutions => programs.solutions,
            };
            (vec![path.to_string()], target.name().to_string())
        }
    };
    Ok(Setup {
        lesson,
        program,
        target,
        seed: seed::run_seed()?,
        patience: Patience::from_env(),
        total,
    })
}

/// Why a stage failed: the full report, and its one-sentence cause.
#[derive(Debug, Clone)]
pub struct StageFailure {
    pub report: String,
    pub what: String,
    /// The stage could not run here; `what` says why.
    pub skipped: bool,
}

/// Run one stage and turn its failure, if any, into the report.
pub fn run_one(setup: &Setup, number: usize, stage: &Stage) -> Result<(), StageFailure> {
    let started = Instant::now();
    let mut ctx = Ctx::new(setup, number);
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (stage.check)(&mut ctx)));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(
                Failure::new(format!("the test itself failed: {message}")).hint(
                    "This is a bug in the course's tests, not in your program. Please report \
                     it with the replay command below.",
                ),
            )
        }
    };
    ctx.mark_output();
    if failure.is_some() {
        ctx.let_exits_show();
    }
    let stopped = ctx.stop_all();
    let failure = failure.or(stopped);
    let report = failure.as_ref().map(|failure| match failure.skipped {
        true => format!("skipped: {}", failure.what),
        false => ctx.report(stage.slug, stage.title, stage.slide, failure),
    });
    write_record(setup, number, stage, started.elapsed(), report.as_deref());
    match (failure, report) {
        (Some(failure), Some(report)) => Err(StageFailure {
            report,
            what: failure.what.clone(),
            skipped: failure.skipped,
        }),
        _ => Ok(()),
    }
}

/// What libtest prints for a failed stage. The first failure of a run gets
/// the full report; later stages usually fail for the same reason, so they
/// say what went wrong in short and point back to it.
fn shown_failure(setup: &Setup, number: usize, stage: &Stage, failure: StageFailure) -> String {
    let Err(first) = FIRST_FAILED.compare_exchange(0, number, Ordering::SeqCst, Ordering::SeqCst)
    else {
        return failure.report;
    };
    format!(
        "stage {number} of {}: {} ({})\n{}\n\n{}",
        setup.total,
        stage.title,
        stage.slug,
        crate::harness::report::wrap(&failure.what, "  "),
        crate::harness::report::wrap(
            &format!(
                "Stage {first} failed too, and its full report is above: fix it first, as \
                 later stages build on it. For this stage's full report, run it alone: \
                 cargo test --test {} {}",
                setup.lesson.test_target(),
                test_name(number, stage.slug)
            ),
            "  "
        )
    )
}

/// The number of the first stage that failed in this run, 0 while none has.
static FIRST_FAILED: AtomicUsize = AtomicUsize::new(0);

fn write_record(
    setup: &Setup,
    number: usize,
    stage: &Stage,
    took: Duration,
    message: Option<&str>,
) {
    let Ok(path) = std::env::var("COURSE_REPORT") else {
        return;
    };
    let record = StageRecord {
        lesson: setup.lesson.number.to_string(),
        stage: number,
        slug: stage.slug.to_string(),
        title: stage.title.to_string(),
        slide: stage.slide.to_string(),
        passed: message.is_none(),
        duration_ms: took.as_millis() as u64,
        message: message.unwrap_or_default().to_string(),
        target: setup.target.clone(),
        seed: setup.seed,
    };
    let line = serde_json::to_string(&record).expect("a record is plain data");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = written {
        eprintln!("warning: could not write the stage record to {path}: {error}");
    }
}
