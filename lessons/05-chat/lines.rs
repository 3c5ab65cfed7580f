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
    // TODO 6 (slides/05-chat.md, "Relayed text is hostile"): `read_until`
    // reads until a newline, however far away it is, and keeps it all. Read
    // through `Read::take(&mut *reader, LINE_LIMIT as u64)` instead: the read
    // stops at the limit, and the check below refuses the line.
    let count = reader.read_until(b'\n', &mut line)?;
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
            // TODO 7 (slides/05-chat.md, "Relayed text is hostile"): skip
            // `\u{9b}`, the one-character CSI, with `skip_csi`; turn a tab
            // into a space; drop every other control character
            // (`char::is_control`: `\r`, BEL, backspace, NUL, DEL...).
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
    // TODO 7 (slides/05-chat.md, "Relayed text is hostile"): take chars
    // until BEL (`\u{7}`), or ESC followed by a backslash (`chars.next_if_eq`).
}
