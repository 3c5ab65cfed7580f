//! The text of a failed stage, laid out in the order a student needs it: the
//! stage, the steps so far, the bytes on the wire, expected against received,
//! a hint in plain words, and the slide to read.

use std::fmt::Write as _;

/// Everything a report says, gathered by the stage runner.
pub struct Report {
    /// `stage 2 of 7: echoes a line (echoes-a-line)`.
    pub heading: String,
    pub steps: String,
    /// What went wrong: one problem, or several independent ones that a
    /// stage checked each on its own.
    pub problems: Vec<Problem>,
    /// What the stage's programs printed, and notes on the whole stage.
    pub details: Vec<String>,
    /// `slides/01-echo.md, "Echo everything"`.
    pub slide: String,
    /// The command that replays this stage with the same data.
    pub replay: String,
}

/// One thing that went wrong, with its evidence.
pub struct Problem {
    pub what: String,
    /// The bytes on the wire that show it.
    pub wire: String,
    pub comparison: Option<String>,
    pub details: Vec<String>,
    pub hint: Option<String>,
    /// Where to read about this problem, where it is not the stage's slide:
    /// `slides/02-http.md, "Status codes"`. Shown under the problem when a
    /// report has several.
    pub slide: Option<String>,
}

/// How wide prose is wrapped.
const WIDTH: usize = 78;

/// The heading of the bytes on the wire.
const WIRE_HEADING: &str = "On the wire (→ sent by the test, ← sent by your program):";

impl Report {
    /// The report's text. Every byte a program under test sent, wherever it
    /// is quoted, reaches the reader escaped: a program cannot clear the
    /// grader's screen, set its title or overwrite a line.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "{}", self.heading);
        let _ = writeln!(text, "\nWhat the test did:\n{}", self.steps.trim_end());
        match self.problems.as_slice() {
            [one] => {
                let _ = writeln!(text, "\nWhat went wrong:\n{}", wrap(&one.what, "  "));
                if !one.wire.trim().is_empty() {
                    let _ = writeln!(text, "\n{WIRE_HEADING}\n{}", one.wire.trim_end());
                }
                write_evidence(&mut text, one, "");
                write_details(&mut text, &self.details, "");
                if let Some(hint) = &one.hint {
                    let _ = writeln!(text, "\nHint:\n{}", wrap(hint, "  "));
                }
            }
            several => {
                let _ = writeln!(
                    text,
                    "\nWhat went wrong: {} things, each checked on its own; fix them in \
                     any order.",
                    several.len()
                );
                for (index, problem) in several.iter().enumerate() {
                    let number = format!("{}. ", index + 1);
                    let what = wrap(&problem.what, "     ");
                    let _ = writeln!(text, "\n  {number}{}", what.trim_start());
                    if !problem.wire.trim().is_empty() {
                        let _ = writeln!(text, "\n     {WIRE_HEADING}");
                        for line in problem.wire.trim_end().lines() {
                            let _ = writeln!(text, "   {line}");
                        }
                    }
                    write_evidence(&mut text, problem, "   ");
                    if let Some(hint) = &problem.hint {
                        let _ = writeln!(text, "\n     Hint:\n{}", wrap(hint, "       "));
                    }
                    if let Some(slide) = &problem.slide {
                        let _ = writeln!(text, "\n     Read: {slide}");
                    }
                }
                write_details(&mut text, &self.details, "");
            }
        }
        let _ = writeln!(text, "\nRead: {}", self.slide);
        let _ = writeln!(
            text,
            "Replay this stage with the same data: {}",
            self.replay
        );
        crate::harness::escape::visible(&text)
    }
}

/// A problem's comparison and details, each line indented by `indent` more.
fn write_evidence(text: &mut String, problem: &Problem, indent: &str) {
    if let Some(comparison) = &problem.comparison {
        let _ = writeln!(text);
        for line in comparison.lines() {
            let _ = writeln!(text, "{indent}  {line}");
        }
    }
    write_details(text, &problem.details, indent);
}

fn write_details(text: &mut String, details: &[String], indent: &str) {
    for detail in details {
        let _ = writeln!(text);
        for line in detail.trim_end().lines() {
            let _ = writeln!(text, "{indent}  {line}");
        }
    }
}

/// Wrap prose at `WIDTH` columns, each line starting with `indent`.
/// Paragraphs (separated by blank lines) stay apart; code spans are not split.
pub fn wrap(prose: &str, indent: &str) -> String {
    let mut lines = Vec::new();
    for (index, paragraph) in prose.split("\n\n").enumerate() {
        if index > 0 {
            lines.push(String::new());
        }
        let mut line = String::from(indent);
        for word in paragraph.split_whitespace() {
            let fits = line.chars().count() + 1 + word.chars().count() <= WIDTH;
            if line.len() > indent.len() && !fits {
                lines.push(std::mem::replace(&mut line, String::from(indent)));
            }
            if line.len() > indent.len() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_long_prose_and_keeps_paragraphs() {
        let prose = format!("{}\n\nshort", "word ".repeat(40));
        let wrapped = wrap(&prose, "  ");
        assert!(wrapped.lines().all(|line| line.chars().count() <= WIDTH));
        assert!(wrapped
            .lines()
            .all(|line| line.is_empty() || line.starts_with("  ")));
        assert!(wrapped.ends_with("\n\n  short"));
    }
}
