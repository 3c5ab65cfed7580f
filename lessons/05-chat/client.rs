//! The chat client: what others say shows the moment it arrives, while the
//! user types. Two things at once, keyboard and network: a thread reads the
//! network and prints, and the main thread reads the keyboard and sends.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use anyhow::{anyhow, Context, Result};

pub fn run(addr: &str, name: Option<&str>) -> Result<()> {
    let stream = connect(addr)?;
    // Without --name, the server's question shows like any other line, and
    // the first line typed answers it, as in `nc`.
    if let Some(name) = name {
        (&stream)
            .write_all(format!("{name}\n").as_bytes())
            .context("sending the name failed")?;
    }

    // Set before we send /quit: the close that follows is then expected.
    let quitting = Arc::new(AtomicBool::new(false));
    let from_server = stream.try_clone().context("cannot share the connection")?;
    let printer = {
        let (quitting, addr) = (Arc::clone(&quitting), addr.to_string());
        thread::spawn(move || {
            let printed = print_incoming(from_server);
            if !quitting.load(Ordering::SeqCst) {
                // The user may be mid-line at the keyboard; the main thread
                // is stuck reading it. Say why, and end the whole program.
                match printed {
                    Ok(()) => eprintln!("error: the server at {addr} closed the connection"),
                    Err(error) => eprintln!("error: lost the connection to {addr}: {error}"),
                }
                process::exit(1);
            }
        })
    };

    send_typed_lines(&stream, &quitting).context("sending to the server failed")?;
    // The server answers /quit by closing; the printer shows what came
    // before the close, then ends. Half-close too, so that a server that
    // missed the /quit still sees us go.
    let _ = stream.shutdown(Shutdown::Write);
    printer
        .join()
        .map_err(|_| anyhow!("the printing thread stopped unexpectedly"))
}

fn connect(addr: &str) -> Result<TcpStream> {
    TcpStream::connect(addr).map_err(|error| match error.kind() {
        ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {addr}"),
        ErrorKind::TimedOut => {
            anyhow!("no answer from {addr} (is the host up, and the port open?)")
        }
        _ => anyhow!("cannot connect to {addr}: {error}"),
    })
}

/// Send each line the user types, until `/quit` or the end of input (which
/// sends `/quit` for the user).
fn send_typed_lines(mut stream: &TcpStream, quitting: &AtomicBool) -> io::Result<()> {
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    while input.read_until(b'\n', &mut line)? > 0 {
        if line.ends_with(b"\n") {
            line.pop();
        }
        if line.ends_with(b"\r") {
            line.pop();
        }
        if line == b"/quit" {
            break;
        }
        line.push(b'\n');
        stream.write_all(&line)?;
        line.clear();
    }
    quitting.store(true, Ordering::SeqCst);
    stream.write_all(b"/quit\n")
}

/// Copy what the server sends to standard output, as it comes, until the
/// server closes.
fn print_incoming(mut stream: TcpStream) -> io::Result<()> {
    let mut output = io::stdout().lock();
    let mut buffer = [0u8; 4096];
    // TODO 9 (slides/05-chat.md, "The client does two things at once"): read
    // from `stream` into `buffer` and write what came to `output`, flushing
    // each time, until `read` returns 0 (the server closed): then return.
    Err(io::Error::other(
        "TODO 9 in lessons/05-chat/client.rs: print what the server sends \
         (read slides/05-chat.md, \"The client does two things at once\")",
    ))
}
