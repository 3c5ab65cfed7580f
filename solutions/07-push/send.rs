//! The sender: an application server with news for one device. It hands the
//! notification to the push service and is done; delivery is the service's
//! work, whether the device is reachable now or only tomorrow.

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::wire::{read_line, DeadlineReader, Line, MAX_BODY};

/// How long the service may take to answer.
const ANSWER_TIME: Duration = Duration::from_secs(10);

pub fn run(
    addr: &str,
    key: &str,
    to: &str,
    ttl: Option<u64>,
    collapse: Option<&str>,
    text: &str,
) -> Result<()> {
    if text.len() > MAX_BODY {
        bail!("a notification holds at most {MAX_BODY} bytes");
    }
    let stream = connect(addr)?;
    let ttl = ttl.map_or("-".to_string(), |seconds| seconds.to_string());
    let collapse = collapse.unwrap_or("-");
    let mut request = format!("SEND {key} {to} {ttl} {collapse} {}\n", text.len()).into_bytes();
    request.extend_from_slice(text.as_bytes());
    (&stream).write_all(&request)?;
    let reply = read_reply(&stream)?;
    match reply.strip_prefix("OK ") {
        Some(id) => {
            println!("sent #{id}");
            Ok(())
        }
        None => bail!(
            "the service refused: {}",
            reply.strip_prefix("ERR ").unwrap_or(&reply)
        ),
    }
}

/// Connect to the service, or say in words why not.
pub fn connect(addr: &str) -> Result<TcpStream> {
    TcpStream::connect(addr).map_err(|error| match error.kind() {
        std::io::ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {addr}"),
        _ => anyhow!("cannot connect to {addr}: {error}"),
    })
}

/// One reply line from the service, by a deadline.
pub fn read_reply(stream: &TcpStream) -> Result<String> {
    let mut reader = BufReader::new(DeadlineReader::new(stream));
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + ANSWER_TIME))?;
    match read_line(&mut reader)? {
        Line::Complete(line) => Ok(String::from_utf8_lossy(&line).into_owned()),
        Line::TooLong => bail!("the service sent a line longer than the protocol allows"),
        Line::Closed => bail!("the service closed the connection without a reply"),
    }
}
