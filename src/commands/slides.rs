//! Slides that never drift from the code.
//!
//! A code block in a slide quotes a file when its first line is a comment
//! naming that file:
//!
//! ````markdown
//! ```rust
//! // solutions/01-echo/server.rs
//! let count = stream.read(&mut buffer)?;
//! if count == 0 {
//!     break;
//! }
//! ```
//! ````
//!
//! The lines after it must stand in that file, one after another (the quote
//! may be indented less or more than the file, as a whole). A line holding
//! only `// ...` (or `# ...`) skips: the parts before and after it must each
//! stand in the file, in that order. `tests/slides.rs` checks every quote of
//! every slide, and that every slide a stage or a TODO names is a heading.

use std::path::Path;

/// A code block that quotes a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The line of the slide file where the block starts (1-based).
    pub line: usize,
    /// The quoted file, relative to the project.
    pub file: String,
    /// The quoted parts, each a run of consecutive lines.
    pub parts: Vec<Vec<String>>,
}

/// Comment markers that may name a file on a block's first line.
const COMMENTS: [&str; 3] = ["// ", "# ", "<!-- "];

/// The quotes in a slide file's text.
pub fn quotes(markdown: &str) -> Vec<Quote> {
    let mut found = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(fence) = opening_fence(line) else {
            continue;
        };
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, line)| line)
            .take_while(|line| !line.trim_start().starts_with(fence))
            .collect();
        let Some(file) = body.first().and_then(|first| named_file(first)) else {
            continue;
        };
        let mut parts = vec![Vec::new()];
        for line in &body[1..] {
            if is_skip(line) {
                parts.push(Vec::new());
            } else {
                parts
                    .last_mut()
                    .expect("never empty")
                    .push(line.to_string());
            }
        }
        parts.retain(|part| part.iter().any(|line| !line.trim().is_empty()));
        found.push(Quote {
            line: index + 1,
            file,
            parts,
        });
    }
    found
}

fn opening_fence(line: &str) -> Option<&'static str> {
    let line = line.trim_start();
    ["```", "~~~"]
        .into_iter()
        .find(|fence| line.starts_with(fence))
}

/// `// solutions/01-echo/server.rs` → the path, if it names a project file.
fn named_file(first_line: &str) -> Option<String> {
    let line = first_line.trim();
    let rest = COMMENTS
        .iter()
        .find_map(|comment| line.strip_prefix(comment))?;
    let path = rest.trim_end_matches("-->").trim();
    let is_project_file = ["lessons/", "solutions/", "src/", "tests/"]
        .iter()
        .any(|folder| path.starts_with(folder))
        && !path.contains(' ');
    is_project_file.then(|| path.to_string())
}

fn is_skip(line: &str) -> bool {
    matches!(line.trim(), "// ..." | "# ..." | "..." | "// …" | "# …")
}

/// Check a quote against the text of the file it names: each part must stand
/// in it as consecutive lines, in order. The error says which part is missing.
pub fn check(quote: &Quote, source: &str) -> Result<(), String> {
    let source: Vec<&str> = source.lines().collect();
    let mut from = 0;
    for part in &quote.parts {
        match find_part(part, &source, from) {
            Some(end) => from = end,
            None => {
                return Err(format!(
                    "the quote at line {} no longer stands in {}; this line of it is not \
                     there (where the lines before it are):\n    {}",
                    quote.line,
                    quote.file,
                    first_missing_line(part, &source, from).trim()
                ))
            }
        }
    }
    Ok(())
}

/// Where `part` stands in `source` at or after line `from`, as a whole
/// shifted by the same indentation; the line after it.
fn find_part(part: &[String], source: &[&str], from: usize) -> Option<usize> {
    let part = trim_blank_ends(part);
    if part.is_empty() {
        return Some(from);
    }
    let wanted = dedent(part);
    (from..source.len().saturating_sub(part.len() - 1)).find_map(|start| {
        let window: Vec<String> = source[start..start + part.len()]
            .iter()
            .map(|line| line.to_string())
            .collect();
        (dedent(&window) == wanted).then_some(start + part.len())
    })
}

/// The first line of `part` that stands nowhere after the longest run of its
/// leading lines that does: the line a maintainer must look at.
fn first_missing_line<'a>(part: &'a [String], source: &[&str], from: usize) -> &'a str {
    let part = trim_blank_ends(part);
    let longest = (1..=part.len())
        .take_while(|&len| find_part(&part[..len], source, from).is_some())
        .last()
        .unwrap_or(0);
    part.get(longest).map(String::as_str).unwrap_or("")
}

fn trim_blank_ends(lines: &[String]) -> &[String] {
    let start = lines
        .iter()
        .position(|line| !line.trim().is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|line| !line.trim().is_empty())
        .map_or(start, |last| last + 1);
    &lines[start..end]
}

/// Lines without the indentation they share, and without trailing spaces.
fn dedent(lines: &[String]) -> Vec<String> {
    let shared = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|line| line.get(shared..).unwrap_or("").trim_end().to_string())
        .collect()
}

/// The headings of a slide file (`# A heading` → `A heading`), outside code.
pub fn headings(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut found = Vec::new();
    for line in markdown.lines() {
        if opening_fence(line).is_some() {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let text = line.trim_start_matches('#');
        if text.len() < line.len() && text.starts_with(' ') {
            found.push(text.trim().to_string());
        }
    }
    found
}

/// The slides named in a text as `slides/NN-name.md, "Heading"`: each is a
/// slide file and the heading to read there.
pub fn references(text: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("slides/") {
        rest = &rest[start..];
        let Some(end) = rest.find(".md") else { break };
        let file = rest[..end + 3].to_string();
        let after = rest[end + 3..].trim_start_matches([',', ' ']);
        if let Some(quoted) = after
            .strip_prefix('"')
            .or_else(|| after.strip_prefix("\\\""))
        {
            if let Some(close) = quoted.find('"') {
                let heading = quoted[..close].trim_end_matches('\\').to_string();
                let name = &file["slides/".len()..file.len() - ".md".len()];
                let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
                if !name.is_empty() && name.chars().all(plain) {
                    found.push((file, heading));
                }
            }
        }
        rest = &rest[end + 3..];
    }
    found
}

/// One slide of a deck: the text between two `---` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slide {
    /// The line of the deck where the slide's text starts (1-based).
    pub line: usize,
    /// Its text, without the `---` lines around it.
    pub text: String,
}

impl Slide {
    /// Its first heading, or `slide N` where it has none.
    pub fn title(&self, number: usize) -> String {
        headings(&self.text)
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("slide {number}"))
    }
}

/// A Marp deck split into its front matter (with its `---` lines, empty when
/// there is none) and its slides. A `---` inside a code block is code.
pub fn split(markdown: &str) -> (String, Vec<Slide>) {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut front_matter = String::new();
    let mut start = 0;
    if lines.first() == Some(&"---") {
        if let Some(end) = lines.iter().skip(1).position(|line| *line == "---") {
            front_matter = lines[..end + 2].join("\n") + "\n";
            start = end + 2;
        }
    }
    let mut slides = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut current_start = start;
    let mut in_code = false;
    for (index, line) in lines.iter().enumerate().skip(start) {
        if opening_fence(line).is_some() {
            in_code = !in_code;
        }
        if !in_code && *line == "---" {
            slides.push(Slide {
                line: current_start + 1,
                text: current.join("\n"),
            });
            current.clear();
            current_start = index + 1;
        } else {
            current.push(line);
        }
    }
    slides.push(Slide {
        line: current_start + 1,
        text: current.join("\n"),
    });
    (front_matter, slides)
}

/// How tall a slide is, in pixels, on Marp's default theme at 1280x720,
/// estimated from its Markdown: a quick check that catches most slides
/// that overflow without a browser (`.ci/slides-fit` measures them in one).
///
/// The theme's measures: 78.5 px of padding above and below, a heading 88 px
/// with its margins, a line of text 43.5 px (about 78 characters), a line of
/// code 28.35 px, a table row its cells' text and 14.5 px of padding, 16 px
/// between blocks and 32 px around a code block. Speaker notes take no room.
pub fn estimated_height(slide: &str) -> f64 {
    const TEXT_LINE: f64 = 43.5;
    const CHARACTERS_PER_LINE: usize = 78;
    const CODE_COLUMNS: usize = 73;
    let wrapped =
        |characters: usize| TEXT_LINE * characters.div_ceil(CHARACTERS_PER_LINE).max(1) as f64;
    let mut height = 2.0 * 78.5 - 16.0;
    // The lines of the code block being read.
    let mut code: Vec<&str> = Vec::new();
    let mut in_code = false;
    let mut in_note = false;
    // The characters of the paragraph or list item being read.
    let mut open: Option<usize> = None;
    for line in slide.lines().chain([""]) {
        let trimmed = line.trim();
        if in_note || trimmed.starts_with("<!--") {
            in_note = !trimmed.contains("-->");
            continue;
        }
        if opening_fence(line).is_some() {
            if in_code {
                // Marp scales a block with lines wider than the slide down
                // to fit its width, and so its height with it.
                let widest = code.iter().map(|line| line.chars().count()).max();
                let scale = (CODE_COLUMNS as f64 / widest.unwrap_or(0).max(1) as f64).min(1.0);
                height += 32.0 + 16.0 + 28.35 * code.len() as f64 * scale;
                code.clear();
            }
            in_code = !in_code;
            continue;
        }
        if in_code {
            code.push(line);
            continue;
        }
        let item = is_list_item(trimmed);
        let table_row = trimmed.starts_with('|');
        let starts_block = trimmed.is_empty() || item || table_row || trimmed.starts_with('#');
        if starts_block {
            if let Some(characters) = open.take() {
                height += wrapped(characters);
            }
        }
        let plain = trimmed.replace(['*', '`'], "");
        if trimmed.is_empty() {
        } else if trimmed.starts_with('#') {
            height += 88.0;
        } else if table_row {
            // The line under the header row draws nothing.
            if !trimmed.trim_matches(['|', '-', ':', ' ']).is_empty() {
                let cells: usize = plain.split('|').map(|cell| cell.trim().len()).sum();
                height += 14.5 + wrapped(cells);
            }
        } else if let Some(characters) = open.as_mut() {
            *characters += plain.len() + 1;
        } else {
            if !item {
                height += 16.0;
            }
            open = Some(plain.len());
        }
    }
    height
}

fn is_list_item(line: &str) -> bool {
    let rest = line.trim_start_matches(|c: char| c.is_ascii_digit());
    let numbered = rest.len() < line.len() && rest.starts_with(". ");
    numbered || line.starts_with("- ") || line.starts_with("* ")
}

/// The directives Marp reads from a comment (`<!-- _class: lead -->`).
const MARP_DIRECTIVES: [&str; 16] = [
    "backgroundColor",
    "backgroundImage",
    "backgroundPosition",
    "backgroundRepeat",
    "backgroundSize",
    "class",
    "color",
    "footer",
    "header",
    "headingDivider",
    "lang",
    "paginate",
    "size",
    "style",
    "theme",
    "transition",
];

/// The speaker notes of a slide: its HTML comments, other than Marp's
/// directives (`<!-- _class: lead -->`) and the handout's marks.
pub fn notes(slide: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = slide;
    while let Some(start) = rest.find("<!--") {
        let Some(end) = rest[start..].find("-->") else {
            break;
        };
        let note = rest[start + 4..start + end].trim();
        let directive = note.split_once(':').is_some_and(|(key, _)| {
            MARP_DIRECTIVES.contains(&key.trim().trim_start_matches('_')) && !note.contains('\n')
        });
        if !note.is_empty() && !directive && note != "instructor" {
            found.push(note.to_string());
        }
        rest = &rest[start + end + 3..];
    }
    found
}

/// Read a project file, for the checks.
pub fn read(root: &Path, file: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(file)).map_err(|error| format!("cannot read {file}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLIDE: &str = "# Echo\n\n```rust\n// solutions/x.rs\nlet a = 1;\n// ...\n    b();\n```\n\n```rust\nlet free = 1;\n```\n";

    #[test]
    fn finds_blocks_that_name_a_file() {
        let found = quotes(SLIDE);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].file, "solutions/x.rs");
        assert_eq!(found[0].line, 3);
        assert_eq!(found[0].parts, vec![vec!["let a = 1;"], vec!["    b();"]]);
    }

    #[test]
    fn a_quote_matches_at_any_indentation_with_gaps_between_parts() {
        let quote = &quotes(SLIDE)[0];
        let source = "fn f() {\n    let a = 1;\n    other();\n    b();\n}\n";
        assert_eq!(check(quote, source), Ok(()));
    }

    #[test]
    fn a_changed_line_or_a_wrong_order_is_reported() {
        let quote = &quotes(SLIDE)[0];
        let changed = check(quote, "let a = 2;\nb();\n").unwrap_err();
        assert!(changed.ends_with("\n    let a = 1;"), "{changed}");
        let swapped = check(quote, "b();\nlet a = 1;\n").unwrap_err();
        assert!(swapped.contains("b();"), "{swapped}");
    }

    #[test]
    fn names_the_line_that_drifted_not_the_first_of_the_part() {
        let quote = &quotes("```rust\n// src/x.rs\nfn f() {\n    one();\n    two();\n}\n```\n")[0];
        let drifted = check(quote, "fn f() {\n    one();\n    three();\n}\n").unwrap_err();
        assert!(drifted.ends_with("\n    two();"), "{drifted}");
    }

    #[test]
    fn headings_outside_code_only() {
        let text = "# One\n```\n# not a heading\n```\n## Two words\n#hashtag\n";
        assert_eq!(headings(text), ["One", "Two words"]);
    }

    #[test]
    fn finds_slide_references_in_code_and_comments() {
        let text = r#"// TODO 1 (slides/01-echo.md, "bind, listen, accept"): bind
            "(read slides/01-echo.md, \"connect\")""#;
        assert_eq!(
            references(text),
            [
                ("slides/01-echo.md".into(), "bind, listen, accept".into()),
                ("slides/01-echo.md".into(), "connect".into())
            ]
        );
    }
    #[test]
    fn splits_a_deck_into_slides_after_its_front_matter() {
        let deck = "---\nmarp: true\n---\n\n# One\n\n```\n---\n```\n\n---\n\n# Two\n";
        let (front, slides) = split(deck);
        assert_eq!(front, "---\nmarp: true\n---\n");
        assert_eq!(slides.len(), 2);
        assert_eq!(slides[0].title(1), "One");
        assert!(slides[0].text.contains("```\n---\n```"));
        assert_eq!(
            (slides[1].title(2), slides[1].line),
            ("Two".to_string(), 12)
        );
    }

    #[test]
    fn a_slide_grows_with_its_lines_and_notes_take_no_room() {
        let short = estimated_height("# Title\n\nOne line.\n");
        let noted = estimated_height("# Title\n\nOne line.\n\n<!--\nSay this.\nAnd this.\n-->\n");
        assert_eq!(short, noted);
        let code = format!("# Title\n\n```\n{}```\n", "x\n".repeat(20));
        assert!(
            estimated_height(&code) > 720.0,
            "{}",
            estimated_height(&code)
        );
        // A code block wider than the slide is scaled down, and is shorter.
        let wide = format!(
            "# Title\n\n```\n{}```\n",
            format!("{}\n", "x".repeat(146)).repeat(20)
        );
        assert!(estimated_height(&wide) < estimated_height(&code));
        let long_paragraph = format!("# Title\n\n{}\n", "word ".repeat(200));
        assert!(estimated_height(&long_paragraph) > 720.0);
    }

    #[test]
    fn notes_are_comments_other_than_directives_and_marks() {
        let slide = "# A\n<!-- _class: lead -->\n<!-- instructor -->\n<!--\nSay: this.\n-->\n";
        assert_eq!(notes(slide), ["Say: this."]);
        assert!(notes("# A\n\nNo notes.\n").is_empty());
    }
}
