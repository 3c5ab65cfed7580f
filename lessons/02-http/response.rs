//! The response: a status line, header lines, a blank line, then the body.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

use crate::date::http_date;

/// A status code: `Status(404)`. Programs read the number; the words that
/// go with it are for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }
}

/// `404 Not Found`, as the status line and the logs show it.
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.reason())
    }
}

/// What follows the head.
pub enum Body {
    /// A large file, sent from the disk in pieces.
    File(File),
    /// A small file's bytes, from the cache (cache.rs).
    Bytes(Arc<[u8]>),
    Text(String),
    /// The answer to HEAD: the head says how long the body would be.
    Omitted,
}

/// Everything one response says.
pub struct Reply {
    pub status: Status,
    pub content_type: &'static str,
    pub content_length: u64,
    pub body: Body,
    /// The methods this server accepts, sent with 405.
    pub allow: Option<&'static str>,
    /// Tell the client this connection ends after this response.
    pub close: bool,
}

impl Reply {
    pub fn file(file: File, length: u64, content_type: &'static str) -> Reply {
        Reply {
            status: Status(200),
            content_type,
            content_length: length,
            body: Body::File(file),
            allow: None,
            close: false,
        }
    }

    /// A small file, whole, from memory.
    pub fn bytes(bytes: Arc<[u8]>, content_type: &'static str) -> Reply {
        Reply {
            status: Status(200),
            content_type,
            content_length: bytes.len() as u64,
            body: Body::Bytes(bytes),
            allow: None,
            close: false,
        }
    }

    /// A short page that says what went wrong, for people reading it in a
    /// browser; programs read the status code.
    pub fn error(status: Status) -> Reply {
        let text = format!("{status}\n");
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            content_length: text.len() as u64,
            body: Body::Text(text),
            allow: None,
            close: false,
        }
    }

    /// The same head, without the body: what HEAD asks for.
    pub fn without_body(self) -> Reply {
        Reply {
            body: Body::Omitted,
            ..self
        }
    }
}

/// Send `reply`: its head, then exactly `content_length` bytes of body.
pub fn send(out: &mut impl Write, reply: Reply) -> io::Result<()> {
    write_head(out, &reply)?;
    match reply.body {
        Body::Text(text) => out.write_all(text.as_bytes())?,
        // With the head in the writer's buffer, a small file leaves in one
        // write: one system call, one packet.
        Body::Bytes(bytes) => out.write_all(&bytes)?,
        Body::File(file) => {
            // Exactly the length the head announced: were the file to grow
            // meanwhile, extra bytes would be read as the next response.
            let mut body = file.take(reply.content_length);
            // A large file goes through in pieces: memory stays bounded
            // whatever the size of the file. (A small one came as Bytes.)
            let sent = io::copy(&mut body, out)?;
            if sent < reply.content_length {
                // Fewer bytes than announced: the client would wait for the
                // rest forever. Failing here closes the connection instead.
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was being sent",
                ));
            }
        }
        Body::Omitted => {}
    }
    out.flush()
}

/// The status line and the headers, each ending in CRLF, and the blank line
/// that ends them.
fn write_head(out: &mut impl Write, reply: &Reply) -> io::Result<()> {
    let Reply {
        status,
        content_type,
        content_length,
        allow,
        close,
        ..
    } = reply;
    // TODO 1 (slides/02-http.md, "Anatomy of a response"): write the status
    // line (`HTTP/1.1 200 OK`: `status` prints as `200 OK`), then the header
    // lines `Date` (`http_date(SystemTime::now())`), `Content-Type`,
    // `Content-Length`, `Allow` (when `allow` holds the methods) and
    // `Connection: close` (when `close`), each ending in \r\n, and the
    // blank line that ends the head.
    Err(io::Error::other(
        "TODO 1 in lessons/02-http/response.rs: write the status line and headers \
         (read slides/02-http.md, \"Anatomy of a response\")",
    ))
}
