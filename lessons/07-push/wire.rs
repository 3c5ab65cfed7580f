//! The push protocol's framing, as lessons/07-push/README.md specifies it:
//! lines and length-prefixed bodies, with a deadline on every read. The
//! service, the device and the sender share this file. `Line`, `read_line`,
//! `read_body` and `check_name` are lesson 03's (protocol.rs) and
//! `DeadlineReader` is lesson 05's (lines.rs), line for line: a fix there
//! belongs here too.

use std::io::{self, BufRead, ErrorKind, Read};
use std::net::TcpStream;
use std::time::Instant;

/// The longest line either side reads, its `\n` included.
pub const MAX_LINE: usize = 1024;
/// The longest notification body. A notification says "there is news",
/// not the news itself (APNs allows 4 KiB too): the app fetches the rest.
pub const MAX_BODY: usize = 4096;
/// The longest device name.
const MAX_NAME: usize = 32;

/// What reading one line found.
pub enum Line {
    /// A whole line, without its `\n` (or `\r\n`).
    Complete(Vec<u8>),
    /// [`MAX_LINE`] bytes came and no `\n` among them.
    TooLong,
    /// The peer closed the connection. A partial last line is dropped: a
    /// request is only a request once its `\n` has come.
    Closed,
}

/// Read one line, framed by its `\n`, reading at most [`MAX_LINE`] bytes.
///
/// `reader` must be the same buffered reader for the whole connection: the
/// bytes after the `\n` (the next request, a body) are already in its buffer.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<Line> {
    let mut line: Vec<u8> = Vec::new();
    // `take` is the limit: `read_until` stops after MAX_LINE bytes even when
    // no `\n` comes, so a peer cannot make `line` grow past it.
    reader.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(Line::Complete(line))
    } else if line.len() == MAX_LINE {
        Ok(Line::TooLong)
    } else {
        Ok(Line::Closed)
    }
}

/// Read a body framed by its length: exactly `length` bytes, whatever they
/// are (newlines and zero bytes included).
pub fn read_body(reader: &mut impl Read, length: usize) -> io::Result<Vec<u8>> {
    // The length came from the peer: check it before it sizes a buffer.
    if length > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a body of {length} bytes is over the limit of {MAX_BODY}"),
        ));
    }
    let mut body = vec![0; length];
    // One `read` may return part of the body; `read_exact` loops until all
    // of it has come, and fails if the peer closes first.
    reader.read_exact(&mut body)?;
    Ok(body)
}

/// A line's words: UTF-8 text, split at runs of spaces and tabs.
pub fn words(line: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "a line is UTF-8 text".to_string())?;
    Ok(text.split_ascii_whitespace().collect())
}

/// A body length: decimal digits, at most [`MAX_BODY`].
pub fn parse_length(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(length) if text.bytes().all(|byte| byte.is_ascii_digit()) && length <= MAX_BODY => {
            Ok(length)
        }
        _ => Err(format!("a length is a number from 0 to {MAX_BODY}")),
    }
}

/// A user name: 1 to 32 of `A-Z a-z 0-9 _ -`. Names become folder names on
/// disk, so no `.`, `/` or space may ever get in.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let allowed = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-';
    if name.is_empty() || name.len() > MAX_NAME {
        Err("a name has 1 to 32 characters")
    } else if !name.bytes().all(allowed) {
        Err("a name has only letters, digits, _ and -")
    } else {
        Ok(())
    }
}

/// The text of a body as a screen may show it: no control characters, so a
/// notification cannot move the cursor or clear the user's screen.
pub fn printable(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Reads from a socket, every read ending by one deadline when there is one.
///
/// A read timeout alone starts again at each read: a peer sending one byte
/// every 20 s never trips a 30 s timeout, and holds its thread and socket for
/// ever (lesson 04's slowloris). A deadline does not start again: before each
/// read, the timeout is set to the time that is left.
pub struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Option<Instant>,
}

impl<'a> DeadlineReader<'a> {
    pub fn new(stream: &'a TcpStream) -> DeadlineReader<'a> {
        DeadlineReader {
            stream,
            deadline: None,
        }
    }

    /// Reads from now on fail once `deadline` has passed; `None` lifts it.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.deadline = deadline;
        if deadline.is_none() {
            self.stream.set_read_timeout(None)?;
        }
        Ok(())
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            // std refuses a zero timeout (the system would read it as none).
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
        }
        // `&TcpStream` reads too: the socket is shared, not cloned.
        self.stream.read(buffer)
    }
}
