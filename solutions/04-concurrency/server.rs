//! The mailbox server of lesson 03, serving many clients at once: a pool of
//! worker threads, one shared mailbox behind a lock, an idle timeout, and a
//! graceful shutdown on SIGTERM or Ctrl-C.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::mailbox::{Mailbox, Message, Undelivered};
use crate::pool::Pool;
use crate::protocol::{check_name, parse_request, read_body, read_line};
use crate::protocol::{Line, Refusal, Request, MAX_LINE};
use crate::timed_stream::{StoppedAt, TimedReader, TimedWriter};

/// At most this many accepted connections wait for a worker. Each is an
/// open file; past this, clients wait in the system's listen queue.
const MAX_WAITING: usize = 256;
/// After refusing a peer that sent too much, read at most this much more of
/// it, for at most this long, before closing (see `refuse_and_close`).
const DRAIN_BYTES: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// How the server runs, from the command line.
pub struct Options<'a> {
    pub bind: &'a str,
    pub workers: usize,
    pub idle_timeout: Duration,
    pub data: Option<&'a Path>,
}

/// What every worker shares.
struct Shared {
    /// One mailbox for all: every access takes the lock, so no two threads
    /// ever change it at once.
    mailbox: Mutex<Mailbox>,
    /// Set by SIGTERM or Ctrl-C.
    stopped_at: StoppedAt,
    idle_timeout: Duration,
}

/// Bind, say where we listen, serve until SIGTERM or Ctrl-C, then let the
/// requests in progress finish and return.
pub fn run(options: &Options) -> Result<()> {
    let mailbox = Mailbox::open(options.data)?;
    let shared = Arc::new(Shared {
        mailbox: Mutex::new(mailbox),
        stopped_at: StoppedAt::new(),
        idle_timeout: options.idle_timeout,
    });
    let listener = bind_listener(options.bind)?;
    let address = listener.local_addr()?;
    stop_on_signal(&shared, address)?;
    println!("listening on {address}");
    io::stdout().flush()?;

    let serving = Arc::clone(&shared);
    let pool = Pool::start(options.workers, MAX_WAITING, move |stream| {
        serve_connection(stream, &serving)
    })
    .context("cannot start the worker threads")?;
    accept_loop(&listener, &pool, &shared);
    // Stop accepting, then wait for each worker to finish its request.
    drop(listener);
    pool.finish();
    Ok(())
}

fn bind_listener(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

/// Serve one connection to its end, on a worker's thread.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    // Connections still queued when the server stops never started: they
    // are closed unanswered, and nothing they sent was acknowledged.
    if shared.stopped_at.get().is_some() {
        return;
    }
    let peer = match stream.peer_addr() {
        Ok(peer) => peer.to_string(),
        Err(_) => "a client that already left".to_string(),
    };
    eprintln!("{peer} connected");
    // One client's trouble is that client's: log it, serve the next. A
    // panic too: unwinding would end this worker's thread, and the pool would
    // be one worker smaller for good (the Rust Book's pool has that flaw).
    match panic::catch_unwind(AssertUnwindSafe(|| serve_client(&stream, shared))) {
        Ok(Ok(())) => eprintln!("{peer} left"),
        Ok(Err(error)) => eprintln!("{peer} left: {error}"),
        Err(_) => eprintln!("{peer} left: serving this client panicked; the worker goes on"),
    }
}

/// On SIGTERM or Ctrl-C, set the stop flag and wake the accept loop.
fn stop_on_signal(shared: &Arc<Shared>, address: SocketAddr) -> Result<()> {
    let shared = Arc::clone(shared);
    // A listener on 0.0.0.0 is reached at 127.0.0.1.
    let mut waker = address;
    if waker.ip().is_unspecified() {
        waker.set_ip(match address {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // The handler runs on a thread of its own, not inside the signal, so it
    // may do anything: here, connect to ourselves, because `accept` blocks
    // in the kernel and only a connection makes it return.
    ctrlc::set_handler(move || {
        // A second Ctrl-C changes nothing: the first set the time.
        let _ = shared.stopped_at.set(Instant::now());
        let _ = TcpStream::connect(waker);
    })
    .context("cannot handle SIGTERM")
}

/// Hand each connection to the pool, until the server is stopping.
fn accept_loop(listener: &TcpListener, pool: &Pool, shared: &Shared) {
    for connection in listener.incoming() {
        if shared.stopped_at.get().is_some() {
            return;
        }
        match connection {
            // The loop goes straight back to accept: a worker serves this
            // client while the next one is accepted. While every worker is
            // busy and the queue is full, `send` waits: back-pressure.
            Ok(stream) => {
                let _ = pool.queue.send(stream);
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

/// One client's conversation, on a worker thread: a request, its reply, the
/// next request, until QUIT, a refusal that closes, the idle timeout, the
/// client leaving, or the server stopping.
fn serve_client(stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    let mut reader = BufReader::new(TimedReader::new(stream, &shared.stopped_at));
    let mut writer = BufWriter::new(TimedWriter::new(
        stream,
        &shared.stopped_at,
        shared.idle_timeout,
    ));
    let mut user = None;
    loop {
        reader.get_mut().expect_request(shared.idle_timeout);
        let next = match serve_request(&mut reader, &mut writer, &mut user, shared) {
            Err(error) if error.kind() == ErrorKind::TimedOut => {
                // Best effort: a client this slow may not read it either.
                if shared.stopped_at.get().is_some() {
                    writeln!(writer, "ERR the server is stopping; closing")?;
                } else {
                    writeln!(writer, "ERR idle for too long; closing")?;
                }
                writer.flush()?;
                return Ok(());
            }
            Err(error) if error.kind() == ErrorKind::InvalidData => {
                return refuse_and_close(stream, writer, &error.to_string(), &shared.stopped_at);
            }
            result => result?,
        };
        writer.flush()?;
        // No close here when the server is stopping: the next request may
        // have arrived already, and the next read serves it (TimedReader).
        if let Next::Close = next {
            return Ok(());
        }
    }
}

/// Read one request and write its reply. A request that must end the
/// connection with a refusal comes back as an `InvalidData` error.
fn serve_request(
    reader: &mut BufReader<TimedReader>,
    writer: &mut impl Write,
    user: &mut Option<String>,
    shared: &Shared,
) -> io::Result<Next> {
    // Wait for the first byte of a request; none means the client left, or
    // the server is stopping and nothing more had arrived.
    if reader.fill_buf()?.is_empty() {
        return Ok(Next::Close);
    }
    reader.get_mut().request_started();
    let line = match read_line(reader)? {
        Line::Complete(line) => line,
        Line::TooLong => {
            return Err(refusal(format!(
                "a request line may not exceed {MAX_LINE} bytes"
            )))
        }
        Line::Closed => return Ok(Next::Close),
    };
    match parse_request(&line) {
        Ok(request) => answer(request, user, reader, writer, &shared.mailbox),
        Err(Refusal::KeepOpen(reason)) => {
            writeln!(writer, "ERR {reason}")?;
            Ok(Next::Request)
        }
        Err(Refusal::Close(reason)) => Err(refusal(reason)),
    }
}

fn refusal(reason: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, reason)
}

/// Answer one well-formed request.
fn answer(
    request: Request,
    user: &mut Option<String>,
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    mailbox: &Mutex<Mailbox>,
) -> io::Result<Next> {
    // The lock is taken for one change at a time, never while waiting for
    // the network: a slow client must not make the others wait.
    let mailbox = || {
        mailbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
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
                // Taking an id and storing the message happen under one
                // lock: two threads can never get the same id.
                (Some(from), Ok(())) => match mailbox().deliver(from, to, body) {
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
        (Request::Count, Some(user)) => writeln!(writer, "OK {}", mailbox().count(user))?,
        (Request::Fetch, Some(user)) => {
            // Take the messages under the lock, write them without it.
            let messages = mailbox().take_all(user);
            write_messages(writer, &messages)?;
        }
        (Request::Quit, _) => {
            writeln!(writer, "BYE")?;
            return Ok(Next::Close);
        }
    }
    Ok(Next::Request)
}

/// FETCH's reply: how many, then each message framed by its length.
fn write_messages(writer: &mut impl Write, messages: &[Message]) -> io::Result<()> {
    writeln!(writer, "MSGS {}", messages.len())?;
    for message in messages {
        writeln!(
            writer,
            "MSG {} {} {}",
            message.id,
            message.from,
            message.body.len()
        )?;
        writer.write_all(&message.body)?;
    }
    Ok(())
}

/// Answer `ERR <reason>` and close, without reading what the peer still
/// sends into memory.
fn refuse_and_close(
    stream: &TcpStream,
    mut writer: impl Write,
    reason: &str,
    stopped_at: &StoppedAt,
) -> io::Result<()> {
    writeln!(writer, "ERR {reason}")?;
    writer.flush()?;
    // Our side is done: the peer reads the ERR, then end of stream.
    stream.shutdown(Shutdown::Write)?;
    // Closing a socket with unread bytes in it makes the system send a reset,
    // which may destroy the ERR before the peer reads it. So read on a
    // little, into nothing, and close once the peer stops or the bound is
    // reached. A peer that floods on gets the reset: it was told. The time
    // bound is for the whole drain, so a slow trickle cannot stretch it.
    let mut rest = TimedReader::new(stream, stopped_at);
    rest.expect_request(DRAIN_TIME);
    rest.request_started();
    let _ = io::copy(&mut rest.take(DRAIN_BYTES), &mut io::sink());
    Ok(())
}
