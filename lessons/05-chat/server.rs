//! The chat server: bind, then accept members for ever, one thread each.
//! What a member says goes through the room (room.rs); what a connection
//! does from its first byte to its last is in session.rs.

use std::io::{self, ErrorKind, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::room::Room;
use crate::session;

/// Connections served at once. Each costs a socket (one file descriptor)
/// and, once named, two threads; past this, a newcomer is told the server is
/// full, so a script that opens connections in a loop cannot exhaust the
/// machine. Linux lets a process hold 1024 descriptors unless raised
/// (`ulimit -n`): 1000 leaves room for stdin, stdout, stderr, the listener
/// and the newcomer being told. A higher cap would meet that limit first, and
/// `accept` would fail ("Too many open files") with no one told anything.
const MAX_CONNECTIONS: usize = 1000;

/// Bind `addr`, say where we listen, and serve every member at once. Each
/// connection has `name_wait` to give its name.
pub fn run(addr: &str, name_wait: Duration) -> Result<()> {
    let listener = bind_listener(addr)?;
    // The real address: with port 0 the system picked the port.
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    accept_loop(&listener, Arc::new(Room::new()), name_wait);
    Ok(())
}

fn bind_listener(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        ErrorKind::PermissionDenied => {
            anyhow!("not allowed to listen on {addr} (ports below 1024 need privileges)")
        }
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

/// Take connections for ever; each gets its own thread, so a member who says
/// nothing never keeps the others waiting.
fn accept_loop(listener: &TcpListener, room: Arc<Room>, name_wait: Duration) {
    let open = Arc::new(AtomicUsize::new(0));
    for connection in listener.incoming() {
        let stream = match connection {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = (&stream).write_all(b"! the server is full; try again later\n");
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (room, still_open) = (Arc::clone(&room), Arc::clone(&open));
        let spawned = thread::Builder::new().spawn(move || {
            serve_one(stream, &room, name_wait);
            // Only now is the socket closed: the session, the member's
            // writer and its room entry have all let go of it. Counting
            // until here keeps the count equal to the descriptors held.
            still_open.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(error) = spawned {
            // The system is out of threads: this one connection is dropped.
            eprintln!("cannot start a thread: {error}");
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Serve one connection to its end. Its trouble is its own: log it and stop.
fn serve_one(stream: TcpStream, room: &Room, name_wait: Duration) {
    let peer = match stream.peer_addr() {
        Ok(peer) => peer.to_string(),
        Err(_) => "a member who already left".to_string(),
    };
    eprintln!("{peer} connected");
    match session::serve(stream, room, name_wait) {
        Ok(()) => eprintln!("{peer} left"),
        Err(error) => eprintln!("{peer} left: {error}"),
    }
}
