//! The files a lesson's code makes the compiler read by name: `include!`,
//! `include_str!`, `include_bytes!` and `#[path = "..."]`.
//!
//! The grading copy sits in the course's `target/grading`, inside the
//! checkout that holds `solutions/`. A lesson graded there could name the
//! reference by a relative path, `#[path =
//! "../../../../solutions/01-echo/server.rs"] mod server;`, and be graded
//! with the reference's server: a starter changed by that one line passed 6
//! of lesson 01's 8 stages. So every name a lesson gives the compiler must
//! be a plain path inside its own folder, or the lesson is not graded.
//!
//! The code is read the way the compiler reads it, as far as names go:
//! comments and the insides of strings are passed over, so a comment that
//! says "include" is no such call. What cannot be told plain, a name built
//! by a macro, a raw string, an escape, is refused rather than guessed at.

use std::path::Path;

use anyhow::{Context, Result};

use crate::commands::files::lesson_files_below;

/// The rule that a grade keeps, in a sentence.
pub const OWN_FILES_ONLY: &str = "A lesson is built from the files in its own folder, named \
     plainly (`include_str!(\"page.html\")`, `#[path = \"sub/x.rs\"]`): a path that leaves \
     the folder, or one made by a macro or with an escape, is not graded.";

/// The first line of the lesson `name`, whose files are in `folder`, that
/// makes the compiler read a file outside the folder:
/// `lessons/NAME/FILE:LINE: `the line``.
pub fn first_outside_file_in(folder: &Path, name: &str) -> Result<Option<String>> {
    for file in lesson_files_below(folder)? {
        if file.extension().is_none_or(|ending| ending != "rs") {
            continue;
        }
        let code =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        if let Some((line, text)) = first_outside_file(&String::from_utf8_lossy(&code)) {
            let shown = file.strip_prefix(folder).unwrap_or(&file).display();
            return Ok(Some(format!("lessons/{name}/{shown}:{line}: `{text}`")));
        }
    }
    Ok(None)
}

/// The first place in `code` where the compiler is told to read a file that
/// is not plainly inside the folder of the file: its line number, from 1,
/// and that line. `None` when every name is plain.
pub fn first_outside_file(code: &str) -> Option<(usize, String)> {
    let tokens = tokens(code);
    let at = |index: usize| tokens.get(index).map(|token| &token.kind);
    for (index, token) in tokens.iter().enumerate() {
        let refused = match &token.kind {
            // A macro that reads a file: `include_str!("page.html")`, and
            // nothing else. Named any other way (renamed by `use ... as`,
            // handed to another macro), it could read any file unseen.
            Kind::Ident(name) if READERS.contains(&name.as_str()) => !matches!(
                (at(index + 1), at(index + 2), at(index + 3), at(index + 4)),
                (
                    Some(Kind::Punct('!')),
                    Some(Kind::Punct(open)),
                    Some(Kind::Str(Some(path))),
                    Some(Kind::Punct(close)),
                ) if closes(*open) == Some(*close) && is_inside(path)
            ),
            // `path = ...` inside an attribute (`#[path = "x.rs"]`, and
            // within `#[cfg_attr(..., path = "x.rs")]`): a module's file.
            Kind::Ident(name) if name == "path" && token.in_attribute => {
                matches!(at(index + 1), Some(Kind::Punct('=')))
                    && !matches!(at(index + 2), Some(Kind::Str(Some(path))) if is_inside(path))
            }
            _ => false,
        };
        if refused {
            let line = code.lines().nth(token.line - 1).unwrap_or_default();
            return Some((token.line, line.trim().to_string()));
        }
    }
    None
}

/// The macros that read a file.
const READERS: [&str; 3] = ["include", "include_str", "include_bytes"];

/// A path that stays in the folder of the file that names it: relative, no
/// `..`, and made only of letters, digits and `_ - . /`, so that no escape
/// or odd character can mean something else.
fn is_inside(path: &str) -> bool {
    let plain = path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    plain && !path.is_empty() && !path.starts_with('/') && !path.split('/').any(|part| part == "..")
}

fn closes(open: char) -> Option<char> {
    match open {
        '(' => Some(')'),
        '[' => Some(']'),
        '{' => Some('}'),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    Ident(String),
    /// A string literal: its text when it is a plain `"..."` without
    /// escapes, `None` for any other (raw, byte, escaped).
    Str(Option<String>),
    Punct(char),
}

struct Token {
    kind: Kind,
    /// The line it starts on, from 1.
    line: usize,
    /// Whether it stands inside an attribute, `#[...]` or `#![...]`.
    in_attribute: bool,
}

/// Identifiers, string literals and punctuation, without comments,
/// whitespace, numbers, characters or lifetimes.
fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let (mut index, mut line) = (0, 1);
    // The depth of `[` in each attribute open now: the attribute ends at the
    // `]` that brings its depth back to 0.
    let mut attributes: Vec<usize> = Vec::new();
    let peek = |at: usize| chars.get(at).copied().unwrap_or('\0');
    while index < chars.len() {
        let c = chars[index];
        let (start_line, in_attribute) = (line, !attributes.is_empty());
        let push = |kind: Kind, tokens: &mut Vec<Token>| {
            tokens.push(Token {
                kind,
                line: start_line,
                in_attribute,
            })
        };
        if c == '\n' {
            line += 1;
            index += 1;
        } else if c.is_whitespace() {
            index += 1;
        } else if c == '/' && peek(index + 1) == '/' {
            while index < chars.len() && chars[index] != '\n' {
                index += 1;
            }
        } else if c == '/' && peek(index + 1) == '*' {
            // Block comments nest in Rust.
            let mut depth = 0;
            loop {
                match (peek(index), peek(index + 1)) {
                    ('\0', _) => break,
                    ('/', '*') => (depth, index) = (depth + 1, index + 2),
                    ('*', '/') => {
                        (depth, index) = (depth - 1, index + 2);
                        if depth == 0 {
                            break;
                        }
                    }
                    (other, _) => {
                        line += usize::from(other == '\n');
                        index += 1;
                    }
                }
            }
        } else if c == '"' {
            let (text, end, lines) = quoted(&chars, index);
            push(Kind::Str(text), &mut tokens);
            (index, line) = (end, line + lines);
        } else if (c == 'r' || c == 'b') && starts_other_string(&chars, index) {
            let (end, lines) = other_string(&chars, index);
            push(Kind::Str(None), &mut tokens);
            (index, line) = (end, line + lines);
        } else if c == '\'' {
            index = after_char_or_lifetime(&chars, index);
        } else if c.is_alphabetic() || c == '_' {
            let end = (index..chars.len())
                .find(|&at| !(chars[at].is_alphanumeric() || chars[at] == '_'))
                .unwrap_or(chars.len());
            push(Kind::Ident(chars[index..end].iter().collect()), &mut tokens);
            index = end;
        } else if c.is_ascii_digit() {
            while peek(index).is_alphanumeric() || peek(index) == '_' {
                index += 1;
            }
        } else {
            let opens_attribute = c == '#'
                && (peek(index + 1) == '[' || (peek(index + 1) == '!' && peek(index + 2) == '['));
            match c {
                '[' => {
                    if let Some(depth) = attributes.last_mut() {
                        *depth += 1;
                    }
                }
                ']' => {
                    if let Some(depth) = attributes.last_mut() {
                        *depth -= 1;
                        if *depth == 0 {
                            attributes.pop();
                        }
                    }
                }
                _ => {}
            }
            push(Kind::Punct(c), &mut tokens);
            if opens_attribute {
                // Its `[` comes next and counts it to 1.
                attributes.push(0);
            }
            index += 1;
        }
    }
    tokens
}

/// The `"..."` starting at `start`: its text if it holds no escape, where
/// it ends, and how many line breaks it holds.
fn quoted(chars: &[char], start: usize) -> (Option<String>, usize, usize) {
    let (mut index, mut lines, mut escaped) = (start + 1, 0, false);
    while index < chars.len() && chars[index] != '"' {
        match chars[index] {
            '\\' => {
                escaped = true;
                index += 1;
            }
            '\n' => lines += 1,
            _ => {}
        }
        index += 1;
    }
    let text = (!escaped).then(|| chars[start + 1..index.min(chars.len())].iter().collect());
    (text, index + 1, lines)
}

/// Whether a raw or byte string starts at `start`: `r"`, `r#"`, `b"`,
/// `br"`, `br#"`; not an identifier that starts with `r` or `b`, nor a raw
/// identifier (`r#type`).
fn starts_other_string(chars: &[char], start: usize) -> bool {
    let at = |index: usize| chars.get(index).copied().unwrap_or('\0');
    if start > 0 && (chars[start - 1].is_alphanumeric() || chars[start - 1] == '_') {
        return false;
    }
    let mut index = start + usize::from(at(start) == 'b');
    if at(index) == 'r' {
        index += 1;
        while at(index) == '#' {
            index += 1;
        }
    }
    index > start && at(index) == '"'
}

/// Where the raw or byte string at `start` ends, and its line breaks.
fn other_string(chars: &[char], start: usize) -> (usize, usize) {
    let mut index = start;
    while chars[index] != '"' && chars[index] != '#' {
        index += 1;
    }
    let hashes = chars[index..].iter().take_while(|&&c| c == '#').count();
    let raw = chars[start..index].contains(&'r');
    index += hashes + 1;
    let mut lines = 0;
    while index < chars.len() {
        match chars[index] {
            '\\' if !raw => index += 1,
            '\n' => lines += 1,
            '"' if chars[index + 1..].iter().take_while(|&&c| c == '#').count() >= hashes => {
                return (index + 1 + hashes, lines);
            }
            _ => {}
        }
        index += 1;
    }
    (index, lines)
}

/// Past the character literal (`'a'`, `'\n'`, `'\''`) or the lifetime
/// (`'a`) at `start`.
fn after_char_or_lifetime(chars: &[char], start: usize) -> usize {
    let at = |index: usize| chars.get(index).copied().unwrap_or('\0');
    if at(start + 1) == '\\' {
        // Past the backslash and the character it escapes (`'\''`).
        let mut index = start + 3;
        while index < chars.len() && chars[index] != '\'' {
            index += 1;
        }
        index + 1
    } else if at(start + 2) == '\'' {
        start + 3
    } else {
        start + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: &str) -> Option<usize> {
        first_outside_file(code).map(|(line, _)| line)
    }

    #[test]
    fn a_plain_name_inside_the_folder_is_kept() {
        assert_eq!(
            refused(r#"const PAGE: &str = include_str!("page.html");"#),
            None
        );
        assert_eq!(refused("#[path = \"sub/server.rs\"]\nmod server;"), None);
        assert_eq!(refused("include!{\"parts/more.rs\"}"), None);
    }

    #[test]
    fn a_name_out_of_the_folder_is_refused_with_its_line() {
        let reference =
            "mod client;\n#[path = \"../../../../solutions/01-echo/server.rs\"]\nmod server;";
        assert_eq!(
            first_outside_file(reference),
            Some((
                2,
                "#[path = \"../../../../solutions/01-echo/server.rs\"]".to_string()
            ))
        );
        assert_eq!(refused(r#"include_str!("/etc/passwd")"#), Some(1));
        assert_eq!(refused("x\n\ninclude!(\n  \"a/../../b.rs\"\n);"), Some(3));
        assert_eq!(refused("#![cfg_attr(all(), path = \"../x.rs\")]"), Some(1));
    }

    #[test]
    fn a_name_that_is_not_plain_is_refused() {
        // Built by a macro, escaped, raw: what it names cannot be read here.
        assert_eq!(
            refused(r#"include!(concat!(env!("HOME"), "/x.rs"));"#),
            Some(1)
        );
        assert_eq!(refused(r#"include_str!("\x2e\x2e/x")"#), Some(1));
        assert_eq!(refused(r##"include_bytes!(r"x")"##), Some(1));
        assert_eq!(
            refused("macro_rules! m { ($p:literal) => { #[path = $p] mod x; } }"),
            Some(1)
        );
        // Renamed, or handed to another macro to call.
        assert_eq!(refused("use std::include_str as read;"), Some(1));
        assert_eq!(refused("call!(include_str);"), Some(1));
    }

    #[test]
    fn a_lessons_folder_is_searched_file_by_file_and_the_place_named() {
        let folder = std::env::temp_dir().join(format!("named-files-{}", std::process::id()));
        std::fs::create_dir_all(folder.join("parts")).unwrap();
        std::fs::write(folder.join("main.rs"), "mod server;\n").unwrap();
        std::fs::write(folder.join("notes.txt"), "include!(\"../x.rs\")\n").unwrap();
        let clean = first_outside_file_in(&folder, "01-echo").unwrap();
        std::fs::write(
            folder.join("parts/more.rs"),
            "\n#[path = \"../../x.rs\"]\nmod x;\n",
        )
        .unwrap();
        let found = first_outside_file_in(&folder, "01-echo").unwrap();
        std::fs::remove_dir_all(&folder).unwrap();
        // Only Rust files are read: what else a folder holds is not built.
        assert_eq!(clean, None);
        assert_eq!(
            found.as_deref(),
            Some("lessons/01-echo/parts/more.rs:2: `#[path = \"../../x.rs\"]`")
        );
    }

    #[test]
    fn the_courses_own_lessons_and_solutions_name_only_their_files() {
        // A starter refused here would be refused in place of a student's.
        let project = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for folder in ["lessons", "solutions"] {
            let files = crate::commands::files::files_below(&project.join(folder), project)
                .expect("the course's files");
            let code: Vec<_> = files
                .iter()
                .filter(|file| file.extension().is_some_and(|ending| ending == "rs"))
                .collect();
            assert!(code.len() > 20, "{folder}: {code:?}");
            for file in code {
                let text = std::fs::read_to_string(file).expect("a course file");
                assert_eq!(first_outside_file(&text), None, "{}", file.display());
            }
        }
    }

    #[test]
    fn a_file_cut_anywhere_is_read_without_a_panic() {
        // A student's file may end mid-string or mid-comment; the grade of
        // the class goes on.
        let code: Vec<char> = r####"r#"a" br##"b"# b"\" 'x' '\'' 'a /* /* */ #![path = "\"####
            .chars()
            .collect();
        for cut in 0..=code.len() {
            let head: String = code[..cut].iter().collect();
            let tail: String = code[cut..].iter().collect();
            let _ = (first_outside_file(&head), first_outside_file(&tail));
        }
    }

    #[test]
    fn comments_strings_and_other_paths_are_not_names() {
        let code = r##"
            // include the header: include!("../x.rs")
            /* a /* nested */ include_str!("/etc") */
            let path = "/index.html";
            let text = "include!(\"../x\")";
            let raw = r#"#[path = "../x"]"#;
            let c = '"'; let d = '\''; fn f<'a>(x: &'a str) {}
            #[derive(Debug)] struct Path { path: String }
            let t = r#type; let u = b"x";
            "##;
        assert_eq!(refused(code), None);
    }
}
