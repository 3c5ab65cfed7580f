//! The echo server: bind, listen, accept, then read and write back until the
//! client is done. One client at a time; lesson 04 serves many at once.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

use anyhow::{anyhow, Result};

use crate::zero_copy;

/// Bind `addr`, say where we listen, and serve clients one after another.
pub fn run(addr: &str) -> Result<()> {
    let listener = bind_listener(addr)?;
    // The real address: with port 0 the system picked the port, and only
    // `local_addr` knows which. Tests and clients read it from this line.
    println!("listening on {}", listener.local_addr()?);
    // Rust's stdout flushes at each newline; in C or Python, a pipe is
    // block-buffered and this line would sit in the buffer until you flush.
    io::stdout().flush()?;
    accept_loop(&listener);
    Ok(())
}

/// Bind and listen on `addr`: from here on, the system completes connections
/// to it and queues them until we accept them.
fn bind_listener(addr: &str) -> Result<TcpListener> {
    // TODO 1 (slides/01-echo.md, "bind, listen, accept"): bind a
    // `TcpListener` to `addr` and return it. When the bind fails because
    // another server has the port (`ErrorKind::AddrInUse`), return the error
    // `address {addr} is already in use` (stage 6 checks it).
    Err(anyhow!(
        "TODO 1 in lessons/01-echo/server.rs: bind a TcpListener to {addr} \
         (read slides/01-echo.md, \"bind, listen, accept\")"
    ))
}

/// Take connections one after another, forever.
fn accept_loop(listener: &TcpListener) {
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => {
                let peer = match stream.peer_addr() {
                    Ok(peer) => peer.to_string(),
                    Err(_) => "a client that already left".to_string(),
                };
                // Who comes and goes, on stderr: something to watch while
                // you try the server by hand.
                eprintln!("{peer} connected");
                // One client's trouble is that client's: log it and go back
                // to accept. With `?` here, a single reset would stop the
                // server for everyone.
                match serve(stream) {
                    Ok(()) => eprintln!("{peer} left"),
                    Err(error) => eprintln!("{peer} left: {error}"),
                }
            }
            // Accept fails when the system runs out of something (file
            // descriptors, memory); the listener itself is still good.
            Err(error) => eprintln!("accept failed: {error}"),
        }
    }
}

/// Echo one client: inside the kernel where it can (zero_copy.rs), through
/// our buffer where it cannot.
fn serve(stream: TcpStream) -> io::Result<()> {
    // TODO 5 (slides/01-echo.md, "Zero copies"), once every stage passes:
    // on Linux the kernel can echo by itself. Write the loop in
    // zero_copy.rs, then try `zero_copy::echo(&stream)` here first, and call
    // `echo` only where it answers `None`.
    echo(stream)
}

/// How much one read may take. Every read and every write is a system
/// call, and on a busy connection the calls cost more than the bytes: 4 KiB
/// at a time moves about half as many bytes a second as 256 KiB (measured in
/// slides/01-echo.md, "How big a buffer"). The price is memory: a server of
/// 10 000 clients would not give each of them 256 KiB.
const BUFFER_BYTES: usize = 256 * 1024;

/// Send back every byte, until the client shuts down its sending side.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    let mut buffer = [0u8; BUFFER_BYTES];
    // TODO 2 (slides/01-echo.md, "A read is not a message"): read from
    // `stream` into `buffer` and write back exactly the bytes you read, again
    // and again, until `read` returns 0 (the client is done sending).
    // Everything owed has been written. Dropping the stream closes our side,
    // and the client reads end of stream.
    Ok(())
}
