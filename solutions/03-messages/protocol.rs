//! The mailbox protocol, as README.md in lessons/03-messages specifies it:
//! how a line and a body are framed on the wire, what a request may say, and
//! the limits both sides keep. The server and the client share this file.

use std::io::{self, BufRead, Read};

/// The longest line either side reads, its `\n` included: a request, or the
/// header line of a reply.
pub const MAX_LINE: usize = 1024;
/// The longest message body.
pub const MAX_BODY: usize = 64 * 1024;
/// The longest user name.
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

/// A request, as its line says it.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'line> {
    User(&'line str),
    /// `length` bytes of body follow the line. `to` is not checked yet: the
    /// body must be read first, whatever the answer (see the server).
    Send {
        to: &'line str,
        length: usize,
    },
    Count,
    Fetch,
    Quit,
}

/// Why a request line is refused. Either way the client gets `ERR <reason>`.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The next request starts on the next line: the connection stays usable.
    KeepOpen(String),
    /// What follows cannot be framed safely (a body over the limit): the
    /// server answers and closes without reading it.
    Close(String),
}

/// Parse a request line (without its `\n`).
pub fn parse_request(line: &[u8]) -> Result<Request<'_>, Refusal> {
    let keep_open = |reason: &str| Refusal::KeepOpen(reason.to_string());
    let line = std::str::from_utf8(line).map_err(|_| keep_open("a request line is UTF-8 text"))?;
    let mut words = line.split_ascii_whitespace();
    let command = words.next().unwrap_or_default();
    let arguments: Vec<&str> = words.collect();
    match (command, arguments.as_slice()) {
        ("USER", [name]) => check_name(name)
            .map(|()| Request::User(name))
            .map_err(keep_open),
        ("USER", _) => Err(keep_open("USER takes one name")),
        ("SEND", [to, length]) => Ok(Request::Send {
            to,
            length: parse_length(length)?,
        }),
        ("SEND", _) => Err(keep_open("SEND takes a name and a length")),
        ("COUNT", []) => Ok(Request::Count),
        ("FETCH", []) => Ok(Request::Fetch),
        ("QUIT", []) => Ok(Request::Quit),
        ("COUNT" | "FETCH" | "QUIT", _) => Err(keep_open(&format!("{command} takes no arguments"))),
        ("", _) => Err(keep_open("empty request")),
        _ => Err(keep_open("unknown command")),
    }
}

/// A body length: decimal digits, at most [`MAX_BODY`].
fn parse_length(text: &str) -> Result<usize, Refusal> {
    if !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(Refusal::KeepOpen("the length must be a number".into()));
    }
    // Digits that do not fit a usize are over the limit too.
    match text.parse::<usize>() {
        Ok(length) if length <= MAX_BODY => Ok(length),
        _ => Err(Refusal::Close(format!(
            "a message may not exceed {MAX_BODY} bytes"
        ))),
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
