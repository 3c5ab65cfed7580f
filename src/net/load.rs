//! `course load`: many clients at once against one server, and what they
//! measured: throughput, latency percentiles, errors.
//!
//! ```text
//! cargo run -- load 127.0.0.1:7004 --protocol mailbox --clients 100 --requests 100
//! ```
//!
//! It speaks the echo protocol of lesson 01, HTTP/1.1 (lesson 02) or the
//! mailbox of lesson 03 to any server that keeps to them, whatever its
//! language. Each client is a thread with its own connection. A request's
//! latency runs from its first byte sent to its reply's last byte read; a
//! connection's first request also includes connecting and, for the
//! mailbox, the `USER` round trip, so time spent waiting for a busy server
//! to accept or to start serving counts too. A request that fails counts at
//! the time it took to fail (a timeout, at least `--timeout`): leaving it out
//! would make a collapsing server's percentiles look better than its
//! successes alone.

use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The server's address, such as 127.0.0.1:7004.
    pub addr: String,
    /// What the clients speak.
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// How many clients, each with its own connection, at the same time.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// How many requests each client sends.
    #[arg(long, default_value_t = 100, conflicts_with = "duration")]
    pub requests: u64,
    /// Send requests for this many seconds instead of a fixed number.
    #[arg(long)]
    pub duration: Option<f64>,
    /// A request with no reply after this many seconds is an error.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Each client pauses this many milliseconds between requests, as a
    /// person would; the pause is not part of any latency.
    #[arg(long, default_value_t = 0)]
    pub think: u64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A line out, the same line back (lesson 01).
    Echo,
    /// `GET /` over HTTP/1.1, kept alive while the server allows (lesson 02).
    Http,
    /// USER, then SEND and FETCH in turn (lesson 03).
    Mailbox,
}

/// Run the load and print what it measured.
pub fn run(args: &LoadArgs) -> Result<()> {
    let run = execute(args, true)?;
    print_summary(&run.tally, &run.latencies, run.took);
    print_first_replies(&run.first_replies, args.clients);
    if run.tally.done.load(Ordering::Relaxed) == 0 {
        bail!("no request succeeded against {}", args.addr);
    }
    Ok(())
}

/// What one load run measured, for a program to compare (`course bench`).
#[derive(Debug, Clone)]
pub struct Measured {
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p99: Duration,
    pub p50: Duration,
}

/// Run the load without a word on stderr, and return what it measured.
pub fn measure(args: &LoadArgs) -> Result<Measured> {
    let run = execute(args, false)?;
    let requests = run.tally.done.load(Ordering::Relaxed);
    Ok(Measured {
        requests,
        errors: run.tally.errors.load(Ordering::Relaxed),
        per_second: requests as f64 / run.took.as_secs_f64().max(1e-9),
        p99: Duration::from_micros(run.latencies.percentile(0.99)),
        p50: Duration::from_micros(run.latencies.percentile(0.50)),
    })
}

/// A run's tallies and latencies, before anyone reads them.
struct Run {
    tally: Tally,
    latencies: Histogram,
    first_replies: Histogram,
    took: Duration,
}

fn execute(args: &LoadArgs, progress: bool) -> Result<Run> {
    let addr = args
        .addr
        .to_socket_addrs()
        .with_context(|| format!("{} is not an address", args.addr))?
        .next()
        .ok_or_else(|| anyhow!("{} is not an address", args.addr))?;
    if args.timeout.is_nan() || args.timeout <= 0.0 {
        bail!("--timeout must be more than 0 seconds");
    }
    let until = match args.duration {
        Some(seconds) if seconds > 0.0 => Until::Deadline(Duration::from_secs_f64(seconds)),
        Some(_) => bail!("--duration must be more than 0 seconds"),
        None => Until::Requests(args.requests),
    };
    let plan = Plan {
        addr,
        host: args.addr.clone(),
        protocol: args.protocol,
        timeout: Duration::from_secs_f64(args.timeout),
        until,
        think: Duration::from_millis(args.think),
    };
    let protocol = clap::ValueEnum::to_possible_value(&args.protocol)
        .map(|value| value.get_name().to_string())
        .unwrap_or_default();
    if progress {
        eprintln!(
            "load: {} clients, {}, {protocol} protocol, against {addr}",
            args.clients,
            match until {
                Until::Requests(count) => format!("{count} requests each"),
                Until::Deadline(time) => format!("for {:.1} s", time.as_secs_f64()),
            },
        );
    }
    let tally = Tally::default();
    let started = Instant::now();
    let (latencies, first_replies) = thread::scope(|scope| {
        let clients: Vec<_> = (0..args.clients)
            .map(|number| {
                let (plan, tally) = (&plan, &tally);
                scope.spawn(move || run_client(plan, number, tally, started))
            })
            .collect();
        show_progress(&tally, &plan, started, args.clients, progress);
        let mut all = Histogram::default();
        let mut first_replies = Histogram::default();
        for client in clients {
            let (latencies, first) = client.join().expect("a client thread does not panic");
            all.merge(&latencies);
            if let Some(first) = first {
                first_replies.record(first);
            }
        }
        (all, first_replies)
    });
    Ok(Run {
        tally,
        latencies,
        first_replies,
        took: started.elapsed(),
    })
}

/// When each client stops.
#[derive(Debug, Clone, Copy)]
enum Until {
    Requests(u64),
    Deadline(Duration),
}

struct Plan {
    addr: SocketAddr,
    /// The address as typed, for HTTP's Host header.
    host: String,
    protocol: Protocol,
    timeout: Duration,
    until: Until,
    think: Duration,
}

/// What all clients have done so far, read by the progress line.
#[derive(Default)]
struct Tally {
    done: AtomicU64,
    errors: AtomicU64,
    finished_clients: AtomicU64,
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, error: &io::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert_with(|| match error.kind() {
            // What a read timeout is called depends on the system.
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "no reply within --timeout".to_string()
            }
            _ => error.to_string(),
        });
    }
}

/// One client: connect, send requests one after another, reconnect after an
/// error. Returns the latencies of its requests, failed ones included, and
/// when the first reply came, counted from the start of the run.
fn run_client(
    plan: &Plan,
    number: u32,
    tally: &Tally,
    started: Instant,
) -> (Histogram, Option<Duration>) {
    let mut latencies = Histogram::default();
    let mut first_reply = None;
    let mut session: Option<Session> = None;
    let mut sent = 0u64;
    loop {
        let more = match plan.until {
            Until::Requests(count) => sent < count,
            Until::Deadline(time) => started.elapsed() < time,
        };
        if !more || tally.stop.load(Ordering::Relaxed) {
            break;
        }
        if sent > 0 && !plan.think.is_zero() {
            thread::sleep(plan.think);
        }
        sent += 1;
        let begun = Instant::now();
        let result = match session.as_mut() {
            Some(session) => session.request(plan),
            None => Session::open(plan, number).and_then(|mut opened| {
                let result = opened.request(plan);
                session = Some(opened);
                result
            }),
        };
        match result {
            Ok(keep) => {
                latencies.record(begun.elapsed());
                first_reply.get_or_insert_with(|| started.elapsed());
                tally.done.fetch_add(1, Ordering::Relaxed);
                if !keep {
                    session = None;
                }
            }
            Err(error) => {
                latencies.record(begun.elapsed());
                tally.error(&error);
                session = None;
                // A server that refuses everything is not hammered in a
                // tight loop; the pause is part of that request's error.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    tally.finished_clients.fetch_add(1, Ordering::Relaxed);
    (latencies, first_reply)
}

/// One connection and what the protocol needs to remember on it.
struct Session {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    user: String,
    count: u64,
}

impl Session {
    fn open(plan: &Plan, number: u32) -> io::Result<Session> {
        let stream = TcpStream::connect_timeout(&plan.addr, plan.timeout)?;
        stream.set_read_timeout(Some(plan.timeout))?;
        stream.set_write_timeout(Some(plan.timeout))?;
        stream.set_nodelay(true)?;
        let mut session = Session {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            user: format!("load{number}"),
            count: 0,
        };
        if plan.protocol == Protocol::Mailbox {
            let hello = format!("USER {}\n", session.user);
            session.writer.write_all(hello.as_bytes())?;
            session.expect_line("OK")?;
        }
        Ok(session)
    }

    /// One request and its whole reply. `Ok(false)`: the server closes this
    /// connection after the reply, and the next request needs a new one.
    fn request(&mut self, plan: &Plan) -> io::Result<bool> {
        self.count += 1;
        match plan.protocol {
            Protocol::Echo => {
                let line = format!("load {} {}\n", self.user, self.count);
                self.writer.write_all(line.as_bytes())?;
                self.expect_line(line.trim_end())?;
                Ok(true)
            }
            Protocol::Http => self.http_get(&plan.host),
            Protocol::Mailbox if self.count % 2 == 1 => {
                let request = format!("SEND {} 16\nload test body..", self.user);
                self.writer.write_all(request.as_bytes())?;
                let reply = self.read_line()?;
                if !reply.starts_with("OK ") {
                    return Err(unexpected(&reply));
                }
                Ok(true)
            }
            Protocol::Mailbox => {
                self.writer.write_all(b"FETCH\n")?;
                let reply = self.read_line()?;
                let count: usize = reply
                    .strip_prefix("MSGS ")
                    .and_then(|count| count.parse().ok())
                    .ok_or_else(|| unexpected(&reply))?;
                for _ in 0..count {
                    let header = self.read_line()?;
                    let length: u64 = header
                        .rsplit(' ')
                        .next()
                        .and_then(|length| length.parse().ok())
                        .filter(|_| header.starts_with("MSG "))
                        .ok_or_else(|| unexpected(&header))?;
                    self.skip(length)?;
                }
                Ok(true)
            }
        }
    }

    fn http_get(&mut self, host: &str) -> io::Result<bool> {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: course-load\r\n\r\n");
        self.writer.write_all(request.as_bytes())?;
        let status = self.read_line()?;
        let code = status.split(' ').nth(1).unwrap_or_default();
        if !status.starts_with("HTTP/1.") || !code.starts_with('2') {
            return Err(unexpected(&status));
        }
        let mut length = None;
        let mut keep_alive = status.starts_with("HTTP/1.1");
        loop {
            let header = self.read_line()?;
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((&header, ""));
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse().map_err(|_| unexpected(&header))?);
            } else if name.eq_ignore_ascii_case("connection") {
                keep_alive = !value.eq_ignore_ascii_case("close");
            }
        }
        match length {
            Some(length) => self.skip(length)?,
            // No length: the body ends where the connection does.
            None => {
                io::copy(&mut (&mut self.reader).take(MAX_BODY), &mut io::sink())?;
                keep_alive = false;
            }
        }
        Ok(keep_alive)
    }

    /// Read one line (at most MAX_LINE bytes), without its line ending.
    fn read_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection, or sent a line too long",
            ));
        }
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\r', '\n']).to_string())
    }

    fn expect_line(&mut self, expected: &str) -> io::Result<()> {
        let line = self.read_line()?;
        if line == expected {
            Ok(())
        } else {
            Err(unexpected(&line))
        }
    }

    /// Read and drop a body of `length` bytes, which a server may not make
    /// longer than MAX_BODY.
    fn skip(&mut self, length: u64) -> io::Result<()> {
        if length > MAX_BODY {
            return Err(unexpected(&format!("a body of {length} bytes")));
        }
        let skipped = io::copy(&mut (&mut self.reader).take(length), &mut io::sink())?;
        if skipped < length {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// The longest line, and the largest body, the tool reads.
const MAX_LINE: u64 = 8 * 1024;
const MAX_BODY: u64 = 16 << 20;

fn unexpected(reply: &str) -> io::Error {
    let shown: String = reply.chars().take(60).collect();
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply `{shown}`"),
    )
}

/// A line on stderr each second while the clients run (when `visible`); on a
/// terminal, the same line rewritten in place.
fn show_progress(tally: &Tally, plan: &Plan, started: Instant, clients: u32, visible: bool) {
    let terminal = visible && io::stderr().is_terminal();
    let mut next = started + Duration::from_secs(1);
    while tally.finished_clients.load(Ordering::Relaxed) < u64::from(clients) {
        // A short sleep, not a wait on the clients: this thread only reads
        // counters, and wakes often enough to end soon after the last one.
        thread::sleep(Duration::from_millis(20));
        if let Until::Deadline(time) = plan.until {
            if started.elapsed() >= time + plan.timeout {
                // Clients stuck in a request past the end stop at its timeout.
                tally.stop.store(true, Ordering::Relaxed);
            }
        }
        if visible && Instant::now() >= next {
            next += Duration::from_secs(1);
            let line = format!(
                "{:6.1} s  {:>9} requests  {:>6} errors  {:>5} clients done",
                started.elapsed().as_secs_f64(),
                tally.done.load(Ordering::Relaxed),
                tally.errors.load(Ordering::Relaxed),
                tally.finished_clients.load(Ordering::Relaxed)
            );
            if terminal {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }
    if terminal {
        eprintln!();
    }
}

fn print_summary(tally: &Tally, latencies: &Histogram, took: Duration) {
    let done = tally.done.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let seconds = took.as_secs_f64().max(1e-9);
    println!(
        "requests  {done} in {seconds:.2} s: {:.0} per second",
        done as f64 / seconds
    );
    match tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_deref()
    {
        Some(first) => println!("errors    {errors} (the first: {first})"),
        None => println!("errors    0"),
    }
    if done == 0 {
        println!("latency   (no request succeeded)");
        return;
    }
    println!(
        "latency   p50 {}  p90 {}  p99 {}  max {}",
        shown(latencies.percentile(0.50)),
        shown(latencies.percentile(0.90)),
        shown(latencies.percentile(0.99)),
        shown(latencies.max)
    );
    if errors > 0 {
        println!(
            "          (failed requests, {errors} of them, count at the time each took to fail)"
        );
    }
}

/// How long clients waited for their first reply: a server that serves one
/// client at a time answers the others only once it has finished with it.
fn print_first_replies(first_replies: &Histogram, clients: u32) {
    if first_replies.total == 0 {
        return;
    }
    println!(
        "first reply  p50 {}  max {}  ({} of {clients} clients got one)",
        shown(first_replies.percentile(0.50)),
        shown(first_replies.max),
        first_replies.total
    );
}

/// Microseconds, in the unit that reads best.
fn shown(micros: u64) -> String {
    match micros {
        0..=999 => format!("{micros} µs"),
        1_000..=999_999 => format!("{:.1} ms", micros as f64 / 1e3),
        _ => format!("{:.2} s", micros as f64 / 1e6),
    }
}

/// Latencies in microseconds, each kept to within 1/16 (about 6%), in a
/// fixed space however many requests run: 16 buckets per power of two.
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; 16 + 60 * 16],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, more) in self.counts.iter_mut().zip(&other.counts) {
            *count += more;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// The latency below which `fraction` of the requests fell: the top of
    /// its bucket, so that a percentile is never shown lower than it was.
    fn percentile(&self, fraction: f64) -> u64 {
        let wanted = ((self.total as f64 * fraction).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return highest_in(index).min(self.max);
            }
        }
        self.max
    }
}

/// The bucket of `micros`: exact below 16, then 16 per power of two.
fn bucket(micros: u64) -> usize {
    if micros < 16 {
        return micros as usize;
    }
    let power = 63 - u64::from(micros.leading_zeros());
    let step = ((micros >> (power - 4)) - 16) as usize;
    16 + (power as usize - 4) * 16 + step
}

/// The largest value in bucket `index`.
fn highest_in(index: usize) -> u64 {
    // Past the last bucket comes 2^64, which wraps to 0: one less is u64::MAX.
    lowest_in(index + 1).wrapping_sub(1)
}

/// The smallest value in bucket `index`.
fn lowest_in(index: usize) -> u64 {
    if index < 16 {
        return index as u64;
    }
    let power = (index - 16) / 16 + 4;
    let step = ((index - 16) % 16) as u64;
    (16 + step) << (power - 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_to_within_a_sixteenth() {
        for micros in [
            0,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1_000,
            123_456,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let low = lowest_in(bucket(micros));
            assert!(low <= micros, "{micros}: {low}");
            assert!(micros - low <= micros / 16, "{micros}: {low}");
            let high = highest_in(bucket(micros));
            assert!(high >= micros, "{micros}: {high}");
            assert!(high - micros <= micros / 16, "{micros}: {high}");
        }
        assert!(bucket(u64::MAX) < Histogram::default().counts.len());
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut histogram = Histogram::default();
        for micros in 1..=100 {
            histogram.record(Duration::from_micros(micros * 100));
        }
        let p50 = histogram.percentile(0.5);
        assert!((5_000..=5_000 + 5_000 / 16).contains(&p50), "{p50}");
        assert_eq!(histogram.max, 10_000);
        assert!(histogram.percentile(0.99) <= 10_000);
    }
}
