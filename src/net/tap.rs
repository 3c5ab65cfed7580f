//! `course tap`: a relay that shows the wire. Put it between a client and a
//! server, and it prints every chunk each way as the stage reports do:
//! `→` from the client, `←` from the server, the bytes escaped, the time
//! since the connection opened, and the byte counts.
//!
//! ```text
//! cargo run -- tap --to 127.0.0.1:7001          listens on 127.0.0.1:7000
//! nc 127.0.0.1 7000                              in another terminal
//! ```
//!
//! Each connection gets a label (`#1`, `#2`, ...) and runs on threads of its
//! own, so several at once interleave line by line. With `--udp` it relays
//! datagrams instead: each client address is a conversation of its own, and
//! each datagram is one chunk (UDP keeps their edges; TCP keeps none).
//!
//! A chunk is what one `read` returned: how the bytes were cut on the way is
//! the network's choice, which is the point of lesson 01's "A read is not a
//! message".

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::harness::escape;

#[derive(clap::Args, Debug, Clone)]
pub struct TapArgs {
    /// Where the tap listens: point the client here.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub bind: String,
    /// The server the tap relays to, such as 127.0.0.1:7001.
    #[arg(long)]
    pub to: String,
    /// Relay UDP datagrams instead of TCP connections.
    #[arg(long)]
    pub udp: bool,
}

/// Connections (or UDP conversations) relayed at once; one more waits (TCP)
/// or is dropped (UDP) until one ends.
const MAX_CONVERSATIONS: usize = 64;
/// The most one read takes: one chunk, and the relay's buffer.
const CHUNK: usize = 16 * 1024;
/// A UDP conversation whose server has sent nothing for this long is over.
const UDP_IDLE: Duration = Duration::from_secs(60);

/// Where the lines go: standard output, or a test's buffer. Each line is
/// written whole, so lines of connections at once never mix.
#[derive(Clone)]
pub struct Printer(Arc<Mutex<Box<dyn Write + Send>>>);

impl Printer {
    pub fn new(out: impl Write + Send + 'static) -> Printer {
        Printer(Arc::new(Mutex::new(Box::new(out))))
    }

    fn line(&self, text: &str) {
        let mut out = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Flushed at once: a person watches this as it happens.
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    }
}

/// Which way bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client, to the server: `→`.
    ToServer,
    /// From the server, back to the client: `←`.
    ToClient,
}

impl Direction {
    fn arrow(self) -> &'static str {
        match self {
            Direction::ToServer => "→",
            Direction::ToClient => "←",
        }
    }

    fn sender(self) -> &'static str {
        match self {
            Direction::ToServer => "the client",
            Direction::ToClient => "the server",
        }
    }
}

/// One relayed conversation, TCP or UDP: its label, its clock and its
/// counts. What it prints is the same for both transports.
struct Conversation {
    label: usize,
    opened: Instant,
    printer: Printer,
    counts: [AtomicUsize; 2],
}

impl Conversation {
    fn new(label: usize, printer: Printer) -> Conversation {
        Conversation {
            label,
            opened: Instant::now(),
            printer,
            counts: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }

    fn say(&self, direction: Option<Direction>, text: &str) {
        let seconds = self.opened.elapsed().as_secs_f64();
        let arrow = direction.map_or(" ", Direction::arrow);
        self.printer
            .line(&format!("#{} {seconds:8.3}s {arrow} {text}", self.label));
    }

    fn chunk(&self, direction: Direction, bytes: &[u8]) {
        let total =
            self.counts[direction as usize].fetch_add(bytes.len(), Ordering::SeqCst) + bytes.len();
        self.say(
            Some(direction),
            &format!(
                "{} ({} bytes, {total} so far)",
                escape::escape(bytes),
                bytes.len()
            ),
        );
    }

    fn summary(&self) -> String {
        format!(
            "{} bytes →, {} bytes ←",
            self.counts[0].load(Ordering::SeqCst),
            self.counts[1].load(Ordering::SeqCst)
        )
    }
}

/// Bind, print `listening on IP:PORT`, and relay until stopped.
pub fn run(args: &TapArgs) -> Result<()> {
    let to = resolve(&args.to)?;
    let printer = Printer::new(io::stdout());
    if args.udp {
        let socket = UdpSocket::bind(resolve(&args.bind)?)
            .with_context(|| format!("cannot bind {}", args.bind))?;
        announce(&printer, socket.local_addr()?, to, "UDP");
        relay_udp(socket, to, printer)
    } else {
        let listener =
            TcpListener::bind(resolve(&args.bind)?).map_err(|error| match error.kind() {
                io::ErrorKind::AddrInUse => anyhow!("address {} is already in use", args.bind),
                _ => anyhow!("cannot listen on {}: {error}", args.bind),
            })?;
        announce(&printer, listener.local_addr()?, to, "TCP");
        relay_tcp(listener, to, printer)
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| anyhow!("{addr} is not an address (give IP:PORT, such as 127.0.0.1:7001)"))
}

fn announce(printer: &Printer, local: SocketAddr, to: SocketAddr, transport: &str) {
    // The contract's first line, as every server of the course prints it.
    printer.line(&format!("listening on {local}"));
    printer.line(&format!(
        "relaying {transport} to {to}: → from the client, ← from the server"
    ));
}

/// Accept connections and relay each on threads of its own.
pub fn relay_tcp(listener: TcpListener, to: SocketAddr, printer: Printer) -> Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    for (index, accepted) in listener.incoming().enumerate() {
        let client = match accepted {
            Ok(client) => client,
            Err(error) => {
                printer.line(&format!("accept failed: {error}"));
                continue;
            }
        };
        // A bound on threads: past it, the next connection waits in the
        // listen queue until one ends.
        while open.load(Ordering::SeqCst) >= MAX_CONVERSATIONS {
            thread::sleep(Duration::from_millis(20));
        }
        open.fetch_add(1, Ordering::SeqCst);
        let conversation = Arc::new(Conversation::new(index + 1, printer.clone()));
        let open = Arc::clone(&open);
        thread::spawn(move || {
            relay_connection(client, to, &conversation);
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn relay_connection(client: TcpStream, to: SocketAddr, conversation: &Arc<Conversation>) {
    let peer = client
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |addr| addr.to_string());
    let server = match TcpStream::connect_timeout(&to, Duration::from_secs(5)) {
        Ok(server) => server,
        Err(error) => {
            conversation.say(
                None,
                &format!("{peer} connected, but the server at {to} cannot be reached: {error}"),
            );
            return;
        }
    };
    conversation.say(None, &format!("opened: {peer} → tap → {to}"));
    let pumps = (|| -> io::Result<_> {
        let up = (client.try_clone()?, server.try_clone()?);
        let down = (server, client);
        Ok((up, down))
    })();
    let Ok(((client_in, server_out), (server_in, client_out))) = pumps else {
        conversation.say(None, "cannot relay: out of sockets");
        return;
    };
    let upstream = {
        let conversation = Arc::clone(conversation);
        thread::spawn(move || pump(client_in, server_out, Direction::ToServer, &conversation))
    };
    pump(server_in, client_out, Direction::ToClient, conversation);
    let _ = upstream.join();
    conversation.say(
        None,
        &format!(
            "closed after {:.3}s: {}",
            conversation.opened.elapsed().as_secs_f64(),
            conversation.summary()
        ),
    );
}

/// Copy one direction until its sender ends it, printing every chunk; then
/// pass the end on as it came: a half-close as a half-close, a reset as a
/// close of both ways.
fn pump(mut from: TcpStream, mut to: TcpStream, direction: Direction, conversation: &Conversation) {
    let mut buffer = vec![0; CHUNK];
    loop {
        match from.read(&mut buffer) {
            Ok(0) => {
                conversation.say(
                    Some(direction),
                    &format!(
                        "end of stream: {} shut down its sending side",
                        direction.sender()
                    ),
                );
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(count) => {
                conversation.chunk(direction, &buffer[..count]);
                if let Err(error) = to.write_all(&buffer[..count]) {
                    conversation.say(Some(direction), &format!("could not pass it on: {error}"));
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                conversation.say(
                    Some(direction),
                    &format!("{} is gone: {error}", direction.sender()),
                );
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Relay datagrams: each client address gets a socket of its own towards
/// the server, so the server's replies find their way back to it.
pub fn relay_udp(socket: UdpSocket, to: SocketAddr, printer: Printer) -> Result<()> {
    let socket = Arc::new(socket);
    let mut conversations: HashMap<SocketAddr, (Arc<UdpSocket>, Arc<Conversation>)> =
        HashMap::new();
    // The clients whose conversation went quiet, for the loop to forget.
    let quiet = Arc::new(Mutex::new(Vec::<SocketAddr>::new()));
    let mut buffer = vec![0; 65_536];
    let mut next_label = 1;
    loop {
        let (count, client) = socket.recv_from(&mut buffer)?;
        // Conversations whose reply thread ended (idle) are forgotten.
        let ended: Vec<SocketAddr> = std::mem::take(&mut *quiet.lock().expect("not poisoned"));
        for addr in ended {
            conversations.remove(&addr);
        }
        if !conversations.contains_key(&client) {
            if conversations.len() >= MAX_CONVERSATIONS {
                printer.line(&format!(
                    "dropped a datagram from {client}: {MAX_CONVERSATIONS} conversations already"
                ));
                continue;
            }
            let upstream = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
            upstream.connect(to)?;
            upstream.set_read_timeout(Some(UDP_IDLE))?;
            let upstream = Arc::new(upstream);
            let conversation = Arc::new(Conversation::new(next_label, printer.clone()));
            next_label += 1;
            conversation.say(None, &format!("first datagram: {client} → tap → {to}"));
            let replies = (Arc::clone(&upstream), Arc::clone(&socket));
            let (finished, talk) = (Arc::clone(&quiet), Arc::clone(&conversation));
            thread::spawn(move || {
                relay_replies(&replies.0, &replies.1, client, &talk);
                finished.lock().expect("not poisoned").push(client);
            });
            conversations.insert(client, (upstream, conversation));
        }
        let (upstream, conversation) = &conversations[&client];
        conversation.chunk(Direction::ToServer, &buffer[..count]);
        if let Err(error) = upstream.send(&buffer[..count]) {
            conversation.say(
                Some(Direction::ToServer),
                &format!("could not pass it on: {error}"),
            );
        }
    }
}

fn relay_replies(
    upstream: &UdpSocket,
    socket: &UdpSocket,
    client: SocketAddr,
    talk: &Conversation,
) {
    let mut buffer = vec![0; 65_536];
    loop {
        match upstream.recv(&mut buffer) {
            Ok(count) => {
                talk.chunk(Direction::ToClient, &buffer[..count]);
                let _ = socket.send_to(&buffer[..count], client);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                talk.say(
                    None,
                    &format!(
                        "quiet for {} s: over; {}",
                        UDP_IDLE.as_secs(),
                        talk.summary()
                    ),
                );
                return;
            }
            // A port with nothing behind it answers with ICMP, which the
            // next receive reports as refused; later datagrams may still
            // find a server that has started since.
            Err(error) => talk.say(Some(Direction::ToClient), &format!("{error}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer the tap prints into, read by the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The text once it holds every one of `wanted`, or what it holds
        /// when the deadline passes.
        fn wait_for(&self, wanted: &[&str]) -> String {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
                if wanted.iter().all(|want| text.contains(want)) || Instant::now() > deadline {
                    return text;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn prints_both_directions_of_each_connection_labelled() {
        let server = crate::net::testing::echo_server();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tap = listener.local_addr().unwrap();
        let captured = Captured::default();
        let printer = Printer::new(captured.clone());
        thread::spawn(move || relay_tcp(listener, server, printer));

        for (label, line) in [(1, "hello\r\n"), (2, "\u{0}two")] {
            let mut client = TcpStream::connect(tap).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            client.write_all(line.as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut echoed = Vec::new();
            client.read_to_end(&mut echoed).unwrap();
            assert_eq!(echoed, line.as_bytes());
            let shown = escape::escape(line.as_bytes());
            let summary = format!("{} bytes →, {} bytes ←", line.len(), line.len());
            let text = captured.wait_for(&[&summary]);
            for wanted in [
                format!("→ {shown} ({} bytes, {} so far)", line.len(), line.len()),
                format!("← {shown} ({} bytes, {} so far)", line.len(), line.len()),
                "→ end of stream: the client shut down its sending side".to_string(),
                "← end of stream: the server shut down its sending side".to_string(),
                summary.clone(),
            ] {
                let labelled = text
                    .lines()
                    .any(|row| row.starts_with(&format!("#{label} ")) && row.contains(&wanted));
                assert!(labelled, "no line of #{label} with {wanted:?} in:\n{text}");
            }
        }
    }

    #[test]
    fn relays_datagrams_both_ways_keeping_their_edges() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let server_addr = server.local_addr().unwrap();
        thread::spawn(move || {
            let mut buffer = [0; 1500];
            while let Ok((count, from)) = server.recv_from(&mut buffer) {
                let mut reply = b"re: ".to_vec();
                reply.extend_from_slice(&buffer[..count]);
                let _ = server.send_to(&reply, from);
            }
        });
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tap = socket.local_addr().unwrap();
        let captured = Captured::default();
        let printer = Printer::new(captured.clone());
        thread::spawn(move || relay_udp(socket, server_addr, printer));

        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        client.send_to(b"tick 1", tap).unwrap();
        let mut buffer = [0; 1500];
        let count = client.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..count], b"re: tick 1");
        let text = captured.wait_for(&["← \"re: tick 1\""]);
        assert!(
            text.contains("#1 ") && text.contains("→ \"tick 1\" (6 bytes, 6 so far)"),
            "{text}"
        );
        assert!(
            text.contains("← \"re: tick 1\" (10 bytes, 10 so far)"),
            "{text}"
        );
    }
}
