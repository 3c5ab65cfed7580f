//! Responses: a status line, header lines, a blank line, then the body.
//! Lesson 02 wrote them by hand; these are the same, with a few more statuses
//! and headers that the four ways need.

use std::io::{self, Write};

/// A status code: `Status(404)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub fn reason(self) -> &'static str {
        match self.0 {
            101 => "Switching Protocols",
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            410 => "Gone",
            413 => "Content Too Large",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// A whole response with a body of known length.
pub struct Reply {
    pub status: Status,
    pub content_type: &'static str,
    /// Extra header lines, each `Name: value`.
    pub headers: Vec<String>,
    pub body: Vec<u8>,
    /// Tell the client this connection ends after this response.
    pub close: bool,
}

impl Reply {
    pub fn new(status: Status, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            content_type,
            headers: Vec::new(),
            body: body.into(),
            close: false,
        }
    }

    /// Plain text, one line: for people reading it, and for scripts.
    pub fn text(status: Status, text: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", format!("{text}\n"))
    }

    pub fn header(mut self, line: String) -> Reply {
        self.headers.push(line);
        self
    }
}

/// Send `reply`: its head, then its body, in one write.
pub fn send(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(256 + reply.body.len());
    write!(bytes, "HTTP/1.1 {}\r\n", reply.status)?;
    write!(bytes, "Content-Type: {}\r\n", reply.content_type)?;
    write!(bytes, "Content-Length: {}\r\n", reply.body.len())?;
    // An answer about the room now is stale a moment later: no cache, no
    // proxy, may keep it and give it again.
    bytes.extend_from_slice(b"Cache-Control: no-store\r\n");
    for line in &reply.headers {
        write!(bytes, "{line}\r\n")?;
    }
    if reply.close {
        bytes.extend_from_slice(b"Connection: close\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&reply.body);
    out.write_all(&bytes)?;
    out.flush()
}
