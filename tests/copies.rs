//! Code that a later lesson carries from an earlier one stays one code: a
//! fix made in one copy must reach every copy.
//!
//! Lesson 04 carries lesson 03's mailbox (its disk, its mailbox, its
//! protocol), so each of those files has four copies: the starter and the
//! solution of each lesson; lesson 06 carries lesson 02's request reader and
//! lesson 05's line cleaner. What may differ, and nothing else:
//!
//! - a starter from its solution, at its TODOs: each place where they differ
//!   must begin, in the starter, with a `// TODO` comment, or follow one with
//!   only comment lines between (the exercise, and the placeholder that
//!   stands for the answer until it is written);
//! - the solution copies from one another, in the file's opening `//!`
//!   comment, which may say which lesson the copy serves.
//!
//! Within one lesson, a starter's file with no TODO is given code: it is its
//! solution's file, whole. And every starter's file mirrors its solution's
//! outside the functions that hold a TODO, but for its opening comment and
//! the `allow` lines that let an unwritten starter build without warnings.

use std::path::Path;

/// Files a later lesson carries from an earlier one.
struct Carried {
    /// The lessons' folders, the first the one the code comes from.
    lessons: &'static [&'static str],
    /// The files, in each lesson's folder.
    files: &'static [&'static str],
    /// The lesson whose exercise these files are, where its starter leaves
    /// whole parts of them to write (TODOs and placeholders among shared
    /// lines): that starter is the exercise, checked by `check-starters`,
    /// not held to mirroring here.
    exercise_in: Option<&'static str>,
}

/// A lesson that carries an earlier lesson's file adds its folder here.
const CARRIED: &[Carried] = &[
    Carried {
        lessons: &["03-messages", "04-concurrency"],
        files: &["disk.rs", "mailbox.rs", "protocol.rs"],
        exercise_in: None,
    },
    // Lesson 06 reads HTTP requests as lesson 02 does, and cleans chat lines
    // as lesson 05 does.
    Carried {
        lessons: &["02-http", "06-web"],
        files: &["request.rs"],
        exercise_in: Some("02-http"),
    },
    Carried {
        lessons: &["05-chat", "06-web"],
        files: &["lines.rs"],
        exercise_in: Some("05-chat"),
    },
];

/// Functions a later lesson carries inside a file of its own: lessons 07
/// and 08 keep their data folders as lesson 03 does, in a `disk.rs` that
/// holds other things too. Their code (comments aside, which speak of each
/// lesson's own data) must stay the same.
struct CarriedFunctions {
    /// Where the functions come from.
    origin: &'static str,
    /// The files that carry them.
    copies: &'static [&'static str],
    functions: &'static [&'static str],
}

const CARRIED_FUNCTIONS: &[CarriedFunctions] = &[CarriedFunctions {
    origin: "solutions/03-messages/disk.rs",
    copies: &[
        "solutions/07-push/disk.rs",
        "lessons/07-push/disk.rs",
        "solutions/08-agent/disk.rs",
        "lessons/08-agent/disk.rs",
    ],
    functions: &["claim", "sync_folder"],
}];

/// The code lines of the function `name` in `lines`, from its `fn` line to
/// the `}` that closes it at the start of a line, without comment lines.
fn function_code(lines: &[String], name: &str) -> Option<Vec<String>> {
    let opening = [format!("fn {name}("), format!("pub fn {name}(")];
    let start = lines.iter().position(|line| {
        opening
            .iter()
            .any(|opening| line.starts_with(opening.as_str()))
    })?;
    let end = start + lines[start..].iter().position(|line| line == "}")?;
    Some(
        lines[start..=end]
            .iter()
            .filter(|line| !line.trim_start().starts_with("//"))
            .cloned()
            .collect(),
    )
}

fn read(path: &str) -> Vec<String> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    match std::fs::read_to_string(&full) {
        Ok(text) => text.lines().map(str::to_string).collect(),
        Err(error) => panic!("{path}: {error}"),
    }
}

/// Where two versions of a file differ: `old[old_start..old_end]` stands
/// where `new` has `new[new_start..new_end]`.
#[derive(Debug, PartialEq)]
struct Hunk {
    old_start: usize,
    old_end: usize,
    new_start: usize,
    new_end: usize,
}

/// The places where `old` and `new` differ, by a longest common subsequence
/// of their lines.
fn differences(old: &[String], new: &[String]) -> Vec<Hunk> {
    // common[i][j]: the longest common subsequence of old[i..] and new[j..].
    let mut common = vec![vec![0u32; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            common[i][j] = if old[i] == new[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let mut hunks = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
            continue;
        }
        let (old_start, new_start) = (i, j);
        while (i < old.len() || j < new.len())
            && !(i < old.len() && j < new.len() && old[i] == new[j])
        {
            if j == new.len() || (i < old.len() && common[i + 1][j] >= common[i][j + 1]) {
                i += 1;
            } else {
                j += 1;
            }
        }
        hunks.push(Hunk {
            old_start,
            old_end: i,
            new_start,
            new_end: j,
        });
    }
    hunks
}

/// A hunk as a student reads a diff: where, then `-` and `+` lines.
fn show(hunk: &Hunk, old_path: &str, old: &[String], new_path: &str, new: &[String]) -> String {
    let mut text = format!(
        "{old_path}:{} against {new_path}:{}",
        hunk.old_start + 1,
        hunk.new_start + 1
    );
    for line in &old[hunk.old_start..hunk.old_end] {
        text.push_str(&format!("\n  - {line}"));
    }
    for line in &new[hunk.new_start..hunk.new_end] {
        text.push_str(&format!("\n  + {line}"));
    }
    text
}

/// Where `lessons/{lesson}/{file}` differs from `solutions/{lesson}/{file}`,
/// shown, at each place `counts` (given the starter's lines) holds against.
fn starter_against_solution(
    lesson: &str,
    file: &str,
    counts: impl Fn(&[String], &Hunk) -> bool,
) -> Vec<String> {
    let starter_path = format!("lessons/{lesson}/{file}");
    let solution_path = format!("solutions/{lesson}/{file}");
    let (starter, solution) = (read(&starter_path), read(&solution_path));
    differences(&starter, &solution)
        .iter()
        .filter(|hunk| counts(&starter, hunk))
        .map(|hunk| show(hunk, &starter_path, &starter, &solution_path, &solution))
        .collect()
}

/// The number of lines of the file's opening `//!` comment.
fn opening_comment(lines: &[String]) -> usize {
    lines
        .iter()
        .take_while(|line| line.starts_with("//!"))
        .count()
}

fn is_todo(line: &str) -> bool {
    line.trim_start().starts_with("// TODO")
}

/// Whether the starter's lines from `start` on belong to a TODO: they begin
/// with a `// TODO` comment, or follow one with only comment lines between
/// (a TODO's text may go on past lines the solution shares, and then comes
/// its placeholder).
fn belongs_to_a_todo(starter: &[String], start: usize) -> bool {
    if starter.get(start).is_some_and(|line| is_todo(line)) {
        return true;
    }
    starter[..start.min(starter.len())]
        .iter()
        .rev()
        .take_while(|line| line.trim_start().starts_with("//"))
        .any(|line| is_todo(line))
}

#[test]
fn each_starter_differs_from_its_solution_only_at_its_todos() {
    let mut problems = Vec::new();
    for carried in CARRIED {
        for lesson in carried.lessons {
            if carried.exercise_in == Some(*lesson) {
                continue;
            }
            for file in carried.files {
                problems.extend(starter_against_solution(lesson, file, |starter, hunk| {
                    // Not at a TODO: a change made on one side only.
                    !(belongs_to_a_todo(starter, hunk.old_start) && hunk.old_end > hunk.old_start)
                }));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "a starter must mirror its solution outside its TODOs (a change made in one must \
         be made in the other), and here they differ where the starter has no `// TODO`:\n\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn the_solutions_copies_are_identical() {
    let mut problems = Vec::new();
    for carried in CARRIED {
        let (origin, later) = carried
            .lessons
            .split_first()
            .expect("code is carried from one lesson to another");
        for file in carried.files {
            let origin_path = format!("solutions/{origin}/{file}");
            let original = read(&origin_path);
            let original_code = &original[opening_comment(&original)..];
            for lesson in later {
                let copy_path = format!("solutions/{lesson}/{file}");
                let copy = read(&copy_path);
                let (original_skipped, copy_skipped) =
                    (opening_comment(&original), opening_comment(&copy));
                for hunk in differences(original_code, &copy[copy_skipped..]) {
                    let hunk = Hunk {
                        old_start: hunk.old_start + original_skipped,
                        old_end: hunk.old_end + original_skipped,
                        new_start: hunk.new_start + copy_skipped,
                        new_end: hunk.new_end + copy_skipped,
                    };
                    problems.push(show(&hunk, &origin_path, &original, &copy_path, &copy));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "lessons that carry the same code must carry the same lines (a fix made in one copy \
         must be made in every copy, starters included), and here they differ:\n\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn carried_functions_keep_the_same_code() {
    let mut problems = Vec::new();
    for carried in CARRIED_FUNCTIONS {
        let origin = read(carried.origin);
        for name in carried.functions {
            let Some(original) = function_code(&origin, name) else {
                problems.push(format!("{}: no fn {name}", carried.origin));
                continue;
            };
            for copy_path in carried.copies {
                let Some(copy) = function_code(&read(copy_path), name) else {
                    problems.push(format!("{copy_path}: no fn {name}"));
                    continue;
                };
                for hunk in differences(&original, &copy) {
                    problems.push(format!(
                        "fn {name}, {}",
                        show(&hunk, carried.origin, &original, copy_path, &copy)
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "a function carried from one lesson to another must keep its code (a fix made in \
         one copy must be made in every copy); line numbers count the function's code \
         lines:\n\n{}",
        problems.join("\n\n")
    );
}

#[test]
fn differences_are_found_where_they_are() {
    let lines = |text: &str| -> Vec<String> { text.lines().map(str::to_string).collect() };
    let old = lines("a\nb\n// TODO 1\nOk(())\nc\nd");
    let new = lines("a\nb\nreal();\nOk(())\nc\nx\nd");
    assert_eq!(
        differences(&old, &new),
        [
            Hunk {
                old_start: 2,
                old_end: 3,
                new_start: 2,
                new_end: 3
            },
            Hunk {
                old_start: 5,
                old_end: 5,
                new_start: 5,
                new_end: 6
            },
        ]
    );
    assert!(differences(&old, &old).is_empty());
    assert_eq!(differences(&old, &[]).len(), 1);
    assert_eq!(opening_comment(&lines("//! one\n//! two\nuse x;")), 2);
}

/// The `.rs` files of one lesson's folder, by name.
fn rust_files(folder: &str) -> Vec<String> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&full)
        .unwrap_or_else(|error| panic!("{folder}: {error}"))
        .map(|entry| entry.expect("a readable folder").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".rs"))
        .collect();
    names.sort();
    names
}

/// A starter's file that asks for nothing is given code (lesson 02's
/// date.rs, lesson 05's server.rs, lesson 09's screen.rs): it is the
/// solution's file, whole, so that what a student was given is what the
/// solution runs. And each lesson has the same files in both.
#[test]
fn a_starter_file_without_a_todo_is_its_solutions_file() {
    let mut problems = Vec::new();
    for lesson in course::harness::lesson::LESSONS {
        let name = lesson.name();
        let (starter_folder, solution_folder) =
            (format!("lessons/{name}"), format!("solutions/{name}"));
        let (starter_files, solution_files) =
            (rust_files(&starter_folder), rust_files(&solution_folder));
        if starter_files != solution_files {
            problems.push(format!(
                "{starter_folder} has {starter_files:?}, {solution_folder} has {solution_files:?}"
            ));
        }
        for file in starter_files
            .iter()
            .filter(|file| solution_files.contains(file))
        {
            // Given code, unless it asks for something: every difference counts.
            problems.extend(starter_against_solution(&name, file, |starter, _| {
                !starter.iter().any(|line| line.contains("TODO"))
            }));
        }
    }
    assert!(
        problems.is_empty(),
        "a starter's file with no TODO is given code and must be its solution's file, whole; \
         here they differ:\n\n{}",
        problems.join("\n\n")
    );
}

/// How far `line` is indented, in characters.
fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether `line` opens a function: `fn`, after any of `pub`,
/// `pub(crate)`, `const`, `async`, `unsafe`.
fn opens_a_function(line: &str) -> bool {
    let mut rest = line.trim_start();
    for qualifier in ["pub(crate) ", "pub ", "const ", "async ", "unsafe "] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest);
    }
    rest.starts_with("fn ")
}

/// Whether the starter's lines `start..end` (or the place before `start`,
/// where the solution adds lines indented by `indented`) lie inside a
/// function of the starter that holds a `// TODO`: an exercise may leave a
/// function's code on both sides of the lines it shares with the answer.
fn inside_a_function_with_a_todo(starter: &[String], start: usize, indented: usize) -> bool {
    // Back to the function that encloses the place: the first line above
    // it that opens a function indented less than the place is.
    let Some(opening) = starter[..start.min(starter.len())]
        .iter()
        .rposition(|line| opens_a_function(line) && indentation(line) < indented)
    else {
        return false;
    };
    let depth = indentation(&starter[opening]);
    // Its body runs to the first `}` as indented as its `fn`.
    let closing = starter[opening + 1..]
        .iter()
        .position(|line| line.trim() == "}" && indentation(line) == depth)
        .map_or(starter.len(), |at| opening + 1 + at);
    closing >= start && starter[opening..closing].iter().any(|line| is_todo(line))
}

/// Whether the starter's lines `start..end` are only what a starter adds so
/// that its unwritten TODOs build without warnings: `#![allow(...)]` and
/// `#[allow(...)] // until TODO n`, the comments above them, blank lines.
fn only_allowances(starter: &[String], start: usize, end: usize) -> bool {
    let mut inside_an_allow = false;
    let mut allows = false;
    for line in &starter[start..end] {
        let line = line.trim();
        if line.starts_with("#![allow(") || line.starts_with("#[allow(") {
            allows = true;
            inside_an_allow = !line.contains(")]");
        } else if inside_an_allow {
            // The lints an attribute over several lines names.
            inside_an_allow = !line.ends_with(")]");
        } else if !(line.is_empty() || line.starts_with("//")) {
            return false;
        }
    }
    allows
}

/// Every file of every starter, beside its solution: they may differ at
/// the TODOs (inside a function that holds one), in the opening `//!`
/// comment (which tells a student where the work is), and in the lines
/// that let an unwritten starter build without warnings. Nowhere else: a
/// fix made in a solution must reach its starter, or the student starts
/// from code the solution no longer is. The exercises whose starters leave
/// whole functions to write (`exercise_in` above) are checked by
/// `check-starters`.
#[test]
fn every_starter_mirrors_its_solution_outside_its_todos() {
    let exercises: Vec<String> = CARRIED
        .iter()
        .filter_map(|carried| {
            let lesson = carried.exercise_in?;
            Some(
                carried
                    .files
                    .iter()
                    .map(move |file| format!("{lesson}/{file}")),
            )
        })
        .flatten()
        .collect();
    let mut problems = Vec::new();
    for lesson in course::harness::lesson::LESSONS {
        let name = lesson.name();
        for file in rust_files(&format!("lessons/{name}")) {
            if exercises.contains(&format!("{name}/{file}")) {
                continue;
            }
            let (starter_path, solution_path) = (
                format!("lessons/{name}/{file}"),
                format!("solutions/{name}/{file}"),
            );
            let (starter, solution) = (read(&starter_path), read(&solution_path));
            let (starter_skipped, solution_skipped) =
                (opening_comment(&starter), opening_comment(&solution));
            for hunk in differences(&starter[starter_skipped..], &solution[solution_skipped..]) {
                let hunk = Hunk {
                    old_start: hunk.old_start + starter_skipped,
                    old_end: hunk.old_end + starter_skipped,
                    new_start: hunk.new_start + solution_skipped,
                    new_end: hunk.new_end + solution_skipped,
                };
                let indented = starter[hunk.old_start..hunk.old_end]
                    .iter()
                    .chain(&solution[hunk.new_start..hunk.new_end])
                    .filter(|line| !line.trim().is_empty())
                    .map(|line| indentation(line))
                    .min()
                    .unwrap_or(0);
                let at_a_todo = (belongs_to_a_todo(&starter, hunk.old_start)
                    && hunk.old_end > hunk.old_start)
                    || inside_a_function_with_a_todo(&starter, hunk.old_start, indented);
                let allowances = hunk.new_start == hunk.new_end
                    && only_allowances(&starter, hunk.old_start, hunk.old_end);
                if !(at_a_todo || allowances) {
                    problems.push(show(
                        &hunk,
                        &starter_path,
                        &starter,
                        &solution_path,
                        &solution,
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "a starter must mirror its solution outside its TODOs (a change made in one must \
         be made in the other), and here they differ outside any function with a TODO:\n\n{}",
        problems.join("\n\n")
    );
}
