//! The mailbox client: a small shell. Each line the user types becomes a
//! request, and the reply is printed in words.
//!
//!     send <to> <text>     leave a message
//!     count                how many messages wait for me
//!     fetch                print them (and the server forgets them)
//!     quit                 leave (so does the end of input)

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;

use anyhow::{anyhow, bail, Context, Result};

use crate::protocol::{read_body, read_line, Line};

/// The connection, with one buffered reader for all of its replies.
struct Session<'a> {
    reader: BufReader<&'a TcpStream>,
    writer: &'a TcpStream,
}

pub fn run(addr: &str, user: &str) -> Result<()> {
    let stream = connect(addr)?;
    let mut session = Session {
        reader: BufReader::new(&stream),
        writer: &stream,
    };
    let reply = session.request(format!("USER {user}\n").as_bytes())?;
    if let Some(reason) = reply.strip_prefix("ERR ") {
        bail!("the server refused the name {user}: {reason}");
    }
    if reply != "OK" {
        // Something answered, but not in this protocol: an echo server, a
        // web server, a mailbox server on another port than you meant.
        bail!(
            "the server at {addr} did not answer as a mailbox server does: it answered \
             `USER {user}` with `{reply}`"
        );
    }
    for line in io::stdin().lock().lines() {
        let line = line.context("cannot read the input")?;
        let (command, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let shown = match command {
            "send" => {
                let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
                session.send(to, text.as_bytes())?
            }
            "count" => session.count()?,
            "fetch" => session.fetch()?,
            "quit" => break,
            "" => continue,
            _ => "commands: send <to> <text>, count, fetch, quit".to_string(),
        };
        println!("{shown}");
    }
    let reply = session.request(b"QUIT\n")?;
    if reply != "BYE" {
        bail!("the server answered QUIT with `{reply}`");
    }
    Ok(())
}

fn connect(addr: &str) -> Result<TcpStream> {
    TcpStream::connect(addr).map_err(|error| match error.kind() {
        ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {addr}"),
        _ => anyhow!("cannot connect to {addr}: {error}"),
    })
}

impl Session<'_> {
    /// Send a whole request, and read the line that answers it.
    fn request(&mut self, request: &[u8]) -> Result<String> {
        self.writer
            .write_all(request)
            .context("cannot send to the server")?;
        self.reply_line()
    }

    fn reply_line(&mut self) -> Result<String> {
        match read_line(&mut self.reader).context("cannot read the server's reply")? {
            Line::Complete(line) => Ok(String::from_utf8_lossy(&line).into_owned()),
            Line::TooLong => bail!("the server sent a line longer than the protocol allows"),
            Line::Closed => bail!("the server closed the connection"),
        }
    }

    fn send(&mut self, to: &str, body: &[u8]) -> Result<String> {
        // The line and the body go in one write: nothing waits in between.
        let mut request = format!("SEND {to} {}\n", body.len()).into_bytes();
        request.extend_from_slice(body);
        let reply = self.request(&request)?;
        Ok(match reply.strip_prefix("OK ") {
            Some(id) => format!("sent #{id}"),
            None => refused(&reply),
        })
    }

    fn count(&mut self) -> Result<String> {
        let reply = self.request(b"COUNT\n")?;
        Ok(match reply.strip_prefix("OK ") {
            Some(count) => format!("{count} waiting"),
            None => refused(&reply),
        })
    }

    /// Fetch and show every waiting message: `#7 from alice: hello`.
    fn fetch(&mut self) -> Result<String> {
        let reply = self.request(b"FETCH\n")?;
        let Some(count) = reply.strip_prefix("MSGS ") else {
            return Ok(refused(&reply));
        };
        let count: usize = count
            .parse()
            .with_context(|| format!("the server answered FETCH with `{reply}`"))?;
        let mut shown = format!("{count} fetched");
        for _ in 0..count {
            let header = self.reply_line()?;
            let words: Vec<&str> = header.split(' ').collect();
            let ["MSG", id, from, length] = words.as_slice() else {
                bail!("the server sent `{header}` where a MSG line belongs");
            };
            let length: usize = length
                .parse()
                .with_context(|| format!("the length in `{header}` is not a number"))?;
            let body = read_body(&mut self.reader, length)
                .context("cannot read a message from the server")?;
            shown += &format!("\n#{id} from {from}: {}", String::from_utf8_lossy(&body));
        }
        Ok(shown)
    }
}

fn refused(reply: &str) -> String {
    let reason = reply.strip_prefix("ERR ").unwrap_or(reply);
    format!("refused: {reason}")
}
