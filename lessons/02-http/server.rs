//! The server: accept connections, and on each one read requests and answer
//! them in order, until the client is done.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::cache;
use crate::files;
use crate::request::{self, ReadError, Request};
use crate::response::{self, Reply, Status};

/// How long a client has to send a request's whole head, counted from when
/// the server starts to wait for it: the connection opened, or the previous
/// answer went out. A timeout on each read would not do: a client sending
/// one byte every 9 seconds never meets a 10-second one, and keeps its
/// thread, and one of MAX_CONNECTIONS, for as long as it likes (the attack
/// is called slowloris). A client too slow is closed without an answer.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// How long one response may take to send, whole: the time a thread may
/// spend on one answer. A timeout on each write would not do, for the same
/// reason as HEAD_DEADLINE: a client that reads a byte now and then would
/// keep its thread for ever. Real servers bound each write (nginx's
/// `send_timeout`), because an idle connection costs them little; here it
/// costs a thread. The price: a file too large to send in this time, to a
/// slow client, is cut short, and the client sees a body shorter than its
/// Content-Length.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(30);

/// How long the lingering close (close_after_answer) lasts, at most.
const LINGER_DEADLINE: Duration = Duration::from_secs(2);

/// Connections served at once. Each costs a thread, a socket and two 8 KiB
/// buffers: an idle one, some 40 KiB of memory (a thread's stack is
/// reserved at 2 MiB but used a page at a time). Past this many, a new one
/// gets 503 and is closed rather than exhausting the machine. The system
/// must let the process hold as many files (`ulimit -n`); where it allows
/// 1024, `accept` fails sooner ("Too many open files").
const MAX_CONNECTIONS: usize = 10_000;

/// Serve the files under `root` on `addr` until stopped.
pub fn run(addr: &str, root: &Path) -> Result<()> {
    // The canonical root (absolute, links resolved) is what every file the
    // server sends is checked against (files.rs).
    let root: Arc<Path> = root
        .canonicalize()
        .with_context(|| format!("cannot serve the folder {}", root.display()))?
        .into();
    if !root.is_dir() {
        return Err(anyhow!("cannot serve {}: not a folder", root.display()));
    }
    let listener = bind_listener(addr)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    accept_loop(&listener, root);
    Ok(())
}

fn bind_listener(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        ErrorKind::PermissionDenied => {
            anyhow!("not allowed to listen on {addr} (ports below 1024 need privileges)")
        }
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

/// Take connections, each on a thread of its own.
fn accept_loop(listener: &TcpListener, root: Arc<Path>) {
    let open = Arc::new(AtomicUsize::new(0));
    for connection in listener.incoming() {
        let stream = match connection {
            Ok(stream) => stream,
            Err(error) => {
                // Out of file descriptors, most often ("Too many open
                // files"): trying again at once would fail again, in a loop
                // that fills the log. A pause lets connections end first.
                eprintln!("accept failed: {error}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            turn_away(stream);
            continue;
        }
        // A browser opens several connections and keeps each open between
        // requests. Served one at a time, the second would wait until the
        // first went idle. Lesson 04 weighs a thread per client against
        // the alternatives.
        let root = Arc::clone(&root);
        let counted = Arc::clone(&open);
        let spawned = thread::Builder::new().spawn(move || {
            let peer = match stream.peer_addr() {
                Ok(peer) => peer.to_string(),
                Err(_) => "a client that already left".to_string(),
            };
            eprintln!("{peer} connected");
            match serve_connection(stream, &root, &peer) {
                Ok(()) => eprintln!("{peer} left"),
                Err(error) => eprintln!("{peer} left: {error:#}"),
            }
            counted.fetch_sub(1, Ordering::SeqCst);
        });
        // No thread to be had (the system's limit on threads): `spawn`
        // would panic and end the server for everyone. The connection,
        // dropped with the closure, is closed; the others go on.
        if let Err(error) = spawned {
            eprintln!("cannot serve a connection: {error}");
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Too many connections already: say so, and close.
fn turn_away(mut stream: TcpStream) {
    let mut reply = Reply::error(Status(503));
    reply.close = true;
    let _ = response::send(&mut stream, reply);
}

/// Read requests from one connection and answer each, in order.
fn serve_connection(stream: TcpStream, root: &Path, peer: &str) -> Result<()> {
    // A response leaves in one write (BufWriter), and leaves at once:
    // otherwise Nagle's algorithm may hold a small write back until the
    // client acknowledges the previous one, up to 40 ms later.
    stream.set_nodelay(true)?;
    // The reader keeps what arrived past one request: a pipelined request
    // waits there for its turn. Reader and writer borrow the one socket:
    // one file descriptor per connection (`try_clone` would make it two).
    let mut reader = BufReader::new(TimedStream::new(&stream));
    let mut writer = BufWriter::new(TimedStream::new(&stream));
    loop {
        // The wait for the next request and its whole head: one deadline.
        reader.get_mut().deadline = Instant::now() + HEAD_DEADLINE;
        let request = match request::read_request(&mut reader) {
            Ok(Some(request)) => request,
            // The client closed between requests: the normal end.
            Ok(None) => return Ok(()),
            // A client that went quiet or vanished: browsers and load
            // testers do it all the time, so it is no news for the log.
            Err(ReadError::Gone(error)) if is_quiet_end(&error) => return Ok(()),
            Err(ReadError::Gone(error)) => return Err(error.into()),
            Err(ReadError::Rejected(status, why)) => {
                eprintln!("{peer}: {status}: {why}");
                let mut reply = Reply::error(status);
                writer.get_mut().deadline = Instant::now() + RESPONSE_DEADLINE;
                // We cannot tell where this request ends, so nothing after
                // it on this connection can be read: answer, then close.
                reply.close = true;
                response::send(&mut writer, reply)?;
                close_after_answer(reader.into_inner());
                return Ok(());
            }
        };
        // HTTP/1.1 keeps the connection open unless the client says
        // otherwise; HTTP/1.0 closes after every response.
        let keep_open =
            request.version == "HTTP/1.1" && !asks_to_close(&request) && !request.has_body();
        let mut reply = answer(&request, root);
        reply.close = !keep_open;
        writer.get_mut().deadline = Instant::now() + RESPONSE_DEADLINE;
        response::send(&mut writer, reply)?;
        if !keep_open {
            close_after_answer(reader.into_inner());
            return Ok(());
        }
    }
}

/// How much later than its deadline a wait may end. Setting a socket's
/// timeout is a system call; made before every read and write, it cost
/// about a tenth of the requests a second
/// (slides/02-http.md, "A deadline, cheaply"). So the timeout is set again
/// only when the one in place would end the wait before the deadline, or
/// more than this after it.
const DEADLINE_SLACK: Duration = Duration::from_millis(100);

/// The socket, read or written against one deadline however many reads or
/// writes it takes: each may wait only for the time that is left.
struct TimedStream<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
    /// The timeout in place on the socket for this direction, if any.
    timeout: Option<Duration>,
}

impl<'a> TimedStream<'a> {
    fn new(stream: &'a TcpStream) -> TimedStream<'a> {
        TimedStream {
            stream,
            deadline: Instant::now(),
            timeout: None,
        }
    }

    /// The timeout the next wait needs, or `None` when the one in place
    /// will do: it ends no sooner than the deadline, and at most
    /// DEADLINE_SLACK later. TimedOut once no time is left:
    /// `set_read_timeout` and `set_write_timeout` refuse zero, which would
    /// mean "no timeout".
    fn timeout_to_set(&mut self) -> io::Result<Option<Duration>> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        match self.timeout {
            Some(set) if set >= left && set - left <= DEADLINE_SLACK => Ok(None),
            _ => {
                self.timeout = Some(left);
                Ok(Some(left))
            }
        }
    }
}

impl Read for TimedStream<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if let Some(timeout) = self.timeout_to_set()? {
            self.stream.set_read_timeout(Some(timeout))?;
        }
        self.stream.read(buffer)
    }
}

impl Write for TimedStream<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if let Some(timeout) = self.timeout_to_set()? {
            self.stream.set_write_timeout(Some(timeout))?;
        }
        self.stream.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn is_quiet_end(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionReset
    )
}

/// Whether the client said `Connection: close`: it wants this response to
/// be the last on this connection.
fn asks_to_close(request: &Request) -> bool {
    // TODO 7 (slides/02-http.md, "Keep-alive"): answer true when the
    // `Connection` header (`request.header("Connection")`) holds the option
    // `close`. It holds a comma-separated list, in any case: `Keep-Alive,
    // Close` asks to close too.
    // Until then, a stand-in: no client ever asks.
    false
}

/// The reply to one well-formed request: the file it names, or why not.
fn answer(request: &Request, root: &Path) -> Reply {
    // TODO 4 (slides/02-http.md, "Status codes"): this server knows GET and
    // HEAD. Any other method gets `Reply::error(Status(405))`, whose
    // `allow` says which methods are allowed: `Some("GET, HEAD")`.
    let reply = match open_file(root, &request.target) {
        Some(reply) => reply,
        None => Reply::error(Status(404)),
    };
    // HEAD gets the head GET would get, Content-Length included, and no body.
    if request.method == "HEAD" {
        reply.without_body()
    } else {
        reply
    }
}

/// The file `target` names, opened, as a reply. A file outside the root, a
/// missing one, one we may not read and one that is not a regular file all
/// look the same from outside: "not found" says nothing about what else is
/// on the disk.
fn open_file(root: &Path, target: &str) -> Option<Reply> {
    let (path, metadata) = files::resolve(root, target)?;
    // Regular files only, checked before opening: opening a named pipe
    // waits for a writer, maybe for ever, and holds the thread; a device
    // may never end (`/dev/zero`), or act on being opened.
    if !metadata.is_file() {
        return None;
    }
    let content_type = files::content_type(&path);
    if let Some(bytes) = cache::FILES.get(&path, &metadata) {
        return Some(Reply::bytes(bytes, content_type));
    }
    let file = open_without_waiting(&path).ok()?;
    // Checked again on what was opened: the name may have been given to a
    // pipe in between.
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    if metadata.len() > cache::LARGEST_FILE {
        return Some(Reply::file(file, metadata.len(), content_type));
    }
    // Small: read whole, and kept for the next request. Should the file
    // change while it is read, what was read is sent, but not kept.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(metadata.len()).read_to_end(&mut bytes).ok()?;
    let bytes: Arc<[u8]> = bytes.into();
    if bytes.len() as u64 == metadata.len() {
        cache::FILES.put(&path, &metadata, Arc::clone(&bytes));
    }
    Some(Reply::bytes(bytes, content_type))
}

/// Open `path` to read, without waiting for a writer should it be a pipe,
/// and without following a symbolic link.
#[cfg(unix)]
fn open_without_waiting(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK changes nothing for a regular file. files.rs found no link
    // at this name; should one have been put there since, O_NOFOLLOW makes
    // the open fail rather than follow it out of the root.
    File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
}

/// Open `path` to read. Outside Unix, a file name does not lead to a pipe.
#[cfg(not(unix))]
fn open_without_waiting(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Close after the last answer without losing it. Closing a socket while
/// bytes of the client's wait unread (a body we did not read, the rest of a
/// head too large) makes the system send a reset, and a reset may destroy
/// our answer before the client reads it. So: end our side (the client
/// reads the answer, then end of stream), read and throw away what the
/// client still sends, 64 KiB and LINGER_DEADLINE at most, then close.
fn close_after_answer(mut reader: TimedStream<'_>) {
    let _ = reader.stream.shutdown(Shutdown::Write);
    reader.deadline = Instant::now() + LINGER_DEADLINE;
    // Ends at the client's close, at the deadline or at 64 KiB, whichever
    // comes first.
    let _ = io::copy(&mut reader.take(64 * 1024), &mut io::sink());
}
