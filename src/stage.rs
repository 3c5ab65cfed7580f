//! Stages and the runner that grades them.
//!
//! A lesson's test file (`tests/NN_name.rs`) lists its stages in order and
//! hands them to [`run_stages`]. Each stage becomes one test named
//! `stage_NN_slug`, so `cargo test --test 01_echo listens` runs one stage and
//! the list reads in the order a student builds them. Stages run one at a
//! time, each with a fresh program and its own [`Ctx`]: a stage never depends
//! on what an earlier one left behind.
//!
//! When `COURSE_REPORT` names a file, each stage also appends one JSON line to
//! it; that is how `course grade` and the board learn the results. With
//! `COURSE_FAIL_FAST=1` the stages after the first failure are not run (the
//! board needs only where a student stands).

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use serde::{Deserialize, Serialize};

pub use crate::ctx::{output_block, Ctx, Finished, ProcessId, Server};
use crate::failure::{Check, Failure};
use crate::lesson::{self, Lesson};
use crate::seed;
use crate::target::{split_command, Target};

/// One observable behaviour, checked from outside over real sockets.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    /// A short name, used in the test's name: `echoes-a-line`.
    pub slug: &'static str,
    /// One line: what the program does when it passes.
    pub title: &'static str,
    /// The heading, in the lesson's slide file, to read when it fails.
    pub slide: &'static str,
    /// The check. It fails by returning a [`Failure`].
    pub check: fn(&mut Ctx) -> Check<()>,
}

/// The two builds of a lesson's binary, as cargo built them for the tests
/// (`env!("CARGO_BIN_EXE_01-echo")`).
#[derive(Debug, Clone, Copy)]
pub struct Programs {
    pub lessons: &'static str,
    pub solutions: &'static str,
}

/// How long each kind of wait may take. `COURSE_PATIENCE=3` triples them all,
/// for a slow machine; a correct program never comes near them.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// From starting a server to its `listening on` line.
    pub start: Duration,
    /// For any one read or write on a connection.
    pub reply: Duration,
    /// For a program that should exit by itself.
    pub exit: Duration,
}

impl Patience {
    pub fn from_env() -> Patience {
        let scale = std::env::var("COURSE_PATIENCE")
            .ok()
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|scale| *scale > 0.0)
            .unwrap_or(1.0);
        Patience {
            start: Duration::from_secs_f64(5.0 * scale),
            reply: Duration::from_secs_f64(2.0 * scale),
            exit: Duration::from_secs_f64(5.0 * scale),
        }
    }
}

/// One stage's result, as `course grade --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub lesson: String,
    pub stage: usize,
    pub slug: String,
    pub title: String,
    /// The heading to read in the lesson's slides.
    pub slide: String,
    pub passed: bool,
    pub duration_ms: u64,
    /// The failure report; empty when the stage passed.
    pub message: String,
    pub target: String,
    pub seed: u64,
}

/// The test name of stage `number`: `stage_02_echoes_a_line`.
pub fn test_name(number: usize, slug: &str) -> String {
    format!("stage_{number:02}_{}", slug.replace('-', "_"))
}

/// What is run and how, the same for every stage of one run.
#[derive(Debug, Clone)]
pub struct Setup {
    pub lesson: &'static Lesson,
    /// The program and the words before its subcommand.
    pub program: Vec<String>,
    /// `lessons`, `solutions` or `command`, for the records.
    pub target: String,
    pub seed: u64,
    pub patience: Patience,
    /// How many stages the lesson has.
    pub total: usize,
}

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
    crate::resources::raise_open_file_limit();
    crate::process::end_all_on_interrupt();
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
            Trial::test(test_name(index + 1, stage.slug), move || {
                let first_failed = FIRST_FAILED.load(Ordering::SeqCst);
                if fail_fast && first_failed != 0 {
                    let skipped = format!("not run: stage {first_failed} failed first");
                    write_record(&setup, index + 1, &stage, Duration::ZERO, Some(&skipped));
                    return Err(Failed::from(skipped));
                }
                run_one(&setup, index + 1, &stage).map_err(|failure| {
                    Failed::from(shown_failure(&setup, index + 1, &stage, failure))
                })
            })
        })
        .collect();
    libtest_mimic::run(&arguments, trials).exit()
}

fn setup(lesson_number: &str, programs: Programs, total: usize) -> Result<Setup, String> {
    let lesson = lesson::find(lesson_number)
        .ok_or_else(|| format!("lesson {lesson_number} is not in src/lesson.rs"))?;
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
    let report = failure.as_ref().map(|failure| ctx.report(stage, failure));
    write_record(setup, number, stage, started.elapsed(), report.as_deref());
    match (failure, report) {
        (Some(failure), Some(report)) => Err(StageFailure {
            report,
            what: failure.what.clone(),
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
        crate::report::wrap(&failure.what, "  "),
        crate::report::wrap(
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
