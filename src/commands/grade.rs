//! Grading from the `course` command: build the lessons' stage suites with
//! cargo, run them, and read back one record per stage.
//!
//! A suite is the test binary `tests/NN_name.rs` compiles to. It writes its
//! records as JSON Lines to the file named by `COURSE_REPORT`, so the course
//! command never parses test output meant for people.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::harness::checkout;
use crate::harness::lesson::{Lesson, LESSONS};
use crate::harness::progress;
use crate::harness::stage::StageRecord;
use crate::harness::target::Target;

/// What to grade: the student's code, the reference, or any command that
/// keeps the contract.
#[derive(Debug, Clone)]
pub enum Subject {
    Build(Target),
    Command(String),
}

/// Where cargo builds the stages and the programs they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildFolder {
    /// Where cargo is told to: `CARGO_TARGET_DIR`, else the checkout's
    /// target/. Quick for a student's own checkout; shared between two
    /// checkouts, it may hold the other's build, which the stages refuse
    /// to run (`harness::checkout`).
    AsConfigured,
    /// The checkout's own target/, whatever cargo is told: no other
    /// checkout's build can be found there. What a grade, or a bench of
    /// the solutions, is built in.
    Own,
}

/// Build the stage suites of `lessons` (and so every lesson's binaries) in
/// `folder`, and return where each suite's executable is, by test target
/// (`01_echo`). Compile errors reach the user as cargo prints them, and the
/// error says which lessons they stop.
pub fn build_suites(
    project: &Path,
    lessons: &[Lesson],
    folder: BuildFolder,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut args = vec!["test".to_string(), "--no-run".to_string()];
    for lesson in lessons {
        args.extend(["--test".to_string(), lesson.test_target()]);
    }
    cargo_build(project, &args, "test", folder).map_err(|error| {
        // cargo's own last words name a binary (`bin "04-concurrency"`),
        // and a student on lesson 01 does not see why lesson 04 matters.
        let build = ["build", "--bins", "--keep-going"].map(String::from);
        // On a first build, this one builds every lesson that compiles,
        // which takes minutes with nothing else on the screen.
        eprintln!("Finding which lessons do not compile (the others build meanwhile)...");
        let broken = cargo_errors(project, &build, folder).unwrap_or_default();
        let stopping: Vec<&Lesson> = LESSONS
            .iter()
            .filter(|lesson| broken.contains_key(&lesson.name()))
            .collect();
        match not_compiling(&stopping) {
            Some(why) => anyhow::anyhow!(why),
            None => error,
        }
    })
}

/// Why no stage runs while `lessons` do not compile; `None` when none is a
/// lesson (the course's own code, say, does not compile).
fn not_compiling(lessons: &[&Lesson]) -> Option<String> {
    let (last, others) = lessons.split_last()?;
    let folder = |lesson: &Lesson| format!("lessons/{}", lesson.name());
    let (which, until) = match others {
        [] => (
            format!("lesson {} ({}) does not", last.number, folder(last)),
            "it compiles",
        ),
        _ => {
            let numbers: Vec<&str> = others.iter().map(|lesson| lesson.number).collect();
            (
                format!("lessons {} and {} do not", numbers.join(", "), last.number),
                "they compile",
            )
        }
    };
    Some(format!(
        "{which} compile (cargo's first error is above). cargo builds every lesson \
         before it runs the stages of any: no lesson's stages run until {until}"
    ))
}

fn own_build_folder(project: &Path) -> PathBuf {
    project.join("target")
}

/// What a grade says when `CARGO_TARGET_DIR` names a folder that is not
/// the checkout's own: that it builds there all the same, and why.
pub fn own_build_folder_note(project: &Path) -> Option<String> {
    let told = std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty())?;
    let own = own_build_folder(project);
    if checkout::same_folder(Path::new(&told), &own) {
        return None;
    }
    Some(format!(
        "note: grading builds in {} rather than in CARGO_TARGET_DIR ({}): a build \
         folder shared with another checkout can hold that checkout's programs, \
         and a grade must be of this one's",
        own.display(),
        Path::new(&told).display()
    ))
}

/// Run cargo with `args` (a build) in `project`, building in `folder`, and
/// return the executables of the targets of `kind` it built, by target
/// name. Compile errors reach the user as cargo prints them.
pub fn cargo_build(
    project: &Path,
    args: &[String],
    kind: &str,
    folder: BuildFolder,
) -> Result<BTreeMap<String, PathBuf>> {
    let output = run_cargo(
        project,
        args,
        folder,
        "json-render-diagnostics",
        Stdio::inherit(),
    )?;
    if !output.status.success() {
        bail!("the project does not compile: cargo's first error is above");
    }
    Ok(executables_in(
        &String::from_utf8_lossy(&output.stdout),
        kind,
    ))
}

/// Run cargo with `args` (a build that goes on past errors: `--keep-going`)
/// in `project`, building in `folder`, and return the first error of
/// each binary that did not compile, as cargo renders it, by binary name.
pub fn cargo_errors(
    project: &Path,
    args: &[String],
    folder: BuildFolder,
) -> Result<BTreeMap<String, String>> {
    // The errors come in the JSON, so cargo's own printing of them is not
    // wanted: they are said once, by whoever asked.
    let output = run_cargo(project, args, folder, "json", Stdio::null())?;
    Ok(first_errors(&String::from_utf8_lossy(&output.stdout)))
}

/// Run cargo quietly with `args` in `project`, building in `folder`, its
/// messages on stdout in the JSON `format`, its stderr to `stderr`.
fn run_cargo(
    project: &Path,
    args: &[String],
    folder: BuildFolder,
    format: &str,
    stderr: Stdio,
) -> Result<std::process::Output> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command.current_dir(project).args(args);
    if folder == BuildFolder::Own {
        command.arg("--target-dir").arg(own_build_folder(project));
    }
    command
        .arg("--quiet")
        .arg(format!("--message-format={format}"))
        .stdin(Stdio::null())
        .stderr(stderr)
        .output()
        .with_context(|| format!("cannot run {cargo}"))
}

/// The first error cargo's JSON messages give for each binary.
fn first_errors(messages: &str) -> BTreeMap<String, String> {
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        target: Option<TargetInfo>,
        message: Option<Diagnostic>,
    }
    #[derive(Deserialize)]
    struct TargetInfo {
        name: String,
        kind: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Diagnostic {
        level: String,
        rendered: Option<String>,
    }
    let mut errors = BTreeMap::new();
    for line in messages.lines() {
        let Ok(message) = serde_json::from_str::<Message>(line) else {
            continue;
        };
        let (Some(target), Some(diagnostic)) = (message.target, message.message) else {
            continue;
        };
        let an_error = message.reason == "compiler-message" && diagnostic.level == "error";
        if an_error && target.kind.iter().any(|kind| kind == "bin") {
            let rendered = diagnostic.rendered.unwrap_or_default();
            errors.entry(target.name).or_insert(rendered);
        }
    }
    errors
}

/// The executables of targets of `kind` (`test`, `bin`) named in cargo's
/// JSON messages, by target name.
fn executables_in(messages: &str, kind: &str) -> BTreeMap<String, PathBuf> {
    #[derive(Deserialize)]
    struct Message {
        reason: String,
        target: Option<TargetInfo>,
        executable: Option<PathBuf>,
    }
    #[derive(Deserialize)]
    struct TargetInfo {
        name: String,
        kind: Vec<String>,
    }
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<Message>(line).ok())
        .filter(|message| message.reason == "compiler-artifact")
        .filter_map(|message| {
            let target = message.target?;
            let wanted = target.kind.iter().any(|candidate| candidate == kind);
            wanted.then_some((target.name, message.executable?))
        })
        .collect()
}

/// Run one lesson's suite, built in the course at `built_in`, against
/// `subject`, and return its records, in stage order. With `fail_fast`,
/// the stages after the first failure are recorded as failed without being
/// run.
pub fn run_suite(
    executable: &Path,
    built_in: &Path,
    lesson: &Lesson,
    subject: &Subject,
    fail_fast: bool,
) -> Result<Vec<StageRecord>> {
    let report = std::env::temp_dir().join(format!(
        "course-report-{}-{}.jsonl",
        std::process::id(),
        lesson.number
    ));
    let _ = std::fs::remove_file(&report);
    let mut command = Command::new(executable);
    // A full grade is watched, and can take minutes: its progress is shown
    // as it happens. The board runs lessons side by side (as many at once
    // as the machine has cores), quietly.
    let watched = !fail_fast;
    command
        .arg("--quiet")
        // What `cargo test` would say: the suite checks that it was built
        // from this course (`harness::checkout`).
        .env("CARGO_MANIFEST_DIR", built_in)
        .env("COURSE_REPORT", &report)
        .env_remove("COURSE_CMD")
        .env("COURSE_FAIL_FAST", if fail_fast { "1" } else { "0" })
        .env("COURSE_PROGRESS", if watched { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match subject {
        Subject::Build(target) => command.env("COURSE_TARGET", target.name()),
        Subject::Command(line) => command.env("COURSE_CMD", line),
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run the stages of lesson {}", lesson.name()))?;
    let mut stderr = String::new();
    if let Some(pipe) = child.stderr.take() {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            match line.strip_prefix(progress::PREFIX) {
                Some(news) => eprintln!("lesson {}: {news}", lesson.number),
                None => stderr.push_str(&format!("{line}\n")),
            }
        }
    }
    child
        .wait()
        .with_context(|| format!("cannot run the stages of lesson {}", lesson.name()))?;
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    let mut records: Vec<StageRecord> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("a stage record could not be read")?;
    if records.is_empty() {
        // What the suite said, without the `error: ` that the board's and
        // the grade's own words already stand for.
        let said = stderr.trim();
        let said = said.strip_prefix("error: ").unwrap_or(said);
        if said.is_empty() {
            bail!("the stages ended before the first, without a word");
        }
        bail!("{said}");
    }
    records.sort_by_key(|record| record.stage);
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_which_lessons_stop_every_stage() {
        let (echo, http, messages) = (&LESSONS[0], &LESSONS[1], &LESSONS[2]);
        assert_eq!(
            not_compiling(&[echo]).as_deref(),
            Some(
                "lesson 01 (lessons/01-echo) does not compile (cargo's first error is above). \
                 cargo builds every lesson before it runs the stages of any: no lesson's stages \
                 run until it compiles"
            )
        );
        let several = not_compiling(&[echo, http, messages]).unwrap();
        assert!(
            several.starts_with("lessons 01, 02 and 03 do not compile"),
            "{several}"
        );
        assert!(several.ends_with("until they compile"), "{several}");
        assert_eq!(not_compiling(&[]), None);
    }

    #[test]
    fn reads_the_first_error_of_each_binary_from_cargo_messages() {
        let messages = [
            r#"{"reason":"compiler-message","target":{"name":"05-chat","kind":["bin"]},"message":{"level":"warning","rendered":"warning: unused"}}"#,
            r#"{"reason":"compiler-message","target":{"name":"05-chat","kind":["bin"]},"message":{"level":"error","rendered":"error[E0425]: first"}}"#,
            r#"{"reason":"compiler-message","target":{"name":"05-chat","kind":["bin"]},"message":{"level":"error","rendered":"error: second"}}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"01-echo","kind":["bin"]},"executable":"/x/01-echo"}"#,
            r#"{"reason":"build-finished","success":false}"#,
        ]
        .join("\n");
        let errors = first_errors(&messages);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors["05-chat"], "error[E0425]: first");
    }

    #[test]
    fn reads_test_executables_from_cargo_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"01_echo","kind":["test"]},"executable":"/x/01_echo-1"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"course","kind":["bin"]},"executable":"/x/course"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\nnot json\n"
        );
        let suites = executables_in(messages, "test");
        assert_eq!(suites.len(), 1);
        assert_eq!(suites["01_echo"], PathBuf::from("/x/01_echo-1"));
    }
}
