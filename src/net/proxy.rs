//! `course proxy`: two middleboxes that stand between a browser and a
//! server, as many real networks do, and break what a push-like way needs.
//!
//! ```text
//! cargo run -- proxy --mode buffer 127.0.0.1:7006      a proxy that buffers each response until it ends
//! cargo run -- proxy --mode idle --idle 5 127.0.0.1:7006   one that closes connections silent for 5 s
//! ```
//!
//! Each prints `listening on IP:PORT`; point the browser there. A buffering
//! proxy (nginx with `proxy_buffering on`, many corporate proxies and
//! antivirus filters) holds a response until it is whole: fine for a page,
//! fatal for an event stream, which never ends. An idle timeout (load
//! balancers, NATs, firewalls) closes a connection where nothing passes:
//! a long poll held longer, or a stream without keepalives, dies behind it.
//!
//! The buffering proxy follows HTTP/1.1 responses by `Content-Length`; a
//! response without one is buffered until the server closes; after `101
//! Switching Protocols` it passes bytes through (an upgraded connection is
//! not HTTP any more). It holds at most a 64 KiB head and a 16 MiB response:
//! past either, the client gets `502 Bad Gateway`, but for a response
//! without a length, whose first 16 MiB go on before the connection closes.
//! Both count the bytes that pass, for `web-bench`.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// The server to relay to, such as 127.0.0.1:7006.
    pub upstream: String,
    /// How the proxy misbehaves.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// With `--mode idle`: seconds without a byte either way before the
    /// proxy closes a connection.
    #[arg(long, default_value_t = 5.0)]
    pub idle: f64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Hold each response until it has ended, then send it whole.
    Buffer,
    /// Close a connection once nothing has passed for `--idle` seconds.
    Idle,
    /// Pass everything as it comes (a counting relay).
    Pass,
}

/// The bytes that went through a proxy, each way.
#[derive(Debug, Default)]
pub struct Counted {
    pub up: AtomicU64,
    pub down: AtomicU64,
}

impl Counted {
    pub fn total(&self) -> u64 {
        self.up.load(Ordering::SeqCst) + self.down.load(Ordering::SeqCst)
    }
}

/// A proxy running on a thread of its own, for as long as the program.
pub struct Proxy {
    pub addr: SocketAddr,
    pub counted: Arc<Counted>,
}

/// Run the proxy the command line asked for, until stopped.
pub fn run(args: &ProxyArgs) -> Result<()> {
    if args.idle.is_nan() || args.idle <= 0.0 {
        return Err(anyhow!("--idle must be more than 0 seconds"));
    }
    let upstream = resolve(&args.upstream)?;
    let listener =
        TcpListener::bind(&args.bind).with_context(|| format!("cannot listen on {}", args.bind))?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let idle = Duration::from_secs_f64(args.idle);
    serve(listener, upstream, args.mode, idle, Arc::default());
    Ok(())
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow!("{addr} is not an address"))
}

/// Start a proxy on a free port of 127.0.0.1, in front of `upstream`.
pub fn start(upstream: SocketAddr, mode: Mode, idle: Duration) -> io::Result<Proxy> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let counted: Arc<Counted> = Arc::default();
    let for_thread = Arc::clone(&counted);
    thread::spawn(move || serve(listener, upstream, mode, idle, for_thread));
    Ok(Proxy { addr, counted })
}

fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Mode,
    idle: Duration,
    counted: Arc<Counted>,
) {
    for client in listener.incoming().flatten() {
        let counted = Arc::clone(&counted);
        thread::spawn(move || {
            let Ok(server) = TcpStream::connect(upstream) else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = relay(client, server, mode, idle, &counted);
        });
    }
}

/// When a byte last passed on one relayed connection, either way.
type LastSeen = Arc<Mutex<Instant>>;

/// Relay one connection both ways until either side closes.
fn relay(
    client: TcpStream,
    server: TcpStream,
    mode: Mode,
    idle: Duration,
    counted: &Arc<Counted>,
) -> io::Result<()> {
    let last_seen: LastSeen = Arc::new(Mutex::new(Instant::now()));
    let watch = (mode == Mode::Idle).then_some(idle);
    let up = {
        let (from, to) = (client.try_clone()?, server.try_clone()?);
        let (counted, last_seen) = (Arc::clone(counted), Arc::clone(&last_seen));
        thread::spawn(move || copy(from, to, &counted.up, &last_seen, watch))
    };
    let (from, to) = (server, client);
    if mode == Mode::Buffer {
        let _ = copy_buffering(from, to, &counted.down);
    } else {
        copy(from, to, &counted.down, &last_seen, watch);
    }
    let _ = up.join();
    Ok(())
}

/// Copy bytes as they come; with `watch`, close both ways once nothing has
/// passed either way for that long.
fn copy(
    mut from: TcpStream,
    mut to: TcpStream,
    count: &AtomicU64,
    last_seen: &LastSeen,
    watch: Option<Duration>,
) {
    // A short timeout only to look at the clock; the idle time is shared by
    // both directions.
    let _ = from.set_read_timeout(watch.map(|_| Duration::from_millis(100)));
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(count_read) => {
                *last_seen.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                count.fetch_add(count_read as u64, Ordering::SeqCst);
                if to.write_all(&buffer[..count_read]).is_err() {
                    break;
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let quiet = last_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                if watch.is_some_and(|idle| quiet >= idle) {
                    // As a NAT or a load balancer does: both ends cut.
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// The longest response head the buffering proxy reads, and the most of a
/// response it holds: past them, the client gets `502 Bad Gateway` and the
/// connection closes, as a real proxy answers an upstream it cannot take.
/// A server under test that announces `Content-Length: 10000000000` must
/// not make the proxy try to allocate it.
const MAX_HEAD: usize = 64 * 1024;
const MAX_HELD: u64 = 16 << 20;

const BAD_GATEWAY: &[u8] =
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

/// Copy HTTP/1.1 responses, each held until it is whole.
fn copy_buffering(from: TcpStream, mut to: TcpStream, count: &AtomicU64) -> io::Result<()> {
    let mut reader = BufReader::new(from);
    let bad_gateway = |mut to: TcpStream| {
        count.fetch_add(BAD_GATEWAY.len() as u64, Ordering::SeqCst);
        to.write_all(BAD_GATEWAY)?;
        to.shutdown(Shutdown::Write)
    };
    loop {
        let mut held = Vec::new();
        // The head, line by line.
        loop {
            let before = held.len();
            if before >= MAX_HEAD {
                return bad_gateway(to);
            }
            let read = reader
                .by_ref()
                .take((MAX_HEAD - before) as u64)
                .read_until(b'\n', &mut held)?;
            if read == 0 {
                // The server closed: what is held (a head cut short) goes on.
                count.fetch_add(held.len() as u64, Ordering::SeqCst);
                to.write_all(&held)?;
                let _ = to.shutdown(Shutdown::Write);
                return Ok(());
            }
            if &held[before..] == b"\r\n" || &held[before..] == b"\n" {
                break;
            }
        }
        let head = String::from_utf8_lossy(&held).to_ascii_lowercase();
        let length = head.lines().find_map(|line| {
            line.strip_prefix("content-length:")
                .and_then(|value| value.trim().parse::<u64>().ok())
        });
        if head.starts_with("http/1.1 101") {
            count.fetch_add(held.len() as u64, Ordering::SeqCst);
            to.write_all(&held)?;
            let mut rest = reader;
            let mut buffer = [0u8; 16 * 1024];
            loop {
                let read = rest.read(&mut buffer)?;
                if read == 0 {
                    let _ = to.shutdown(Shutdown::Write);
                    return Ok(());
                }
                count.fetch_add(read as u64, Ordering::SeqCst);
                to.write_all(&buffer[..read])?;
            }
        }
        match length {
            Some(length) if length > MAX_HELD => return bad_gateway(to),
            Some(length) => {
                let start = held.len();
                held.resize(start + length as usize, 0);
                reader.read_exact(&mut held[start..])?;
                count.fetch_add(held.len() as u64, Ordering::SeqCst);
                to.write_all(&held)?;
            }
            None => {
                // No length: the body ends when the server closes, and
                // until then the client gets nothing (up to MAX_HELD kept).
                reader.by_ref().take(MAX_HELD).read_to_end(&mut held)?;
                count.fetch_add(held.len() as u64, Ordering::SeqCst);
                to.write_all(&held)?;
                let _ = to.shutdown(Shutdown::Write);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts one connection and hands it to `script`.
    fn one_connection_server(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(stream);
        });
        addr
    }

    /// How long a test waits to show that the proxy holds what it has:
    /// bytes it passed on would come through in well under a millisecond.
    const HELD: Duration = Duration::from_millis(150);

    fn connect(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    #[test]
    fn the_buffering_proxy_holds_a_response_until_it_is_whole() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let server = one_connection_server(move |mut stream| {
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                .unwrap();
            released.recv().unwrap();
            stream.write_all(b"world").unwrap();
            // A stream without a length: held until the server closes.
            stream
                .write_all(b"HTTP/1.1 200 OK\r\n\r\ndata: one\n\n")
                .unwrap();
            released.recv().unwrap();
        });
        let proxy = start(server, Mode::Buffer, Duration::from_secs(5)).unwrap();
        let mut client = connect(proxy.addr);
        client.set_read_timeout(Some(HELD)).unwrap();
        let mut byte = [0u8; 1];
        let early = client.read(&mut byte);
        assert!(early.is_err(), "nothing may pass before the body ends");
        release.send(()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let mut whole = vec![0u8; head.len() + 10];
        client.read_exact(&mut whole).unwrap();
        assert!(whole.ends_with(b"helloworld"));
        client.set_read_timeout(Some(HELD)).unwrap();
        assert!(client.read(&mut byte).is_err(), "an endless body is held");
        release.send(()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"HTTP/1.1 200 OK\r\n\r\ndata: one\n\n");
        assert!(proxy.counted.total() > 0);
    }

    /// What a client of the buffering proxy gets from a server that
    /// answers with `response`.
    fn through_the_buffering_proxy(response: Vec<u8>) -> Vec<u8> {
        let server = one_connection_server(move |mut stream| {
            let _ = stream.write_all(&response);
            // Kept open: the proxy must answer without waiting for the end.
            thread::sleep(Duration::from_secs(5));
        });
        let proxy = start(server, Mode::Buffer, Duration::from_secs(5)).unwrap();
        let mut client = connect(proxy.addr);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn a_length_past_what_the_proxy_holds_gets_502_at_once() {
        let got = through_the_buffering_proxy(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\nhello".to_vec(),
        );
        assert_eq!(got, BAD_GATEWAY);
    }

    #[test]
    fn a_head_that_never_ends_gets_502() {
        let mut response = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..4000 {
            response.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
        }
        let got = through_the_buffering_proxy(response);
        assert_eq!(got, BAD_GATEWAY);
    }

    #[test]
    fn the_idle_proxy_closes_a_silent_connection_and_keeps_a_busy_one() {
        let idle = Duration::from_millis(300);
        let proxy = start(crate::net::testing::echo_server(), Mode::Idle, idle).unwrap();
        // Both at once: the silent connection is closed while the busy one
        // goes on.
        let mut busy = connect(proxy.addr);
        let mut silent = connect(proxy.addr);
        let started = Instant::now();
        // Closed: the end of the stream, or a reset; a read that timed out
        // (5 s) means the proxy never closed it.
        let closed = thread::spawn(move || {
            let mut byte = [0u8; 1];
            let read = silent.read(&mut byte);
            let timed_out = read.as_ref().is_err_and(|error| {
                matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
            });
            (
                matches!(read, Ok(0)) || (read.is_err() && !timed_out),
                started.elapsed(),
            )
        });
        // Busy: a byte every 100 ms, a third of the idle time, past the idle
        // time and past the silent one's end.
        let mut byte = [0u8; 1];
        while !closed.is_finished() || started.elapsed() <= idle {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the silent connection is still open"
            );
            thread::sleep(Duration::from_millis(100));
            busy.write_all(b"x").unwrap();
            busy.read_exact(&mut byte).unwrap();
        }
        let (was_closed, closed_after) = closed.join().unwrap();
        assert!(was_closed, "the silent connection was still open after 5 s");
        assert!(
            closed_after >= idle / 2 && closed_after < Duration::from_secs(3),
            "the silent connection was closed after {closed_after:?}, its idle time {idle:?}"
        );
    }
}
