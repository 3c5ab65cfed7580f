//! The mailbox server of lesson 03, serving many clients at once: a small
//! thread per connection that waits for whole requests, a pool of workers
//! that answer them, one shared mailbox behind a lock, a deadline for each
//! request, and a graceful shutdown on SIGTERM or Ctrl-C.

use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::connections::Connections;
use crate::mailbox::{Mailbox, Message, Undelivered};
use crate::pool::{Pool, Queue};
use crate::protocol::{check_name, parse_request, read_body, read_line};
use crate::protocol::{Line, Refusal, Request, MAX_LINE};
use crate::timed_stream::{StoppedAt, TimedReader, TimedWriter};

/// At most this many whole requests wait for a worker.
const MAX_WAITING: usize = 256;
/// How long the accept loop pauses after a failed `accept`: most often the
/// process is out of open files, and retrying at once would only spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// After refusing a peer that sent too much, read at most this much more of
/// it, for at most this long, before closing (see `refuse_and_close`).
const DRAIN_BYTES: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// How the server runs, from the command line.
pub struct Options<'a> {
    pub bind: &'a str,
    pub workers: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// On a stop, how long a request in progress may take to finish.
    pub grace: Duration,
    pub data: Option<&'a Path>,
}

/// What every thread shares.
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
        stopped_at: StoppedAt::new(options.grace),
        idle_timeout: options.idle_timeout,
    });
    let listener = bind_listener(options.bind)?;
    let address = listener.local_addr()?;
    stop_on_signal(&shared, address)?;
    println!("listening on {address}");
    io::stdout().flush()?;

    let pool =
        Pool::start(options.workers, MAX_WAITING).context("cannot start the worker threads")?;
    let connections = Connections::new(options.max_connections);
    accept_loop(&listener, &connections, &pool, &shared);
    // Stop accepting; let every connection finish (each within the grace),
    // then the workers.
    drop(listener);
    connections.wait_until_all_closed();
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

/// Serve one connection to its end, on its own thread.
fn serve_connection(stream: TcpStream, shared: &Arc<Shared>, queue: &Queue) {
    // A connection accepted as the server stops (its wake-up call among
    // them) is closed unanswered: nothing it sent was acknowledged.
    if shared.stopped_at.get().is_some() {
        return;
    }
    let peer = match stream.peer_addr() {
        Ok(peer) => peer.to_string(),
        Err(_) => "a client that already left".to_string(),
    };
    eprintln!("{peer} connected");
    // One client's trouble is that client's: log it, and end this thread
    // only. A panic too: caught here, it is one line in the log.
    match panic::catch_unwind(AssertUnwindSafe(|| serve_client(&stream, shared, queue))) {
        Ok(Ok(())) => eprintln!("{peer} left"),
        Ok(Err(error)) => eprintln!("{peer} left: {error}"),
        Err(_) => eprintln!("{peer} left: serving this client panicked; the others go on"),
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

/// Start a thread for each connection, until the server is stopping.
fn accept_loop(
    listener: &TcpListener,
    connections: &Connections,
    pool: &Pool,
    shared: &Arc<Shared>,
) {
    for connection in listener.incoming() {
        if shared.stopped_at.get().is_some() {
            return;
        }
        match connection {
            // The loop goes straight back to accept: this client's own
            // thread waits for its requests while the next one is accepted.
            // At the cap of connections, `start` waits: back-pressure.
            Ok(stream) => {
                let (shared, queue) = (Arc::clone(shared), pool.queue());
                let serve = move || serve_connection(stream, &shared, &queue);
                if let Err(error) = connections.start(serve) {
                    eprintln!("cannot start a thread for a connection: {error}");
                }
            }
            Err(error) => {
                eprintln!("accept failed: {error}");
                thread::sleep(ACCEPT_PAUSE);
            }
        }
    }
}

/// What happens after a reply.
enum Next {
    Request,
    Close,
}

/// A request that has arrived whole, its body included, in words of its
/// own: it moves to a worker's thread while the connection reads on.
enum WholeRequest {
    User(String),
    Send {
        to: String,
        body: Vec<u8>,
    },
    Count,
    Fetch,
    Quit,
    /// A line refused with `ERR <reason>`; the connection stays open.
    Refused(String),
}

/// A worker's answer to one request.
struct Answer {
    /// The reply's bytes. The connection's thread sends them: a client slow
    /// to read holds that thread, not the worker.
    reply: Vec<u8>,
    /// Who the client is now (USER changes it).
    user: Option<String>,
    next: Next,
}

/// One client's conversation, on its own thread: wait for a whole request,
/// have a worker answer it, send the reply, and again, until QUIT, a
/// refusal that closes, the deadline, the client leaving, or the server
/// stopping.
fn serve_client(stream: &TcpStream, shared: &Arc<Shared>, queue: &Queue) -> io::Result<()> {
    let mut reader = BufReader::new(TimedReader::new(stream, &shared.stopped_at));
    let mut writer = BufWriter::new(TimedWriter::new(
        stream,
        &shared.stopped_at,
        shared.idle_timeout,
    ));
    let mut user = None;
    loop {
        // The first request's deadline counts from the connection's start,
        // each next one's from the reply before it.
        reader.get_mut().expect_request(shared.idle_timeout);
        let request = match read_whole_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
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
            Err(error) => return Err(error),
        };
        // Only now, with all of the request here, is a worker taken, and
        // only for as long as answering takes.
        let (serving, asking) = (Arc::clone(shared), user.take());
        let job = move || answer(request, asking, &serving.mailbox);
        let Some(answer) = queue.run(job) else {
            return Err(io::Error::other("no worker could answer this request"));
        };
        writer.write_all(&answer.reply)?;
        writer.flush()?;
        user = answer.user;
        // No close here when the server is stopping: the next request may
        // have arrived already, and the next read serves it (TimedReader).
        if let Next::Close = answer.next {
            return Ok(());
        }
    }
}

/// Read one request, its body included, or `None` if the client left (or
/// the server is stopping and nothing more had arrived). A request that
/// must end the connection with a refusal comes back as an `InvalidData`
/// error.
fn read_whole_request(reader: &mut BufReader<TimedReader>) -> io::Result<Option<WholeRequest>> {
    if reader.fill_buf()?.is_empty() {
        return Ok(None);
    }
    reader.get_mut().request_started();
    let line = match read_line(reader)? {
        Line::Complete(line) => line,
        Line::TooLong => {
            return Err(refusal(format!(
                "a request line may not exceed {MAX_LINE} bytes"
            )))
        }
        Line::Closed => return Ok(None),
    };
    Ok(Some(match parse_request(&line) {
        Ok(Request::User(name)) => WholeRequest::User(name.to_string()),
        // The body is read before anything is decided: even a refused SEND
        // sent its bytes, and the next request starts after them.
        Ok(Request::Send { to, length }) => WholeRequest::Send {
            to: to.to_string(),
            body: read_body(reader, length)?,
        },
        Ok(Request::Count) => WholeRequest::Count,
        Ok(Request::Fetch) => WholeRequest::Fetch,
        Ok(Request::Quit) => WholeRequest::Quit,
        Err(Refusal::KeepOpen(reason)) => WholeRequest::Refused(reason),
        Err(Refusal::Close(reason)) => return Err(refusal(reason)),
    }))
}

fn refusal(reason: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, reason)
}

/// Answer one whole request, on a worker's thread: nothing here waits for
/// the network.
fn answer(request: WholeRequest, mut user: Option<String>, mailbox: &Mutex<Mailbox>) -> Answer {
    // The lock is taken for one change at a time, and only by a worker,
    // never by a thread that waits for its client.
    let mailbox = || {
        mailbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    };
    let mut reply = Vec::new();
    let mut next = Next::Request;
    match (request, user.as_deref()) {
        (WholeRequest::User(name), _) => {
            user = Some(name);
            reply.extend_from_slice(b"OK\n");
        }
        (WholeRequest::Send { to, body }, from) => {
            let line = match (from, check_name(&to)) {
                (None, _) => "ERR say USER <name> first".to_string(),
                (_, Err(reason)) => format!("ERR {reason}"),
                // Taking an id and storing the message happen under one
                // lock: two threads can never get the same id.
                (Some(from), Ok(())) => match mailbox().deliver(from, &to, body) {
                    Ok(id) => format!("OK {id}"),
                    Err(Undelivered::Full) => "ERR the server is full; try later".to_string(),
                    Err(Undelivered::Disk(error)) => {
                        eprintln!("could not save a message: {error}");
                        "ERR the message could not be saved".to_string()
                    }
                },
            };
            reply.extend_from_slice(format!("{line}\n").as_bytes());
        }
        (WholeRequest::Count | WholeRequest::Fetch, None) => {
            reply.extend_from_slice(b"ERR say USER <name> first\n");
        }
        (WholeRequest::Count, Some(user)) => {
            reply.extend_from_slice(format!("OK {}\n", mailbox().count(user)).as_bytes());
        }
        (WholeRequest::Fetch, Some(user)) => {
            let messages = mailbox().take_all(user);
            write_messages(&mut reply, &messages);
        }
        (WholeRequest::Quit, _) => {
            reply.extend_from_slice(b"BYE\n");
            next = Next::Close;
        }
        (WholeRequest::Refused(reason), _) => {
            reply.extend_from_slice(format!("ERR {reason}\n").as_bytes());
        }
    }
    Answer { reply, user, next }
}

/// FETCH's reply: how many, then each message framed by its length.
fn write_messages(reply: &mut Vec<u8>, messages: &[Message]) {
    reply.extend_from_slice(format!("MSGS {}\n", messages.len()).as_bytes());
    for message in messages {
        let header = format!(
            "MSG {} {} {}\n",
            message.id,
            message.from,
            message.body.len()
        );
        reply.extend_from_slice(header.as_bytes());
        reply.extend_from_slice(&message.body);
    }
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
