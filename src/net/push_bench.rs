//! `course push-bench`: push against polling, measured. Against a running
//! push service (lesson 07's protocol), it plays two devices: one that
//! listens on a socket of its own and is pushed to, and one that polls every
//! `--poll` seconds. It sends each the same notifications, spaced out, and
//! prints the delivery latency (from SEND to arrival) and how many requests
//! each device made, per notification and while nothing happened.
//!
//! ```text
//! cargo run --release -- push-bench 127.0.0.1:7007
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct PushBenchArgs {
    /// The push service, IP:PORT.
    pub addr: String,
    /// Notifications sent to each device.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub notifications: u64,
    /// The polling device asks every SECS seconds.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    pub poll: u64,
    /// Milliseconds between two notifications.
    #[arg(long, value_name = "MS", default_value_t = 37)]
    pub spacing: u64,
    /// Seconds with no notification at all, to count requests while idle.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub idle: u64,
    /// The sender's API key.
    #[arg(long, default_value = "demo-key")]
    pub key: String,
}

/// When each notification arrived, by id, and the requests the device made.
#[derive(Default)]
struct Arrivals {
    at: Mutex<HashMap<u64, Instant>>,
    requests: AtomicUsize,
}

/// One device's results.
struct Measured {
    latencies: Vec<Duration>,
    requests: usize,
    idle_requests: usize,
}

pub fn run(args: &PushBenchArgs) -> Result<()> {
    let addr: SocketAddr = args
        .addr
        .parse()
        .with_context(|| format!("{} is not IP:PORT", args.addr))?;
    let tag = std::process::id();
    eprintln!(
        "{} notifications, {} ms apart, to a listening device...",
        args.notifications, args.spacing
    );
    let push = measure(args, addr, &format!("bench-push-{tag}"), None)?;
    eprintln!("...and to a device polling every {} s", args.poll);
    let poll = measure(args, addr, &format!("bench-poll-{tag}"), Some(args.poll))?;
    let rows = [
        ("push (listening device)".to_string(), &push),
        (format!("poll every {} s", args.poll), &poll),
    ];
    println!(
        "{:<24} {:>10} {:>10} {:>14} {:>16}",
        "device", "p50", "p99", "requests/note", "idle requests"
    );
    for (label, measured) in rows {
        println!(
            "{label:<24} {:>10} {:>10} {:>14.2} {:>16}",
            millis(percentile(&measured.latencies, 50)),
            millis(percentile(&measured.latencies, 99)),
            measured.requests as f64 / args.notifications as f64,
            format!("{} in {} s", measured.idle_requests, args.idle),
        );
    }
    let ratio = percentile(&push.latencies, 50).as_secs_f64()
        / percentile(&poll.latencies, 50).as_secs_f64().max(1e-9);
    println!(
        "push p50 is {:.2}% of polling's; requests include each device's REGISTER",
        ratio * 100.0
    );
    Ok(())
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * percent / 100).min(sorted.len() - 1)]
}

/// Register a device (listening, or polling every `poll` seconds), send it
/// the notifications, wait for them all, then stay idle and count.
fn measure(
    args: &PushBenchArgs,
    addr: SocketAddr,
    name: &str,
    poll: Option<u64>,
) -> Result<Measured> {
    let arrivals = Arc::new(Arrivals::default());
    let listener = match poll {
        None => Some(TcpListener::bind("127.0.0.1:0")?),
        Some(_) => None,
    };
    let callback = match &listener {
        Some(listener) => listener.local_addr()?.to_string(),
        None => "-".to_string(),
    };
    let reply = request(addr, format!("REGISTER {name} {callback}\n").as_bytes())?;
    arrivals.requests.fetch_add(1, Ordering::SeqCst);
    let token = reply
        .strip_prefix("OK ")
        .ok_or_else(|| anyhow!("the service refused REGISTER: {reply}"))?
        .to_string();
    match (listener, poll) {
        (Some(listener), _) => {
            let (arrivals, token) = (Arc::clone(&arrivals), token.clone());
            thread::spawn(move || take_pushes(&listener, &token, &arrivals));
        }
        (None, Some(seconds)) => {
            let (arrivals, name, token) = (Arc::clone(&arrivals), name.to_string(), token.clone());
            thread::spawn(move || poll_for_ever(addr, &name, &token, seconds, &arrivals));
        }
        (None, None) => unreachable!("a device either listens or polls"),
    }
    let mut sent = HashMap::new();
    for index in 0..args.notifications {
        let body = format!("bench {index}");
        let line = format!("SEND {} {name} - - {}\n{body}", args.key, body.len());
        let started = Instant::now();
        let reply = request(addr, line.as_bytes())?;
        let id: u64 = reply
            .strip_prefix("OK ")
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| anyhow!("the service refused SEND: {reply}"))?;
        sent.insert(id, started);
        thread::sleep(Duration::from_millis(args.spacing));
    }
    let deadline = Instant::now() + Duration::from_secs(args.poll.max(1) * 3 + 10);
    while arrivals.at.lock().expect("not poisoned").len() < sent.len() {
        if Instant::now() > deadline {
            bail!("{name}: not every notification arrived");
        }
        thread::sleep(Duration::from_millis(5));
    }
    let before_idle = arrivals.requests.load(Ordering::SeqCst);
    thread::sleep(Duration::from_secs(args.idle));
    let idle_requests = arrivals.requests.load(Ordering::SeqCst) - before_idle;
    let at = arrivals.at.lock().expect("not poisoned");
    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, started)| at.get(id).map(|arrived| arrived.duration_since(*started)))
        .collect();
    latencies.sort();
    Ok(Measured {
        latencies,
        requests: before_idle,
        idle_requests,
    })
}

/// One request on a connection of its own, and its reply line.
fn request(addr: SocketAddr, bytes: &[u8]) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(bytes)?;
    let mut line = String::new();
    BufReader::new(stream).take(1024).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// The listening device: note when each push arrives, and acknowledge it.
fn take_pushes(listener: &TcpListener, token: &str, arrivals: &Arrivals) {
    for stream in listener.incoming().flatten() {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut writer = &stream;
        let mut reader = BufReader::new(&stream);
        while let Some((words, body)) = read_frame(&mut reader) {
            let arrived = Instant::now();
            let ack = match words.as_slice() {
                [kind, presented, id, ..] if kind == "PUSH" && presented == token => {
                    if let Ok(id) = id.parse() {
                        arrivals
                            .at
                            .lock()
                            .expect("not poisoned")
                            .insert(id, arrived);
                    }
                    format!("ACK {id}\n")
                }
                [kind, ..] if kind == "LOST" => "ACK LOST\n".to_string(),
                _ => break,
            };
            drop(body);
            if writer.write_all(ack.as_bytes()).is_err() {
                break;
            }
        }
    }
}

/// A frame's words, and its body when its last word is a length.
fn read_frame(reader: &mut impl BufRead) -> Option<(Vec<String>, Vec<u8>)> {
    let mut line = String::new();
    reader.take(1024).read_line(&mut line).ok()?;
    if !line.ends_with('\n') {
        return None;
    }
    let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    let length = match words.first().map(String::as_str) {
        Some("PUSH") | Some("NOTE") => words.last()?.parse::<usize>().ok()?.min(4096),
        _ => 0,
    };
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((words, body))
}

/// The polling device: every `seconds`, POLL, note what came.
fn poll_for_ever(addr: SocketAddr, name: &str, token: &str, seconds: u64, arrivals: &Arrivals) {
    let mut acked = 0;
    loop {
        thread::sleep(Duration::from_secs(seconds));
        arrivals.requests.fetch_add(1, Ordering::SeqCst);
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream
            .write_all(format!("POLL {name} {token} {acked}\n").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut reader = BufReader::new(&stream);
        let Some((header, _)) = read_frame(&mut reader) else {
            continue;
        };
        let count: usize = header
            .get(1)
            .and_then(|count| count.parse().ok())
            .unwrap_or(0);
        for _ in 0..count {
            let Some((words, _)) = read_frame(&mut reader) else {
                break;
            };
            let arrived = Instant::now();
            if let Some(id) = words.get(1).and_then(|id| id.parse::<u64>().ok()) {
                arrivals
                    .at
                    .lock()
                    .expect("not poisoned")
                    .entry(id)
                    .or_insert(arrived);
                acked = acked.max(id);
            }
        }
    }
}
