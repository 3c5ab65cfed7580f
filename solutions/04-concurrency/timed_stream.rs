//! Reading from and writing to a client with two reasons to stop waiting:
//! the idle timeout, and a server that is shutting down.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How often a connection waiting on its client looks whether the server is
/// stopping. Each look wakes a thread: with 10 000 idle connections, looking
/// every 100 ms kept 60% of a core busy, once a second 11%; and an idle
/// connection still closes within a second of a stop (sooner if the grace
/// is shorter).
const STOP_CHECK: Duration = Duration::from_secs(1);
/// How long a try at the deadline may wait: a socket timeout of zero would
/// mean no timeout at all.
const LAST_TRY: Duration = Duration::from_millis(1);

/// When the server was asked to stop, set once by SIGTERM or Ctrl-C, and
/// seen by every connection; and the grace: how long a request in progress
/// then may take to finish, its reply included. One instant for all: however
/// many connections wait, the last is done by the end of the same grace.
pub struct StoppedAt {
    at: OnceLock<Instant>,
    grace: Duration,
}

impl StoppedAt {
    pub fn new(grace: Duration) -> StoppedAt {
        StoppedAt {
            at: OnceLock::new(),
            grace,
        }
    }

    /// Note the stop; a second one changes nothing (and says `Err`).
    pub fn set(&self, now: Instant) -> Result<(), Instant> {
        self.at.set(now)
    }

    pub fn get(&self) -> Option<&Instant> {
        self.at.get()
    }
}

/// `deadline`, or the end of the grace if the server is stopping and that
/// comes first.
fn within_grace(stopped_at: &StoppedAt, deadline: Instant) -> Instant {
    stopped_at
        .get()
        .map_or(deadline, |&stop| deadline.min(stop + stopped_at.grace))
}

/// The reading side of a connection: a read fails with `TimedOut` once the
/// deadline (or the grace of a stopping server) has passed, and between
/// requests it ends, as if the client had closed, once the server is stopping.
pub struct TimedReader<'a> {
    stream: &'a TcpStream,
    stopped_at: &'a StoppedAt,
    deadline: Instant,
    between_requests: bool,
    /// Whether the one look at what had arrived, after the stop, was taken.
    looked: bool,
}

impl<'a> TimedReader<'a> {
    pub fn new(stream: &'a TcpStream, stopped_at: &'a StoppedAt) -> TimedReader<'a> {
        TimedReader {
            stream,
            stopped_at,
            deadline: Instant::now(),
            between_requests: true,
            looked: false,
        }
    }

    /// Wait for the next request: all of it must come within `timeout`.
    /// A deadline for the whole request, not for each read, is what stops a
    /// client that sends one byte a second from keeping its connection (a
    /// thread, and a place under the cap) forever.
    pub fn expect_request(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
        self.between_requests = true;
    }

    /// The request has begun: the server finishes it even while stopping,
    /// within the grace.
    pub fn request_started(&mut self) {
        self.between_requests = false;
    }
}

impl Read for TimedReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let (stopped_at, deadline) = (self.stopped_at, self.deadline);
        wait_for(stopped_at, deadline, |wait| {
            if self.between_requests && stopped_at.get().is_some() {
                return self.last_look(buffer);
            }
            let mut stream = self.stream;
            stream.set_read_timeout(Some(wait))?;
            stream.read(buffer)
        })
    }
}

impl TimedReader<'_> {
    /// Between requests, once the server is stopping: one look, without
    /// waiting, at what has already arrived. Requests found are served;
    /// after them, the end. A look each time would let a client that keeps
    /// sending keep the server alive.
    fn last_look(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.looked {
            return Ok(0);
        }
        self.looked = true;
        let mut stream = self.stream;
        stream.set_nonblocking(true)?;
        let ready = stream.read(buffer);
        stream.set_nonblocking(false)?;
        match ready {
            Err(error) if is_timeout(&error) => Ok(0),
            other => other,
        }
    }
}

/// The writing side of a connection: a write that makes no progress within
/// `timeout`, or past the grace of a stopping server, fails with `TimedOut`.
/// A client that never reads its replies must not keep its thread forever.
pub struct TimedWriter<'a> {
    stream: &'a TcpStream,
    stopped_at: &'a StoppedAt,
    timeout: Duration,
}

impl<'a> TimedWriter<'a> {
    pub fn new(
        stream: &'a TcpStream,
        stopped_at: &'a StoppedAt,
        timeout: Duration,
    ) -> TimedWriter<'a> {
        TimedWriter {
            stream,
            stopped_at,
            timeout,
        }
    }
}

impl Write for TimedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut stream = self.stream;
        wait_for(self.stopped_at, Instant::now() + self.timeout, |wait| {
            stream.set_write_timeout(Some(wait))?;
            stream.write(bytes)
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing waits here: `write` gave the bytes to the system.
        Ok(())
    }
}

/// Try `attempt` (a read or a write, given how long it may block) until it
/// does something or the deadline passes. It blocks at most `STOP_CHECK` (or
/// the grace, if shorter) at a time, so that a stop is seen soon, and then
/// ends at the grace.
fn wait_for(
    stopped_at: &StoppedAt,
    deadline: Instant,
    mut attempt: impl FnMut(Duration) -> io::Result<usize>,
) -> io::Result<usize> {
    let longest_wait = STOP_CHECK.min(stopped_at.grace).max(LAST_TRY);
    loop {
        let left = within_grace(stopped_at, deadline).saturating_duration_since(Instant::now());
        // Even past the deadline, one short try: what is ready is taken, and
        // a last `ERR` line may still go out.
        match attempt(left.clamp(LAST_TRY, longest_wait)) {
            Err(error) if is_timeout(&error) && left.is_zero() => {
                return Err(ErrorKind::TimedOut.into())
            }
            Err(error) if is_timeout(&error) => continue,
            // A signal (SIGTERM itself) may cut a wait short: wait again.
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A socket timeout: `WouldBlock` on Unix, `TimedOut` on Windows.
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
