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
    // Half-close: the server reads end of stream, sends what it still owes,
    // and closes. We keep reading until then, so nothing owed is lost.
    stream
        .shutdown(Shutdown::Write)
        .context("cannot shut down the sending side")?;

    match printer.join() {
        Ok(result) => result.context("reading from the server failed"),
        Err(_) => Err(anyhow!("the printing thread stopped unexpectedly")),
    }
}

/// Connect to `addr`, saying plainly why not when it fails.
fn connect(addr: &str) -> Result<TcpStream> {
    TcpStream::connect(addr).map_err(|error| match error.kind() {
        ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {addr}"),
        ErrorKind::TimedOut => {
            anyhow!("no answer from {addr} (is the host up, and the port open?)")
        }
        _ => anyhow!("cannot connect to {addr}: {error}"),
    })
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
