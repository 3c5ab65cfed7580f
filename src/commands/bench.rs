//! `course bench`: the reference solutions side by side with the servers a
//! student would pick instead, on this machine, in one run.
//!
//! ```text
//! cargo run --release -- bench
//! ```
//!
//! Each case runs the solution and its peers in turn (solution, peer;
//! peer, solution; ...: a different one first each round), so that a
//! machine that gets busier halfway hurts all alike, and what a round
//! starts right after falls on each in turn; it prints the median of the
//! rounds. The peers: for lesson
//! 01, a 15-line Python echo server and one in the design of tokio's echo
//! example (a task per connection, 1 KiB reads); for lesson 02, nginx with
//! two workers serving the same file, measured with wrk and with the
//! course's own load tool, and at `wrk -c50` also a server in the design
//! of the Rust Book's chapter 21 (`bench/book-server`); for lesson 04,
//! lesson 03's sequential server, both with hundreds of idle connections
//! held open (`idle.rs`); for lesson 05 a chat server built the way
//! tokio's chat example is (a task per member, `LinesCodec`, an unbounded
//! channel to each member, speaking the course's protocol). Both tokio peers are in
//! `bench/tokio-peers`. The bench builds the peers in `bench/` with cargo.
//! A peer that is not installed, or cannot be built, is skipped, and the
//! table says so. What the table shows, each ratio and the range of its
//! rounds, is in `table.rs`.
//! Everything runs on loopback; the load shares the cores with the server.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::commands::grade::{cargo_build, BuildFolder};
use crate::harness::process::Running;
use crate::harness::resources::resident_bytes;
use crate::net::load::{self, LoadArgs, Protocol};

mod idle;
mod table;

use table::{print_table, Machine, Ratio, Row};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// How many times each contender runs each case (lesson 01 three times as
    /// many, the room twice as many and one more); the table shows medians.
    #[arg(long, default_value_t = ROUNDS, value_parser = clap::value_parser!(u32).range(1..=15))]
    pub rounds: u32,
    /// How long each timed run lasts, in seconds.
    #[arg(long, default_value_t = 3)]
    pub seconds: u64,
    /// Run only the cases of these lessons (01, 02, 04, 05), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Take the solution programs from this folder rather than building them
    /// (to compare another build of them: a copy of an older target/release).
    #[arg(long, value_name = "DIR")]
    pub solutions: Option<PathBuf>,
}

/// Rounds of each case, unless told otherwise. On a shared machine about
/// one round in four of the room case, and one in six of lesson 01's, come
/// out on the other side of their goals, whichever server the trouble falls
/// on (the host taking a core back for a few milliseconds is enough). Were
/// rounds independent, a median of three would then be on the wrong side in
/// one bench in six for the room and one in fourteen for lesson 01; a
/// median of five, in one in ten and one in twenty-eight. It takes two
/// thirds more time.
const ROUNDS: u32 = 5;

/// Lesson 01 and the room case run more rounds than asked: a round of
/// theirs is short (under half a second a server for lesson 01, about two
/// for the room) and their rounds swing the most. Their medians, of 15 and
/// of 11 rounds for five asked, would be on the wrong side of their goals
/// about one bench in 800 and one in 30 were rounds independent. On a
/// shared machine they are not: a busy minute falls on several in a row,
/// and a host busy for the whole run moves every round (lesson 01 missed
/// its goal at 1.14 and 1.17 with the host taking 15% of the CPU back).
/// It adds some 40 s to a bench of six or seven minutes.
fn echo_rounds(asked: u32) -> u32 {
    3 * asked
}

/// See [`echo_rounds`]; odd, so that the median is one of the rounds.
fn room_rounds(asked: u32) -> u32 {
    2 * asked + 1
}

/// The file both web servers serve: 176 bytes, a small page.
const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>bench</title>\
    </head>\n<body><p>One small page, of 176 bytes, the same for every server in this bench.</p>\
    </body></html>\n";

/// A 15-line echo server in Python, as a student might write one; it keeps
/// the course's contract (`listening on ...`), so it starts like a lesson.
const PYTHON_ECHO: &str = r#"import socket, sys

server = socket.create_server(("127.0.0.1", 0))
print("listening on %s:%d" % server.getsockname(), flush=True)
while True:
    conn, _ = server.accept()
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
"#;

/// What the bench says in a copy of the course without solutions/: cargo
/// would only say that no such program exists.
const NO_SOLUTIONS: &str = "this copy of the course has no solutions/ (it is a student's \
     handout): the bench measures the reference solutions, so it has nothing to measure here";

pub fn run(project: &Path, args: &BenchArgs) -> Result<()> {
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }
    if args.solutions.is_none() && !project.join("solutions").is_dir() {
        bail!(NO_SOLUTIONS);
    }
    // Before the build: what the CPUs were doing then is what else the
    // machine was doing, not what the compiler was.
    let machine = Machine::watch(Duration::from_secs(1));
    let wants = |lesson: &str| args.only.is_empty() || args.only.iter().any(|o| o == lesson);
    let programs = match &args.solutions {
        Some(folder) => Programs::in_folder(folder),
        None => Programs::build(project)?,
    };
    let scratch = Scratch::new()?;
    let mut rows = Vec::new();
    if wants("01") {
        let tokio = build_peer(project, "tokio-peers", "tokio-echo-peer");
        rows.extend(echo_cases(&programs, &scratch, &tokio, args)?);
    }
    if wants("02") {
        rows.extend(http_cases(project, &programs, &scratch, args)?);
    }
    if wants("04") {
        rows.extend(idle::idle_cases(&programs, args)?);
    }
    if wants("05") {
        let peer = tokio_chat(project);
        rows.extend(chat_cases(&programs.chat, &peer, args)?);
    }
    print_table(&rows, args.rounds, &machine);
    Ok(())
}

/// The solutions' programs.
struct Programs {
    echo: PathBuf,
    http: PathBuf,
    /// Lesson 03's, the sequential server: lesson 04's peer.
    messages: PathBuf,
    concurrency: PathBuf,
    chat: PathBuf,
}

impl Programs {
    const NAMES: [&'static str; 5] = [
        "01-echo-solution",
        "02-http-solution",
        "03-messages-solution",
        "04-concurrency-solution",
        "05-chat-solution",
    ];

    fn in_folder(folder: &Path) -> Programs {
        Self::from_paths(Self::NAMES.map(|name| Some(folder.join(name))))
            .expect("every name has a path")
    }

    fn from_paths(paths: [Option<PathBuf>; 5]) -> Option<Programs> {
        let [echo, http, messages, concurrency, chat] = paths;
        Some(Programs {
            echo: echo?,
            http: http?,
            messages: messages?,
            concurrency: concurrency?,
            chat: chat?,
        })
    }

    /// Build the solutions optimized, as a benchmark must.
    fn build(project: &Path) -> Result<Programs> {
        let mut args = vec!["build".to_string(), "--release".to_string()];
        for name in Self::NAMES {
            args.extend(["--bin".to_string(), name.to_string()]);
        }
        // Measured from this checkout's own build, as a grade is.
        let built = cargo_build(project, &args, "bin", BuildFolder::Own)?;
        Self::from_paths(Self::NAMES.map(|name| built.get(name).cloned()))
            .ok_or_else(|| anyhow!("cargo built the solutions but did not say where"))
    }
}

/// A folder for the bench's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let folder = std::env::temp_dir().join(format!("course-bench-{}", std::process::id()));
        fs::create_dir_all(folder.join("site"))?;
        fs::write(folder.join("site/index.html"), PAGE)?;
        fs::write(folder.join("echo.py"), PYTHON_ECHO)?;
        Ok(Scratch(folder))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Start a program that keeps the course's contract, and read its address.
fn start(program: &Path, args: &[&str]) -> Result<(Running, SocketAddr)> {
    let program = vec![program.display().to_string()];
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let mut running = Running::start(&program, &args).map_err(|error| anyhow!(error))?;
    let addr = running
        .wait_for_address(Instant::now() + Duration::from_secs(10))
        .map_err(|error| anyhow!("{} did not start: {error:?}", running.command_line))?;
    Ok((running, addr))
}

/// Build the peer in `project/bench/FOLDER` optimized (a first build may
/// fetch crates and take a minute) and return its program `bin`; why not,
/// when it cannot be built.
fn build_peer(project: &Path, folder: &str, bin: &str) -> std::result::Result<PathBuf, String> {
    let manifest = project.join("bench").join(folder).join("Cargo.toml");
    let args = ["build", "--release", "--manifest-path"]
        .map(String::from)
        .into_iter()
        .chain([manifest.display().to_string()])
        .collect::<Vec<_>>();
    let built = cargo_build(project, &args, "bin", BuildFolder::AsConfigured)
        .map_err(|error| format!("{error:#}"))?;
    built
        .get(bin)
        .cloned()
        .ok_or_else(|| format!("cargo built bench/{folder} but did not say where"))
}

/// What the table says of a peer that could not be built: the first line
/// of why.
fn not_built(peer: &str, why: &str) -> String {
    format!("{peer} not built: {}", why.lines().next().unwrap_or(""))
}

/// Whether `tool` can be started: asked for its version (or its usage, by
/// a tool that knows no `--version`), it starts and soon exits.
fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The middle value: with an even count, the lower of the two middle ones.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values
        .get((values.len().max(1) - 1) / 2)
        .copied()
        .unwrap_or(f64::NAN)
}

/// One number of each run, in the runs' order.
fn values_of<T>(runs: &[T], field: fn(&T) -> f64) -> Vec<f64> {
    runs.iter().map(field).collect()
}

/// The median of one number over several runs.
fn median_by<T>(runs: &[T], field: fn(&T) -> f64) -> f64 {
    median(values_of(runs, field))
}

/// One contender of a case: a run of it, or none where it is missing (not
/// installed, not built).
type Contender<'a, T> = Option<Box<dyn FnMut() -> Result<T> + 'a>>;

/// Run each contender there is once a round, for `rounds` rounds; each
/// one's results, in its place. Who goes first moves on by one each round,
/// so that what a round starts right after (the case before it, whose
/// connections are still closing and whose memory is still being freed)
/// falls on each contender in turn, never always on the solution.
fn in_turns<T, const N: usize>(
    rounds: u32,
    mut contenders: [Contender<'_, T>; N],
) -> Result<[Vec<T>; N]> {
    let mut results: [Vec<T>; N] = std::array::from_fn(|_| Vec::new());
    let present: Vec<usize> = (0..N)
        .filter(|&index| contenders[index].is_some())
        .collect();
    for round in 0..rounds as usize {
        for step in 0..present.len() {
            let index = present[(round + step) % present.len()];
            if let Some(run) = &mut contenders[index] {
                results[index].push(run()?);
            }
        }
    }
    Ok(results)
}

// ---- Lesson 01: echo -------------------------------------------------------

/// Bytes sent through the echo server on one connection.
const ECHO_BYTES: u64 = 256 << 20;

/// Lesson 01 beside two echo servers: Python's, and one in the design of
/// tokio's example (`tokio`, or why it was not built), in turns.
fn echo_cases(
    programs: &Programs,
    scratch: &Scratch,
    tokio: &std::result::Result<PathBuf, String>,
    args: &BenchArgs,
) -> Result<Vec<Row>> {
    let python = installed("python3");
    let script = scratch.0.join("echo.py").display().to_string();
    let through = |program: &Path, args: &[&str]| -> Result<f64> {
        let (_server, addr) = start(program, args)?;
        echo_throughput(addr)
    };
    let [ours, pythons, tokios] = in_turns(
        echo_rounds(args.rounds),
        [
            Some(Box::new(|| {
                through(&programs.echo, &["server", "--bind", "127.0.0.1:0"])
            })),
            python.then(|| Box::new(|| through(Path::new("python3"), &[&script])) as _),
            tokio
                .as_ref()
                .ok()
                .map(|program| Box::new(|| through(program, &["127.0.0.1:0"])) as _),
        ],
    )?;
    let ours_shown = format!("{:.0} MB/s", median(ours.clone()));
    let beside_python = Row {
        case: "01 echo, 256 MiB on one connection".to_string(),
        solution: ours_shown.clone(),
        peer: if python {
            format!("python3: {:.0} MB/s", median(pythons.clone()))
        } else {
            "python3 not installed".to_string()
        },
        ratio: Ratio::of(&ours, &pythons),
        goal: ">= 1.2",
    };
    let beside_tokio = Row {
        case: "01 echo, 256 MiB on one connection, beside tokio's echo example".to_string(),
        solution: ours_shown,
        peer: match tokio {
            Ok(_) => format!("tokio, 1 KiB reads: {:.0} MB/s", median(tokios.clone())),
            Err(why) => not_built("tokio peer", why),
        },
        ratio: Ratio::of(&ours, &tokios),
        goal: ">= 1.5",
    };
    Ok(vec![beside_python, beside_tokio])
}

/// Megabytes per second through the echo server at `addr`: one thread
/// writes, this one takes back every byte.
fn echo_throughput(addr: SocketAddr) -> Result<f64> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let started = Instant::now();
    let sending = thread::spawn(move || -> std::io::Result<()> {
        // Large writes and reads on this side, so that the server under
        // test, not the client, is what limits the rate.
        let chunk = vec![b'x'; 1 << 20];
        let mut left = ECHO_BYTES;
        while left > 0 {
            let now = left.min(chunk.len() as u64) as usize;
            writer.write_all(&chunk[..now])?;
            left -= now as u64;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut buffer = vec![0u8; 1 << 20];
    let mut received = 0u64;
    while received < ECHO_BYTES {
        let count = receive_and_discard(&stream, &mut buffer)?;
        if count == 0 {
            break;
        }
        received += count as u64;
    }
    let took = started.elapsed();
    sending
        .join()
        .map_err(|_| anyhow!("the sending thread panicked"))??;
    if received != ECHO_BYTES {
        bail!("the echo server at {addr} sent back {received} of {ECHO_BYTES} bytes");
    }
    Ok(ECHO_BYTES as f64 / took.as_secs_f64() / 1e6)
}

/// Take up to `buffer.len()` bytes off `stream`, and say how many. On
/// Linux the kernel counts them and drops them (MSG_TRUNC, tcp(7)) rather
/// than copy them into `buffer`: the bench's two threads share the two
/// cores with the server under test, and copying 256 MiB back out cost
/// them enough CPU to hold the fastest server back (measured in
/// slides/01-echo.md, "How big a buffer"). Lesson 01's stages check what
/// comes back; the bench, only how much and how fast.
#[cfg(target_os = "linux")]
fn receive_and_discard(stream: &TcpStream, buffer: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `buffer` is a live slice of `buffer.len()` bytes; with
    // MSG_TRUNC a TCP socket writes none of them, and keeps no pointer.
    let count = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_TRUNC,
        )
    };
    // -1 is an error, its code in errno; any other value is a count.
    usize::try_from(count).map_err(|_| std::io::Error::last_os_error())
}

/// Elsewhere, the bytes are read as any client reads them.
#[cfg(not(target_os = "linux"))]
fn receive_and_discard(mut stream: &TcpStream, buffer: &mut [u8]) -> std::io::Result<usize> {
    std::io::Read::read(&mut stream, buffer)
}

// ---- Lesson 02: http -------------------------------------------------------

/// What one HTTP load run measured.
#[derive(Clone, Copy)]
struct HttpRun {
    /// Answers with a 2xx status, per second.
    ok_per_second: f64,
    p99_ms: f64,
    /// Connections that failed (connect, read, write, timeout).
    errors: f64,
    /// Answers that were not 2xx or 3xx (a 503 from a connection cap).
    refused: f64,
}

/// The medians of several runs, each number on its own.
fn median_run(runs: &[HttpRun]) -> HttpRun {
    HttpRun {
        ok_per_second: median_by(runs, |run| run.ok_per_second),
        p99_ms: median_by(runs, |run| run.p99_ms),
        errors: median_by(runs, |run| run.errors),
        refused: median_by(runs, |run| run.refused),
    }
}

impl HttpRun {
    fn shown(&self) -> String {
        let mut text = format!(
            "{:.1}k/s, p99 {:.1} ms",
            self.ok_per_second / 1e3,
            self.p99_ms
        );
        if self.errors > 0.0 {
            text.push_str(&format!(", {:.0} errors", self.errors));
        }
        if self.refused > 0.0 {
            text.push_str(&format!(", {:.0} non-2xx", self.refused));
        }
        text
    }
}

/// The load generators of lesson 02's cases.
#[derive(Clone, Copy)]
enum HttpLoad {
    Wrk { connections: u32 },
    Course { clients: u32 },
}

fn http_cases(
    project: &Path,
    programs: &Programs,
    scratch: &Scratch,
    args: &BenchArgs,
) -> Result<Vec<Row>> {
    let site = scratch.0.join("site");
    let nginx = installed("nginx");
    let wrk = installed("wrk");
    let mut loads = Vec::new();
    if wrk {
        loads.extend([50, 200, 1000].map(|connections| HttpLoad::Wrk { connections }));
    }
    loads.push(HttpLoad::Course { clients: 50 });
    // The Book's server is measured at `wrk -c50` only, where its goal is
    // set; built only when wrk is there to load it.
    let book = if wrk {
        build_peer(project, "book-server", "book-server-peer")
    } else {
        Err("wrk not installed".to_string())
    };
    let page = site.join("index.html").display().to_string();
    let start_book = |program: &Path| start(program, &["--bind", "127.0.0.1:0", "--page", &page]);
    let mut rows = Vec::new();
    for load in loads {
        let with_book = matches!(load, HttpLoad::Wrk { connections: 50 });
        let loaded = |(_server, addr): (Running, SocketAddr)| http_load(load, addr, args.seconds);
        let root = site.display().to_string();
        let [ours, theirs, books] = in_turns(
            args.rounds,
            [
                Some(Box::new(|| {
                    let args = ["server", "--bind", "127.0.0.1:0", "--root", &root];
                    loaded(start(&programs.http, &args)?)
                })),
                nginx.then(|| Box::new(|| loaded(start_nginx(&scratch.0)?)) as _),
                book.as_ref()
                    .ok()
                    .filter(|_| with_book)
                    .map(|book| Box::new(|| loaded(start_book(book)?)) as _),
            ],
        )?;
        let rates = |runs: &[HttpRun]| runs.iter().map(|run| run.ok_per_second).collect::<Vec<_>>();
        let (peer, ratio) = if nginx {
            (
                format!("nginx: {}", median_run(&theirs).shown()),
                Ratio::of(&rates(&ours), &rates(&theirs)),
            )
        } else {
            ("nginx not installed".to_string(), None)
        };
        let (case, goal) = match load {
            HttpLoad::Wrk { connections: 50 } => ("02 http, wrk -t2 -c50".to_string(), ">= 1.0"),
            HttpLoad::Wrk { connections: 200 } => ("02 http, wrk -t2 -c200".to_string(), ">= 0.8"),
            HttpLoad::Wrk { connections } => (
                format!("02 http, wrk -t2 -c{connections}"),
                ">= 0.6, 0 errors",
            ),
            HttpLoad::Course { clients } => {
                (format!("02 http, course load, {clients} clients"), "")
            }
        };
        rows.push(Row {
            case,
            solution: median_run(&ours).shown(),
            peer,
            ratio,
            goal,
        });
        if with_book {
            let (peer, ratio) = match &book {
                Ok(_) => {
                    let book = median_run(&books);
                    let mut shown = book.shown();
                    // It sends no `Connection: close` and closes anyway:
                    // wrk counts each close as a read error.
                    if book.errors > 0.0 {
                        shown.push_str(" (wrk counts each close as one)");
                    }
                    (
                        format!("Book ch21: {shown}"),
                        Ratio::of(&rates(&ours), &rates(&books)),
                    )
                }
                Err(why) => (not_built("Book server", why), None),
            };
            rows.push(Row {
                case: "02 vs the Rust Book server, wrk -c50".to_string(),
                solution: median_run(&ours).shown(),
                peer,
                ratio,
                goal: ">= 3.0",
            });
        }
    }
    if !wrk {
        rows.push(Row {
            case: "02 http, wrk".to_string(),
            solution: "wrk not installed: skipped".to_string(),
            peer: String::new(),
            ratio: None,
            goal: "",
        });
    }
    Ok(rows)
}

fn http_load(load: HttpLoad, addr: SocketAddr, seconds: u64) -> Result<HttpRun> {
    match load {
        HttpLoad::Wrk { connections } => run_wrk(addr, connections, seconds),
        HttpLoad::Course { clients } => {
            let measured = load::measure(&LoadArgs {
                addr: addr.to_string(),
                protocol: Protocol::Http,
                clients,
                requests: 0,
                duration: Some(seconds as f64),
                timeout: 10.0,
                think: 0,
            })?;
            Ok(HttpRun {
                ok_per_second: measured.per_second,
                p99_ms: measured.p99.as_secs_f64() * 1e3,
                errors: measured.errors as f64,
                refused: 0.0,
            })
        }
    }
}

/// `wrk -t2 -cN -dS --latency http://ADDR/`, read from its report.
fn run_wrk(addr: SocketAddr, connections: u32, seconds: u64) -> Result<HttpRun> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            &format!("http://{addr}/"),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run wrk")?;
    let report = String::from_utf8_lossy(&output.stdout);
    parse_wrk(&report).ok_or_else(|| anyhow!("cannot read wrk's report:\n{report}"))
}

/// The numbers in wrk's report: requests, how long, the 99th percentile,
/// socket errors and answers that were not 2xx or 3xx.
fn parse_wrk(report: &str) -> Option<HttpRun> {
    let mut requests = None;
    let mut seconds = None;
    let mut p99_ms = None;
    let (mut errors, mut refused) = (0.0, 0.0);
    for line in report.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("99%") {
            p99_ms = wrk_time_ms(value.trim());
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            requests = count.trim().parse::<f64>().ok();
            seconds = wrk_time_ms(rest.split(',').next()?.trim()).map(|ms| ms / 1e3);
        } else if let Some(counts) = line.strip_prefix("Socket errors:") {
            errors = counts
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum();
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            refused = count.trim().parse().ok()?;
        }
    }
    let (requests, seconds) = (requests?, seconds?);
    Some(HttpRun {
        ok_per_second: (requests - refused) / seconds,
        p99_ms: p99_ms?,
        errors,
        refused,
    })
}

/// `1.25ms`, `310.00us`, `2.01s`, `1.00m` as milliseconds.
fn wrk_time_ms(text: &str) -> Option<f64> {
    let unit_at = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(unit_at);
    let number: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        _ => return None,
    })
}

/// nginx with two workers, serving `folder/site` on a free loopback port,
/// its files in `folder`; ready once it accepts a connection.
fn start_nginx(folder: &Path) -> Result<(Running, SocketAddr)> {
    let addr = free_port()?;
    let dir = folder.display();
    let config = format!(
        "worker_processes 2;\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/nginx-error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   sendfile on;\n\
         \x20   tcp_nopush on;\n\
         \x20   client_body_temp_path {dir}/body;\n\
         \x20   proxy_temp_path {dir}/proxy;\n\
         \x20   fastcgi_temp_path {dir}/fastcgi;\n\
         \x20   uwsgi_temp_path {dir}/uwsgi;\n\
         \x20   scgi_temp_path {dir}/scgi;\n\
         \x20   server {{ listen {addr}; root {dir}/site; }}\n\
         }}\n"
    );
    let config_file = folder.join("nginx.conf");
    fs::write(&config_file, config)?;
    let program = vec!["nginx".to_string()];
    let args = [
        "-e",
        &format!("{dir}/nginx-error.log"),
        "-p",
        &dir.to_string(),
        "-c",
        &config_file.display().to_string(),
    ]
    .map(String::from);
    let mut running = Running::start(&program, &args).map_err(|error| anyhow!(error))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if running.exit_status().is_some() || Instant::now() >= deadline {
            let log = fs::read_to_string(folder.join("nginx-error.log")).unwrap_or_default();
            bail!("nginx did not start on {addr}:\n{log}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok((running, addr))
}

/// A loopback address with a port free a moment ago, for a server that
/// cannot pick its own port and say which.
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

// ---- Lesson 05: chat -------------------------------------------------------

/// Members of the room in both chat cases.
const ROOM: usize = 200;
/// In the room case, lines said, one every LINE_EVERY, by members in turn.
const ROOM_LINES: usize = 100;
const LINE_EVERY: Duration = Duration::from_millis(10);
/// Lines said before the room case's clock starts: the first lines after
/// 200 threads begin to read pay for their first run (cold caches, pages
/// touched for the first time), whatever the server.
const WARM_UP: usize = 5;
/// In the flood, lines per second of FLOOD_BYTES (newline included).
const FLOOD_RATE: u64 = 1000;
const FLOOD_BYTES: usize = 1024;

/// A chat server to measure: its program and the words that make it listen
/// on a free loopback port.
struct ChatServer {
    program: PathBuf,
    args: &'static [&'static str],
}

impl ChatServer {
    fn start(&self) -> Result<(Running, SocketAddr)> {
        start(&self.program, self.args)
    }
}

/// The peer of lesson 05, built from `bench/tokio-peers`; why not, when it
/// cannot be built.
fn tokio_chat(project: &Path) -> std::result::Result<ChatServer, String> {
    Ok(ChatServer {
        program: build_peer(project, "tokio-peers", "tokio-chat-peer")?,
        args: &["127.0.0.1:0"],
    })
}

fn chat_cases(
    solution: &Path,
    peer: &std::result::Result<ChatServer, String>,
    args: &BenchArgs,
) -> Result<Vec<Row>> {
    let solution = ChatServer {
        program: solution.to_path_buf(),
        args: &["server", "--bind", "127.0.0.1:0"],
    };
    let peer = peer.as_ref();
    let [our_rooms, their_rooms] = in_turns(
        room_rounds(args.rounds),
        [
            Some(Box::new(|| chat_room(&solution))),
            peer.ok().map(|peer| Box::new(|| chat_room(peer)) as _),
        ],
    )?;
    let [our_floods, their_floods] = in_turns(
        args.rounds,
        [
            Some(Box::new(|| chat_flood(&solution, args.seconds))),
            peer.ok()
                .map(|peer| Box::new(|| chat_flood(peer, args.seconds)) as _),
        ],
    )?;
    let room = |rooms: &[Room]| {
        let cpu = median_by(rooms, |room| room.cpu_ms_per_line);
        format!(
            "p50 {:.1} ms, p99 {:.1} ms{}",
            median_by(rooms, |room| room.p50_ms),
            median_by(rooms, |room| room.p99_ms),
            if cpu.is_nan() {
                String::new()
            } else {
                format!(", CPU {cpu:.1} ms a line")
            }
        )
    };
    let flood = |floods: &[Flood]| {
        format!(
            "{:.0} lines/s, delivery p50 {:.1} ms p99 {:.1} ms, +{:.1} MiB, CPU {:.0}%",
            median_by(floods, |flood| flood.rate),
            median_by(floods, |flood| flood.p50_ms),
            median_by(floods, |flood| flood.p99_ms),
            median_by(floods, |flood| flood.memory_mib),
            median_by(floods, |flood| flood.cpu_percent)
        )
    };
    let (room_peer, flood_peer, room_ratio, flood_ratio) = match peer {
        Ok(_) => (
            format!("tokio: {}", room(&their_rooms)),
            format!("tokio: {}", flood(&their_floods)),
            // Lower is better for a delay and for CPU: the ratio is the
            // peer's over ours, so that above 1 still means ours does better.
            Ratio::of(
                &values_of(&their_rooms, |room| room.p99_ms),
                &values_of(&our_rooms, |room| room.p99_ms),
            ),
            Ratio::of(
                &values_of(&their_floods, |flood| flood.cpu_percent),
                &values_of(&our_floods, |flood| flood.cpu_percent),
            ),
        ),
        Err(why) => {
            let skipped = not_built("tokio peer", why);
            (skipped.clone(), skipped, None, None)
        }
    };
    Ok(vec![
        Row {
            case: format!(
                "05 chat, {ROOM} members, {ROOM_LINES} lines at 10 ms (ratio: their p99 / ours)"
            ),
            solution: room(&our_rooms),
            peer: room_peer,
            ratio: room_ratio,
            goal: "p99 <= tokio's (ratio >= 1.0)",
        },
        Row {
            case: format!(
                "05 chat, flood: {FLOOD_RATE}/s x 1 KiB, one deaf (ratio: their CPU / ours)"
            ),
            solution: flood(&our_floods),
            peer: flood_peer,
            ratio: flood_ratio,
            goal: "1000 lines/s, CPU <= 1.5x tokio's (ratio >= 0.67), memory bounded",
        },
    ])
}

/// Join the room at `addr` as `name`; ready once the room list came.
fn join(addr: SocketAddr, name: &str) -> Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    // A room that waits on a member who never reads must not hang the bench.
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    reader.get_mut().write_all(format!("{name}\n").as_bytes())?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the chat server closed {name}'s connection while joining");
        }
        if line.starts_with("* in the room:") {
            return Ok(reader);
        }
        if line.starts_with('!') {
            bail!("the chat server refused {name}: {}", line.trim_end());
        }
    }
}

/// Lines of the form `[NAME] SEQ MICROS ...`, read until `wanted` of them
/// came (or the connection ends); each one's delivery time, from MICROS
/// (when it was sent, counted from `epoch`) to now.
fn read_timed_lines(
    reader: &mut BufReader<TcpStream>,
    wanted: usize,
    epoch: Instant,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(wanted);
    let mut line = Vec::new();
    while times.len() < wanted {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.first() != Some(&b'[') {
            continue;
        }
        let now = epoch.elapsed();
        let sent = String::from_utf8_lossy(&line)
            .split(' ')
            .nth(2)
            .and_then(|micros| micros.trim().parse::<u64>().ok());
        if let Some(sent) = sent {
            times.push(now.saturating_sub(Duration::from_micros(sent)));
        }
    }
    times
}

fn percentile_ms(times: &mut [Duration], fraction: f64) -> f64 {
    times.sort_unstable();
    let index = ((times.len().max(1) - 1) as f64 * fraction).round() as usize;
    times
        .get(index)
        .map_or(f64::NAN, |time| time.as_secs_f64() * 1e3)
}

/// 200 members; ROOM_LINES lines, one every LINE_EVERY, each by the next
/// member in turn, each heard by the 199 others. Delivery p50 and p99, ms.
///
/// The clock measures the server, not the bench's own threads: every reader
/// is running before the first line, WARM_UP lines go round unmeasured, and
/// no reader ends (a thread's exit unmaps its stack, which stalls the
/// process's other threads) until every reader has every line.
fn chat_room(server: &ChatServer) -> Result<Room> {
    let (running, addr) = server.start()?;
    let mut members = Vec::with_capacity(ROOM);
    for index in 0..ROOM {
        members.push(join(addr, &format!("m{index:03}"))?);
    }
    // Let the last joins' notices reach everyone before the clock starts.
    thread::sleep(Duration::from_millis(300));
    let epoch = Instant::now();
    let times = Mutex::new(Vec::new());
    let all_reading = Barrier::new(ROOM + 1);
    let all_read = Barrier::new(ROOM);
    // Every writer before any reader: a reader waits at `all_reading` for
    // this thread, which must not fail before it gets there.
    let mut writers = members
        .iter()
        .map(|member| member.get_ref().try_clone())
        .collect::<std::io::Result<Vec<_>>>()?;
    let cpu_before = thread::scope(|scope| -> Result<Option<f64>> {
        for (index, member) in members.iter_mut().enumerate() {
            let said = (0..ROOM_LINES).filter(|line| line % ROOM == index).count();
            let (times, all_reading, all_read) = (&times, &all_reading, &all_read);
            scope.spawn(move || {
                all_reading.wait();
                let got = read_timed_lines(member, ROOM_LINES - said, epoch);
                all_read.wait();
                times.lock().unwrap().extend(got);
            });
        }
        all_reading.wait();
        // The readers time only lines that carry their send time (`SEQ
        // MICROS`); these carry none, and are read and passed over.
        for line in 0..WARM_UP {
            writers[ROOM - 1 - line].write_all(b"warm up\n")?;
            thread::sleep(LINE_EVERY);
        }
        let cpu_before = cpu_time(running.pid());
        let start = epoch.elapsed();
        for line in 0..ROOM_LINES {
            let at = start + LINE_EVERY * line as u32;
            thread::sleep(at.saturating_sub(epoch.elapsed()));
            let text = format!("{line} {}\n", epoch.elapsed().as_micros());
            writers[line % ROOM].write_all(text.as_bytes())?;
        }
        Ok(cpu_before)
    })?;
    // Every reader has every line by now: the server's work for them is done.
    let cpu_used = cpu_time(running.pid())
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let mut times = times.into_inner().unwrap();
    let expected = ROOM_LINES * (ROOM - 1);
    if times.len() < expected {
        bail!("the room delivered {} of {expected} lines", times.len());
    }
    Ok(Room {
        p50_ms: percentile_ms(&mut times, 0.5),
        p99_ms: percentile_ms(&mut times, 0.99),
        cpu_ms_per_line: cpu_used.map_or(f64::NAN, |seconds| seconds * 1e3 / ROOM_LINES as f64),
    })
}

/// What the room case measured: delivery times, and what they cost.
struct Room {
    p50_ms: f64,
    p99_ms: f64,
    /// The server's CPU time over the measured lines, per line: the price
    /// of its delivery times. NaN where it cannot be measured.
    cpu_ms_per_line: f64,
}

/// What the flood measured.
struct Flood {
    /// Lines per second the sender managed to send.
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// How much the server's memory grew, at most, during the flood.
    memory_mib: f64,
    /// The server's CPU time over the flood, per second of it (100% = a core).
    cpu_percent: f64,
}

/// One sender says FLOOD_RATE lines a second of FLOOD_BYTES for `seconds`;
/// 198 members read them all, one member never reads a byte.
fn chat_flood(chat: &ChatServer, seconds: u64) -> Result<Flood> {
    let (server, addr) = chat.start()?;
    let pid = server.pid();
    let mut sender = join(addr, "flood")?.into_inner();
    let deaf = join(addr, "deaf")?;
    let mut readers = Vec::with_capacity(ROOM - 2);
    for index in 0..ROOM - 2 {
        readers.push(join(addr, &format!("r{index:03}"))?);
    }
    thread::sleep(Duration::from_millis(300));
    let lines = (FLOOD_RATE * seconds) as usize;
    let memory_before = resident_bytes(pid).unwrap_or(0);
    let cpu_before = cpu_time(pid);
    let memory_most = Mutex::new(memory_before);
    let done = AtomicBool::new(false);
    let epoch = Instant::now();
    let times = Mutex::new(Vec::new());
    let sending_took = thread::scope(|scope| -> Result<Duration> {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let now = resident_bytes(pid).unwrap_or(0);
                let mut most = memory_most.lock().unwrap();
                *most = (*most).max(now);
                drop(most);
                thread::sleep(Duration::from_millis(50));
            }
        });
        let reading: Vec<_> = readers
            .iter_mut()
            .map(|reader| {
                let times = &times;
                scope.spawn(move || {
                    let got = read_timed_lines(reader, lines, epoch);
                    times.lock().unwrap().extend(got);
                })
            })
            .collect();
        let sent = send_flood(&mut sender, lines, epoch);
        for reader in reading {
            let _ = reader.join();
        }
        done.store(true, Ordering::Relaxed);
        sent
    });
    let sending_took = sending_took?;
    let cpu = cpu_time(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let took = epoch.elapsed();
    drop(deaf);
    let mut times = times.into_inner().unwrap();
    let expected = lines * (ROOM - 2);
    if times.len() < expected {
        bail!("the flood delivered {} of {expected} lines", times.len());
    }
    let grown = memory_most
        .into_inner()
        .unwrap()
        .saturating_sub(memory_before);
    Ok(Flood {
        rate: lines as f64 / sending_took.as_secs_f64(),
        p50_ms: percentile_ms(&mut times, 0.5),
        p99_ms: percentile_ms(&mut times, 0.99),
        memory_mib: grown as f64 / f64::from(1 << 20),
        cpu_percent: cpu.map_or(f64::NAN, |cpu| cpu / took.as_secs_f64() * 100.0),
    })
}

/// Say `lines` lines of FLOOD_BYTES, FLOOD_RATE a second (or as fast as the
/// server takes them, when it falls behind); how long that took.
fn send_flood(sender: &mut TcpStream, lines: usize, epoch: Instant) -> Result<Duration> {
    let interval = Duration::from_secs(1) / FLOOD_RATE as u32;
    let mut text = Vec::with_capacity(FLOOD_BYTES);
    for line in 0..lines {
        let at = interval * line as u32;
        thread::sleep(at.saturating_sub(epoch.elapsed()));
        text.clear();
        write!(text, "{line} {} ", epoch.elapsed().as_micros())?;
        // `[flood] ` is added by the server; the rest pads to FLOOD_BYTES.
        text.resize(FLOOD_BYTES - "[flood] ".len() - 1, b'.');
        text.push(b'\n');
        sender.write_all(&text)?;
    }
    Ok(epoch.elapsed())
}

/// Seconds of CPU the process `pid` has used, user and system, on Linux.
fn cpu_time(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name, in parentheses, may hold spaces: count fields after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Linux reports in clock ticks of 1/100 s on every common system.
    Some(ticks / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_without_solutions_is_told_so_before_anything_is_built() {
        let handout = std::env::temp_dir().join(format!("bench-handout-{}", std::process::id()));
        fs::create_dir_all(&handout).unwrap();
        let args = BenchArgs {
            rounds: 1,
            seconds: 1,
            only: Vec::new(),
            solutions: None,
        };
        let error = run(&handout, &args).unwrap_err().to_string();
        fs::remove_dir_all(&handout).unwrap();
        assert_eq!(error, NO_SOLUTIONS);
    }

    #[test]
    fn reads_a_wrk_report() {
        let report = "Running 3s test @ http://127.0.0.1:8080/\n  2 threads and 50 \
            connections\n  Latency Distribution\n     50%  500.00us\n     99%    1.40ms\n  \
            180000 requests in 3.00s, 40.00MB read\n  Socket errors: connect 0, read 229, \
            write 1, timeout 0\n  Non-2xx or 3xx responses: 30000\nRequests/sec:  60000.00\n";
        let run = parse_wrk(report).unwrap();
        assert_eq!(run.ok_per_second, 50_000.0);
        assert_eq!(run.p99_ms, 1.4);
        assert_eq!(run.errors, 230.0);
        assert_eq!(run.refused, 30_000.0);
    }

    #[test]
    fn the_page_is_176_bytes() {
        assert_eq!(PAGE.len(), 176);
    }

    #[test]
    fn the_echo_client_counts_every_byte_and_sees_the_end() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let sent = 300_000;
        let writer = thread::spawn(move || {
            server.write_all(&vec![b'x'; sent]).unwrap();
            // Dropped here: the client reads the end of the stream.
        });
        let mut buffer = vec![0u8; 64 * 1024];
        let mut counted = 0;
        loop {
            match receive_and_discard(&client, &mut buffer).unwrap() {
                0 => break,
                count => counted += count,
            }
        }
        writer.join().unwrap();
        assert_eq!(counted, sent);
        // On Linux the bytes were dropped, not copied: the buffer is as it was.
        if cfg!(target_os = "linux") {
            assert!(buffer.iter().all(|&byte| byte == 0));
        }
    }

    #[test]
    fn contenders_take_turns_going_first() {
        let order = std::cell::RefCell::new(String::new());
        let order = &order;
        let run = |name: char| {
            move || -> Result<char> {
                order.borrow_mut().push(name);
                Ok(name)
            }
        };
        let [ours, missing, theirs] = in_turns(
            3,
            [Some(Box::new(run('o'))), None, Some(Box::new(run('t')))],
        )
        .unwrap();
        assert_eq!(*order.borrow(), "ottoot");
        assert_eq!(
            (ours, missing, theirs),
            (vec!['o'; 3], vec![], vec!['t'; 3])
        );
    }

    #[test]
    fn a_median_is_a_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.0);
    }
}
