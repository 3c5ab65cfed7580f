//! `course handout DIR`: the copy of the course a student is given.
//!
//! It is the project without `solutions/` and without the maintainers' own
//! tests and CI: the stages still build and run against `lessons/` (they
//! name the solution binaries with `option_env!`, so none need exist), the
//! board still works, and `Cargo.toml` loses every binary built from
//! `solutions/`. The slides keep every heading a stage or a TODO names, but
//! no answer: a slide marked `<!-- instructor -->` is left out, and a code
//! block that quotes `solutions/` or holds a line of an answer is replaced by
//! the TODO it answers. Last, the copy is searched for every line of
//! every answer, and the handout is refused if one is found.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::commands::files::{course_files, files_below};
use crate::commands::slides;
use crate::harness::lesson::LESSONS;

/// Top-level folders a student's copy leaves out: version control, build
/// output, the answers, and the maintainers' CI and bench peers (both
/// measure `solutions/`).
const LEFT_OUT: [&str; 5] = [".git", "target", "solutions", ".ci", "bench"];

/// The tallest a slide may be estimated (`slides::estimated_height`) with a
/// TODO quoted in it: the screen's 720 px (the estimate errs high).
const FITS: f64 = 720.0;

/// The marker of a slide that is the instructor's alone.
pub const INSTRUCTOR_MARK: &str = "<!-- instructor -->";

/// What a handout holds, for the command's summary.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub bins_dropped: Vec<String>,
    pub tests_dropped: Vec<String>,
    pub slides_left_out: Vec<String>,
    pub code_blocks_replaced: usize,
    /// Files in the course's folder that git does not track, left out.
    pub untracked_left_out: Vec<String>,
}

/// Write the student's copy of the course at `project` into `dir`, which
/// must not exist yet or be empty.
pub fn write(project: &Path, dir: &Path) -> Result<Summary> {
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!("{} is not empty: give a new folder", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (project, dir) = (&project.canonicalize()?, &dir.canonicalize()?);
    if dir.starts_with(project) {
        // The copy would copy itself.
        std::fs::remove_dir(dir)?;
        bail!(
            "{} is inside the course itself: give a folder outside it",
            dir.display()
        );
    }
    let answers = answer_lines(project)?;
    let mut summary = Summary::default();
    let course = student_course(project, &mut summary)?;
    for file in course.files {
        let relative = file.strip_prefix(project).expect("below the project");
        let target = dir.join(relative);
        std::fs::create_dir_all(target.parent().expect("a file has a folder"))?;
        let text = std::fs::read_to_string(&file).ok();
        let name = relative.to_string_lossy().replace('\\', "/");
        match (name.as_str(), text) {
            ("Cargo.toml", _) => std::fs::write(&target, &course.manifest)?,
            ("README.md", Some(text)) => std::fs::write(&target, student_readme(&text))?,
            (name, Some(text)) if name.starts_with("slides/") && name.ends_with(".md") => {
                let deck = student_slides(project, name, &text, &answers, &mut summary);
                std::fs::write(&target, deck)?;
            }
            _ => {
                std::fs::copy(&file, &target)
                    .with_context(|| format!("cannot copy {}", file.display()))?;
            }
        }
        summary.files += 1;
    }

    let found = leaks(dir, &answers)?;
    if !found.is_empty() {
        bail!(
            "the handout in {} still holds answers, so it must not be given out:\n{}",
            dir.display(),
            found.join("\n")
        );
    }
    Ok(summary)
}

/// What a student's copy of the course is made of.
pub struct StudentCourse {
    /// Full paths, sorted: the files git tracks, but for the answers, the
    /// maintainers' CI, bench peers and tests.
    pub files: Vec<PathBuf>,
    /// What its `Cargo.toml` says instead: no binary built from
    /// `solutions/`, no test that is not a lesson's stages.
    pub manifest: String,
}

/// The files of a student's copy of the course at `project`, and its
/// manifest. The handout rewrites some of them (the slides, the README);
/// `grade --checkout` builds them as they are, with a student's lessons.
pub fn student_course(project: &Path, summary: &mut Summary) -> Result<StudentCourse> {
    let manifest = std::fs::read_to_string(project.join("Cargo.toml"))?;
    let manifest = student_manifest(&manifest, summary);
    let kept_tests: Vec<PathBuf> = kept_test_paths(&manifest);
    let course = course_files(project)?;
    summary.untracked_left_out = course.untracked;
    let files = course
        .files
        .into_iter()
        .filter(|file| {
            let relative = file.strip_prefix(project).expect("below the project");
            let first = relative.components().next().map(|c| c.as_os_str());
            let left_out = first.is_some_and(|first| LEFT_OUT.iter().any(|left| first == *left));
            let a_maintainers_test =
                relative.starts_with("tests") && !is_kept_test_file(relative, &kept_tests, project);
            !left_out && !a_maintainers_test
        })
        .collect();
    Ok(StudentCourse { files, manifest })
}

/// The folders every handout holds, whatever they say: the starters, and the
/// course's tooling that builds and grades them.
const GIVEN: [&str; 3] = ["lessons", "src", "tests"];

/// Every line of an answer: each line of a solution file that stands in no
/// file of `GIVEN`, leaving out lines too plain to give anything away
/// (`}`, `break;`, `Ok(())`). A later lesson's starter may hold an earlier
/// lesson's answer (each lesson is whole on its own), and a tool may speak
/// a lesson's protocol (`course push-bench` acknowledges as lesson 07's
/// device does): what the handout must hold is given out anyway. Keyed by
/// the line without its indentation (a method chain's lines joined, see
/// `statements`), valued by where it stands
/// (`solutions/01-echo/server.rs:12`).
pub fn answer_lines(project: &Path) -> Result<BTreeMap<String, String>> {
    let mut answers = BTreeMap::new();
    let solutions = project.join("solutions");
    if !solutions.is_dir() {
        return Ok(answers);
    }
    let given: BTreeSet<String> = GIVEN
        .iter()
        .flat_map(|folder| files_below(&project.join(folder), project).unwrap_or_default())
        .filter_map(|file| std::fs::read_to_string(file).ok())
        .flat_map(|text| statements(&text).into_iter().map(|(_, line)| line))
        .collect();
    for file in files_below(&solutions, &solutions)? {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file
            .strip_prefix(project)
            .unwrap_or(&file)
            .to_string_lossy()
            .replace('\\', "/");
        for (number, line) in statements(&text) {
            if !is_plain(&line) && !given.contains(&line) {
                answers
                    .entry(line)
                    .or_insert_with(|| format!("{name}:{number}"));
            }
        }
    }
    Ok(answers)
}

/// The lines of a text without their indentation, each with its line
/// number, a line that continues a method chain (`.context(...)?;`) joined
/// to the one before: `stream.shutdown(Shutdown::Write)` is an answer where
/// `.shutdown(Shutdown::Write)` alone is any program's.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut found: Vec<(usize, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        match found.last_mut() {
            Some((_, last)) if line.starts_with('.') || line.starts_with('?') => {
                last.push_str(line)
            }
            _ => found.push((index + 1, line.to_string())),
        }
    }
    found
}

/// A line too plain to be an answer on its own: a few words (`}`,
/// `return false;`), or the opening of a block or a call whose substance is
/// on the lines after it (`match next {`, `let request = format!(`).
fn is_plain(line: &str) -> bool {
    line.chars().filter(|c| c.is_alphanumeric()).count() < 12
        || line.ends_with('{')
        || line.ends_with('(')
}

/// Each line of a text file below `dir` that is a line of an answer, as
/// `path:line: text (the answer at solutions/...)`.
pub fn leaks(dir: &Path, answers: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for file in files_below(dir, dir)? {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = file.strip_prefix(dir).unwrap_or(&file).display();
        for (number, line) in statements(&text) {
            if let Some(origin) = answers.get(&line) {
                found.push(format!(
                    "  {name}:{number}: {line} (the answer at {origin})"
                ));
            }
        }
    }
    Ok(found)
}

/// `Cargo.toml` without the binaries built from `solutions/` and without the
/// tests that are not a lesson's stages. Every other line stays as it is.
fn student_manifest(manifest: &str, summary: &mut Summary) -> String {
    let lesson_tests: Vec<String> = LESSONS.iter().map(|lesson| lesson.test_target()).collect();
    let lines: Vec<&str> = manifest.lines().collect();
    let mut kept = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let header = lines[index].trim();
        if header == "[[bin]]" || header == "[[test]]" {
            // The table's own lines: up to a blank line or the next table.
            let end = (index + 1..lines.len())
                .find(|&at| lines[at].trim().is_empty() || lines[at].trim_start().starts_with('['))
                .unwrap_or(lines.len());
            let value = |key: &str| {
                lines[index + 1..end].iter().find_map(|line| {
                    let (name, value) = line.split_once('=')?;
                    (name.trim() == key).then(|| value.trim().trim_matches('"').to_string())
                })
            };
            let name = value("name").unwrap_or_default();
            let path = value("path").unwrap_or_default();
            let dropped = if header == "[[bin]]" {
                path.starts_with("solutions/")
                    .then_some(&mut summary.bins_dropped)
            } else {
                (!lesson_tests.contains(&name)).then_some(&mut summary.tests_dropped)
            };
            if let Some(list) = dropped {
                list.push(name);
                // A comment just above the table speaks of it alone.
                while kept
                    .last()
                    .is_some_and(|line: &&str| line.trim_start().starts_with('#'))
                {
                    kept.pop();
                }
                // The blank line after the table goes with it.
                index = if lines.get(end).is_some_and(|line| line.trim().is_empty()) {
                    end + 1
                } else {
                    end
                };
                continue;
            }
        }
        kept.push(lines[index]);
        index += 1;
    }
    kept.join("\n") + "\n"
}

/// The paths of the `[[test]]` tables a manifest keeps.
fn kept_test_paths(manifest: &str) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut in_test = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_test = line == "[[test]]";
        } else if let Some((key, value)) = line.split_once('=') {
            if in_test && key.trim() == "path" {
                paths.push(PathBuf::from(value.trim().trim_matches('"')));
            }
        }
    }
    paths
}

/// A file below `tests/` goes into the handout when it is a kept suite, or
/// lies in a folder of `tests/` that a kept suite names (its fixtures).
fn is_kept_test_file(relative: &Path, kept: &[PathBuf], project: &Path) -> bool {
    if kept.iter().any(|path| path == relative) {
        return true;
    }
    let mut parts = relative.components().skip(1);
    let (Some(folder), Some(_)) = (parts.next(), parts.next()) else {
        return false;
    };
    let folder = format!("tests/{}", folder.as_os_str().to_string_lossy());
    kept.iter().any(|path| {
        std::fs::read_to_string(project.join(path)).is_ok_and(|text| text.contains(&folder))
    })
}

/// The README, with a word at the top on what this copy is.
fn student_readme(text: &str) -> String {
    let note = "> This is the student's copy of the course, made by `course handout`: the \
                reference solutions stay with your instructor, so `COURSE_TARGET=solutions` \
                has nothing to run here. Your code is in `lessons/`.\n";
    match text.split_once("\n\n") {
        Some((title, rest)) => format!("{title}\n\n{note}\n{rest}"),
        None => format!("{text}\n\n{note}"),
    }
}

/// A deck without answers: instructor slides left out, and every code block
/// that quotes `solutions/` or holds a line of an answer replaced by the
/// exercise it answers.
fn student_slides(
    project: &Path,
    name: &str,
    text: &str,
    answers: &BTreeMap<String, String>,
    summary: &mut Summary,
) -> String {
    let lesson = name
        .trim_start_matches("slides/")
        .trim_end_matches(".md")
        .to_string();
    let (front_matter, deck) = slides::split(text);
    let mut kept = Vec::new();
    for (index, slide) in deck.iter().enumerate() {
        if slide.text.contains(INSTRUCTOR_MARK) {
            summary
                .slides_left_out
                .push(format!("{name}, \"{}\"", slide.title(index + 1)));
            continue;
        }
        let title = slide.title(index + 1);
        let mut replaced = 0;
        let mut student = |quote_todo| {
            let mut count = 0;
            let text = without_answers(
                project,
                &slide.text,
                &title,
                &lesson,
                answers,
                quote_todo,
                &mut count,
            );
            replaced = count;
            text
        };
        // The TODO is quoted where the slide still fits its screen with it.
        let with_todo = student(true);
        let text = if slides::estimated_height(&with_todo) <= FITS {
            with_todo
        } else {
            student(false)
        };
        summary.code_blocks_replaced += replaced;
        kept.push(text);
    }
    let mut deck = front_matter;
    deck.push_str(&kept.join("\n---\n"));
    deck.push('\n');
    deck
}

/// A slide's text with each answering code block replaced.
fn without_answers(
    project: &Path,
    text: &str,
    title: &str,
    lesson: &str,
    answers: &BTreeMap<String, String>,
    quote_todo: bool,
    replaced: &mut usize,
) -> String {
    let mut out = String::new();
    // Whether the slide already shows the TODO it answers.
    let mut asked = false;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let fence = line.trim_start();
        if !(fence.starts_with("```") || fence.starts_with("~~~")) {
            let _ = writeln!(out, "{line}");
            continue;
        }
        let marker = &fence[..3];
        let mut block = vec![line];
        for inner in lines.by_ref() {
            block.push(inner);
            if inner.trim_start().starts_with(marker) {
                break;
            }
        }
        let quote = slides::quotes(&block.join("\n")).into_iter().next();
        let holds_answer = statements(&block.join("\n"))
            .iter()
            .any(|(_, line)| answers.contains_key(line));
        let from_solutions = quote
            .as_ref()
            .and_then(|quote| Some((quote, quote.file.strip_prefix("solutions/")?)));
        if let (Some((quote, file)), false) = (from_solutions, holds_answer) {
            // A quote of what the starter holds too is no answer: it stays,
            // named by the student's file, when it stands there.
            let starter = format!("lessons/{file}");
            let stands = std::fs::read_to_string(project.join(&starter))
                .is_ok_and(|text| slides::check(quote, &text).is_ok());
            if stands {
                for line in block {
                    let _ = writeln!(out, "{}", line.replacen(&quote.file, &starter, 1));
                }
                continue;
            }
        }
        if from_solutions.is_some() || holds_answer {
            *replaced += 1;
            let starter = match from_solutions {
                Some((_, file)) => format!("lessons/{file}"),
                None => format!("lessons/{lesson}/"),
            };
            out.push_str(&exercise(
                project,
                lesson,
                title,
                &starter,
                quote_todo && !asked,
            ));
            asked = true;
        } else {
            for line in block {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    // The slide's text had no final newline of its own.
    if !text.ends_with('\n') {
        out.pop();
    }
    out
}

/// What stands in a slide for the code that answers a TODO: the question
/// itself, the starter's TODO comment that names this slide, when `quote_todo`
/// and there is one; else a word on which TODO of `starter` (a file, or the
/// lesson's folder) asks for it.
fn exercise(project: &Path, lesson: &str, title: &str, starter: &str, quote_todo: bool) -> String {
    let folder = project.join("lessons").join(lesson);
    let named = format!("slides/{lesson}.md, \"{title}\"");
    let mut numbers = Vec::new();
    let mut naming = Vec::new();
    for file in files_below(&folder, &folder).unwrap_or_default() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let name = format!(
            "lessons/{lesson}/{}",
            file.strip_prefix(&folder)
                .unwrap_or(&file)
                .to_string_lossy()
                .replace('\\', "/")
        );
        let lines: Vec<&str> = text.lines().collect();
        for (index, line) in lines.iter().enumerate() {
            let comment = ["//", "#"]
                .into_iter()
                .find(|marker| line.trim_start().starts_with(marker));
            let Some(comment) = comment else { continue };
            let Some(todo) = line.split("TODO ").nth(1) else {
                continue;
            };
            if quote_todo && line.contains(&named) {
                // The TODO's comment: this line, and the comment lines after it.
                let block: Vec<&str> = lines[index..]
                    .iter()
                    .take_while(|line| line.trim_start().starts_with(comment))
                    .enumerate()
                    .take_while(|(at, line)| *at == 0 || !line.contains("TODO "))
                    .map(|(_, line)| *line)
                    .collect();
                let language = if name.ends_with(".py") {
                    "python"
                } else {
                    "rust"
                };
                return format!(
                    "```{language}\n{comment} {name}\n{}\n```\n\n**Your turn**: the code \
                     this slide explains is the answer to this TODO.\n",
                    block.join("\n")
                );
            }
            let in_starter = name == starter || name.starts_with(starter);
            let number: String = todo.chars().take_while(char::is_ascii_digit).collect();
            if in_starter && !number.is_empty() && !numbers.contains(&number) {
                numbers.push(number.clone());
            }
            if in_starter
                && line.contains(&named)
                && !naming.contains(&number)
                && !number.is_empty()
            {
                naming.push(number);
            }
        }
    }
    // The TODOs that send the student to this very slide say best which one
    // asks for its code; without one, every TODO of the file might.
    let mut numbers = if naming.is_empty() { numbers } else { naming };
    numbers.sort_by_key(|number| number.parse::<u32>().unwrap_or(u32::MAX));
    let which = match numbers.as_slice() {
        [] => "a TODO".to_string(),
        [one] => format!("TODO {one}"),
        [first @ .., last] => format!("TODO {} or {last}", first.join(", ")),
    };
    format!(
        "> **Your turn.** The code for this slide is yours to write: {which} in \
         `{starter}` asks for it. The stages tell you when it works.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "[package]\nname = \"x\"\n\n# Lesson 01: echo\n[[bin]]\nname = \"01-echo\"\npath = \"lessons/01-echo/main.rs\"\ntest = false\n\n[[bin]]\nname = \"01-echo-solution\"\npath = \"solutions/01-echo/main.rs\"\ntest = false\n\n[[test]]\nname = \"01_echo\"\npath = \"tests/01_echo.rs\"\n\n# Checks\n[[test]]\nname = \"slides\"\npath = \"tests/slides.rs\"\n\n[dependencies]\nanyhow = \"1\"\n";

    #[test]
    fn the_manifest_loses_solution_binaries_and_maintainer_tests_only() {
        let mut summary = Summary::default();
        let manifest = student_manifest(MANIFEST, &mut summary);
        assert_eq!(summary.bins_dropped, ["01-echo-solution"]);
        assert_eq!(summary.tests_dropped, ["slides"]);
        assert!(!manifest.contains("solutions/"), "{manifest}");
        assert!(manifest.contains("# Lesson 01: echo\n[[bin]]\nname = \"01-echo\""));
        assert!(manifest.contains("path = \"tests/01_echo.rs\"\n\n[dependencies]"));
        assert_eq!(
            kept_test_paths(&manifest),
            [PathBuf::from("tests/01_echo.rs")]
        );
    }

    #[test]
    fn answers_leave_slides_but_headings_and_other_code_stay() {
        let answers = BTreeMap::from([(
            "stream.write_all(&buffer[..count])?;".to_string(),
            "solutions/01-echo/server.rs:9".to_string(),
        )]);
        let deck = "---\nmarp: true\n---\n\n# Keep\n\n```rust\n// lessons/01-echo/server.rs\nfn main() {}\n```\n\n---\n\n# Quoted\n\n```rust\n// solutions/01-echo/server.rs\nlet n = 1;\n```\n\n---\n\n# Free\n\n```rust\n    stream.write_all(&buffer[..count])?;\n```\n\n---\n\n# Answer key\n\n<!-- instructor -->\n";
        // A project whose starter asks, in a TODO, for the quoted slide.
        let project = std::env::temp_dir().join(format!("handout-unit-{}", std::process::id()));
        std::fs::create_dir_all(project.join("lessons/01-echo")).unwrap();
        let todo = "    // TODO 2 (slides/01-echo.md, \"Quoted\"): set `n`.\n    // One line.\n";
        std::fs::write(
            project.join("lessons/01-echo/server.rs"),
            format!("fn main() {{\n{todo}    let n = 0;\n}}\n"),
        )
        .unwrap();
        let mut summary = Summary::default();
        let out = student_slides(&project, "slides/01-echo.md", deck, &answers, &mut summary);
        std::fs::remove_dir_all(&project).unwrap();
        assert_eq!(summary.code_blocks_replaced, 2);
        assert_eq!(
            summary.slides_left_out,
            ["slides/01-echo.md, \"Answer key\""]
        );
        assert!(out.starts_with("---\nmarp: true\n---\n\n# Keep\n"), "{out}");
        assert!(out.contains("fn main() {}"));
        assert!(
            out.contains(&format!(
                "# Quoted\n\n```rust\n// lessons/01-echo/server.rs\n{todo}```"
            )),
            "{out}"
        );
        assert!(
            out.contains("TODO 2 in `lessons/01-echo/` asks for it"),
            "{out}"
        );
        assert!(!out.contains("write_all") && !out.contains("let n = 1"));
        assert!(!out.contains("Answer key"));
        assert_eq!(slides::split(&out).1.len(), 3);
    }

    #[test]
    fn a_slide_too_full_for_its_todo_names_the_todo_that_sends_students_to_it() {
        let project = std::env::temp_dir().join(format!("handout-todo-{}", std::process::id()));
        std::fs::create_dir_all(project.join("lessons/01-echo")).unwrap();
        std::fs::write(
            project.join("lessons/01-echo/server.rs"),
            "// TODO 1 (slides/01-echo.md, \"bind\"): bind.\n\
             // TODO 5 (slides/01-echo.md, \"Zero copies\"), once every stage passes.\n\
             // TODO 2 (slides/01-echo.md, \"A read\"): read.\n",
        )
        .unwrap();
        let starter = "lessons/01-echo/server.rs";
        let named = exercise(&project, "01-echo", "Zero copies", starter, false);
        let unnamed = exercise(&project, "01-echo", "Elsewhere", starter, false);
        std::fs::remove_dir_all(&project).unwrap();
        assert!(
            named.contains("TODO 5 in `lessons/01-echo/server.rs` asks for it"),
            "{named}"
        );
        // No TODO names the slide: each of the file's, in the order a
        // student meets them.
        assert!(
            unnamed.contains("TODO 1, 2 or 5 in `lessons/01-echo/server.rs`"),
            "{unnamed}"
        );
    }
}
