//! The slides never drift from the code: every quote in a slide stands in the
//! file it names, and every slide that a stage, a hint or a TODO sends a
//! student to is a heading that exists.

use std::path::{Path, PathBuf};

use course::commands::slides;
use course::harness::lesson::LESSONS;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file below `folder` whose name ends in one of `endings`.
fn files_below(folder: &Path, endings: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_below(&path, endings));
        } else if endings
            .iter()
            .any(|ending| path.to_string_lossy().ends_with(ending))
        {
            found.push(path);
        }
    }
    found.sort();
    found
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

#[test]
fn every_lesson_has_slides_in_marp_form_that_quote_its_code() {
    let mut problems = Vec::new();
    for lesson in LESSONS {
        let file = lesson.slides();
        let Ok(text) = slides::read(root(), &file) else {
            problems.push(format!("{file} is missing"));
            continue;
        };
        if !text.starts_with("---\nmarp: true\n") {
            problems.push(format!("{file} does not open with Marp front matter"));
        }
        let quoted = slides::quotes(&text);
        if !quoted
            .iter()
            .any(|quote| quote.file.contains(&lesson.name()))
        {
            problems.push(format!("{file} quotes no file of lesson {}", lesson.name()));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_quote_stands_in_the_file_it_names() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for slide_file in files_below(&root().join("slides"), &[".md"]) {
        let text = std::fs::read_to_string(&slide_file).unwrap();
        for quote in slides::quotes(&text) {
            checked += 1;
            let result =
                slides::read(root(), &quote.file).and_then(|source| slides::check(&quote, &source));
            if let Err(problem) = result {
                problems.push(format!("{}: {problem}", relative(&slide_file)));
            }
        }
    }
    assert!(checked > 0, "no slide quotes any file");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn every_slide_named_in_code_is_a_heading() {
    let mut problems = Vec::new();
    let mut named = 0;
    let heading_exists = |file: &str, heading: &str| {
        slides::read(root(), file)
            .map(|text| slides::headings(&text).iter().any(|h| h == heading))
            .unwrap_or(false)
    };
    let sources = ["lessons", "solutions", "tests"]
        .iter()
        .flat_map(|folder| files_below(&root().join(folder), &[".rs", ".py", ".md"]));
    for path in sources {
        let text = std::fs::read_to_string(&path).unwrap();
        for (file, heading) in slides::references(&text) {
            named += 1;
            if !heading_exists(&file, &heading) {
                problems.push(format!(
                    "{} sends students to {file}, \"{heading}\", which is not a heading there",
                    relative(&path)
                ));
            }
        }
    }
    // A stage's `slide:` names a heading of its own lesson's slides.
    for lesson in LESSONS {
        let test_file = format!("tests/{}.rs", lesson.test_target());
        let Ok(text) = slides::read(root(), &test_file) else {
            problems.push(format!("{test_file} is missing"));
            continue;
        };
        for line in text.lines() {
            let line = line.trim();
            let Some(rest) = line.strip_prefix("slide: \"").or_else(|| {
                line.find(".slide(\"")
                    .map(|at| &line[at + ".slide(\"".len()..])
            }) else {
                continue;
            };
            let heading = rest.split('"').next().unwrap_or_default();
            named += 1;
            if !heading_exists(&lesson.slides(), heading) {
                problems.push(format!(
                    "{test_file} names the slide \"{heading}\", which is not a heading of {}",
                    lesson.slides()
                ));
            }
        }
    }
    assert!(named > 0, "no code names a slide");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The tallest a slide may be estimated (`slides::estimated_height`) before
/// it is sent back: the screen is 720 px, and the estimate errs high by
/// about 40 px where code blocks are wide (`.ci/slides-fit` measures the
/// real slide in a browser).
const TALLEST_ESTIMATE: f64 = 760.0;

#[test]
fn every_slide_fits_its_screen_by_estimate() {
    let mut problems = Vec::new();
    let mut measured = 0;
    for slide_file in files_below(&root().join("slides"), &[".md"]) {
        let text = std::fs::read_to_string(&slide_file).unwrap();
        for (index, slide) in slides::split(&text).1.iter().enumerate() {
            measured += 1;
            let height = slides::estimated_height(&slide.text);
            if height > TALLEST_ESTIMATE {
                problems.push(format!(
                    "{}: slide {} (\"{}\", line {}) is about {height:.0} px tall on a 720 px \
                     screen: split it, or quote less code (`// ...` skips lines)",
                    relative(&slide_file),
                    index + 1,
                    slide.title(index + 1),
                    slide.line
                ));
            }
        }
    }
    assert!(measured > 0, "no slides found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_content_slide_has_speaker_notes() {
    let mut problems = Vec::new();
    for slide_file in files_below(&root().join("slides"), &[".md"]) {
        let text = std::fs::read_to_string(&slide_file).unwrap();
        for (index, slide) in slides::split(&text).1.iter().enumerate() {
            // A slide of a heading alone divides the deck: there is nothing
            // on it to speak to.
            let content = slide
                .text
                .lines()
                .any(|line| !line.trim().is_empty() && !line.starts_with('#'));
            if content && slides::notes(&slide.text).is_empty() {
                problems.push(format!(
                    "{}: slide {} (\"{}\", line {}) has no speaker notes: add what to say \
                     as an HTML comment, <!-- ... -->",
                    relative(&slide_file),
                    index + 1,
                    slide.title(index + 1),
                    slide.line
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
