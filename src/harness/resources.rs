//! What a running program costs the machine: its threads and its resident
//! memory, for the stages that check a server stays bounded.
//!
//! Read from `/proc` on Linux. Elsewhere these return `None`, and a stage
//! that needs them says the measurement is not available on this system.

use crate::harness::failure::Failure;

/// A size in bytes as a person reads it: `3.8 MiB`.
pub fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// The failure of a stage that needs a measurement this system cannot make:
/// said plainly, never passed in silence. `what` is what it measures.
pub fn unmeasurable(what: &str) -> Failure {
    Failure::new(format!(
        "this stage measures the server's {what}, and that measurement is not available on \
         this system (it reads /proc, which only Linux has)"
    ))
    .hint("Run this stage on Linux, or in a Linux container; the other stages do not need it.")
}

/// How many threads the process `pid` has.
pub fn threads(pid: u32) -> Option<usize> {
    status_field(pid, "Threads:")?.parse().ok()
}

/// The resident memory of the process `pid`, in bytes.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let kib: u64 = status_field(pid, "VmRSS:")?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// One field of `/proc/PID/status`, without its name.
fn status_field(pid: u32, name: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .map(|value| value.trim().to_string())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn measures_this_very_process() {
        let me = std::process::id();
        assert!(threads(me).unwrap() >= 1);
        assert!(resident_bytes(me).unwrap() > 100 * 1024);
        assert_eq!(threads(u32::MAX), None);
    }

    #[test]
    fn the_open_file_limit_is_raised_where_the_hard_limit_allows() {
        raise_open_file_limit();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes `limit`.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert!(limit.rlim_cur >= 10240.min(limit.rlim_max));
    }
}

/// Raise this process's soft limit on open files toward its hard limit.
/// Stages open hundreds of connections at once, more than the 256 that macOS
/// allows by default; the programs a stage starts inherit the raised limit.
/// Where it cannot be raised, the stages run with what there is.
#[cfg(unix)]
pub fn raise_open_file_limit() {
    // Enough for every stage; macOS refuses more than 10240 (OPEN_MAX).
    const WANTED: libc::rlim_t = 10240;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= WANTED {
            return;
        }
        limit.rlim_cur = WANTED.min(limit.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

/// Nothing to raise where there are no such limits.
#[cfg(not(unix))]
pub fn raise_open_file_limit() {}
