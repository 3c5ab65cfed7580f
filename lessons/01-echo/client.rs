//! The echo client: send each line the user types, print what comes back.
//!
//! Two things happen at once: reading the keyboard, and reading the network.
//! A thread does the second, so replies show the moment they arrive.

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use anyhow::{anyhow, Context, Result};

pub fn run(addr: &str) -> Result<()> {
    let stream = connect(addr)?;
    let from_server = stream.try_clone().context("cannot share the connection")?;
    let printer = thread::spawn(move || print_replies(from_server));

    send_lines(&stream).context("sending to the server failed")?;
    // TODO 4 (slides/01-echo.md, "Half-close"): all input is sent. Shut down
    // the sending side of `stream`, so the server reads end of stream, while
    // `printer` keeps printing what the server still owes.

    match printer.join() {
        Ok(result) => result.context("reading from the server failed"),
        Err(_) => Err(anyhow!("the printing thread stopped unexpectedly")),
    }
}

/// Connect to `addr`, saying plainly why not when it fails.
fn connect(addr: &str) -> Result<TcpStream> {
    // TODO 3 (slides/01-echo.md, "connect"): connect a `TcpStream` to
    // `addr`. When nothing listens there (`ErrorKind::ConnectionRefused`),
    // return the error `nothing is listening at {addr}`.
    Err(anyhow!(
        "TODO 3 in lessons/01-echo/client.rs: connect to {addr} \
         (read slides/01-echo.md, \"connect\")"
    ))
}

/// Send standard input to the server, line by line, as the user types it.
fn send_lines(mut stream: &TcpStream) -> io::Result<()> {
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    // `read_until` keeps the newline and accepts any bytes, not only UTF-8.
    while input.read_until(b'\n', &mut line)? > 0 {
        stream.write_all(&line)?;
        line.clear();
    }
    Ok(())
}

/// Copy what the server sends to standard output until it closes.
fn print_replies(mut stream: TcpStream) -> io::Result<()> {
    let mut output = io::stdout().lock();
    let mut buffer = [0u8; 4096];
    loop {
        let count = stream.read(&mut buffer)?;
        if count == 0 {
            break;
        }
        output.write_all(&buffer[..count])?;
        // Show each reply now, even a partial line.
        output.flush()?;
    }
    Ok(())
}
