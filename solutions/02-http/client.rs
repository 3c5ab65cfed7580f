//! The client: GET one URL and print the response as it came, status line,
//! headers and body, like `curl -i`.

use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// How long to wait for a connection, and then for each read.
const PATIENCE: Duration = Duration::from_secs(5);

/// The most bytes of response head this client accepts.
const MAX_HEAD_BYTES: u64 = 64 * 1024;

/// The parts of `http://host:port/path` the client needs.
struct Url {
    /// `host:port`, as the Host header carries it.
    authority: String,
    /// `host:port` with the port always given, to connect to.
    address: String,
    path: String,
}

pub fn run(url: &str) -> Result<()> {
    let url = parse_url(url)?;
    let stream = connect(&url.address)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    send_request(&stream, &url).context("sending the request failed")?;
    print_response(&stream, &url.address)
}

fn parse_url(url: &str) -> Result<Url> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            return Err(anyhow!(
                "cannot fetch {url}: https needs TLS, and this client speaks plain http"
            ));
        }
        return Err(anyhow!("cannot fetch {url}: not an http:// URL"));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return Err(anyhow!("cannot fetch {url}: no host name in it"));
    }
    // `[::1]:8080` and `localhost:8080` carry a port; `[::1]` does not.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']'));
    let address = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Url {
        authority: authority.to_string(),
        address,
        path: path.to_string(),
    })
}

/// Connect to `address`, trying each address its name stands for.
fn connect(address: &str) -> Result<TcpStream> {
    let candidates: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|error| anyhow!("cannot resolve {address}: {error}"))?
        .collect();
    let mut last_error = anyhow!("cannot resolve {address}: no address found");
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, PATIENCE) {
            Ok(stream) => return Ok(stream),
            Err(error) => {
                last_error = match error.kind() {
                    ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {address}"),
                    ErrorKind::TimedOut => anyhow!(
                        "no answer from {address} within {}s (is the host up?)",
                        PATIENCE.as_secs()
                    ),
                    _ => anyhow!("cannot connect to {address}: {error}"),
                }
            }
        }
    }
    Err(last_error)
}

/// The request: its line, the headers, and the blank line that ends them.
fn send_request(mut stream: &TcpStream, url: &Url) -> io::Result<()> {
    let Url {
        authority, path, ..
    } = url;
    // Connection: close asks the server to close after its answer: this
    // client asks once, and a connection kept open would only wait.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: 02-http\r\nConnection: close\r\n\r\n"
    );
    // One write: the request leaves whole, in one segment.
    stream.write_all(request.as_bytes())
}

/// Copy the response to stdout: the head line by line, then exactly the
/// number of body bytes that Content-Length announces.
fn print_response(stream: &TcpStream, address: &str) -> Result<()> {
    let mut reader = BufReader::new(stream);
    let mut output = io::stdout().lock();
    let mut content_length = None;
    let mut head_left = MAX_HEAD_BYTES;
    loop {
        let mut line = Vec::new();
        let count = (&mut reader)
            .take(head_left)
            .read_until(b'\n', &mut line)
            .map_err(|error| reading_failed(error, address))?;
        head_left -= count as u64;
        if !line.ends_with(b"\n") {
            return Err(anyhow!("{address} sent no complete response head"));
        }
        output.write_all(&line)?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if text.is_empty() {
            break;
        }
        if let Some((name, value)) = text.split_once(':') {
            if name.eq_ignore_ascii_case("Content-Length") {
                let length: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("{address} sent a Content-Length that is not a number"))?;
                content_length = Some(length);
            }
        }
    }
    // With Content-Length, we know where the body ends and need not wait
    // for the close; without it, the body ends where the server closes.
    let mut left = content_length.unwrap_or(u64::MAX);
    let mut buffer = [0u8; 8192];
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let count = reader
            .read(&mut buffer[..want])
            .map_err(|error| reading_failed(error, address))?;
        if count == 0 {
            break;
        }
        output.write_all(&buffer[..count])?;
        left -= count as u64;
    }
    output.flush()?;
    match content_length {
        Some(length) if left > 0 => Err(anyhow!(
            "{address} closed the connection after {} of {length} body bytes",
            length - left
        )),
        _ => Ok(()),
    }
}

fn reading_failed(error: io::Error, address: &str) -> anyhow::Error {
    match error.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            anyhow!("{address} did not answer within {}s", PATIENCE.as_secs())
        }
        _ => anyhow!("reading from {address} failed: {error}"),
    }
}
