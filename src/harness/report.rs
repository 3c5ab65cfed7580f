//! The text of a failed stage, laid out in the order a student needs it: the
//! stage, the steps so far, the bytes on the wire, expected against received,
//! a hint in plain words, and the slide to read.

use std::fmt::Write as _;

/// Everything a report says, gathered by the stage runner.
pub struct Report<'a> {
    /// `stage 2 of 7: echoes a line (echoes-a-line)`.
    pub heading: String,
    pub steps: String,
    pub what: &'a str,
    pub wire: String,
    pub comparison: Option<String>,
    pub details: Vec<String>,
    pub hint: Option<&'a str>,
    /// `slides/01-echo.md, "Echo everything"`.
    pub slide: String,
    /// The command that replays this stage with the same data.
    pub replay: String,
}

/// How wide prose is wrapped.
const WIDTH: usize = 78;

impl Report<'_> {
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "{}", self.heading);
        let _ = writeln!(text, "\nWhat the test did:\n{}", self.steps.trim_end());
        let _ = writeln!(text, "\nWhat went wrong:\n{}", wrap(self.what, "  "));
        if !self.wire.trim().is_empty() {
            let _ = writeln!(
                text,
                "\nOn the wire (→ sent by the test, ← sent by your program):\n{}",
                self.wire.trim_end()
            );
        }
        if let Some(comparison) = &self.comparison {
            let _ = writeln!(text);
            for line in comparison.lines() {
                let _ = writeln!(text, "  {line}");
            }
        }
        for detail in &self.details {
            let _ = writeln!(text);
            for line in detail.trim_end().lines() {
                let _ = writeln!(text, "  {line}");
            }
        }
        if let Some(hint) = self.hint {
            let _ = writeln!(text, "\nHint:\n{}", wrap(hint, "  "));
        }
        let _ = writeln!(text, "\nRead: {}", self.slide);
        let _ = writeln!(
            text,
            "Replay this stage with the same data: {}",
            self.replay
        );
        text
    }
}

/// Wrap prose at [`WIDTH`] columns, each line starting with `indent`.
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
