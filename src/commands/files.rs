//! Which files make up a copy of the course: the handout a student is
//! given, and the copy a student's checkout is graded in.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The files of a course's folder, and those left out.
pub struct CourseFiles {
    /// Full paths, sorted.
    pub files: Vec<PathBuf>,
    /// Files in the folder that git does not track, relative to it.
    pub untracked: Vec<String>,
}

/// The files of the course at `project`: in a git checkout, those git
/// tracks, and no other. The folder also holds what its users made there:
/// the README's own `grade all --csv > grades.csv` leaves a gradebook with
/// students' names in it, which a copy of every file would hand out.
/// Outside a git checkout (an unpacked archive), every file but those of
/// another project inside it (see `files_below`).
pub fn course_files(project: &Path) -> Result<CourseFiles> {
    let Some(tracked) = git_files(project, &["--cached"]) else {
        return Ok(CourseFiles {
            files: files_below(project, project)?,
            untracked: Vec::new(),
        });
    };
    let mut files: Vec<PathBuf> = tracked
        .iter()
        .map(|name| project.join(name))
        // A file deleted from the working tree but not yet from git.
        .filter(|file| file.is_file())
        .collect();
    files.sort();
    Ok(CourseFiles {
        files,
        untracked: git_files(project, &["--others", "--exclude-standard"]).unwrap_or_default(),
    })
}

/// `git ls-files` with `which` in `project`: paths relative to it, or `None`
/// where git is missing or this is no checkout.
fn git_files(project: &Path, which: &[&str]) -> Option<Vec<String>> {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(project)
        .args(["ls-files", "-z"])
        .args(which)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let names = String::from_utf8(output.stdout).ok()?;
    Some(
        names
            .split('\0')
            .filter(|name| !name.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

/// Every file below `dir`, sorted, leaving out the folders no copy takes
/// (`.git`, `target` at `root`, and another project's, below) and every
/// symbolic link: a link in a student's folder may point anywhere, all of
/// `/` included.
pub fn files_below(dir: &Path, root: &Path) -> Result<Vec<PathBuf>> {
    walk(dir, root, Checkouts::LeftOut)
}

/// Every file of a student's `lessons/` folder at `dir`, as `files_below`
/// finds them but for one thing: a folder below that is a git checkout of
/// its own (a student ran `git init` in a lesson's folder) is still the
/// student's work, and only its `.git` is left out. Left out whole, the
/// lesson would be graded as if it had no `main.rs`.
pub fn lesson_files_below(dir: &Path) -> Result<Vec<PathBuf>> {
    walk(dir, dir, Checkouts::Taken)
}

/// What a walk does with a folder that holds a `.git`.
#[derive(Clone, Copy, PartialEq)]
enum Checkouts {
    LeftOut,
    Taken,
}

fn walk(dir: &Path, root: &Path, checkouts: Checkouts) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let (path, kind) = (entry.path(), entry.file_type()?);
        let name = path.file_name().unwrap_or_default();
        // A folder of git's, or the file that stands for one in a
        // worktree: history, not the course.
        if name == ".git" {
            continue;
        }
        if kind.is_dir() {
            if dir == root && name == "target" {
                continue;
            }
            if is_build_folder(&path) || (checkouts == Checkouts::LeftOut && is_checkout(&path)) {
                continue;
            }
            found.extend(walk(&path, root, checkouts)?);
        } else if kind.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// A folder that is a checkout of its own: it holds a `.git`. The README's
/// classroom loop clones each student's checkout into `students/`, inside
/// the course: where the course is no git checkout (an unpacked archive),
/// nothing else keeps those out of a copy of it.
fn is_checkout(folder: &Path) -> bool {
    folder.join(".git").exists()
}

/// A build folder of cargo's: cargo marks each with a `CACHEDIR.TAG`.
fn is_build_folder(folder: &Path) -> bool {
    folder.join("CACHEDIR.TAG").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_gives_only_what_git_tracks() {
        let project = std::env::temp_dir().join(format!("handout-git-{}", std::process::id()));
        std::fs::create_dir_all(project.join("lessons")).unwrap();
        std::fs::write(project.join("lessons/server.rs"), "fn main() {}\n").unwrap();
        std::fs::write(project.join("grades.csv"), "student,points\nada,3\n").unwrap();
        let folder = || {
            let course = course_files(&project).unwrap();
            let names: Vec<String> = course
                .files
                .iter()
                .map(|file| file.strip_prefix(&project).unwrap().display().to_string())
                .collect();
            (names, course.untracked)
        };
        // Not a checkout (an unpacked archive): every file.
        assert_eq!(folder().0, ["grades.csv", "lessons/server.rs"]);
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(&project)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            status.is_ok_and(|status| status.success())
        };
        assert!(git(&["init", "-q"]) && git(&["add", "lessons/server.rs"]));
        let (tracked, untracked) = folder();
        assert_eq!(tracked, ["lessons/server.rs"]);
        assert_eq!(untracked, ["grades.csv"]);
        std::fs::remove_dir_all(&project).unwrap();
    }

    /// A folder of the system's temporary one, named after `name` and this
    /// process, holding each of `files` (a line of text each).
    fn tree(name: &str, files: &[&str]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("course-files-{name}-{}", std::process::id()));
        for name in files {
            let file = dir.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, "x\n").unwrap();
        }
        dir
    }

    #[test]
    fn another_checkout_or_build_inside_is_not_taken() {
        let dir = tree(
            "nested",
            &[
                "lessons/server.rs",
                "students/ada/.git/HEAD",
                "students/ada/lessons/server.rs",
                "students/bob/target/CACHEDIR.TAG",
                "students/bob/target/release/huge",
                "students/bob/lessons/server.rs",
            ],
        );
        let files = files_below(&dir, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            files,
            [
                dir.join("lessons/server.rs"),
                dir.join("students/bob/lessons/server.rs")
            ]
        );
    }

    #[test]
    fn a_lesson_that_is_a_checkout_of_its_own_is_taken_without_its_git() {
        let dir = tree(
            "lesson",
            &[
                "03-messages/.git/HEAD",
                "03-messages/main.rs",
                "04-concurrency/.git",
                "04-concurrency/main.rs",
                "05-chat/target/CACHEDIR.TAG",
                "05-chat/target/debug/huge",
                "05-chat/main.rs",
            ],
        );
        let lessons = lesson_files_below(&dir).unwrap();
        let course = files_below(&dir, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            lessons,
            [
                dir.join("03-messages/main.rs"),
                dir.join("04-concurrency/main.rs"),
                dir.join("05-chat/main.rs")
            ]
        );
        // In a copy of the course, the same folders are other projects.
        assert_eq!(course, [dir.join("05-chat/main.rs")]);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_is_not_followed() {
        let dir = std::env::temp_dir().join(format!("course-files-link-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lessons")).unwrap();
        std::fs::write(dir.join("lessons/server.rs"), "fn main() {}\n").unwrap();
        std::os::unix::fs::symlink("/", dir.join("lessons/everything")).unwrap();
        std::os::unix::fs::symlink("server.rs", dir.join("lessons/again.rs")).unwrap();
        let files = files_below(&dir, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files, [dir.join("lessons/server.rs")]);
    }
}
