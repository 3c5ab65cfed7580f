//! The test's own sockets, for stages that play the other role: a server the
//! student's client talks to, or an address where nothing listens.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::conn::Conn;
use crate::harness::failure::{Check, Failure};
use crate::harness::journal::Journal;

/// A listener on a free port of 127.0.0.1, and its address.
pub fn listener() -> Check<(TcpListener, SocketAddr)> {
    let bound = TcpListener::bind("127.0.0.1:0").and_then(|listener| {
        let addr = listener.local_addr()?;
        Ok((listener, addr))
    });
    bound.map_err(|error| Failure::new(format!("the test could not bind a port: {error}")))
}

/// An address on this machine where nothing listens: bound, read, released.
pub fn unused_address() -> Check<SocketAddr> {
    listener().map(|(_, addr)| addr)
}

/// Accept one connection before `deadline`, or none.
pub fn accept_before(listener: &TcpListener, deadline: Instant) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).ok()?;
                return Some(stream);
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    None
}

/// Accept one connection before `deadline` as a [`Conn`]: what the program
/// sends and what the test answers go into `journal`, and so into a report.
pub fn accept_conn(
    listener: &TcpListener,
    deadline: Instant,
    journal: &Journal,
    patience: Duration,
) -> Option<Conn> {
    accept_before(listener, deadline).map(|stream| Conn::accepted(stream, journal, patience))
}
