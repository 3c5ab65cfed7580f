//! A TCP connection as a stage uses it: every read and write has a deadline,
//! and every byte both ways goes into the stage's journal.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::harness::escape;
use crate::harness::failure::{from_io, Check, Failure};
use crate::harness::journal::{Journal, Wire};

/// How many bytes one `read` call asks for.
const READ_CHUNK: usize = 16 * 1024;

/// A connection from the test to the program under test.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    id: usize,
    journal: Journal,
    /// How long any one read or write may wait.
    patience: Duration,
    /// Bytes read past what a check asked for, kept for the next read: those
    /// from `pending_start` on. An index rather than a drain, so that reading
    /// thousands of lines out of one buffer costs each line only its length.
    pending: Vec<u8>,
    pending_start: usize,
}

impl Conn {
    /// Connect to `peer`, waiting at most `patience`.
    pub fn connect(peer: SocketAddr, journal: &Journal, patience: Duration) -> Check<Conn> {
        let id = journal.new_connection();
        let stream = TcpStream::connect_timeout(&peer, patience).map_err(|error| {
            journal.step(format!("connection #{id}: connecting to {peer} failed"));
            journal.wire(id, Wire::Note(format!("connect failed: {error}")));
            let failure = if is_timeout(&error) {
                Failure::new(format!(
                    "no connection to {peer} was completed within {:.1}s",
                    patience.as_secs_f64()
                ))
                .hint(
                    "The system completes connections for a listening socket and queues them \
                     until the program accepts them. When that queue is full, new connections \
                     wait. Is your accept loop busy serving one client, and not accepting?",
                )
            } else {
                from_io(&error, peer, "connecting")
            };
            with_id(failure, id)
        })?;
        journal.step(format!("connection #{id}: connected to {peer}"));
        Ok(Conn::new(stream, peer, id, journal, patience))
    }

    /// A connection the program under test opened to the test (a client
    /// stage's server side), kept in the journal like one the test opened.
    pub fn accepted(stream: TcpStream, journal: &Journal, patience: Duration) -> Conn {
        let id = journal.new_connection();
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        journal.step(format!(
            "connection #{id}: the program connected from {peer}"
        ));
        Conn::new(stream, peer, id, journal, patience)
    }

    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        id: usize,
        journal: &Journal,
        patience: Duration,
    ) -> Conn {
        // Small writes go out at once: a stage that sends one byte at a time
        // means one segment at a time.
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            peer,
            id,
            journal: journal.clone(),
            patience,
            pending: Vec::new(),
            pending_start: 0,
        }
    }

    /// This connection's number in the journal (`#2`).
    pub fn id(&self) -> usize {
        self.id
    }

    /// Another handle to the same socket, for reading on one thread while
    /// another writes. It shares this connection's journal and number.
    pub fn try_clone(&self) -> Check<Conn> {
        let stream = self
            .stream
            .try_clone()
            .map_err(|error| self.io_failure(&error, "cloning the socket"))?;
        Ok(Conn {
            stream,
            peer: self.peer,
            id: self.id,
            journal: self.journal.clone(),
            patience: self.patience,
            pending: Vec::new(),
            pending_start: 0,
        })
    }

    /// A failure that shows only this connection's bytes.
    pub fn fail(&self, what: impl Into<String>) -> Failure {
        with_id(Failure::new(what), self.id)
    }

    fn io_failure(&self, error: &io::Error, doing: &str) -> Failure {
        with_id(from_io(error, self.peer, doing), self.id)
    }

    /// Send all of `bytes` before the deadline.
    pub fn send(&mut self, bytes: &[u8]) -> Check<()> {
        self.stream
            .set_write_timeout(Some(self.patience))
            .map_err(|error| self.io_failure(&error, "setting a deadline"))?;
        let result = self.stream.write_all(bytes);
        let sent = bytes.len();
        self.journal.wire(
            self.id,
            Wire::Sent {
                bytes: bytes[..sent.min(256)].to_vec(),
                total: sent,
            },
        );
        result.map_err(|error| self.io_failure(&error, &format!("sending {} bytes", bytes.len())))
    }

    /// Send `bytes` one byte per write, as a slow network might deliver them.
    pub fn send_byte_by_byte(&mut self, bytes: &[u8]) -> Check<()> {
        self.journal.step(format!(
            "connection #{}: sent {} one byte at a time",
            self.id,
            escape::escape(bytes)
        ));
        for byte in bytes {
            self.send(std::slice::from_ref(byte))?;
        }
        Ok(())
    }

    /// Shut down the sending side: the peer's next read returns end of stream,
    /// and this side can still read what the peer sends back.
    pub fn shut_down_sending(&mut self) -> Check<()> {
        self.journal.wire(self.id, Wire::ShutDown);
        self.stream
            .shutdown(Shutdown::Write)
            .map_err(|error| self.io_failure(&error, "shutting down the sending side"))
    }

    /// One read of at most `limit` bytes, waiting until `deadline`. `Ok(None)`
    /// is end of stream.
    fn read_some(&mut self, limit: usize, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.take_pending(limit) {
            return Ok(Some(bytes));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut buffer = vec![0; limit.min(READ_CHUNK)];
        let count = loop {
            match self.stream.read(&mut buffer) {
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if count == 0 {
            self.journal.wire(self.id, Wire::Closed);
            return Ok(None);
        }
        buffer.truncate(count);
        self.journal.wire(
            self.id,
            Wire::Received {
                bytes: buffer[..count.min(256)].to_vec(),
                total: count,
            },
        );
        Ok(Some(buffer))
    }

    /// Up to `limit` of the bytes kept from an earlier read, if any.
    fn take_pending(&mut self, limit: usize) -> Option<Vec<u8>> {
        let kept = &self.pending[self.pending_start..];
        if kept.is_empty() {
            return None;
        }
        let bytes = kept[..limit.min(kept.len())].to_vec();
        self.pending_start += bytes.len();
        if self.pending_start == self.pending.len() {
            self.pending.clear();
            self.pending_start = 0;
        }
        Some(bytes)
    }

    /// Give back `rest`, the end of what the last read returned: the next
    /// read starts with it.
    fn put_back(&mut self, rest: Vec<u8>) {
        if self.pending.is_empty() {
            self.pending = rest;
        } else {
            // It came from `pending`, just before `pending_start`.
            self.pending_start -= rest.len();
        }
    }

    /// Whatever has arrived, at most `limit` bytes, once at least one has;
    /// `None` at end of stream. For a test that relays or echoes.
    pub fn read_any(&mut self, limit: usize) -> Check<Option<Vec<u8>>> {
        let deadline = Instant::now() + self.patience;
        self.read_some(limit, deadline)
            .map_err(|error| self.io_failure(&error, "waiting for bytes"))
    }

    /// Read exactly `expected.len()` bytes and check they are `expected`.
    /// Stops at the first wrong byte rather than waiting for the rest.
    pub fn expect(&mut self, expected: &[u8]) -> Check<()> {
        self.journal.step(format!(
            "connection #{}: waited for {} to come back",
            self.id,
            escape::escape(expected)
        ));
        let deadline = Instant::now() + self.patience;
        let mut received = Vec::with_capacity(expected.len().min(1 << 20));
        while received.len() < expected.len() {
            let want = expected.len() - received.len();
            match self.read_some(want, deadline) {
                Ok(Some(bytes)) => {
                    received.extend_from_slice(&bytes);
                    if !expected.starts_with(&received) {
                        return Err(self
                            .fail("the bytes that came back are not the ones expected")
                            .bytes(expected, &received));
                    }
                }
                Ok(None) => {
                    return Err(self
                        .fail(format!(
                            "the connection was closed after {} of the {} bytes expected",
                            received.len(),
                            expected.len()
                        ))
                        .bytes(expected, &received)
                        .hint(
                            "Your program closed the connection before sending everything. \
                             Keep the connection open until all of it is written.",
                        ))
                }
                Err(error) => {
                    return Err(self
                        .io_failure(&error, "waiting for the reply")
                        .bytes(expected, &received))
                }
            }
        }
        Ok(())
    }

    /// Read up to and including the next `\n`, at most `limit` bytes.
    pub fn read_line(&mut self, limit: usize) -> Check<Vec<u8>> {
        // Most lines are already here, read along with the one before.
        let kept = &self.pending[self.pending_start..];
        if let Some(end) = kept.iter().take(limit).position(|&b| b == b'\n') {
            return Ok(self.take_pending(end + 1).expect("the line is kept"));
        }
        let deadline = Instant::now() + self.patience;
        let mut line = Vec::new();
        loop {
            let searched = line.len();
            match self.read_some(limit - line.len(), deadline) {
                Ok(Some(bytes)) => line.extend_from_slice(&bytes),
                Ok(None) => {
                    return Err(self
                        .fail("the connection was closed before a whole line came")
                        .detail(format!("received: {}", escape::escape(&line))))
                }
                Err(error) => {
                    return Err(self
                        .io_failure(&error, "waiting for a line")
                        .detail(format!("received so far: {}", escape::escape(&line))))
                }
            }
            if let Some(end) = line[searched..].iter().position(|&b| b == b'\n') {
                let rest = line.split_off(searched + end + 1);
                self.put_back(rest);
                return Ok(line);
            }
            if line.len() >= limit {
                return Err(self
                    .fail(format!("no newline came in the first {limit} bytes"))
                    .detail(format!("received: {}", escape::escape(&line))));
            }
        }
    }

    /// Read exactly `count` bytes, whatever they are.
    pub fn read_exact(&mut self, count: usize) -> Check<Vec<u8>> {
        let deadline = Instant::now() + self.patience;
        let mut received = Vec::with_capacity(count.min(1 << 20));
        while received.len() < count {
            match self.read_some(count - received.len(), deadline) {
                Ok(Some(bytes)) => received.extend_from_slice(&bytes),
                Ok(None) => {
                    return Err(self.fail(format!(
                        "the connection was closed after {} of {count} bytes",
                        received.len()
                    )))
                }
                Err(error) => {
                    return Err(self.io_failure(&error, &format!("waiting for {count} bytes")))
                }
            }
        }
        Ok(received)
    }

    /// Wait for the peer to close its side: the next read must be end of
    /// stream. Bytes that come first are a failure.
    pub fn expect_closed(&mut self) -> Check<()> {
        self.wait_for_close(false)
    }

    /// Wait for the peer to close, cleanly or by a reset. A server that
    /// closes after an error answer, with bytes of the test's still unread,
    /// makes its system send a reset: the connection is closed all the same.
    /// Bytes that come first are a failure.
    pub fn expect_end(&mut self) -> Check<()> {
        self.wait_for_close(true)
    }

    fn wait_for_close(&mut self, reset_is_a_close: bool) -> Check<()> {
        self.journal.step(format!(
            "connection #{}: waited for the other side to close",
            self.id
        ));
        let deadline = Instant::now() + self.patience;
        match self.read_some(READ_CHUNK, deadline) {
            Ok(None) => Ok(()),
            Ok(Some(bytes)) => Err(self
                .fail("more bytes came where the connection should have closed")
                .bytes(b"", &bytes)),
            Err(error) if is_timeout(&error) => Err(self.fail(format!(
                "the connection stayed open for {:.1}s; it should have closed",
                self.patience.as_secs_f64()
            ))),
            Err(error)
                if reset_is_a_close
                    && matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
            {
                self.journal.wire(
                    self.id,
                    Wire::Note("the other side reset the connection".into()),
                );
                Ok(())
            }
            Err(error) => Err(self.io_failure(&error, "waiting for the close")),
        }
    }

    /// Wait until at least one byte is ready to read, without reading it.
    pub fn wait_readable(&mut self) -> Check<()> {
        if self.pending_start < self.pending.len() {
            return Ok(());
        }
        self.stream
            .set_read_timeout(Some(self.patience))
            .map_err(|error| self.io_failure(&error, "setting a deadline"))?;
        match self.stream.peek(&mut [0; 1]) {
            Ok(0) => Err(self.fail("the connection was closed before any reply came")),
            Ok(_) => Ok(()),
            Err(error) => Err(self.io_failure(&error, "waiting for a reply")),
        }
    }

    /// Check that nothing comes for `span`: a request the server should hold
    /// (a long poll) is not answered at once. Bytes that come are kept for
    /// the next read, and are a failure.
    pub fn expect_quiet(&mut self, span: Duration) -> Check<()> {
        self.journal.step(format!(
            "connection #{}: waited {} ms, expecting nothing yet",
            self.id,
            span.as_millis()
        ));
        match self.read_some(READ_CHUNK, Instant::now() + span) {
            Err(error) if is_timeout(&error) => Ok(()),
            Ok(Some(bytes)) => {
                let failure = self
                    .fail("bytes came where the other side should still be waiting")
                    .bytes(b"", &bytes);
                self.put_back(bytes);
                Err(failure)
            }
            Ok(None) => Err(self.fail("the connection was closed where it should stay open")),
            Err(error) => Err(self.io_failure(&error, "waiting")),
        }
    }

    /// Close the socket at once. If bytes the test never read are waiting, the
    /// operating system answers with a reset (RST) rather than a clean close.
    pub fn abort(self) {
        self.journal.wire(
            self.id,
            Wire::Note("the test closed this connection abruptly".into()),
        );
        drop(self.stream);
    }

    /// Close cleanly (the socket is closed when dropped).
    pub fn close(self) {
        self.journal.wire(
            self.id,
            Wire::Note("the test closed this connection".into()),
        );
    }
}

/// A read or connect that ran out of time: `WouldBlock` on Unix, `TimedOut`
/// on Windows.
fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn with_id(mut failure: Failure, id: usize) -> Failure {
    failure.connection = Some(id);
    failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection to a peer that writes `pieces`, one write each, waiting
    /// for a byte from the test before each piece after the first.
    fn peer_writing(pieces: &'static [&'static [u8]]) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            for (index, piece) in pieces.iter().enumerate() {
                if index > 0 {
                    stream.read_exact(&mut [0]).unwrap();
                }
                stream.write_all(piece).unwrap();
            }
        });
        Conn::connect(addr, &Journal::new(), Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn lines_come_out_one_by_one_however_they_arrive() {
        let mut conn = peer_writing(&[b"a\nbb\nccc\ndd", b"d\nrest", b"!"]);
        assert_eq!(conn.read_line(100).unwrap(), b"a\n");
        assert_eq!(conn.read_line(100).unwrap(), b"bb\n");
        assert_eq!(conn.read_line(100).unwrap(), b"ccc\n");
        conn.send(b"1").unwrap();
        assert_eq!(conn.read_line(100).unwrap(), b"ddd\n");
        conn.send(b"2").unwrap();
        assert_eq!(conn.read_exact(5).unwrap(), b"rest!");
    }

    #[test]
    fn a_line_longer_than_the_limit_fails() {
        let mut conn = peer_writing(&[b"0123456789\n"]);
        let failure = conn.read_line(4).unwrap_err();
        assert!(failure.what.contains("first 4 bytes"), "{}", failure.what);
    }
}
