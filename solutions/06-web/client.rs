//! The terminal client: a member of the room that hears it one of the four
//! ways, as a browser would, while its user types (lesson 05's two threads:
//! one listens, the main thread reads the keyboard).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::digest::base64;
use crate::websocket::{accept_key, masked_frame, read_frame, Stop};
use crate::Via;

/// How long a long poll asks the server to hold it: under the 30 s that
/// RFC 6202 calls safe, so that no proxy on the way gives up first.
const LONG_WAIT_SECS: u64 = 25;

/// The most of one answer the client keeps: the room's whole history, 1000
/// lines of at most 4 KiB, fits. A server that sends more, or a line of an
/// event stream longer than its own limit, is refused, not trusted to stop.
const MAX_ANSWER: u64 = 8 * 1024 * 1024;
const MAX_EVENT_LINE: u64 = 16 * 1024;

/// How long an answer may take: the long poll's own wait, and a margin. A
/// server that says nothing for longer has gone, even if its socket has not.
const ANSWER_WITHIN: Duration = Duration::from_secs(LONG_WAIT_SECS + 10);

/// Join as `name` and hear the room `via` one way; with `Via::Poll`, ask
/// every `poll_every` (a second unless `--poll-every` says).
pub fn run(addr: &str, via: Via, name: &str, poll_every: Duration) -> Result<()> {
    let (key, since) = join(addr, name)?;
    let quitting = Arc::new(AtomicBool::new(false));
    let socket = match via {
        Via::Ws => Some(Arc::new(open_websocket(addr, &key, since)?)),
        _ => None,
    };
    {
        let (addr, key, quitting) = (addr.to_string(), key.clone(), Arc::clone(&quitting));
        let socket = socket.clone();
        thread::spawn(move || {
            let heard = match (via, socket) {
                (Via::Poll, _) => poll(&addr, &key, since, Asking::Every(poll_every)),
                (Via::Long, _) => poll(&addr, &key, since, Asking::Held(LONG_WAIT_SECS)),
                (Via::Sse, _) => listen_to_events(&addr, &key, since),
                (Via::Ws, Some(socket)) => listen_to_websocket(&socket),
                (Via::Ws, None) => Err(anyhow!("no WebSocket")),
            };
            if !quitting.load(Ordering::SeqCst) {
                match heard {
                    Ok(()) => eprintln!("error: the server at {addr} ended the conversation"),
                    Err(error) => eprintln!("error: lost the room at {addr}: {error:#}"),
                }
                process::exit(1);
            }
        });
    }
    let say = |line: &str| -> Result<()> {
        match &socket {
            Some(socket) => socket.send(0x1, line.as_bytes()),
            None => post(addr, &format!("/send?key={key}"), line).map(|_| ()),
        }
    };
    let mut input = io::stdin().lock();
    let mut line = String::new();
    while input.read_line(&mut line)? > 0 {
        let typed = line.trim_end_matches(['\r', '\n']);
        if typed == "/quit" {
            break;
        }
        say(typed).context("sending to the server failed")?;
        line.clear();
    }
    // The end of input is the user's goodbye, as /quit is.
    quitting.store(true, Ordering::SeqCst);
    say("/quit").context("sending /quit failed")
}

/// `POST /join`: the member's key, and the cursor to read from.
fn join(addr: &str, name: &str) -> Result<(String, u64)> {
    let answer = post(addr, "/join", name)?;
    let (key, since) = answer
        .trim()
        .split_once(' ')
        .ok_or_else(|| anyhow!("the server answered the join with {answer:?}"))?;
    Ok((key.to_string(), since.parse()?))
}

fn connect(addr: &str) -> Result<TcpStream> {
    TcpStream::connect(addr).map_err(|error| match error.kind() {
        ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {addr}"),
        _ => anyhow!("cannot connect to {addr}: {error}"),
    })
}

/// One request on a connection of its own; the body of a 200, or an error
/// that says what came instead.
fn request(addr: &str, head: &str, body: &str) -> Result<(String, String)> {
    let mut stream = connect(addr)?;
    write!(
        stream,
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.set_read_timeout(Some(ANSWER_WITHIN))?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER + 1).read_to_end(&mut answer)?;
    if answer.len() as u64 > MAX_ANSWER {
        bail!(
            "the server's answer is over {} MiB",
            MAX_ANSWER / (1024 * 1024)
        );
    }
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("the server's answer has no end of head"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "{}: {}",
            head.lines().next().unwrap_or_default(),
            body.trim()
        );
    }
    Ok((head.to_string(), body.to_string()))
}

fn post(addr: &str, target: &str, body: &str) -> Result<String> {
    request(addr, &format!("POST {target} HTTP/1.1"), body).map(|(_, body)| body)
}

/// How `poll` asks.
enum Asking {
    /// Short polling: ask, and again after this long.
    Every(Duration),
    /// Long polling: ask the server to hold its answer up to this many
    /// seconds, until there is something to say; then ask again at once.
    Held(u64),
}

/// Short polling or long polling: ask, print, ask again.
fn poll(addr: &str, key: &str, mut since: u64, asking: Asking) -> Result<()> {
    let waiting = match asking {
        Asking::Every(_) => String::new(),
        Asking::Held(secs) => format!("&wait={secs}"),
    };
    loop {
        let target = format!("/messages?key={key}&since={since}{waiting}");
        let (head, body) = request(addr, &format!("GET {target} HTTP/1.1"), "")?;
        for line in body.lines() {
            println!("{}", line.split_once(' ').map_or(line, |(_, text)| text));
        }
        since = head
            .lines()
            .find_map(|line| line.strip_prefix("Room-Cursor: "))
            .and_then(|cursor| cursor.parse().ok())
            .unwrap_or(since);
        if let Asking::Every(pause) = asking {
            thread::sleep(pause);
        }
    }
}

/// Server-Sent Events: one request, then its endless body, a line at a time.
fn listen_to_events(addr: &str, key: &str, since: u64) -> Result<()> {
    let mut stream = connect(addr)?;
    write!(
        stream,
        "GET /events?key={key}&since={since} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let status = read_event_line(&mut reader)?.unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        bail!("the server answered the event stream with {status:?}");
    }
    while let Some(line) = read_event_line(&mut reader)? {
        if let Some(data) = line.strip_prefix("data: ") {
            println!("{data}");
        }
    }
    Ok(())
}

/// The next line of the event stream, without its line ending; None when
/// the stream has ended. A line longer than [`MAX_EVENT_LINE`] is an error:
/// no event of this room is that long.
fn read_event_line(reader: &mut impl BufRead) -> Result<Option<String>> {
    let mut line = Vec::new();
    let count = reader.take(MAX_EVENT_LINE).read_until(b'\n', &mut line)?;
    if count == 0 {
        return Ok(None);
    }
    if !line.ends_with(b"\n") && count as u64 == MAX_EVENT_LINE {
        bail!("the event stream sent a line over {MAX_EVENT_LINE} bytes");
    }
    let line = String::from_utf8_lossy(&line);
    Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
}

/// A WebSocket from the client's side: frames out are masked, and written
/// whole under a lock (the keyboard and the pongs share it).
struct ClientSocket {
    stream: TcpStream,
    writing: Mutex<()>,
    masks: RandomState,
}

impl ClientSocket {
    fn send(&self, opcode: u8, payload: &[u8]) -> Result<()> {
        // A mask the page's script cannot predict: that is what stops it
        // from choosing the bytes a proxy sees.
        let mut hasher = self.masks.build_hasher();
        hasher.write(payload);
        let mask = (hasher.finish() as u32).to_be_bytes();
        let _turn = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        (&self.stream).write_all(&masked_frame(opcode, payload, mask))?;
        Ok(())
    }
}

fn open_websocket(addr: &str, key: &str, since: u64) -> Result<ClientSocket> {
    let mut stream = connect(addr)?;
    let masks = RandomState::new();
    let nonce: Vec<u8> = (0..2u64)
        .flat_map(|half| {
            let mut hasher = masks.build_hasher();
            hasher.write_u64(half);
            hasher.finish().to_be_bytes()
        })
        .collect();
    let socket_key = base64(&nonce);
    write!(
        stream,
        "GET /ws?key={key}&since={since} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {socket_key}\r\n\r\n"
    )?;
    // Read the head a byte at a time: frames may follow it at once, and must
    // stay in the socket for the listener.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte)? == 0 {
            bail!("the server closed the WebSocket handshake");
        }
        if head.len() > 8192 {
            bail!("the server's WebSocket handshake is over 8 KiB");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let accepted = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.eq_ignore_ascii_case("Sec-WebSocket-Accept")
                && value.trim() == accept_key(&socket_key)
        })
    });
    if !head.starts_with("HTTP/1.1 101") || !accepted {
        bail!(
            "the server refused the WebSocket: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(ClientSocket {
        stream,
        writing: Mutex::new(()),
        masks,
    })
}

/// Print each text frame; answer pings; end at a close.
fn listen_to_websocket(socket: &ClientSocket) -> Result<()> {
    let mut reader = BufReader::new(&socket.stream);
    loop {
        let frame = match read_frame(&mut reader, 1 << 20, false) {
            Ok(frame) => frame,
            Err(Stop::Io(error)) => return Err(error.into()),
            Err(Stop::Close(_, why)) => bail!("the server broke the protocol: {why}"),
        };
        match frame.opcode {
            0x1 => println!("{}", String::from_utf8_lossy(&frame.payload)),
            0x9 => socket.send(0xA, &frame.payload)?,
            0x8 => return Ok(()),
            _ => {}
        }
    }
}
