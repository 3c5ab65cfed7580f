//! The mailbox server: requests in, replies out, one client at a time
//! (lesson 04 serves many at once). The protocol is in README.md.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::mailbox::{Mailbox, Message, Undelivered};
use crate::protocol::{check_name, parse_request, read_body, read_line};
use crate::protocol::{Line, Refusal, Request, MAX_LINE};

/// After refusing a peer that sent too much, read at most this much more of
/// it, for at most `drain_time` in all (`--drain`), before closing (see
/// `refuse_and_close`).
const DRAIN_BYTES: usize = 64 * 1024;

/// Bind `addr`, say where we listen, and serve clients one after another.
pub fn run(addr: &str, data: Option<&Path>, drain_time: Duration) -> Result<()> {
    let mut mailbox = Mailbox::open(data)?;
    let listener = bind_listener(addr)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    accept_loop(&listener, &mut mailbox, drain_time);
    Ok(())
}

fn bind_listener(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

fn accept_loop(listener: &TcpListener, mailbox: &mut Mailbox, drain_time: Duration) {
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => {
                let peer = match stream.peer_addr() {
                    Ok(peer) => peer.to_string(),
                    Err(_) => "a client that already left".to_string(),
                };
                eprintln!("{peer} connected");
                // One client's trouble is that client's: log it, serve the next.
                match serve_client(&stream, mailbox, drain_time) {
                    Ok(()) => eprintln!("{peer} left"),
                    Err(error) => eprintln!("{peer} left: {error}"),
                }
            }
            Err(error) => eprintln!("accept failed: {error}"),
        }
    }
}

/// What happens after a reply.
enum Next {
    Request,
    Close,
}

/// One client's conversation: a request, its reply, the next request, until
/// QUIT, a refusal that closes, or the client leaves.
fn serve_client(stream: &TcpStream, mailbox: &mut Mailbox, drain_time: Duration) -> io::Result<()> {
    // One reader for the whole connection. Its buffer may already hold the
    // next request, or a body: a new BufReader per request would lose them.
    let mut reader = BufReader::new(stream);
    // Replies are gathered here and leave in one write at `flush`.
    let mut writer = BufWriter::new(stream);
    let mut user = None;
    loop {
        let line = match read_line(&mut reader)? {
            Line::Complete(line) => line,
            Line::TooLong => {
                let reason = format!("a request line may not exceed {MAX_LINE} bytes");
                return refuse_and_close(stream, writer, &reason, drain_time);
            }
            Line::Closed => return Ok(()),
        };
        let next = match parse_request(&line) {
            Ok(request) => answer(request, &mut user, &mut reader, &mut writer, mailbox)?,
            Err(Refusal::KeepOpen(reason)) => {
                writeln!(writer, "ERR {reason}")?;
                Next::Request
            }
            Err(Refusal::Close(reason)) => {
                return refuse_and_close(stream, writer, &reason, drain_time)
            }
        };
        writer.flush()?;
        if let Next::Close = next {
            return Ok(());
        }
    }
}

/// Answer one well-formed request.
fn answer(
    request: Request,
    user: &mut Option<String>,
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    mailbox: &mut Mailbox,
) -> io::Result<Next> {
    match (request, user.as_deref()) {
        (Request::User(name), _) => {
            *user = Some(name.to_string());
            writeln!(writer, "OK")?;
        }
        (Request::Send { to, length }, from) => {
            // The body is read before anything is decided: even a refused
            // SEND sent its bytes, and the next request starts after them.
            let body = read_body(reader, length)?;
            let reply = match (from, check_name(to)) {
                (None, _) => "ERR say USER <name> first".to_string(),
                (_, Err(reason)) => format!("ERR {reason}"),
                (Some(from), Ok(())) => match mailbox.deliver(from, to, body) {
                    Ok(id) => format!("OK {id}"),
                    Err(Undelivered::Full) => "ERR the server is full; try later".to_string(),
                    Err(Undelivered::Disk(error)) => {
                        eprintln!("could not save a message: {error}");
                        "ERR the message could not be saved".to_string()
                    }
                },
            };
            writeln!(writer, "{reply}")?;
        }
        (Request::Count | Request::Fetch, None) => writeln!(writer, "ERR say USER <name> first")?,
        (Request::Count, Some(user)) => writeln!(writer, "OK {}", mailbox.count(user))?,
        (Request::Fetch, Some(user)) => write_messages(writer, &mailbox.take_all(user))?,
        (Request::Quit, _) => {
            writeln!(writer, "BYE")?;
            return Ok(Next::Close);
        }
    }
    Ok(Next::Request)
}

/// FETCH's reply: how many, then each message framed by its length.
fn write_messages(writer: &mut impl Write, messages: &[Message]) -> io::Result<()> {
    // TODO 3 (slides/03-messages.md, "Requests and replies"): write
    // `MSGS <n>`, then, for each message, the line `MSG <id> <from> <length>`
    // followed by the body's bytes as they are (no newline after them: the
    // length says where the body ends).
    writeln!(writer, "MSGS 0")
}

/// Answer `ERR <reason>` and close, without reading what the peer still
/// sends into memory.
fn refuse_and_close(
    stream: &TcpStream,
    mut writer: impl Write,
    reason: &str,
    drain_time: Duration,
) -> io::Result<()> {
    writeln!(writer, "ERR {reason}")?;
    writer.flush()?;
    // Our side is done: the peer reads the ERR, then end of stream.
    stream.shutdown(Shutdown::Write)?;
    // Closing a socket with unread bytes in it makes the system send a reset,
    // which may destroy the ERR before the peer reads it. So read on a
    // little, into nothing, and close once the peer stops or a bound is
    // reached. A peer that floods on gets the reset: it was told.
    drain(stream, Instant::now() + drain_time)
}

/// Read and drop what the peer sends, until it closes, DRAIN_BYTES have
/// come, or `deadline` passes.
fn drain(mut stream: &TcpStream, deadline: Instant) -> io::Result<()> {
    let mut scrap = [0; 4096];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        // The time left, not `drain_time` again: a timeout per read would let
        // a peer that sends a byte now and then keep us here for ever, and
        // this server has other clients waiting.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut scrap) {
            Ok(0) | Err(_) => break,
            Ok(count) => drained += count,
        }
    }
    Ok(())
}
