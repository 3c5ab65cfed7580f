//! `course handout DIR` writes a course a student can be given: it builds and
//! grades without `solutions/`, and no line of an answer stands in it.
//!
//! The first test writes a handout and reads it: what is left out, what the
//! manifest keeps, the slides, every line of every answer (a second). The
//! second builds the handout as a project of its own and grades lesson 01
//! in it, in `target/handout-check`, then runs the GitHub Classroom
//! workflow's commands there as a student's repository runs them (their
//! grading copy, inside the handout, is built from nothing each time: a
//! few minutes more); the third grades a student's checkout
//! with `course grade --checkout`, whose copy of the course is the
//! handout's files and the student's `lessons/` (in `target/grading`). Each
//! builds its own copy of every dependency the first time, a few minutes,
//! and takes seconds after that: both are ignored by a plain `cargo test`,
//! and CI runs them with `cargo test --test handout -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use course::commands::handout;
use course::harness::lesson::LESSONS;

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh folder for the handout, removed when the test ends.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A handout written by `course handout`, as an instructor writes it, into
/// a folder of `test`'s own (the tests of this file run at once).
fn write_handout(test: &str) -> Folder {
    let dir =
        Folder(std::env::temp_dir().join(format!("course-handout-{}-{test}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let written = finished(
        Command::new(env!("CARGO_BIN_EXE_course"))
            .arg("handout")
            .arg(&dir.0),
    );
    assert!(written.status.success(), "{}", text(&written));
    dir
}

/// cargo, run inside the handout as a student would, with a build folder
/// that outlives the test and nothing of this run's environment that picks
/// what is graded.
fn cargo_in(dir: &Path, args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", project().join("target/handout-check"))
        .env_remove("COURSE_TARGET")
        .env_remove("COURSE_CMD")
        .env_remove("COURSE_REPORT")
        .env_remove("COURSE_FAIL_FAST");
    // cargo gives this test the paths of this project's binaries
    // (`CARGO_BIN_EXE_01-echo-solution`, ...): the handout must build
    // without them, as on a student's machine.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let this_project = [
            "CARGO_BIN_EXE_",
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix));
        if this_project {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// The longest a command of these tests may run: a first build of a copy
/// of the course takes a few minutes here. One that hangs fails its test
/// (and is ended) rather than hold CI until CI's own limit.
const COMMAND_LIMIT: Duration = Duration::from_secs(15 * 60);

/// Run `command` to its end, within COMMAND_LIMIT.
fn finished(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let command = std::mem::replace(command, Command::new("true"));
    let started = std::time::Instant::now();
    let output = assert_cmd::Command::from_std(command)
        .timeout(COMMAND_LIMIT)
        .output()
        .unwrap_or_else(|error| panic!("{shown} could not run: {error}"));
    // Ended by a signal at the limit: assert_cmd killed it.
    if output.status.code().is_none() && started.elapsed() >= COMMAND_LIMIT {
        panic!("{shown} did not finish within {COMMAND_LIMIT:?}, and was ended");
    }
    output
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_handout_holds_the_exercises_and_no_answer() {
    // The answers are computed here while `course handout` writes the copy.
    let answers = std::thread::spawn(|| handout::answer_lines(project()).unwrap());
    let dir = write_handout("content");

    for left_out in ["solutions", ".git", "target", ".ci"] {
        assert!(!dir.0.join(left_out).exists(), "the handout has {left_out}");
    }

    // The manifest: every starter and its stages, no solution binary, no
    // maintainers' test.
    let manifest = std::fs::read_to_string(dir.0.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("solutions/"), "{manifest}");
    for lesson in LESSONS {
        let name = lesson.name();
        let solution = format!("name = \"{name}-solution\"");
        assert!(!manifest.contains(&solution), "{solution} in:\n{manifest}");
        for kept in [
            format!("name = \"{name}\""),
            format!("name = \"{}\"", lesson.test_target()),
        ] {
            assert!(manifest.contains(&kept), "{kept} missing from:\n{manifest}");
        }
    }
    let tests: Vec<String> = manifest
        .split("[[test]]")
        .skip(1)
        .filter_map(|table| {
            let line = table.lines().find(|line| line.starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_string())
        })
        .collect();
    let stages: Vec<String> = LESSONS.iter().map(|lesson| lesson.test_target()).collect();
    assert_eq!(
        tests, stages,
        "the handout's tests are not the lessons' stages"
    );

    // tests/ holds the lessons' stages and nothing of the maintainers'.
    let mut suites: Vec<String> = std::fs::read_dir(dir.0.join("tests"))
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    suites.sort();
    let wanted: Vec<String> = stages.iter().map(|stage| format!("{stage}.rs")).collect();
    assert_eq!(suites, wanted, "tests/ of the handout");
    for ours in [
        "harness.rs",
        "handout.rs",
        "slides.rs",
        "copies.rs",
        "golden",
    ] {
        assert!(
            project().join("tests").join(ours).exists(),
            "tests/{ours} moved"
        );
    }

    // No line of any answer, anywhere: the answers are computed from the
    // solutions here, against the starters, and every file is searched.
    let answers = answers.join().unwrap();
    assert!(
        answers.len() > 100,
        "only {} answer lines found",
        answers.len()
    );
    let found = handout::leaks(&dir.0, &answers).unwrap();
    assert!(
        found.is_empty(),
        "answers in the handout:\n{}",
        found.join("\n")
    );
    let half_close =
        "stream.shutdown(Shutdown::Write).context(\"cannot shut down the sending side\")?;";
    assert!(
        answers.contains_key(half_close),
        "the answer lines miss TODO 4 of lesson 01"
    );

    // The slides keep every heading, and still fit their screen. Where a
    // deck quotes a solution, the student's deck quotes none and asks for
    // it: the exercise (a TODO) stands in the answer's place.
    let mut exercises = 0;
    for deck in std::fs::read_dir(project().join("slides"))
        .unwrap()
        .flatten()
    {
        let name = deck.file_name();
        let ours = std::fs::read_to_string(deck.path()).unwrap();
        let theirs = std::fs::read_to_string(dir.0.join("slides").join(&name)).unwrap();
        let headings = |text: &str| course::commands::slides::headings(text);
        let kept: Vec<String> = headings(&theirs);
        for heading in headings(&ours) {
            let left_out = handout::INSTRUCTOR_MARK;
            assert!(
                kept.contains(&heading) || ours.contains(left_out),
                "{name:?} lost the slide {heading:?}"
            );
        }
        for slide in course::commands::slides::split(&theirs).1 {
            let height = course::commands::slides::estimated_height(&slide.text);
            assert!(
                height <= 760.0,
                "{name:?}: a slide is about {height:.0} px tall:\n{}",
                slide.text
            );
        }
        let quotes_a_solution = |text: &str| {
            text.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with("// solutions/") || line.starts_with("# solutions/")
            })
        };
        if quotes_a_solution(&ours) {
            assert!(
                !quotes_a_solution(&theirs),
                "{name:?} still quotes solutions/"
            );
            assert!(
                theirs.contains("Your turn") && theirs.contains("TODO"),
                "{name:?} quotes a solution here, and its handout asks for no TODO"
            );
            exercises += theirs.matches("Your turn").count();
        }
    }
    assert!(
        exercises >= 10,
        "only {exercises} exercises in the handout's slides"
    );
    let echo = std::fs::read_to_string(dir.0.join("slides").join("01-echo.md")).unwrap();
    assert!(
        !echo.contains(".shutdown(Shutdown::Write)"),
        "lesson 01's slides still show the half-close"
    );
}

#[test]
#[ignore = "builds the handout as a second project: a few minutes the first time. \
            CI runs it: cargo test --test handout -- --ignored"]
fn a_handout_builds_and_grades_the_starters() {
    let dir = write_handout("build");

    // The board.
    let board = finished(&mut cargo_in(&dir.0, &["run", "--quiet"]));
    assert!(board.status.success(), "{}", text(&board));
    let board = text(&board);
    assert!(board.contains("your course board"), "{board}");
    let lesson_01 = board
        .lines()
        .find(|line| line.trim_start().starts_with("01 "));
    assert!(
        lesson_01.is_some_and(|line| line.contains("] 0 of ")),
        "{board}"
    );

    // Lesson 01's stages run against the starter, and stage 1 fails.
    let graded = text(&finished(&mut cargo_in(
        &dir.0,
        &["test", "--test", "01_echo"],
    )));
    assert!(graded.contains("stage 1 of "), "{graded}");
    assert!(graded.contains("TODO"), "{graded}");
    assert!(
        graded.contains("test result: FAILED. 0 passed;"),
        "{graded}"
    );

    // The reference is not there, and one line says so.
    let solutions = finished(
        cargo_in(&dir.0, &["test", "--quiet", "--test", "01_echo"])
            .env("COURSE_TARGET", "solutions"),
    );
    assert!(!solutions.status.success());
    let said: Vec<String> = String::from_utf8_lossy(&solutions.stderr)
        .lines()
        .filter(|line| line.contains("no solutions/"))
        .map(String::from)
        .collect();
    assert_eq!(said.len(), 1, "{}", text(&solutions));

    // A lesson half written stops every lesson's stages (cargo builds them
    // all first), and the board says which one.
    let server = dir.0.join("lessons/03-messages/server.rs");
    let mut half_written = std::fs::read_to_string(&server).expect("lesson 03's server");
    half_written.push_str("\nfn send_to_everyone(\n");
    std::fs::write(&server, half_written).expect("lesson 03's server written");
    let board = finished(&mut cargo_in(&dir.0, &["run", "--quiet"]));
    assert!(!board.status.success(), "{}", text(&board));
    let said = String::from_utf8_lossy(&board.stderr);
    assert!(
        said.contains(
            "error: lesson 03 (lessons/03-messages) does not compile (cargo's first error is \
             above). cargo builds every lesson before it runs the stages of any"
        ),
        "{said}"
    );

    // The GitHub Classroom workflow's own commands, run here as its steps
    // run them in a student's repository: lesson 01, solved, earns its
    // points though lesson 03 does not compile (with `cargo test --test
    // 01_echo`, it did not), and lesson 03's step fails, saying why.
    copy_folder(
        &project().join("solutions/01-echo"),
        &dir.0.join("lessons/01-echo"),
    );
    let workflow = std::fs::read_to_string(dir.0.join(".github/workflows/classroom.yml"))
        .expect("the handout keeps the Classroom workflow");
    let step = |number: &str| {
        let command = workflow
            .lines()
            .filter_map(|line| line.trim().strip_prefix("command: "))
            .find(|command| command.contains(&format!(" grade {number} ")))
            .unwrap_or_else(|| panic!("no step grades lesson {number}:\n{workflow}"));
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "cargo", "{command}");
        finished(&mut cargo_in(&dir.0, &words[1..]))
    };
    let solved = step("01");
    assert!(solved.status.success(), "{}", text(&solved));
    assert!(
        text(&solved).contains("8 of 8 stages pass"),
        "{}",
        text(&solved)
    );
    let broken = step("03");
    assert!(!broken.status.success(), "{}", text(&broken));
    assert!(
        text(&broken).contains("lessons/03-messages does not compile, so none of its stages"),
        "{}",
        text(&broken)
    );
}

/// Copy every file below `from` into `to`.
fn copy_folder(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_folder(&path, &target);
        } else {
            std::fs::create_dir_all(to).unwrap();
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// `course grade WORDS... --checkout DIR`, run to its end, on what it is
/// told and nothing of this run's environment.
fn grade_checkout(dir: &Path, words: &[&str]) -> Output {
    finished(
        Command::new(env!("CARGO_BIN_EXE_course"))
            .arg("grade")
            .args(words)
            .arg("--checkout")
            .arg(dir)
            .env_remove("COURSE_TARGET")
            .env_remove("COURSE_CMD"),
    )
}

#[test]
#[ignore = "builds the grading copy: a few minutes the first time. \
            CI runs it: cargo test --test handout -- --ignored"]
fn a_checkout_is_graded_with_the_courses_stages_not_its_own() {
    let student =
        Folder(std::env::temp_dir().join(format!("course-student-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&student.0);
    // A student's checkout with lesson 01 unsolved, whose manifest builds
    // lesson 01 from a file of the student's own that holds the answer
    // (within their own checkout, that passed every stage).
    copy_folder(&project().join("lessons"), &student.0.join("lessons"));
    copy_folder(
        &project().join("solutions/01-echo"),
        &student.0.join("lessons/answer"),
    );
    let manifest = handout::student_course(project(), &mut handout::Summary::default())
        .unwrap()
        .manifest
        .replace("lessons/01-echo/main.rs", "lessons/answer/main.rs");
    std::fs::write(student.0.join("Cargo.toml"), manifest).unwrap();
    let row = || {
        let graded = grade_checkout(&student.0, &["01", "--csv", "--student", "ada"]);
        let rows = text(&graded);
        rows.lines()
            .find(|line| line.starts_with("ada,"))
            .unwrap_or_else(|| panic!("no row for ada:\n{rows}"))
            .to_string()
    };
    let unsolved = row();
    assert!(unsolved.starts_with("ada,01-echo,0,8,"), "{unsolved}");
    let graded_folder = student.0.join("lessons").join("01-echo");
    assert!(
        unsolved.ends_with(&graded_folder.display().to_string()),
        "{unsolved}"
    );

    // Solved in lessons/01-echo: graded 8 of 8, from the same copy rebuilt.
    copy_folder(
        &project().join("solutions/01-echo"),
        &student.0.join("lessons/01-echo"),
    );
    let solved = row();
    assert!(solved.starts_with("ada,01-echo,8,8,"), "{solved}");

    // The starter, with its server module taken from the reference by a
    // path that leaves the lesson's folder: the copy sits in this
    // checkout's target/grading, so the path reaches solutions/ here. It
    // passed 6 of 8 that way; the lesson is set aside, and says why.
    copy_folder(
        &project().join("lessons/01-echo"),
        &student.0.join("lessons/01-echo"),
    );
    let main = student.0.join("lessons/01-echo/main.rs");
    let borrowed = std::fs::read_to_string(&main).unwrap().replace(
        "\nmod server;",
        "\n#[path = \"../../../../solutions/01-echo/server.rs\"]\nmod server;",
    );
    std::fs::write(&main, borrowed).unwrap();
    let records = text(&grade_checkout(&student.0, &["01", "--json"]));
    assert!(
        records.contains("lessons/01-echo names a file outside its folder")
            && records.contains("main.rs:")
            && !records.contains(r#""counted":true"#),
        "{records}"
    );
    copy_folder(
        &project().join("solutions/01-echo"),
        &student.0.join("lessons/01-echo"),
    );

    // Lesson 05 half written: it gets none of its stages, and lesson 01
    // keeps its points (cargo builds every lesson for any lesson's stages).
    let room = student.0.join("lessons/05-chat/room.rs");
    let mut half_written = std::fs::read_to_string(&room).unwrap();
    half_written.push_str("\nfn deliver_to_everyone(\n");
    std::fs::write(&room, half_written).unwrap();
    let still = row();
    assert!(still.starts_with("ada,01-echo,8,8,"), "{still}");
    let first = text(&grade_checkout(&student.0, &["05", "--json"]));
    assert!(
        first.contains(r#""stage":1,"#)
            && first.contains("lessons/05-chat does not compile")
            && first.contains("deliver_to_everyone")
            && !first.contains(r#""counted":true"#),
        "{first}"
    );
    // Without --student, the record names the checkout's folder, not the
    // git user of the machine that grades it.
    let folder = student.0.file_name().unwrap().to_string_lossy();
    assert!(
        first.contains(&format!(r#""student":"{folder}""#)),
        "{first}"
    );
}
