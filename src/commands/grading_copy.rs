//! The copy of the course in which a student's checkout is graded: the
//! handout's files, from this checkout, with the student's `lessons/`.
//!
//! A student's checkout holds the stages too (`tests/`, `src/harness/`,
//! `Cargo.toml`), and a grade built there runs what they say: with the
//! lesson's binary pointed at another file in `Cargo.toml`, or a check
//! deleted from `tests/01_echo.rs`, the starter was graded 8 of 8. Built
//! from this copy, only `lessons/` comes from the student. The copy holds
//! what a handout holds and no more: with `solutions/` in it, a lesson
//! could `include!` the reference and be graded as the student's work. A
//! lesson that does not compile, or names a file outside its folder (the
//! copy sits inside a checkout that has `solutions/`: `named_files.rs`), is
//! set aside, and the others are graded.
//!
//! The copy is kept in `target/grading` and reused from one student to the
//! next: a file is written only where its bytes differ, so cargo rebuilds
//! what changed (cargo goes by file times: a file rewritten with the same
//! bytes would rebuild everything, and one left with an old time would
//! rebuild nothing). It is built in its own `target/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, TryLockError};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::commands::files::{files_below, lesson_files_below};
use crate::commands::grade::{cargo_errors, BuildFolder};
use crate::commands::handout::{student_course, Summary};
use crate::commands::named_files::{first_outside_file_in, OWN_FILES_ONLY};
use crate::harness::lesson::LESSONS;
use crate::harness::stage::{StageRecord, Status};

/// Where the copy lives, inside this checkout's build folder.
pub fn folder(project: &Path) -> PathBuf {
    project.join("target").join("grading")
}

/// The right to use the copy, held until dropped. The copy is one folder:
/// two grades at once (a class graded with `xargs -P`) would build one
/// student's lessons with the other's, so a second grade waits.
pub fn take(project: &Path) -> Result<File> {
    if let Some(held) = try_take(project)? {
        return Ok(held);
    }
    eprintln!(
        "Waiting for another `grade --checkout` to finish with {}...",
        folder(project).display()
    );
    let file = lock_file(project)?;
    file.lock().context("cannot lock the grading copy")?;
    Ok(file)
}

/// The right to use the copy, if no other grade holds it now.
fn try_take(project: &Path) -> Result<Option<File>> {
    let file = lock_file(project)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(error)) => Err(error).context("cannot lock the grading copy"),
    }
}

fn lock_file(project: &Path) -> Result<File> {
    let path = project.join("target").join("grading.lock");
    fs::create_dir_all(project.join("target"))?;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// Make the copy of `project` with the `lessons/` of `student` in it, and
/// return its folder. The caller holds the copy ([`take`]).
pub fn prepare(project: &Path, student: &Path) -> Result<PathBuf> {
    let lessons = student.join("lessons");
    if !lessons.is_dir() {
        bail!(
            "{} has no lessons/ folder: give the folder of a student's checkout of the course",
            student.display()
        );
    }
    let copy = folder(project);
    let mut wanted = BTreeSet::new();
    let course = student_course(project, &mut Summary::default())?;
    for file in course.files {
        let relative = file.strip_prefix(project)?.to_path_buf();
        if relative.starts_with("lessons") {
            continue;
        }
        let bytes = if relative == Path::new("Cargo.toml") {
            course.manifest.clone().into_bytes()
        } else {
            read(&file)?
        };
        write_if_changed(&bytes, &copy.join(&relative))?;
        wanted.insert(relative);
    }
    mirror(&lessons, &copy.join("lessons"))?;
    // A file this course no longer has would still be in the copy.
    for file in files_below(&copy, &copy)? {
        let relative = file.strip_prefix(&copy)?;
        if !relative.starts_with("lessons") && !wanted.contains(relative) {
            fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    Ok(copy)
}

/// Make the folder `to` hold the files below `from`, and no other: a file
/// of an earlier student's would still be built with the next one.
fn mirror(from: &Path, to: &Path) -> Result<()> {
    let mut wanted = BTreeSet::new();
    for file in lesson_files_below(from)? {
        let relative = file.strip_prefix(from)?.to_path_buf();
        write_if_changed(&read(&file)?, &to.join(&relative))?;
        wanted.insert(relative);
    }
    // (With nothing to copy, `to` may not be there at all.)
    let held = if to.is_dir() {
        files_below(to, to)?
    } else {
        Vec::new()
    };
    for file in held {
        if !wanted.contains(file.strip_prefix(to)?) {
            fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    Ok(())
}

/// Why a lesson was set aside: none of its stages counts.
pub struct SetAside {
    /// What is wrong, said after the lesson's folder: `does not compile`.
    pub what: &'static str,
    /// What shows it: cargo's first error, or the line at fault.
    pub detail: String,
}

const DOES_NOT_COMPILE: &str = "does not compile";

/// The lessons of the copy at `copy` that cannot be graded, each with why,
/// after putting a stand-in in their place: a `main.rs` that builds anywhere.
///
/// cargo builds every binary of the course before any lesson's stages (a
/// stage finds its program by `CARGO_BIN_EXE_...`), so one lesson that does
/// not compile would leave every lesson ungraded: a student whose last
/// lesson is half written at the deadline would get no points at all. With
/// a stand-in in its place, the others build and are graded, and the
/// broken one gets none of its stages ([`mark_set_aside`]).
pub fn set_aside_lessons_that_cannot_be_graded(copy: &Path) -> Result<BTreeMap<String, SetAside>> {
    let mut broken = BTreeMap::new();
    for lesson in LESSONS {
        let name = lesson.name();
        let folder = copy.join("lessons").join(&name);
        // Without its main.rs, a lesson stops cargo before anything compiles.
        let why = if !folder.join("main.rs").is_file() {
            Some(SetAside {
                what: DOES_NOT_COMPILE,
                detail: format!("lessons/{name} has no main.rs"),
            })
        } else {
            outside_file(&folder, &name)?
        };
        if let Some(why) = why {
            broken.insert(name.clone(), why);
            set_aside(copy, &name)?;
        }
    }
    // `--keep-going` builds every binary it can, and reports each that
    // fails, rather than stop at the first.
    let args = ["build", "--bins", "--keep-going"].map(String::from);
    for (bin, error) in cargo_errors(copy, &args, BuildFolder::Own)? {
        if LESSONS.iter().any(|lesson| lesson.name() == bin) && !broken.contains_key(&bin) {
            set_aside(copy, &bin)?;
            let detail = format!("cargo's first error:\n{error}");
            broken.insert(
                bin,
                SetAside {
                    what: DOES_NOT_COMPILE,
                    detail,
                },
            );
        }
    }
    Ok(broken)
}

/// Why the lesson `name`, in `folder`, is set aside, if it makes the
/// compiler read a file outside the folder.
fn outside_file(folder: &Path, name: &str) -> Result<Option<SetAside>> {
    Ok(first_outside_file_in(folder, name)?.map(|place| SetAside {
        what: "names a file outside its folder",
        detail: format!("{place}. {OWN_FILES_ONLY}"),
    }))
}

/// Put a stand-in in the copy in place of the student's `lesson`: a
/// `main.rs` that builds anywhere and, run by a stage, says the lesson was
/// set aside and exits. Not the course's starter: in a grade of a student's
/// own checkout (`--checkout .`, as the GitHub Classroom workflow grades),
/// the only starter there is the student's lesson that does not compile.
fn set_aside(copy: &Path, lesson: &str) -> Result<()> {
    let folder = copy.join("lessons").join(lesson);
    let main = folder.join("main.rs");
    write_if_changed(stand_in(lesson).as_bytes(), &main)?;
    for file in files_below(&folder, &folder)? {
        if file != main {
            fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    Ok(())
}

/// The program that stands in for a lesson set aside.
fn stand_in(lesson: &str) -> String {
    format!(
        "//! Written by `course grade` in its copy: lessons/{lesson} could not be \
         graded, and this stands in its place so that the other lessons build.\n\n\
         fn main() {{\n    \
             eprintln!(\"lessons/{lesson} was set aside by the grade: none of its stages counts\");\n    \
             std::process::exit(1);\n\
         }}\n"
    )
}

/// Records of a lesson set aside, from its stand-in's run: no stage counts,
/// and the first says why.
pub fn mark_set_aside(records: &mut [StageRecord], lesson: &str, why: &SetAside) {
    let what = why.what;
    for (index, record) in records.iter_mut().enumerate() {
        record.status = Status::Failed;
        record.passed = false;
        record.counted = false;
        record.duration_ms = 0;
        record.message = if index == 0 {
            format!(
                "lessons/{lesson} {what}, so none of its stages could run. {}",
                why.detail
            )
        } else {
            format!("lessons/{lesson} {what} (see stage 1)")
        };
    }
}

/// The largest file the copy takes: a lesson's files are some kilobytes,
/// and each is read whole.
const LARGEST_FILE: u64 = 16 << 20;

fn read(file: &Path) -> Result<Vec<u8>> {
    let size = fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    if size > LARGEST_FILE {
        bail!(
            "{} is {} MiB, larger than any lesson's file should be: it is not graded",
            file.display(),
            size >> 20
        );
    }
    fs::read(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Write `bytes` to `to` unless `to` holds them already.
fn write_if_changed(bytes: &[u8], to: &Path) -> Result<()> {
    if fs::read(to).is_ok_and(|held| held == bytes) {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(to, bytes).with_context(|| format!("cannot write {}", to.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "[package]\nname = \"x\"\n\n[[bin]]\nname = \"01-echo\"\n\
        path = \"lessons/01-echo/main.rs\"\n\n[[bin]]\nname = \"01-echo-solution\"\n\
        path = \"solutions/01-echo/main.rs\"\n\n[[test]]\nname = \"01_echo\"\n\
        path = \"tests/01_echo.rs\"\n";

    /// A course, and a student's checkout whose stages and manifest say
    /// something else.
    fn folders(test: &str) -> (PathBuf, PathBuf) {
        let root = std::env::temp_dir().join(format!("grading-copy-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (course, student) = (root.join("course"), root.join("ada"));
        let write = |path: PathBuf, text: &str| {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(course.join("Cargo.toml"), MANIFEST);
        write(course.join("tests/01_echo.rs"), "the course's stages");
        write(course.join("lessons/01-echo/server.rs"), "TODO");
        write(course.join("solutions/01-echo/server.rs"), "the answer");
        write(student.join("Cargo.toml"), "[package]\nname = \"mine\"\n");
        write(student.join("tests/01_echo.rs"), "every stage passes");
        write(student.join("lessons/01-echo/server.rs"), "done");
        (course, student)
    }

    #[test]
    fn the_copy_has_the_courses_stages_and_the_students_lessons_only() {
        let (course, student) = folders("stages");
        let copy = prepare(&course, &student).unwrap();
        let read = |path: &str| fs::read_to_string(copy.join(path)).unwrap();
        assert_eq!(read("tests/01_echo.rs"), "the course's stages");
        assert_eq!(read("lessons/01-echo/server.rs"), "done");
        assert!(read("Cargo.toml").contains("name = \"01-echo\""));
        // No answer for a lesson to `include!`, nor a binary built of one.
        assert!(!copy.join("solutions").exists());
        assert!(!read("Cargo.toml").contains("solution"));
        let _ = fs::remove_dir_all(course.parent().unwrap());
    }

    #[test]
    fn an_earlier_students_files_go_and_unchanged_files_keep_their_time() {
        let (course, student) = folders("reuse");
        fs::write(student.join("lessons/01-echo/extra.rs"), "mine").unwrap();
        let copy = prepare(&course, &student).unwrap();
        let manifest = copy.join("Cargo.toml");
        let written = fs::metadata(&manifest).unwrap().modified().unwrap();
        fs::remove_file(student.join("lessons/01-echo/extra.rs")).unwrap();
        prepare(&course, &student).unwrap();
        assert!(!copy.join("lessons/01-echo/extra.rs").exists());
        assert_eq!(
            fs::metadata(&manifest).unwrap().modified().unwrap(),
            written
        );
        let _ = fs::remove_dir_all(course.parent().unwrap());
    }

    #[test]
    fn a_lesson_set_aside_is_a_stand_in_alone() {
        let (course, student) = folders("stand-in");
        fs::write(student.join("lessons/01-echo/main.rs"), "fn main( {").unwrap();
        let copy = prepare(&course, &student).unwrap();
        set_aside(&copy, "01-echo").unwrap();
        let folder = copy.join("lessons/01-echo");
        // Neither the student's files nor the course's starter: graded in
        // the student's own checkout, the starter is the student's lesson.
        assert_eq!(
            files_below(&folder, &folder).unwrap(),
            [folder.join("main.rs")]
        );
        let main = fs::read_to_string(folder.join("main.rs")).unwrap();
        assert!(
            main.contains("fn main() {")
                && main.contains("lessons/01-echo was set aside")
                && main.contains("std::process::exit(1);"),
            "{main}"
        );
        let _ = fs::remove_dir_all(course.parent().unwrap());
    }

    #[test]
    fn an_empty_lessons_folder_is_copied_as_empty() {
        let (course, student) = folders("empty");
        fs::remove_dir_all(student.join("lessons")).unwrap();
        fs::create_dir(student.join("lessons")).unwrap();
        let copy = prepare(&course, &student).unwrap();
        assert!(!copy.join("lessons/01-echo/server.rs").exists());
        let _ = fs::remove_dir_all(course.parent().unwrap());
    }

    #[test]
    fn one_grade_at_a_time_holds_the_copy() {
        let (course, _) = folders("lock");
        let held = take(&course).unwrap();
        assert!(try_take(&course).unwrap().is_none());
        // Let go, the copy is the next grade's. Not at the very instant:
        // a program another test starts meanwhile holds a copy of the lock's
        // file until it is replaced by what it runs, and the lock with it.
        drop(held);
        let (taken, came) = std::sync::mpsc::channel();
        let next = course.clone();
        std::thread::spawn(move || taken.send(take(&next).is_ok()));
        let next_took_it = came.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(next_took_it, Ok(true));
        let _ = fs::remove_dir_all(course.parent().unwrap());
    }

    #[test]
    fn a_folder_without_lessons_is_refused() {
        let (course, _) = folders("refused");
        let error = prepare(&course, &course.join("tests")).unwrap_err();
        assert!(
            error.to_string().contains("has no lessons/ folder"),
            "{error}"
        );
        let _ = fs::remove_dir_all(course.parent().unwrap());
    }
}
