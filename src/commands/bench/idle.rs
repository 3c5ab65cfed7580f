//! Lesson 04's case: a class of clients connected and saying nothing, and
//! new clients' requests timed while they are, with the course's load tool.
//! What lesson 04 teaches is that an idle connection must not hold up
//! anyone else, and must cost little: so each run holds 100, 300 or 1000
//! idle connections open (each said `USER` once, then nothing), times ten
//! new clients' requests, and reads the server's memory.
//!
//! The peer is lesson 03's server, which serves one client at a time: its
//! first idle client holds it, and nobody after is answered. That is the
//! failure lesson 04 starts from, measured.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{median_by, start, BenchArgs, Programs, Row};
use crate::harness::resources::resident_bytes;
use crate::net::load::{self, LoadArgs, Protocol};

/// How many idle connections each run holds open.
const IDLE: [usize; 3] = [100, 300, 1000];
/// New clients timed while the idle ones are held, each on its own
/// connection, pausing between requests as a person would.
const CLIENTS: u32 = 10;
const THINK_MS: u64 = 10;
/// A request with no reply after this long is an error.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How long the idle clients' `OK`s to `USER` may take, all together.
const SETTLE: Duration = Duration::from_secs(3);
/// Lesson 04's server starts with a cap above the largest count: at its
/// default cap (1000) the 1001st client waits, as it should, and this case
/// measures the idle connections, not the cap.
const MAX_CONNECTIONS: &str = "2000";

/// What one run measured against one server.
#[derive(Clone, Copy, Debug)]
struct IdleRun {
    p50_ms: f64,
    p99_ms: f64,
    answered: f64,
    errors: f64,
    /// Idle connections that connected: past its listen queue, a server
    /// that does not accept lets a connect time out.
    connected: f64,
    /// Idle connections the server answered `USER` on.
    served_idle: f64,
    /// The server's memory with the idle connections held.
    resident_mib: f64,
    /// What each idle connection added to it.
    per_idle_kib: f64,
}

impl IdleRun {
    fn median_of(runs: &[IdleRun]) -> IdleRun {
        let of = |field: fn(&IdleRun) -> f64| median_by(runs, field);
        IdleRun {
            p50_ms: of(|run| run.p50_ms),
            p99_ms: of(|run| run.p99_ms),
            answered: of(|run| run.answered),
            errors: of(|run| run.errors),
            connected: of(|run| run.connected),
            served_idle: of(|run| run.served_idle),
            resident_mib: of(|run| run.resident_mib),
            per_idle_kib: of(|run| run.per_idle_kib),
        }
    }

    fn shown(&self, idle: usize) -> String {
        let mut text = if self.answered == 0.0 {
            format!("no answer in {} s", TIMEOUT.as_secs())
        } else {
            format!("p50 {:.1} ms, p99 {:.1} ms", self.p50_ms, self.p99_ms)
        };
        text.push_str(&format!(", {:.0} errors", self.errors));
        if self.connected < idle as f64 {
            text.push_str(&format!(", {:.0} of {idle} idle connected", self.connected));
        }
        if self.served_idle < idle as f64 {
            text.push_str(&format!(", served {:.0} of {idle} idle", self.served_idle));
        }
        text.push_str(&format!(
            ", RSS {:.1} MiB ({:.0} KiB/idle)",
            self.resident_mib, self.per_idle_kib
        ));
        text
    }
}

pub(super) fn idle_cases(programs: &Programs, args: &BenchArgs) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for idle in IDLE {
        let ours_args = [
            "server",
            "--bind",
            "127.0.0.1:0",
            "--max-connections",
            MAX_CONNECTIONS,
        ];
        let theirs_args = ["server", "--bind", "127.0.0.1:0"];
        let ours = (0..args.rounds)
            .map(|_| idle_run(&programs.concurrency, &ours_args, idle, args.seconds))
            .collect::<Result<Vec<_>>>()?;
        // The sequential server runs once: it answers no one whichever the
        // round, each of its runs waits out the timeouts (some 6 s), and
        // with no ratio there is nothing for more rounds of it to steady.
        // At five rounds, this took 72 s off lesson 04's 199.
        let theirs = idle_run(&programs.messages, &theirs_args, idle, args.seconds)?;
        rows.push(Row {
            case: format!("04 mailbox, {idle} idle held, {CLIENTS} new clients"),
            solution: IdleRun::median_of(&ours).shown(idle),
            peer: format!("03 sequential, one run: {}", theirs.shown(idle)),
            // The sequential server's delay is our timeout, not its own:
            // no ratio of the two means anything.
            ratio: None,
            goal: "0 errors, <= 32 KiB/idle",
        });
    }
    Ok(rows)
}

/// Start the server, hold `idle` connections open, time the new clients
/// for `seconds`, and read the server's memory.
fn idle_run(program: &Path, args: &[&str], idle: usize, seconds: u64) -> Result<IdleRun> {
    let (server, addr) = start(program, args)?;
    let before = resident_bytes(server.pid()).unwrap_or(0);
    let held = open_idle(addr, idle);
    let served_idle = count_served(&held);
    let with_idle = resident_bytes(server.pid()).unwrap_or(0);
    let measured = load::measure(&LoadArgs {
        addr: addr.to_string(),
        protocol: Protocol::Mailbox,
        clients: CLIENTS,
        requests: 0,
        duration: Some(seconds as f64),
        timeout: TIMEOUT.as_secs_f64(),
        think: THINK_MS,
    })?;
    let connected = held.len();
    drop(held);
    Ok(IdleRun {
        p50_ms: measured.p50.as_secs_f64() * 1e3,
        p99_ms: measured.p99.as_secs_f64() * 1e3,
        answered: measured.requests as f64,
        errors: measured.errors as f64,
        connected: connected as f64,
        served_idle: served_idle as f64,
        resident_mib: with_idle as f64 / f64::from(1 << 20),
        per_idle_kib: with_idle.saturating_sub(before) as f64 / 1024.0 / idle as f64,
    })
}

/// Open `count` connections at once, each saying `USER idleN` and nothing
/// more. At once, because a server that does not accept leaves some in the
/// system's listen queue and the rest waiting for it: one at a time, each of
/// those would cost a whole connect timeout.
fn open_idle(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    thread::scope(|scope| {
        let opening: Vec<_> = (0..count)
            .filter_map(|number| {
                thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn_scoped(scope, move || -> Option<TcpStream> {
                        let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
                        stream
                            .write_all(format!("USER idle{number}\n").as_bytes())
                            .ok()?;
                        Some(stream)
                    })
                    .ok()
            })
            .collect();
        opening
            .into_iter()
            .filter_map(|thread| thread.join().ok().flatten())
            .collect()
    })
}

/// How many of the idle connections got their `OK`, within SETTLE in all.
fn count_served(held: &[TcpStream]) -> usize {
    let deadline = Instant::now() + SETTLE;
    held.iter()
        .filter(|stream| {
            let left = deadline.saturating_duration_since(Instant::now());
            if stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return false;
            }
            let mut line = String::new();
            // A reader of its own, dropped after the line: an idle client
            // reads nothing more.
            BufReader::new(*stream).read_line(&mut line).is_ok() && line == "OK\n"
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(answered: f64, served_idle: f64) -> IdleRun {
        IdleRun {
            p50_ms: 0.42,
            p99_ms: 3.06,
            answered,
            errors: 0.0,
            connected: 100.0,
            served_idle,
            resident_mib: 4.3,
            per_idle_kib: 21.4,
        }
    }

    #[test]
    fn a_served_run_shows_its_times_and_memory() {
        assert_eq!(
            run(2900.0, 100.0).shown(100),
            "p50 0.4 ms, p99 3.1 ms, 0 errors, RSS 4.3 MiB (21 KiB/idle)"
        );
    }

    #[test]
    fn a_server_that_never_answers_says_so_and_how_few_idle_it_served() {
        assert_eq!(
            run(0.0, 1.0).shown(100),
            "no answer in 2 s, 0 errors, served 1 of 100 idle, RSS 4.3 MiB (21 KiB/idle)"
        );
        let queued_only = IdleRun {
            connected: 60.0,
            ..run(0.0, 1.0)
        };
        assert!(queued_only
            .shown(100)
            .contains(", 60 of 100 idle connected, served 1 of"));
    }

    #[test]
    fn medians_are_taken_field_by_field() {
        let runs = [run(10.0, 3.0), run(30.0, 1.0), run(20.0, 2.0)];
        let middle = IdleRun::median_of(&runs);
        assert_eq!(middle.answered, 20.0);
        assert_eq!(middle.served_idle, 2.0);
    }
}
