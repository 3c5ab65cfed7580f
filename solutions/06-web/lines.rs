//! Lines in from the network: read with a limit and by a deadline, and
//! cleaned before anyone else sees them. All guard the room against what a
//! member may send.

use std::io::{self, BufRead, ErrorKind, Read};
use std::iter::Peekable;
use std::net::TcpStream;
use std::time::Instant;

/// The longest line a member may send, its newline included.
pub const LINE_LIMIT: usize = 4096;

/// What one read of a line gives.
pub enum Incoming {
    /// A line, without its line ending (`\n` or `\r\n`).
    Line(Vec<u8>),
    /// A line longer than [`LINE_LIMIT`]; it was read and thrown away.
    TooLong,
    /// The peer closed its side: nothing more will come.
    Closed,
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

/// Read the next line, keeping at most [`LINE_LIMIT`] bytes of it in memory.
pub fn read_line(reader: &mut impl BufRead) -> io::Result<Incoming> {
    let mut line = Vec::new();
    // `take` stops the read at the limit: a peer that sends a gigabyte
    // without a newline costs us 4 KiB, not a gigabyte.
    let count = Read::take(&mut *reader, LINE_LIMIT as u64).read_until(b'\n', &mut line)?;
    if count == 0 {
        return Ok(Incoming::Closed);
    }
    if line.last() != Some(&b'\n') && count == LINE_LIMIT {
        skip_rest_of_line(reader)?;
        return Ok(Incoming::TooLong);
    }
    // A last line without its newline, just before the close, counts too.
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Incoming::Line(line))
}

/// Throw away bytes up to and including the next newline, a buffer at a time.
fn skip_rest_of_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buffered = reader.fill_buf()?;
        if buffered.is_empty() {
            return Ok(());
        }
        match buffered.iter().position(|&byte| byte == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let all = buffered.len();
                reader.consume(all);
            }
        }
    }
}

/// The text of a line as others may see it: valid UTF-8, with no control
/// characters and no terminal escape sequences. Relayed as it came, `ESC[2J`
/// would clear every member's screen, and `\r` would let a line overwrite
/// what seems to be someone else's.
pub fn clean(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut cleaned = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI, `ESC [`: parameters, then one final byte from @ to ~.
                Some('[') => skip_csi(&mut chars),
                // OSC and its kin: a window title, a hyperlink.
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // Any other escape is ESC and one character.
                _ => {}
            },
            // The one-character form of CSI, which some terminals obey.
            '\u{9b}' => skip_csi(&mut chars),
            '\t' => cleaned.push(' '),
            c if c.is_control() => {}
            c => cleaned.push(c),
        }
    }
    cleaned
}

fn skip_csi(chars: &mut impl Iterator<Item = char>) {
    for c in chars {
        if ('@'..='~').contains(&c) {
            break;
        }
    }
}

/// Skip a control string (OSC and its kin) to its end: BEL, or `ESC \`.
fn skip_string(chars: &mut Peekable<impl Iterator<Item = char>>) {
    while let Some(c) = chars.next() {
        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
            return;
        }
    }
}
