//! What a running program costs the machine: its threads and its resident
//! memory, for the stages that check a server stays bounded.
//!
//! Read from `/proc` on Linux. Elsewhere these return `None`, and a stage
//! that needs them says the measurement is not available on this system.

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
}
