//! Reading a request: the request line, the header lines, and the blank line
//! that ends them, from a stream that delivers bytes in pieces of any size.

use std::io::{self, BufRead, Read};

use crate::response::Status;

/// The most bytes a request's head (request line and headers) may take.
/// Without a limit, a client that never sends the blank line makes the
/// server buffer until memory runs out. Real servers pick 8 to 64 KiB.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// A request's head. This server reads no request bodies.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    /// `HTTP/1.1` or `HTTP/1.0`: the only versions this server accepts.
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name`; names are case-insensitive.
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.headers_named(name).next()
    }

    /// The values of every header line called `name`, in order.
    fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(candidate, _)| candidate.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Whether a body follows the head. This server never reads one, so
    /// after such a request the connection is out of step and must close.
    pub fn has_body(&self) -> bool {
        // `check_head` let through only digits: `0` and `000` are no body.
        self.header("Transfer-Encoding").is_some()
            || self
                .header("Content-Length")
                .is_some_and(|length| length.bytes().any(|digit| digit != b'0'))
    }
}

/// Why no request came.
#[derive(Debug)]
pub enum ReadError {
    /// The connection broke, timed out or closed halfway: nobody to answer.
    Gone(io::Error),
    /// Not a request this server accepts: answer with the status, then close.
    Rejected(Status, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(error: io::Error) -> ReadError {
        ReadError::Gone(error)
    }
}

fn bad_request(why: &'static str) -> ReadError {
    ReadError::Rejected(Status(400), why)
}

/// Read the next request's head. `Ok(None)`: the client closed the connection
/// before a new request, as it may at any time between requests.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, ReadError> {
    let mut budget = MAX_HEAD_BYTES;
    let mut line = String::new();
    // Some clients send an extra CRLF after a request; RFC 9112 asks servers
    // to skip empty lines before a request line.
    while line.is_empty() {
        match read_line(reader, &mut budget)? {
            Some(next) => line = next,
            None => return Ok(None),
        }
    }
    let mut request = parse_request_line(&line)?;
    loop {
        let Some(line) = read_line(reader, &mut budget)? else {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        };
        if line.is_empty() {
            check_head(&request)?;
            return Ok(Some(request));
        }
        request.headers.push(parse_header(&line)?);
    }
}

/// The rules a whole head must keep, from RFC 9112. Each is a door that
/// was once used to slip one request past a proxy inside another.
fn check_head(request: &Request) -> Result<(), ReadError> {
    // Several sites may share one address: Host says which one is meant.
    // HTTP/1.1 requires exactly one (section 3.2); two that differ would
    // let a proxy and this server each pick a different site.
    let hosts = request.headers_named("Host").count();
    if hosts > 1 || (hosts == 0 && request.version == "HTTP/1.1") {
        return Err(bad_request("an HTTP/1.1 request needs exactly one Host"));
    }
    // Where the body ends must be beyond doubt (section 6.3). With two
    // lengths, or a length beside Transfer-Encoding, a proxy in front of us
    // may have taken one reading and we the other: the bytes it forwarded
    // as a body we would read as a request of their own, one it never saw
    // (request smuggling). So: refuse, and close.
    let mut lengths = request.headers_named("Content-Length");
    let Some(length) = lengths.next() else {
        return Ok(());
    };
    if request.header("Transfer-Encoding").is_some() {
        return Err(bad_request("both Content-Length and Transfer-Encoding"));
    }
    if length.is_empty() || !length.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad_request("the Content-Length is not a number"));
    }
    if lengths.any(|other| other != length) {
        return Err(bad_request("two Content-Length values that differ"));
    }
    Ok(())
}

/// Read one line, without its line ending, spending at most `budget` bytes.
/// `Ok(None)`: the stream ended before the line began.
fn read_line(reader: &mut impl BufRead, budget: &mut usize) -> Result<Option<String>, ReadError> {
    let mut line = Vec::new();
    // `take` stops the read at the budget: a line that never ends cannot
    // grow this buffer past MAX_HEAD_BYTES. The bytes may come in any
    // number of reads; `read_until` keeps reading until the newline.
    let count = reader
        .by_ref()
        .take(*budget as u64)
        .read_until(b'\n', &mut line)?;
    *budget -= count;
    if line.last() != Some(&b'\n') {
        return match count {
            0 if *budget > 0 => Ok(None),
            _ if *budget == 0 => Err(ReadError::Rejected(
                Status(431),
                "the request head is larger than 8 KiB",
            )),
            _ => Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
        };
    }
    line.pop();
    // HTTP lines end in CRLF; a bare LF is accepted, as most servers do.
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| bad_request("the request head is not text"))
}

/// `GET /index.html HTTP/1.1`: the method, the target and the version,
/// separated by single spaces.
fn parse_request_line(line: &str) -> Result<Request, ReadError> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad_request("the request line is not METHOD TARGET VERSION"));
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err(bad_request("the method is not a word"));
    }
    let Some(target) = origin_form(target) else {
        return Err(bad_request(
            "the target is neither /PATH nor http://HOST/PATH",
        ));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        if !is_http_version(version) {
            return Err(bad_request("the version is not HTTP/x.y"));
        }
        // Well-formed, but a version we do not speak: HTTP/2 and HTTP/3 are
        // binary protocols, agreed on before any request line is sent.
        return Err(ReadError::Rejected(
            Status(505),
            "only HTTP/1.0 and HTTP/1.1 are spoken here",
        ));
    }
    Ok(Request {
        method: method.to_string(),
        target,
        version: version.to_string(),
        headers: Vec::new(),
    })
}

/// `HTTP/` and a digit, a dot, a digit.
fn is_http_version(text: &str) -> bool {
    let Some(number) = text.strip_prefix("HTTP/") else {
        return false;
    };
    let number = number.as_bytes();
    number.len() == 3
        && number[0].is_ascii_digit()
        && number[1] == b'.'
        && number[2].is_ascii_digit()
}

/// The path of a request target, with its query: `/style.css` as it is, or
/// the absolute form, `http://HOST/style.css`, as `/style.css`. A client
/// talking to a proxy sends the absolute form, and a server must accept it
/// too (RFC 9112, section 3.2.2). Its HOST is this server, whatever it is
/// called: the one site served here. `None` for anything else.
fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_string());
    }
    const SCHEME: &str = "http://";
    let scheme = target.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    // The authority (HOST, or HOST:PORT) ends where the path or the query
    // begins; an empty path is `/` (section 3.2.1).
    let rest = &target[SCHEME.len()..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() {
        return None;
    }
    Some(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    })
}

/// `Host: example.com`: a name, a colon, a value with spaces around it.
fn parse_header(line: &str) -> Result<(String, String), ReadError> {
    let Some((name, value)) = line.split_once(':') else {
        return Err(bad_request("a header line has no colon"));
    };
    // `Host : x` and lines that start with a space (an old way to continue
    // a header) are refused: servers that read them differently from a
    // proxy in front of them have been tricked that way.
    if name.is_empty() || !name.bytes().all(is_token_byte) {
        return Err(bad_request("a header name is not a word"));
    }
    Ok((
        name.to_string(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// The characters a method or a header name may hold (RFC 9110's `tchar`).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
