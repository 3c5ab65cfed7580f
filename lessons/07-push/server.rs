//! The push service's front door: devices register and poll here, senders
//! hand in notifications. A thread per connection, at most
//! `MAX_CONNECTIONS` at once, each request read by a deadline. Delivery,
//! the other direction, is delivery.rs.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::service::Service;
use crate::token::is_token;
use crate::wire::{check_name, parse_length, read_body, read_line, words, DeadlineReader, Line};

/// Connections served at once; past it a newcomer is told to come back.
/// A sender that floods with connections gets refusals, not our memory.
const MAX_CONNECTIONS: usize = 256;
/// Time for one whole request, body included: a peer that trickles bytes
/// or says nothing gives its thread back when it runs out.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Without `--api-key`, the key that senders may use.
const DEMO_KEY: &str = "demo-key";

pub fn run(
    addr: &str,
    data: Option<&Path>,
    mut keys: Vec<String>,
    answer_time: Duration,
) -> Result<()> {
    if keys.is_empty() {
        keys.push(DEMO_KEY.to_string());
    }
    let service = Service::open(data, keys, answer_time)?;
    let listener = TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    accept_loop(&listener, &service);
    Ok(())
}

fn accept_loop(listener: &TcpListener, service: &Arc<Service>) {
    let open = Arc::new(AtomicUsize::new(0));
    for connection in listener.incoming() {
        let mut stream = match connection {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(b"ERR the service is busy; try later\n");
            continue;
        }
        let (service, open) = (Arc::clone(service), Arc::clone(&open));
        thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or("?".to_string(), |addr| addr.to_string());
            if let Err(error) = serve(&stream, &service) {
                eprintln!("{peer}: {error}");
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One connection: a request, its reply, the next, until QUIT or the end.
fn serve(stream: &TcpStream, service: &Arc<Service>) -> io::Result<()> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(DeadlineReader::new(stream));
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + REQUEST_TIME))?;
    let mut writer = BufWriter::new(stream);
    stream.set_write_timeout(Some(REQUEST_TIME))?;
    loop {
        reader
            .get_mut()
            .set_deadline(Some(Instant::now() + REQUEST_TIME))?;
        let line = match read_line(&mut reader)? {
            Line::Complete(line) => line,
            Line::TooLong => {
                writeln!(writer, "ERR a line may not exceed 1024 bytes")?;
                return writer.flush();
            }
            Line::Closed => return Ok(()),
        };
        let reply = match answer(&line, &mut reader, service, peer) {
            Ok(reply) => reply,
            // The framing is lost (a bad length): answer, then close.
            Err(Closing(reason)) => {
                writeln!(writer, "ERR {reason}")?;
                return writer.flush();
            }
        };
        writer.write_all(&reply)?;
        writer.flush()?;
        if reply == b"BYE\n" {
            return Ok(());
        }
    }
}

/// A refusal after which the next request cannot be found.
struct Closing(String);

/// The reply to one request line (and its body, if it has one).
fn answer(
    line: &[u8],
    reader: &mut impl BufRead,
    service: &Arc<Service>,
    peer: SocketAddr,
) -> Result<Vec<u8>, Closing> {
    let refuse = |reason: String| Ok(format!("ERR {reason}\n").into_bytes());
    let words = match words(line) {
        Ok(words) => words,
        Err(reason) => return refuse(reason),
    };
    let ok = |what: String| Ok(format!("OK {what}\n").into_bytes());
    match words.as_slice() {
        ["REGISTER", name, callback, token @ ..] if token.len() <= 1 => {
            let callback = match *callback {
                "-" => None,
                text => match text.parse::<SocketAddr>() {
                    Ok(addr) => Some(addr),
                    Err(_) => return refuse(format!("{text} is not IP:PORT")),
                },
            };
            if let Err(reason) = check_name(name) {
                return refuse(reason.to_string());
            }
            match service.register(name, callback, token.first().copied()) {
                Ok(token) => {
                    let at = callback.map_or("polling".to_string(), |addr| format!("at {addr}"));
                    eprintln!("{name} registered {at}, from {peer}");
                    ok(token)
                }
                Err(reason) => refuse(reason),
            }
        }
        ["SEND", key, to, ttl, collapse, length] => {
            let body = read_framed_body(reader, length)?;
            let ttl = match *ttl {
                "-" => None,
                text => match text.parse::<u64>() {
                    Ok(seconds) if seconds <= 28 * 24 * 3600 => Some(seconds),
                    _ => return refuse("a TTL is `-` or seconds, at most 28 days".into()),
                },
            };
            let collapse = match *collapse {
                "-" => None,
                key => match check_name(key) {
                    Ok(()) => Some(key.to_string()),
                    Err(_) => return refuse("a collapse key is like a name, or `-`".into()),
                },
            };
            if !service.knows_key(key) {
                return refuse("unknown API key".into());
            }
            match service.accept("app", to, body, ttl, collapse) {
                Ok(id) => ok(id.to_string()),
                Err(reason) => refuse(reason),
            }
        }
        ["TELL", name, token, to, length] => {
            let body = read_framed_body(reader, length)?;
            if let Err(reason) = service.check_token(name, token) {
                return refuse(reason.to_string());
            }
            match service.accept(name, to, body, None, None) {
                Ok(id) => ok(id.to_string()),
                Err(reason) => refuse(reason),
            }
        }
        ["POLL", name, token, acked] => {
            let Ok(acked) = acked.parse::<u64>() else {
                return refuse("POLL takes the last id received, or 0".into());
            };
            if !is_token(token) {
                return refuse("a token is 32 hex digits".into());
            }
            match service.poll(name, token, acked) {
                Ok((lost, notes)) => {
                    let mut reply = format!("NOTES {} {lost}\n", notes.len()).into_bytes();
                    for note in notes {
                        let head = format!("NOTE {} {} {}\n", note.id, note.from, note.body.len());
                        reply.extend_from_slice(head.as_bytes());
                        reply.extend_from_slice(&note.body);
                    }
                    Ok(reply)
                }
                Err(reason) => refuse(reason),
            }
        }
        ["STATUS", key, name] => {
            if !service.knows_key(key) {
                return refuse("unknown API key".into());
            }
            let (state, pending) = service.status(name);
            ok(format!("{state} {pending}"))
        }
        ["QUIT"] => Ok(b"BYE\n".to_vec()),
        [] => refuse("empty request".into()),
        [command, ..] => refuse(format!("unknown request or wrong arguments: {command}")),
    }
}

/// The body after a line whose last word is its length. A length that is
/// not a number leaves no way to find the next request: the connection
/// closes.
fn read_framed_body(reader: &mut impl BufRead, length: &str) -> Result<Vec<u8>, Closing> {
    let length = parse_length(length).map_err(Closing)?;
    read_body(reader, length)
        .map_err(|error| Closing(format!("the body did not come whole: {error}")))
}
