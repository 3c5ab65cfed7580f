//! Running the program under test: start it, read what it prints (within
//! bounds), wait for `listening on IP:PORT`, and end it with SIGTERM, then
//! SIGKILL after a grace period. No process outlives its stage: [`Running`]
//! ends its child when dropped, also while a failing stage unwinds.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::escape;
use crate::harness::failure::Failure;
use crate::harness::local;

/// Bytes kept of the start of an output stream, and of its end.
const KEPT_BYTES: usize = 4096;
/// How long a program has, after SIGTERM, to exit on its own; a stage
/// stretches it by `COURSE_PATIENCE`, as every other wait
/// ([`Running::set_grace`]).
pub const GRACE: Duration = Duration::from_secs(2);
/// How often a wait looks at the child; a wait ends as soon as its event
/// happens, this only bounds how late it notices an exit.
const POLL: Duration = Duration::from_millis(10);

/// What a program wrote on one stream: its start and its end, and how much.
#[derive(Debug, Default)]
pub struct Captured {
    /// The first bytes, up to `KEPT_BYTES`.
    pub head: Vec<u8>,
    /// The last bytes, up to `KEPT_BYTES`.
    tail: Vec<u8>,
    /// Bytes in all.
    pub total: usize,
    /// The stream reached its end (the program closed it or exited).
    pub ended: bool,
}

impl Captured {
    fn push(&mut self, bytes: &[u8]) {
        let room = KEPT_BYTES.saturating_sub(self.head.len());
        self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > KEPT_BYTES {
            let excess = self.tail.len() - KEPT_BYTES;
            self.tail.drain(..excess);
        }
        self.total += bytes.len();
    }

    /// Everything, when it all fits; otherwise the start, a count, the end.
    pub fn text(&self) -> String {
        if self.total <= KEPT_BYTES {
            String::from_utf8_lossy(&self.head).into_owned()
        } else {
            format!(
                "{}\n[… {} bytes in all; the last {} follow …]\n{}",
                String::from_utf8_lossy(&self.head),
                self.total,
                self.tail.len(),
                String::from_utf8_lossy(&self.tail)
            )
        }
    }

    /// What was written after the first `offset` bytes, as far as it is
    /// still kept: for a stage that follows a program's output as it comes.
    pub fn since(&self, offset: usize) -> &[u8] {
        let tail_start = self.total - self.tail.len();
        &self.tail[offset.clamp(tail_start, self.total) - tail_start..]
    }

    /// The last `lines` lines, for a report.
    pub fn last_lines(&self, lines: usize) -> String {
        let source = if self.total <= KEPT_BYTES {
            &self.head
        } else {
            &self.tail
        };
        let text = String::from_utf8_lossy(source);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The last `lines` complete lines among the first `end` bytes: what was
    /// written up to a moment, without a line cut off at it.
    pub fn last_lines_before(&self, lines: usize, end: usize) -> String {
        let end = end.min(self.total);
        let tail_start = self.total - self.tail.len();
        let kept = if self.total <= KEPT_BYTES {
            &self.head[..end.min(self.head.len())]
        } else if end >= tail_start {
            &self.tail[..end - tail_start]
        } else {
            &self.head[..end.min(self.head.len())]
        };
        let complete = match kept.iter().rposition(|&byte| byte == b'\n') {
            Some(last) => &kept[..=last],
            None => &[],
        };
        let text = String::from_utf8_lossy(complete);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// A captured stream that a reader thread fills and waiters watch.
type Shared = Arc<(Mutex<Captured>, Condvar)>;

/// What a stream has captured, for a wait that looks again and again: the
/// first look at once (output printed already is read without a poll's
/// delay), each later one once the stream changes, or after POLL.
fn next_look<'a>(shared: &'a Shared, first: &mut bool) -> MutexGuard<'a, Captured> {
    let (lock, changed) = &**shared;
    let captured = lock.lock().unwrap();
    if std::mem::take(first) {
        captured
    } else {
        changed.wait_timeout(captured, POLL).unwrap().0
    }
}

fn drain_into(mut source: impl Read + Send + 'static, shared: Shared) {
    thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match source.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(count) => {
                    let (lock, changed) = &*shared;
                    lock.lock().unwrap().push(&buffer[..count]);
                    changed.notify_all();
                }
            }
        }
        let (lock, changed) = &*shared;
        lock.lock().unwrap().ended = true;
        changed.notify_all();
    });
}

/// How a program ended when asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It had already exited, or exited on SIGTERM within the grace period.
    Exited(ExitStatus),
    /// It ignored SIGTERM and was killed.
    Killed,
}

/// Why a program did not announce its address.
#[derive(Debug)]
pub enum StartError {
    /// It exited before printing a line.
    Exited(ExitStatus),
    /// It printed nothing that ends in a newline before the deadline.
    Silent { partial: Vec<u8> },
    /// It printed a first line that is not `listening on IP:PORT`.
    WrongLine(Vec<u8>),
    /// It printed many bytes without a newline.
    Flood(usize),
}

/// A started program, its output captured. Dropping it ends the program.
pub struct Running {
    child: Child,
    /// The command, as a person would type it.
    pub command_line: String,
    stdout: Shared,
    stderr: Shared,
    status: Option<ExitStatus>,
    /// The test ended it (SIGTERM or SIGKILL) while it was still running.
    ended_by_test: bool,
    /// How much it had written on stderr when the stage's check ended.
    stderr_mark: Option<usize>,
    /// How long [`Running::stop`] waits after SIGTERM.
    grace: Duration,
}

impl Running {
    /// Start `program` with `args`, its output captured and its input piped
    /// (write to it with [`Running::write_stdin`]).
    pub fn start(program: &[String], args: &[String]) -> Result<Running, String> {
        let (name, fixed) = program.split_first().ok_or("no program to run")?;
        let mut command = Command::new(name);
        command
            .args(fixed)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let command_line = std::iter::once(name.as_str())
            .chain(fixed.iter().map(String::as_str))
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        in_a_group_of_its_own(&mut command);
        die_with_parent(&mut command);
        controlled_environment(&mut command);
        become_subreaper();
        // Started and listed in one step: a sweep for strays
        // ([`end_strays`]) never sees it unlisted.
        let mut child = {
            let mut live = live_groups();
            let child = command
                .spawn()
                .map_err(|error| format!("could not start `{command_line}`: {error}"))?;
            live.push(child.id());
            child
        };
        let stdout: Shared = Arc::default();
        let stderr: Shared = Arc::default();
        drain_into(child.stdout.take().expect("piped"), stdout.clone());
        drain_into(child.stderr.take().expect("piped"), stderr.clone());
        Ok(Running {
            child,
            command_line,
            stdout,
            stderr,
            status: None,
            ended_by_test: false,
            stderr_mark: None,
            grace: GRACE,
        })
    }

    /// The operating system's id for the program.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and how (reaping it if so).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait until the program has printed its first line, and read the address
    /// from it. The wait ends early when the program exits.
    pub fn wait_for_address(&mut self, deadline: Instant) -> Result<SocketAddr, StartError> {
        let mut first = true;
        loop {
            let (head, total, ended) = {
                let captured = next_look(&self.stdout, &mut first);
                (captured.head.clone(), captured.total, captured.ended)
            };
            if let Some(end) = head.iter().position(|&b| b == b'\n') {
                let line = &head[..end];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let addr =
                    parse_listening(line).ok_or_else(|| StartError::WrongLine(line.to_vec()))?;
                local::remember_port(addr);
                return Ok(addr);
            }
            if total >= KEPT_BYTES {
                return Err(StartError::Flood(total));
            }
            if ended || self.exit_status().is_some() {
                // Let the reader threads take the last bytes it wrote.
                self.wait_for_output_end(Instant::now() + Duration::from_millis(500));
                match self.wait_exit(Instant::now() + Duration::from_millis(500)) {
                    Some(status) => return Err(StartError::Exited(status)),
                    // It closed stdout but runs on: as silent as can be.
                    None => return Err(StartError::Silent { partial: head }),
                }
            }
            if Instant::now() >= deadline {
                return Err(StartError::Silent { partial: head });
            }
        }
    }

    /// Wait until both output streams have ended, or the deadline; whether
    /// they ended.
    fn wait_for_output_end(&self, deadline: Instant) -> bool {
        let mut ended = true;
        for shared in [&self.stdout, &self.stderr] {
            let (lock, changed) = &**shared;
            let mut captured = lock.lock().unwrap();
            while !captured.ended {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                captured = changed.wait_timeout(captured, left).unwrap().0;
            }
            ended &= captured.ended;
        }
        ended
    }

    /// Wait for the program to exit by itself until `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let status = self.wait_status(deadline)?;
        self.wait_for_output_end(Instant::now() + Duration::from_millis(500));
        Some(status)
    }

    /// [`Running::wait_exit`], without waiting for its output to end.
    fn wait_status(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Wait until stdout holds `wanted`, the program exits, or the deadline.
    pub fn wait_for_stdout(&mut self, wanted: &[u8], deadline: Instant) -> bool {
        let mut first = true;
        loop {
            {
                let captured = next_look(&self.stdout, &mut first);
                let haystack = if captured.total <= KEPT_BYTES {
                    &captured.head
                } else {
                    &captured.tail
                };
                if haystack.windows(wanted.len()).any(|w| w == wanted) {
                    return true;
                }
                if captured.ended {
                    return false;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Write to the program's standard input.
    pub fn write_stdin(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.child.stdin.as_mut() {
            Some(stdin) => stdin.write_all(bytes),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        }
    }

    /// Close the program's standard input: it reads end of input.
    pub fn close_stdin(&mut self) {
        self.child.stdin.take();
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> MutexGuard<'_, Captured> {
        self.stdout.0.lock().unwrap()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> MutexGuard<'_, Captured> {
        self.stderr.0.lock().unwrap()
    }

    /// Note how much it has written on stderr: what it writes later, while
    /// the test closes its connections and stops it, is not the student's
    /// story and stays out of a report.
    pub fn mark_output(&mut self) {
        let written = self.stderr().total;
        self.stderr_mark = Some(written);
    }

    /// The last `lines` lines of stderr, up to the mark if there is one.
    pub fn stderr_for_report(&self, lines: usize) -> String {
        let stderr = self.stderr();
        match self.stderr_mark {
            Some(mark) => stderr.last_lines_before(lines, mark),
            None => stderr.last_lines(lines),
        }
    }

    /// Whether the test ended it, rather than it exiting on its own.
    pub fn ended_by_test(&self) -> bool {
        self.ended_by_test
    }

    /// Kill at once (SIGKILL), as a power cut would: the program and any
    /// program it started.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.exit_status().is_none() {
            self.ended_by_test = true;
            if !signal_group(self.child.id(), Signal::Kill) {
                let _ = self.child.kill();
            }
        }
        self.status = self.child.wait().ok();
        self.end_leftovers();
        self.status
    }

    /// Kill what is left of its process group (programs it started, such as
    /// a wrapper script's server), and forget the group.
    fn end_leftovers(&mut self) {
        signal_group(self.child.id(), Signal::Kill);
        live_groups().retain(|&pid| pid != self.child.id());
    }

    /// Send SIGTERM and return at once, for a stage that talks to the
    /// program while it stops. False where there is no SIGTERM (Windows),
    /// or the program has already exited.
    pub fn request_stop(&mut self) -> bool {
        self.exit_status().is_none() && signal_group(self.child.id(), Signal::Term)
    }

    /// Give the program `grace` to exit after SIGTERM, instead of [`GRACE`].
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Ask the program to stop (SIGTERM, where there are signals) and wait
    /// its grace ([`GRACE`] unless set); kill it if it is still running then.
    pub fn stop(&mut self) -> Ending {
        if let Some(status) = self.exit_status() {
            self.end_leftovers();
            return Ending::Exited(status);
        }
        self.ended_by_test = true;
        if signal_group(self.child.id(), Signal::Term) {
            if let Some(status) = self.wait_status(Instant::now() + self.grace) {
                self.end_leftovers();
                // Its output ends with it, unless a program it started that
                // left its group (a daemon) holds it open: that one goes
                // now, not at the end of the stage.
                if !self.wait_for_output_end(Instant::now() + Duration::from_millis(50)) {
                    end_strays();
                    self.wait_for_output_end(Instant::now() + Duration::from_millis(500));
                }
                return Ending::Exited(status);
            }
            self.kill();
            return Ending::Killed;
        }
        // No SIGTERM here (Windows): ending the process is the only way.
        match self.kill() {
            Some(status) => Ending::Exited(status),
            None => Ending::Killed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `listening on 127.0.0.1:7001` → the address.
pub fn parse_listening(line: &[u8]) -> Option<SocketAddr> {
    let line = std::str::from_utf8(line).ok()?;
    line.strip_prefix("listening on ")?.trim_end().parse().ok()
}

impl StartError {
    /// What went wrong and what to try. `for_command`: the program was given
    /// with `--cmd`, in any language, so the hint speaks of the program, not
    /// of Rust.
    pub fn failure(&self, for_command: bool) -> Failure {
        match self {
            StartError::Exited(status) => Failure::new(format!(
                "the program exited ({}) before it printed its address",
                describe(status)
            ))
            .hint(
                "A server prints `listening on IP:PORT` once it has bound its socket, then \
                 keeps running.",
            )
            .stderr_note("Its stderr, above, says why it stopped."),
            StartError::Silent { partial } if partial.is_empty() => Failure::new(
                "the program printed nothing before the deadline",
            )
            .hint(if for_command {
                "After binding, print `listening on IP:PORT` as the first line of \
                         standard output, then flush standard output after printing the \
                         address (Python: `print(..., flush=True)`; C: `fflush(stdout)`): \
                         written to a pipe, output waits in a buffer until it is flushed."
            } else {
                "After binding, print `listening on IP:PORT` as the first line of \
                         stdout, then flush stdout (`println!` and an explicit \
                         `std::io::stdout().flush()`), so the line leaves your program before \
                         it starts waiting for clients."
            }),
            StartError::Silent { partial } => Failure::new(format!(
                "the program printed {} but never ended the line",
                escape::escape(partial)
            ))
            .hint(if for_command {
                "The first line must end with a newline; then flush standard output \
                 (Python: `print(..., flush=True)`; C: `fflush(stdout)`)."
            } else {
                "The first line must end with a newline: use `println!`, not `print!`, and \
                 flush stdout."
            }),
            StartError::WrongLine(line) => Failure::new(format!(
                "the first line printed was {}, not `listening on IP:PORT`",
                escape::escape(line)
            ))
            .hint(
                "The first line of stdout must be exactly `listening on ` and the address, \
                 such as `listening on 127.0.0.1:7001`: the tests read the port from it. \
                 Print other messages after it, or on stderr.",
            ),
            StartError::Flood(_) => Failure::new(format!(
                "the program printed more than {KEPT_BYTES} bytes without a newline"
            ))
            .hint(
                "The first line must be `listening on IP:PORT`. Is something printing in a \
                 loop?",
            ),
        }
    }
}

/// An exit status in words: `exit code 1`, `killed by signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// The process groups of programs still running: [`end_all_on_interrupt`]
/// ends them if the test itself is stopped, where no destructor runs.
fn live_groups() -> MutexGuard<'static, Vec<u32>> {
    static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Programs run in process groups of their own, so the terminal's Ctrl-C
/// does not reach them: when the test is interrupted (Ctrl-C, SIGTERM,
/// SIGHUP), it ends every program it started, then exits.
pub fn end_all_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        end_everything();
        std::process::exit(130);
    });
}

/// End every program the stages started, and whatever those started, now:
/// for a run that must stop at once (Ctrl-C, a stage stuck past its limit).
pub fn end_everything() {
    for &pid in live_groups().iter() {
        signal_group(pid, Signal::Kill);
    }
    end_strays();
}

/// Variables removed from every program's environment: each changes how a
/// program buffers or decorates its output, so a grade would depend on the
/// machine that grades. An unflushed Python server passes where
/// `PYTHONUNBUFFERED=1` is set and fails elsewhere; here it fails everywhere.
pub const REMOVED_VARIABLES: [&str; 14] = [
    "PYTHONUNBUFFERED",
    "PYTHONIOENCODING",
    "PYTHONLEGACYWINDOWSSTDIO",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    "RUST_LOG",
    "NO_COLOR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "FORCE_COLOR",
    "COLORTERM",
    // What `stdbuf` sets to change a C program's buffering.
    "_STDBUF_I",
    "_STDBUF_O",
    "_STDBUF_E",
];

/// Variables every program gets with these values: no terminal to colour
/// (its output is a pipe), and one locale, so text is UTF-8 everywhere.
pub const FIXED_VARIABLES: [(&str, &str); 2] = [("TERM", "dumb"), ("LC_ALL", "C.UTF-8")];

/// The same environment on every grading machine (see [`REMOVED_VARIABLES`]).
fn controlled_environment(command: &mut Command) {
    for name in REMOVED_VARIABLES {
        command.env_remove(name);
    }
    for (name, value) in FIXED_VARIABLES {
        command.env(name, value);
    }
}

/// On Linux, this process adopts the orphans of the programs it starts: a
/// program's child that leaves its process group (`setsid()`, as a daemon
/// does) and outlives its parent comes back here, where [`end_strays`]
/// ends it, instead of going to init and running on after the grade.
#[cfg(target_os = "linux")]
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl on this process, with plain integer arguments.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    });
}

#[cfg(not(target_os = "linux"))]
fn become_subreaper() {}

/// End every stray: a process that came back to this one as an orphan (see
/// `become_subreaper`) and is not a program still in use, and everything
/// it started. Called when a stage ends. Only orphans that left this
/// process's group are strays, so the test's own children (cargo, a
/// command it runs itself) are left alone.
#[cfg(target_os = "linux")]
pub fn end_strays() {
    let me = std::process::id();
    let Some((_, my_group, _)) = stat_fields(me) else {
        return;
    };
    // Each round ends the strays seen; their children come back here as
    // orphans and are ended in the next. A bound, for a fork bomb.
    for _ in 0..20 {
        let strays = {
            let live = live_groups();
            let table = process_table();
            let mut strays: Vec<u32> = table
                .iter()
                .filter(|entry| entry.parent == me && entry.group != my_group)
                // A program still in use may have an orphan of its own in
                // its group: with stages running at once, another stage's
                // sweep must leave it alone.
                .filter(|entry| !live.contains(&entry.pid) && !live.contains(&entry.group))
                .map(|entry| entry.pid)
                .collect();
            // Their descendants too, all at once.
            let mut index = 0;
            while index < strays.len() {
                let parent = strays[index];
                strays.extend(
                    table
                        .iter()
                        .filter(|entry| entry.parent == parent)
                        .map(|entry| entry.pid),
                );
                index += 1;
            }
            strays
        };
        if strays.is_empty() {
            return;
        }
        for &pid in &strays {
            // SAFETY: kill(2) on a process this one adopted or its descendant.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        for &pid in &strays {
            reap(pid);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn end_strays() {}

/// One line of the process table: a process, its parent and its group.
#[cfg(target_os = "linux")]
struct Entry {
    pid: u32,
    parent: u32,
    group: u32,
}

#[cfg(target_os = "linux")]
fn process_table() -> Vec<Entry> {
    let Ok(folders) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    folders
        .flatten()
        .filter_map(|folder| folder.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (parent, group, _) = stat_fields(pid)?;
            Some(Entry { pid, parent, group })
        })
        .collect()
}

/// The parent, process group and session of `pid`, from `/proc/PID/stat`.
#[cfg(target_os = "linux")]
fn stat_fields(pid: u32) -> Option<(u32, u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command's closing parenthesis: state, parent, group, session.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(1);
    let mut next = || fields.next()?.parse::<u32>().ok();
    Some((next()?, next()?, next()?))
}

/// Collect the exit of `pid` if it is this process's child, within a moment:
/// SIGKILL is not delayed, but a process in the middle of a system call
/// ends when it returns.
#[cfg(target_os = "linux")]
fn reap(pid: u32) {
    let deadline = Instant::now() + Duration::from_millis(500);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one pid, without blocking.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if reaped != 0 || Instant::now() >= deadline {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// What the test asks of a program.
#[derive(Clone, Copy)]
enum Signal {
    /// Please stop (SIGTERM).
    Term,
    /// Stop now (SIGKILL).
    Kill,
}

/// Send `signal` to the process group led by `pid`: the program and every
/// program it started. False where there are no signals (Windows), or the
/// group is gone.
#[cfg(unix)]
fn signal_group(pid: u32, signal: Signal) -> bool {
    let signal = match signal {
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    };
    // SAFETY: kill(2) on a group this test created; nothing else is touched.
    unsafe { libc::kill(-(pid as libc::pid_t), signal) == 0 }
}

#[cfg(not(unix))]
fn signal_group(_pid: u32, _signal: Signal) -> bool {
    false
}

/// A program that starts programs of its own (a wrapper script, `npm start`)
/// must not leave them running: it leads a process group, and the group is
/// what the test signals.
#[cfg(unix)]
fn in_a_group_of_its_own(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
}

#[cfg(not(unix))]
fn in_a_group_of_its_own(_command: &mut Command) {}

/// On Linux, the kernel kills the program if the test itself dies (killed
/// from outside, where no destructor runs). The signal follows the thread
/// that started the child, so programs are started from the stage's thread.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_address_from_the_first_line() {
        assert_eq!(
            parse_listening(b"listening on 127.0.0.1:7001"),
            Some("127.0.0.1:7001".parse().unwrap())
        );
        assert_eq!(
            parse_listening(b"listening on [::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listening(b"Listening on 127.0.0.1:7001"), None);
        assert_eq!(parse_listening(b"listening on 127.0.0.1"), None);
    }

    #[test]
    fn programs_run_without_the_variables_that_change_their_output() {
        let mut command = Command::new("server");
        controlled_environment(&mut command);
        let envs: Vec<(String, Option<String>)> = command
            .get_envs()
            .map(|(name, value)| {
                let text = |os: &std::ffi::OsStr| os.to_string_lossy().into_owned();
                (text(name), value.map(text))
            })
            .collect();
        for name in [
            "PYTHONUNBUFFERED",
            "RUST_BACKTRACE",
            "NO_COLOR",
            "FORCE_COLOR",
        ] {
            assert!(envs.contains(&(name.to_string(), None)), "{name}: {envs:?}");
        }
        assert!(envs.contains(&("TERM".to_string(), Some("dumb".to_string()))));
    }

    #[test]
    fn the_readme_names_every_variable_the_programs_run_without() {
        let readme = include_str!("../../README.md");
        for name in REMOVED_VARIABLES {
            assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
        }
        for (name, value) in FIXED_VARIABLES {
            assert!(
                readme.contains(&format!("`{name}={value}`")),
                "README lacks {name}"
            );
        }
    }

    #[test]
    fn keeps_the_start_and_the_end_of_a_flood() {
        let mut captured = Captured::default();
        for _ in 0..1000 {
            captured.push(&[b'x'; 100]);
        }
        captured.push(b"\nthe end");
        assert_eq!(captured.total, 100_008);
        assert_eq!(captured.head.len(), KEPT_BYTES);
        assert_eq!(captured.last_lines(1), "the end");
        assert!(captured.text().contains("100008 bytes in all"));
    }

    #[test]
    fn lines_before_a_mark_leave_out_a_line_cut_at_it() {
        let mut captured = Captured::default();
        captured.push(b"one\ntwo\nthr");
        let mark = captured.total;
        captured.push(b"ee\nfour\n");
        assert_eq!(captured.last_lines_before(5, mark), "one\ntwo");
        assert_eq!(captured.last_lines_before(1, mark), "two");
        assert_eq!(captured.last_lines(1), "four");
    }
}
