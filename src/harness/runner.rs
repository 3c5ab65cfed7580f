//! The runner that grades a lesson's stages.
//!
//! Each stage becomes one test named `stage_NN_slug`, so `cargo test --test
//! 01_echo listens` runs one stage and the list reads in the order a student
//! builds them. Results are reported one at a time, in order; the stages
//! themselves run at the same time as each other (see [`schedule`]), as
//! most of a stage is waiting on sockets. A stage that `runs_alone` runs
//! with no other beside it.
//!
//! When `COURSE_REPORT` names a file, each stage also appends one JSON line to
//! it; that is how `course grade` and the board learn the results. The stages
//! after the first failure are not reported, unless `COURSE_ALL_STAGES=1` (or
//! `COURSE_FAIL_FAST=0`, its older spelling) asks for every stage. With
//! `COURSE_PROGRESS=1`, each stage's result, and a line for a stage that
//! runs long, go to stderr as they happen (see [`progress`]).

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use libtest_mimic::{Arguments, Completion, Failed, Trial};

pub use crate::harness::check::Completed;
use crate::harness::check::{check_stage, Checked};
use crate::harness::checkout;
use crate::harness::failure::MissingTool;
use crate::harness::lesson;
use crate::harness::progress;
use crate::harness::schedule::{self, Schedule};
use crate::harness::seed;
use crate::harness::setup::{test_name, Patience, Programs, Setup, NO_SOLUTIONS};
use crate::harness::stage::{Stage, StageRecord, Status};
use crate::harness::target::{split_command, Target};

/// Run a lesson's stages as a test binary: libtest's command line (filters,
/// `--list`, `--exact`), its output, its summary line and its exit status.
///
/// A student wants the first problem fast: the run stops at the first stage
/// that fails, and lists the rest as not run (libtest's "ignored", with the
/// reason). `COURSE_ALL_STAGES=1` runs every stage. A stage whose outside
/// client is missing is skipped, also shown as "ignored" with the reason;
/// `COURSE_REQUIRE_CLIENTS=1` makes it fail instead.
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
    // Results one at a time, in order: a student reads them top to bottom,
    // and a stage builds on the ones before. The stages themselves run at
    // once, in the background (the schedule); a trial waits for its own.
    arguments.test_threads = Some(1);
    let all_stages = flag("COURSE_ALL_STAGES", "1") || flag("COURSE_FAIL_FAST", "0");
    // Only the stages libtest will run are started: the filter on the
    // command line (`cargo test --test 01_echo listens`) picks them.
    let chosen: Vec<usize> = stages
        .iter()
        .enumerate()
        .map(|(index, stage)| {
            (
                index + 1,
                Trial::test(test_name(index + 1, stage.slug), || Ok(())),
            )
        })
        .filter(|(_, named)| !arguments.list && !arguments.is_filtered_out(named))
        .map(|(number, _)| number)
        .collect();
    let schedule = Schedule::start(
        &setup,
        stages,
        &chosen,
        schedule::at_once_from_env(),
        !all_stages,
    );
    let trials = stages
        .iter()
        .enumerate()
        .map(|(index, stage)| trial(&setup, index + 1, *stage, all_stages, schedule.clone()))
        .collect();
    let conclusion = libtest_mimic::run(&arguments, trials);
    print!("{}", summary(&notes()));
    // Stages after a failure may still be running in the background, with
    // their programs: their results are not wanted, and their programs end
    // with the run.
    schedule.stop();
    crate::harness::process::end_everything();
    conclusion.exit()
}

/// The test for stage `number`: it waits for the stage's result from the
/// schedule, records it, and shows it.
fn trial(
    setup: &Setup,
    number: usize,
    stage: Stage,
    all_stages: bool,
    schedule: Schedule,
) -> Trial {
    let setup = setup.clone();
    Trial::ignorable_test(test_name(number, stage.slug), move || {
        let not_run = || {
            let failed = FIRST_FAILED.load(Ordering::SeqCst);
            let reason = format!("not run: stage {failed} fails first");
            write_record(
                &setup,
                number,
                &stage,
                Status::NotRun,
                Duration::ZERO,
                &reason,
            );
            notes().push(Note::NotRun(number));
            Ok(Completion::ignored_with(reason))
        };
        if !all_stages && FIRST_FAILED.load(Ordering::SeqCst) != 0 {
            return not_run();
        }
        let Some(checked) = schedule.wait_for(number) else {
            // Not run: a stage before it failed and stopped the run, which
            // the trial of that stage has just reported.
            return not_run();
        };
        match record(&setup, number, &stage, checked) {
            Ok(Completed::Passed) => Ok(Completion::Completed),
            Ok(Completed::Skipped(missing)) => {
                let reason = missing.reason();
                notes().push(Note::Skipped(number, stage.slug, missing));
                Ok(Completion::ignored_with(reason))
            }
            Err(failure) => Err(Failed::from(shown_failure(&setup, number, &stage, failure))),
        }
    })
}

/// Whether the environment variable `name` is set to `value`.
fn flag(name: &str, value: &str) -> bool {
    std::env::var_os(name).is_some_and(|set| set == value)
}

/// What the run's summary says beyond libtest's counts.
#[derive(Debug)]
enum Note {
    NotRun(usize),
    Skipped(usize, &'static str, MissingTool),
}

fn notes() -> std::sync::MutexGuard<'static, Vec<Note>> {
    static NOTES: Mutex<Vec<Note>> = Mutex::new(Vec::new());
    NOTES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lines after libtest's summary: each skipped stage with the command
/// that installs its client, and the stages not run.
fn summary(notes: &[Note]) -> String {
    let mut text = String::new();
    let skipped: Vec<String> = notes
        .iter()
        .filter_map(|note| match note {
            Note::Skipped(number, slug, missing) => Some(format!(
                "  stage {number} ({slug}) needs {}: {}",
                missing.tool, missing.install
            )),
            Note::NotRun(_) => None,
        })
        .collect();
    if !skipped.is_empty() {
        text.push_str("Not checked, because a client the stage uses is not installed:\n");
        text.push_str(&skipped.join("\n"));
        text.push_str(
            "\n  A skipped stage is not passed: install the client and run it again \
             (COURSE_REQUIRE_CLIENTS=1 fails such a stage instead).\n",
        );
    }
    let not_run: Vec<usize> = notes
        .iter()
        .filter_map(|note| match note {
            Note::NotRun(number) => Some(*number),
            Note::Skipped(..) => None,
        })
        .collect();
    if let (Some(first), Some(last)) = (not_run.first(), not_run.last()) {
        let stages = if first == last {
            format!("stage {first}")
        } else {
            format!("stages {first} to {last}")
        };
        let failed = FIRST_FAILED.load(Ordering::SeqCst);
        text.push_str(&format!(
            "Not run: {stages}, because stage {failed} fails first. Fix it and run again, \
             or run every stage with COURSE_ALL_STAGES=1.\n"
        ));
    }
    if !text.is_empty() {
        text.insert(0, '\n');
    }
    text
}

fn setup(lesson_number: &str, programs: Programs, total: usize) -> Result<Setup, String> {
    // Another checkout's build would grade that checkout's programs as this
    // one's: no stage runs on it.
    checkout::built_here()?;
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
                Target::Solutions => programs.solutions.ok_or(NO_SOLUTIONS)?,
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

/// Run one stage, record its result, and turn its failures, if any, into
/// the report. Every program it started, and every process those left
/// behind, has ended when it returns.
pub fn run_one(setup: &Setup, number: usize, stage: &Stage) -> Result<Completed, StageFailure> {
    record(setup, number, stage, check_stage(setup, number, stage))
}

/// Record a stage's result (the JSON line, the progress line), in the
/// order of the stages, and turn its failures into the report.
fn record(
    setup: &Setup,
    number: usize,
    stage: &Stage,
    checked: Checked,
) -> Result<Completed, StageFailure> {
    let took = checked.took;
    match checked.outcome {
        Ok(Completed::Skipped(missing)) => {
            write_record(
                setup,
                number,
                stage,
                Status::Skipped,
                took,
                &missing.reason(),
            );
            progress::finished(number, stage.slug, "skip", took);
            Ok(Completed::Skipped(missing))
        }
        Ok(Completed::Passed) => {
            write_record(setup, number, stage, Status::Passed, took, "");
            progress::finished(number, stage.slug, "pass", took);
            Ok(Completed::Passed)
        }
        Err((failures, report)) => {
            write_record(setup, number, stage, Status::Failed, took, &report);
            progress::finished(number, stage.slug, "FAIL", took);
            let first = &failures[0];
            let what = match failures.len() {
                1 => first.what.clone(),
                many => format!("{} (and {} more problems)", first.what, many - 1),
            };
            Err(StageFailure {
                report,
                what: crate::harness::escape::visible(&what),
            })
        }
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
    status: Status,
    took: Duration,
    message: &str,
) {
    let passed = status == Status::Passed;
    // Counted: passed, and every stage before it passed in this run.
    let counted = passed && PASSED_IN_A_ROW.load(Ordering::SeqCst) + 1 >= number;
    if counted {
        PASSED_IN_A_ROW.fetch_max(number, Ordering::SeqCst);
    }
    let Ok(path) = std::env::var("COURSE_REPORT") else {
        return;
    };
    let record = StageRecord {
        lesson: setup.lesson.number.to_string(),
        stage: number,
        slug: stage.slug.to_string(),
        title: stage.title.to_string(),
        slide: stage.slide.to_string(),
        status,
        counted,
        passed,
        duration_ms: took.as_millis() as u64,
        message: message.to_string(),
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

/// How many stages, from stage 1, have passed in a row in this run.
static PASSED_IN_A_ROW: AtomicUsize = AtomicUsize::new(0);
