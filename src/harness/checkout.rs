//! Which checkout of the course a run is for, and whether its build came
//! from that checkout.
//!
//! cargo gives this package's build the same name in every checkout, and
//! takes a build as fresh when no file of the checkout is newer than it.
//! Two checkouts that share a build folder (one `CARGO_TARGET_DIR` for a
//! class's clones, to build once) therefore share one build: in a checkout
//! whose files are older than the other's build, cargo rebuilds nothing, and
//! the stages run the other checkout's programs. Measured with two clones,
//! one solved and one not: both were graded 8 of 8, under the solved one's
//! commit. Nothing in cargo's output says so; these checks do.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Where the course was when this program was compiled.
const BUILT_FROM: &str = env!("CARGO_MANIFEST_DIR");

/// The checkout this run is for: the one `cargo run` and `cargo test` run
/// in (they say it in `CARGO_MANIFEST_DIR`), or, for a program started some
/// other way, the one it was built from.
pub fn this_checkout() -> PathBuf {
    checkout_from(std::env::var_os("CARGO_MANIFEST_DIR").as_deref())
}

fn checkout_from(told: Option<&OsStr>) -> PathBuf {
    match told {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(BUILT_FROM),
    }
}

/// Whether this program was built from the checkout it runs for; if not,
/// what happened and what to do, for the student or the instructor.
pub fn built_here() -> Result<(), String> {
    built_in(&this_checkout(), Path::new(BUILT_FROM))
}

fn built_in(checkout: &Path, built_from: &Path) -> Result<(), String> {
    if same_folder(checkout, built_from) {
        return Ok(());
    }
    Err(format!(
        "these stages were built from the course in {built}, not from this checkout \
         ({here}), so they would run that checkout's programs, not yours. Checkouts \
         that share a build folder (one CARGO_TARGET_DIR) share one build: cargo \
         rebuilds nothing where the files are older than the other checkout's build. \
         Give each checkout its own build folder (unset CARGO_TARGET_DIR) and run \
         again; after moving or copying a checkout, run `cargo clean` in it once. \
         `cargo run -- grade` always builds in the checkout's own target/.",
        built = built_from.display(),
        here = checkout.display(),
    ))
}

/// The same folder, by whatever path: a checkout reached through a
/// symbolic link is still the same checkout.
pub fn same_folder(one: &Path, other: &Path) -> bool {
    match (one.canonicalize(), other.canonicalize()) {
        (Ok(one), Ok(other)) => one == other,
        _ => one == other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkout_is_where_cargo_says_else_where_this_was_built() {
        let told = OsStr::new("/elsewhere/course");
        assert_eq!(checkout_from(Some(told)), Path::new("/elsewhere/course"));
        assert_eq!(checkout_from(None), Path::new(BUILT_FROM));
        assert_eq!(checkout_from(Some(OsStr::new(""))), Path::new(BUILT_FROM));
    }

    #[test]
    fn a_build_from_another_checkout_is_named_with_what_to_do() {
        let error = built_in(Path::new("/class/ada"), Path::new("/class/bob")).unwrap_err();
        for words in [
            "/class/bob",
            "/class/ada",
            "CARGO_TARGET_DIR",
            "cargo clean",
        ] {
            assert!(error.contains(words), "{words:?} missing from: {error}");
        }
        assert!(built_in(Path::new(BUILT_FROM), Path::new(BUILT_FROM)).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn a_checkout_reached_through_a_link_is_the_same_checkout() {
        let link = std::env::temp_dir().join(format!("course-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(BUILT_FROM, &link).unwrap();
        let same = built_in(&link, Path::new(BUILT_FROM));
        let _ = std::fs::remove_file(&link);
        assert!(same.is_ok(), "{same:?}");
    }
}
