//! `course web-bench`: what each way of putting a chat room in a browser
//! costs, measured against a running lesson 06 server.
//!
//! ```text
//! cargo run --release -- web-bench 127.0.0.1:7006
//! ```
//!
//! For each way (short polling every second, long polling, Server-Sent
//! Events, WebSocket), one member says 100 lines at 10 a second and another
//! hears them that way. The hearer talks through a relay that counts every
//! byte both ways; the sayer talks to the server directly. It prints, per
//! way: lines delivered, mean and worst delay from said to heard, requests
//! the hearer made, and bytes on the wire per delivered line. Then the same
//! through a proxy that buffers each response until it ends, and through
//! one that closes connections idle for 5 s (after 6 s of silence, so that
//! it has the chance). It speaks the protocol in lessons/06-web/README.md,
//! so it measures any server that keeps it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::net::proxy::{self, Mode};

#[derive(clap::Args, Debug, Clone)]
pub struct WebBenchArgs {
    /// The HTTP address the lesson 06 server printed.
    pub addr: String,
    /// Lines said in each run.
    #[arg(long, default_value_t = 100)]
    pub lines: u32,
    /// Lines a second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of silence before the lines, behind the idle-timeout proxy.
    #[arg(long, default_value_t = 6.0)]
    pub silence: f64,
    /// Seconds the idle-timeout proxy lets a connection stay silent.
    #[arg(long, default_value_t = 5.0)]
    pub idle: f64,
}

/// The four ways, as the bench names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Poll,
    Long,
    Sse,
    Ws,
}

const WAYS: [Way; 4] = [Way::Poll, Way::Long, Way::Sse, Way::Ws];

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Poll => "short poll (1 s)",
            Way::Long => "long poll",
            Way::Sse => "SSE",
            Way::Ws => "WebSocket",
        }
    }
}

/// What one run measured.
struct Measured {
    delivered: usize,
    mean: Duration,
    worst: Duration,
    requests: u64,
    bytes: u64,
}

/// What the hearer shares with the bench while it runs.
#[derive(Default)]
struct Hearing {
    /// When each line was heard, by its number.
    heard: Mutex<Vec<Option<Instant>>>,
    requests: AtomicU64,
    stop: AtomicBool,
    /// The hearer's connection of the moment, to cut it at the end.
    current: Mutex<Option<TcpStream>>,
}

pub fn run(args: &WebBenchArgs) -> Result<()> {
    let server = args
        .addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow!("{} is not an address", args.addr))?;
    if args.rate.is_nan() || args.rate <= 0.0 || args.lines == 0 {
        bail!("--rate and --lines must be more than 0");
    }
    if args.idle.is_nan() || args.idle <= 0.0 || args.silence.is_nan() {
        bail!("--idle must be more than 0 seconds, and --silence a number of seconds");
    }
    let paths = [
        ("direct", Mode::Pass, 0.0),
        ("buffering proxy", Mode::Buffer, 0.0),
        ("idle-timeout proxy", Mode::Idle, args.silence),
    ];
    println!(
        "{} lines at {}/s per way; delays from said to heard\n",
        args.lines, args.rate
    );
    println!(
        "{:<20} {:<17} {:>9} {:>10} {:>10} {:>9} {:>11}",
        "path", "way", "delivered", "mean ms", "worst ms", "requests", "bytes/line"
    );
    for (run, (path, mode, silence)) in paths.into_iter().enumerate() {
        let middlebox = match mode {
            Mode::Pass => None,
            _ => Some(proxy::start(
                server,
                mode,
                Duration::from_secs_f64(args.idle),
            )?),
        };
        let upstream = middlebox
            .as_ref()
            .map_or(server, |middlebox| middlebox.addr);
        for way in WAYS {
            let measured = measure(server, upstream, way, args, silence, run)
                .with_context(|| format!("{path}, {}", way.name()))?;
            let per_line = if measured.delivered == 0 {
                "-".to_string()
            } else {
                (measured.bytes / measured.delivered as u64).to_string()
            };
            let ms = |time: Duration| {
                if measured.delivered == 0 {
                    "-".to_string()
                } else {
                    format!("{:.1}", time.as_secs_f64() * 1e3)
                }
            };
            println!(
                "{:<20} {:<17} {:>5}/{:<3} {:>10} {:>10} {:>9} {:>11}",
                path,
                way.name(),
                measured.delivered,
                args.lines,
                ms(measured.mean),
                ms(measured.worst),
                measured.requests,
                per_line
            );
        }
    }
    Ok(())
}

/// One run: a sayer and a hearer, `way` through `upstream`.
fn measure(
    server: SocketAddr,
    upstream: SocketAddr,
    way: Way,
    args: &WebBenchArgs,
    silence: f64,
    run: usize,
) -> Result<Measured> {
    let counter = proxy::start(upstream, Mode::Pass, Duration::from_secs(3600))?;
    let tag = format!("b{run}{}", way as usize);
    let (say_key, _) = join(server, &format!("{tag}say"))?;
    let (hear_key, since) = join(server, &format!("{tag}hear"))?;
    let hearing = Arc::new(Hearing {
        heard: Mutex::new(vec![None; args.lines as usize]),
        ..Hearing::default()
    });
    let hearer = {
        let (hearing, addr, key, host) = (Arc::clone(&hearing), counter.addr, hear_key, server);
        thread::spawn(move || hear(way, addr, host, &key, since, &hearing))
    };
    thread::sleep(Duration::from_secs_f64(silence.max(0.5)));
    let started = Instant::now();
    let mut said = Vec::with_capacity(args.lines as usize);
    let gap = Duration::from_secs_f64(1.0 / args.rate);
    let mut sayer = Http::new(server);
    for number in 0..args.lines {
        let due = started + gap * number;
        thread::sleep(due.saturating_duration_since(Instant::now()));
        said.push(Instant::now());
        sayer.request(
            "POST",
            &format!("/send?key={say_key}"),
            format!("bench {number}").as_bytes(),
        )?;
    }
    // Stragglers: a poll's interval, and a little more.
    let grace = Instant::now() + Duration::from_secs(3);
    while Instant::now() < grace {
        if hearing.heard.lock().unwrap().iter().all(Option::is_some) {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    hearing.stop.store(true, Ordering::SeqCst);
    if let Some(stream) = hearing.current.lock().unwrap().take() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    let _ = hearer.join();
    let bytes = counter.counted.total();
    let heard = hearing.heard.lock().unwrap();
    let delays: Vec<Duration> = heard
        .iter()
        .zip(&said)
        .filter_map(|(heard, said)| heard.map(|at| at.saturating_duration_since(*said)))
        .collect();
    let total: Duration = delays.iter().sum();
    Ok(Measured {
        delivered: delays.len(),
        mean: total / delays.len().max(1) as u32,
        worst: delays.iter().max().copied().unwrap_or_default(),
        requests: hearing.requests.load(Ordering::SeqCst),
        bytes,
    })
}

/// `POST /join`: the key and the cursor.
fn join(server: SocketAddr, name: &str) -> Result<(String, u64)> {
    let (_, body) = Http::new(server).request("POST", "/join", name.as_bytes())?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let (key, since) = body
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("POST /join answered {body:?}"))?;
    Ok((key.to_string(), since.parse()?))
}

/// Note a line heard: `bench N`, anywhere in the text.
fn note(hearing: &Hearing, text: &str) {
    let Some(number) = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] bench "))
        .and_then(|(_, number)| number.trim().parse::<usize>().ok())
    else {
        return;
    };
    if let Some(slot) = hearing.heard.lock().unwrap().get_mut(number) {
        slot.get_or_insert(Instant::now());
    }
}

/// Hear the room `way` until told to stop; a broken connection is opened
/// again from where it left off, as a browser would.
fn hear(way: Way, addr: SocketAddr, host: SocketAddr, key: &str, since: u64, hearing: &Hearing) {
    let mut cursor = since;
    let mut key = key.to_string();
    while !hearing.stop.load(Ordering::SeqCst) {
        let heard = match way {
            Way::Poll | Way::Long => poll(way, addr, &key, &mut cursor, hearing),
            Way::Sse => events(addr, &key, &mut cursor, hearing),
            Way::Ws => websocket(addr, &key, &mut cursor, hearing),
        };
        if heard.is_err() && !hearing.stop.load(Ordering::SeqCst) {
            // A WebSocket member leaves when its connection breaks: join
            // again, and read on from the same place.
            if way == Way::Ws {
                let again = hearing.requests.load(Ordering::SeqCst);
                if let Ok((new_key, _)) = join(host, &format!("w{}x{again}", cursor % 1000)) {
                    key = new_key;
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn keep(hearing: &Hearing, stream: &TcpStream) -> io::Result<()> {
    *hearing.current.lock().unwrap() = Some(stream.try_clone()?);
    Ok(())
}

fn poll(way: Way, addr: SocketAddr, key: &str, cursor: &mut u64, hearing: &Hearing) -> Result<()> {
    let mut http = Http::new(addr);
    let wait = if way == Way::Long { "&wait=25" } else { "" };
    while !hearing.stop.load(Ordering::SeqCst) {
        hearing.requests.fetch_add(1, Ordering::SeqCst);
        let target = format!("/messages?key={key}&since={cursor}{wait}");
        let (head, body) = http.request_kept("GET", &target, b"", hearing)?;
        for line in String::from_utf8_lossy(&body).lines() {
            note(hearing, line.split_once(' ').map_or(line, |(_, text)| text));
        }
        if let Some(next) = header(&head, "Room-Cursor").and_then(|value| value.parse().ok()) {
            *cursor = next;
        }
        if way == Way::Poll {
            thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}

fn events(addr: SocketAddr, key: &str, cursor: &mut u64, hearing: &Hearing) -> Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    keep(hearing, &stream)?;
    hearing.requests.fetch_add(1, Ordering::SeqCst);
    write!(
        stream,
        "GET /events?key={key} HTTP/1.1\r\nHost: {addr}\r\nLast-Event-ID: {cursor}\r\n\r\n"
    )?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line?;
        if let Some(id) = line.strip_prefix("id: ") {
            *cursor = id.parse().unwrap_or(*cursor);
        } else if let Some(data) = line.strip_prefix("data: ") {
            note(hearing, data);
        }
    }
    bail!("the event stream ended")
}

fn websocket(addr: SocketAddr, key: &str, cursor: &mut u64, hearing: &Hearing) -> Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    keep(hearing, &stream)?;
    hearing.requests.fetch_add(1, Ordering::SeqCst);
    write!(
        stream,
        "GET /ws?key={key}&since={cursor} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.starts_with("HTTP/1.1 101") {
        bail!("the upgrade was answered {line:?}");
    }
    while line != "\r\n" {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the handshake ended early");
        }
    }
    loop {
        let mut head = [0u8; 2];
        reader.read_exact(&mut head)?;
        let length = match head[1] & 0x7f {
            126 => {
                let mut bytes = [0u8; 2];
                reader.read_exact(&mut bytes)?;
                u64::from(u16::from_be_bytes(bytes))
            }
            127 => {
                let mut bytes = [0u8; 8];
                reader.read_exact(&mut bytes)?;
                u64::from_be_bytes(bytes)
            }
            short => u64::from(short),
        };
        let mut payload = vec![0u8; length.min(1 << 20) as usize];
        reader.read_exact(&mut payload)?;
        match head[0] & 0x0f {
            0x1 => {
                let text = String::from_utf8_lossy(&payload);
                note(hearing, &text);
            }
            // A pong, masked as a client's frames must be (mask of zeros:
            // the bench has nothing to hide from proxies).
            0x9 if payload.len() <= 125 => {
                let mut pong = vec![0x8A, 0x80 | payload.len() as u8, 0, 0, 0, 0];
                pong.extend_from_slice(&payload);
                stream.write_all(&pong)?;
            }
            0x8 => bail!("the server closed the WebSocket"),
            _ => {}
        }
        // Lines carry no id over a WebSocket: the cursor stays where the
        // member joined, and a new member reads on from there.
        let _ = cursor;
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

/// HTTP/1.1 on one kept-alive connection, as a browser does, opened again
/// when it breaks.
struct Http {
    addr: SocketAddr,
    reader: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr) -> Http {
        Http { addr, reader: None }
    }

    fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Result<(String, Vec<u8>)> {
        self.exchange(method, target, body, None)
    }

    fn request_kept(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        hearing: &Hearing,
    ) -> Result<(String, Vec<u8>)> {
        self.exchange(method, target, body, Some(hearing))
    }

    fn exchange(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
        hearing: Option<&Hearing>,
    ) -> Result<(String, Vec<u8>)> {
        if self.reader.is_none() {
            let stream = TcpStream::connect(self.addr)?;
            stream.set_nodelay(true)?;
            if let Some(hearing) = hearing {
                keep(hearing, &stream)?;
            }
            self.reader = Some(BufReader::new(stream));
        }
        let answer = self.try_exchange(method, target, body);
        if answer.is_err() {
            self.reader = None;
        }
        answer
    }

    fn try_exchange(
        &mut self,
        method: &str,
        target: &str,
        body: &[u8],
    ) -> Result<(String, Vec<u8>)> {
        let reader = self.reader.as_mut().expect("connected");
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        reader.get_mut().write_all(&request)?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("the connection closed before an answer");
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = header(&head, "Content-Length")
            .and_then(|value| value.parse().ok())
            .unwrap_or(0);
        let mut answer = vec![0u8; length];
        reader.read_exact(&mut answer)?;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("{}", head.lines().next().unwrap_or_default());
        }
        Ok((head, answer))
    }
}
