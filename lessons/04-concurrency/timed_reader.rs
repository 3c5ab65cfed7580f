//! Reading from a client with two reasons to stop waiting: the idle timeout,
//! and a server that is shutting down.

use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often a connection waiting for its next request looks whether the
/// server is stopping.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long the last look for a request begun before the stop may wait.
const LAST_LOOK: Duration = Duration::from_millis(1);

/// The reading side of a connection: a read fails with `TimedOut` once the
/// deadline has passed, and between requests it ends (as if the client had
/// closed) once the server is stopping.
pub struct TimedReader<'a> {
    stream: &'a TcpStream,
    stopping: &'a AtomicBool,
    deadline: Instant,
    between_requests: bool,
}

impl<'a> TimedReader<'a> {
    pub fn new(stream: &'a TcpStream, stopping: &'a AtomicBool) -> TimedReader<'a> {
        TimedReader {
            stream,
            stopping,
            deadline: Instant::now(),
            between_requests: true,
        }
    }

    /// Wait for the next request: all of it must come within `timeout`.
    /// A deadline for the whole request, not for each read, is what stops a
    /// client that sends one byte a second from holding a worker forever.
    pub fn expect_request(&mut self, timeout: Duration) {
        // TODO 3 (slides/04-concurrency.md, "Idle timeouts and slowloris"):
        // as given, the deadline is a day away, so a silent client holds its
        // worker forever. The whole request must come within `timeout`: set
        // the deadline to `timeout` from now. `read` below enforces it.
        self.deadline = Instant::now() + Duration::from_secs(24 * 60 * 60);
        self.between_requests = true;
    }

    /// The request has begun: the server finishes it even while stopping.
    pub fn request_started(&mut self) {
        self.between_requests = false;
    }
}

impl Read for TimedReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            let mut stream = self.stream;
            if self.between_requests && self.stopping.load(Ordering::SeqCst) {
                // One last look: bytes that came before the stop are a
                // request begun, and it is served. Nothing: the end.
                self.stream.set_read_timeout(Some(LAST_LOOK))?;
                return match stream.read(buffer) {
                    Err(error) if is_timeout(&error) => Ok(0),
                    other => other,
                };
            }
            // Between requests, wake now and then to look at the stop flag.
            let wait = if self.between_requests {
                left.min(STOP_CHECK)
            } else {
                left
            };
            self.stream.set_read_timeout(Some(wait))?;
            match stream.read(buffer) {
                Err(error) if is_timeout(&error) => continue,
                other => return other,
            }
        }
    }
}

/// A read timeout: `WouldBlock` on Unix, `TimedOut` on Windows.
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
