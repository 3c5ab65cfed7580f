//! The course board: every lesson with its stages passed, and the one thing
//! to do next. `cargo run` shows it.

use std::fmt::Write as _;

use crate::harness::lesson::Lesson;
use crate::harness::stage::StageRecord;

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
    for standing in standings {
        let lesson = standing.lesson;
        let status = match &standing.records {
            Ok(records) => {
                let passed = records.iter().filter(|record| record.passed).count();
                let marks: String = records
                    .iter()
                    .map(|record| if record.passed { '■' } else { '·' })
                    .collect();
                let done = if passed == records.len() {
                    "  done"
                } else {
                    ""
                };
                format!("[{marks}] {passed} of {}{done}", records.len())
            }
            Err(error) => format!("could not run its stages: {error}"),
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
        .any(|record| record.passed);
    let next = standings.iter().find_map(|standing| {
        let records = standing.records.as_ref().ok()?;
        let failing = records.iter().find(|record| !record.passed)?;
        Some((standing.lesson, failing))
    });
    match next {
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
}
