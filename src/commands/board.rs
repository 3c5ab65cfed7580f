//! The course board: every lesson with its stages passed, and the one thing
//! to do next. `cargo run` shows it.

use std::fmt::Write as _;

use crate::harness::lesson::Lesson;
use crate::harness::stage::{StageRecord, Status};

/// One lesson's line on the board.
pub struct Standing<'a> {
    pub lesson: &'a Lesson,
    /// The stage records, or why the stages could not run.
    pub records: Result<Vec<StageRecord>, String>,
}

/// The board's text.
pub fn render(standings: &[Standing]) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "Client as Server: your course board");
    let _ = writeln!(
        text,
        "Your code in lessons/, graded by the stages in tests/, in order: a lesson's\n\
         count stops at its first failing stage.\n"
    );
    let title_width = standings
        .iter()
        .map(|standing| standing.lesson.title.chars().count())
        .max()
        .unwrap_or(0);
    for (index, standing) in standings.iter().enumerate() {
        let lesson = standing.lesson;
        // A reason shared by every lesson (a build from another checkout)
        // is said once, not nine times.
        let said_before = |error: &String| {
            standings[..index]
                .iter()
                .find(|earlier| earlier.records.as_ref().err() == Some(error))
        };
        let status = match &standing.records {
            Ok(records) => {
                // The board and a gradebook count the same stages: those that
                // passed with every stage before them.
                let counted = records.iter().filter(|record| record.counted).count();
                let marks: String = records
                    .iter()
                    .map(|record| match record.status {
                        _ if record.counted => '■',
                        Status::Skipped => '?',
                        _ => '·',
                    })
                    .collect();
                let done = if counted == records.len() {
                    "  done"
                } else {
                    ""
                };
                let mut needs: Vec<&str> = records
                    .iter()
                    .filter(|record| record.status == Status::Skipped)
                    .filter_map(|record| needed_tool(&record.message))
                    .collect();
                needs.dedup();
                let unchecked = if needs.is_empty() {
                    String::new()
                } else {
                    format!("  not checked: needs {}", needs.join(", "))
                };
                format!("[{marks}] {counted} of {}{done}{unchecked}", records.len())
            }
            Err(error) => match said_before(error) {
                Some(earlier) => format!(
                    "could not run its stages, for the reason given for lesson {}",
                    earlier.lesson.number
                ),
                None => format!("could not run its stages: {error}"),
            },
        };
        let _ = writeln!(
            text,
            "  {}  {:<title_width$}  {status}",
            lesson.number, lesson.title
        );
    }
    let _ = writeln!(text);

    let passed_anywhere = standings
        .iter()
        .filter_map(|standing| standing.records.as_ref().ok())
        .flatten()
        .any(|record| record.counted);
    // The first stage that fails; a skipped stage is not the student's to
    // fix, its line above says what to install.
    let next = standings.iter().find_map(|standing| {
        let records = standing.records.as_ref().ok()?;
        let failing = records
            .iter()
            .find(|record| matches!(record.status, Status::Failed | Status::NotRun))?;
        Some((standing.lesson, failing))
    });
    let skipped = standings.iter().find_map(|standing| {
        let records = standing.records.as_ref().ok()?;
        let skipped = records
            .iter()
            .find(|record| record.status == Status::Skipped)?;
        Some((standing.lesson, skipped))
    });
    match next {
        None if skipped.is_some() => {
            if let Some((lesson, stage)) = skipped {
                let _ = writeln!(
                    text,
                    "Every stage that could be checked passes. Next: lesson {}, stage {}, {}.",
                    lesson.number,
                    stage.stage,
                    stage.message.trim_start_matches("not checked: ")
                );
            }
        }
        None if standings.iter().all(|standing| standing.records.is_ok()) => {
            let _ = writeln!(
                text,
                "Every stage of every lesson passes. Well done: read the slides' last pages \
                 for ways to take each lesson further."
            );
        }
        None => {
            let _ = writeln!(
                text,
                "Some lessons' stages could not run; the reason is on their line above."
            );
        }
        Some((lesson, stage)) => {
            if !passed_anywhere {
                let _ = writeln!(
                    text,
                    "No stage passes yet, and that is where everyone starts: each stage is one \
                     small step,\nand the first is a server that says where it listens.\n"
                );
            }
            let file =
                file_named_in(&stage.message, lesson).unwrap_or_else(|| lesson.starter_file());
            let _ = writeln!(
                text,
                "Next: lesson {}, stage {}: {}",
                lesson.number, stage.stage, stage.title
            );
            let _ = writeln!(text, "  read   {}, \"{}\"", lesson.slides(), stage.slide);
            let _ = writeln!(text, "  edit   {file}");
            let _ = writeln!(
                text,
                "  try    cargo run --bin {} -- server   (port {}; COURSE_PORT_BASE=N moves it to N+{})",
                lesson.name(),
                lesson.default_port(),
                lesson.port - crate::harness::lesson::DEFAULT_PORT_BASE
            );
            let _ = writeln!(text, "  grade  cargo test --test {}", lesson.test_target());
            let _ = writeln!(
                text,
                "\nThe grade command shows what your program sent and received, and a hint."
            );
        }
    }
    text
}

/// The tool a skipped stage's message names: `not checked: needs chromium;
/// install it: ...` → `chromium`.
fn needed_tool(message: &str) -> Option<&str> {
    let rest = message.split_once("needs ")?.1;
    Some(rest.split(';').next()?.trim())
}

/// The file of the first TODO a failure report names (`TODO 4 in
/// lessons/01-echo/client.rs`), so the board sends the student there.
fn file_named_in(message: &str, lesson: &Lesson) -> Option<String> {
    let folder = format!("lessons/{}/", lesson.name());
    message.match_indices("TODO ").find_map(|(at, _)| {
        let rest = &message[at..];
        let start = rest.find(" in ")? + " in ".len();
        let file: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
            .collect();
        let file = file.trim_end_matches('.');
        (file.starts_with(&folder) && file.len() > folder.len()).then(|| file.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::lesson::LESSONS;

    fn record(stage: usize, passed: bool, message: &str) -> StageRecord {
        StageRecord {
            lesson: "01".into(),
            stage,
            slug: format!("slug-{stage}"),
            title: format!("does thing {stage}"),
            slide: format!("Slide {stage}"),
            status: if passed {
                Status::Passed
            } else {
                Status::Failed
            },
            counted: passed,
            passed,
            duration_ms: 1,
            message: message.into(),
            target: "lessons".into(),
            seed: 1,
        }
    }

    #[test]
    fn a_fresh_start_is_greeted_and_sent_to_lesson_one() {
        let standings = [Standing {
            lesson: &LESSONS[0],
            records: Ok((1..=3).map(|n| record(n, false, "")).collect()),
        }];
        let board = render(&standings);
        assert!(board.contains("[···] 0 of 3"), "{board}");
        assert!(board.contains("No stage passes yet"), "{board}");
        assert!(
            board.contains("Next: lesson 01, stage 1: does thing 1"),
            "{board}"
        );
        assert!(
            board.contains("read   slides/01-echo.md, \"Slide 1\""),
            "{board}"
        );
        assert!(
            board.contains("edit   lessons/01-echo/server.rs"),
            "{board}"
        );
        assert!(
            board.contains("grade  cargo test --test 01_echo"),
            "{board}"
        );
    }

    #[test]
    fn the_next_step_is_the_first_failing_stage_and_the_file_its_report_names() {
        let standings = [Standing {
            lesson: &LESSONS[0],
            records: Ok(vec![
                record(1, true, ""),
                record(2, true, ""),
                record(
                    3,
                    false,
                    "Where: TODO 4 in lessons/01-echo/client.rs. After",
                ),
            ]),
        }];
        let board = render(&standings);
        assert!(board.contains("[■■·] 2 of 3"), "{board}");
        assert!(!board.contains("No stage passes yet"), "{board}");
        assert!(board.contains("Next: lesson 01, stage 3"), "{board}");
        assert!(
            board.contains("edit   lessons/01-echo/client.rs\n"),
            "{board}"
        );
    }

    #[test]
    fn a_reason_every_lesson_shares_is_given_once() {
        let why = "these stages were built from the course in /class/bob";
        let standings: Vec<Standing> = LESSONS[..3]
            .iter()
            .map(|lesson| Standing {
                lesson,
                records: Err(why.to_string()),
            })
            .collect();
        let board = render(&standings);
        assert_eq!(board.matches(why).count(), 1, "{board}");
        assert_eq!(
            board
                .matches("could not run its stages, for the reason given for lesson 01")
                .count(),
            2,
            "{board}"
        );
    }

    #[test]
    fn all_passing_says_so() {
        let standings = [Standing {
            lesson: &LESSONS[0],
            records: Ok(vec![record(1, true, ""), record(2, true, "")]),
        }];
        let board = render(&standings);
        assert!(board.contains("[■■] 2 of 2  done"), "{board}");
        assert!(
            board.contains("Every stage of every lesson passes"),
            "{board}"
        );
    }

    #[test]
    fn a_stage_that_passes_after_a_failure_is_not_counted() {
        let mut late = record(3, true, "");
        late.counted = false;
        let standings = [Standing {
            lesson: &LESSONS[0],
            records: Ok(vec![record(1, false, "failed"), record(2, false, ""), late]),
        }];
        let board = render(&standings);
        assert!(board.contains("[···] 0 of 3"), "{board}");
        assert!(board.contains("Next: lesson 01, stage 1"), "{board}");
    }

    #[test]
    fn a_skipped_stage_is_named_with_its_client_and_never_counted() {
        let mut skipped = record(2, false, "");
        skipped.status = Status::Skipped;
        skipped.message =
            "not checked: needs chromium; install it: sudo apt-get install chromium".into();
        let mut after = record(3, true, "");
        after.counted = false;
        let standings = [Standing {
            lesson: &LESSONS[0],
            records: Ok(vec![record(1, true, ""), skipped, after]),
        }];
        let board = render(&standings);
        assert!(
            board.contains("[■?·] 1 of 3  not checked: needs chromium"),
            "{board}"
        );
        assert!(!board.contains("done"), "{board}");
        assert!(
            board.contains("Next: lesson 01, stage 2, needs chromium; install it: sudo apt-get install chromium."),
            "{board}"
        );
    }
}
