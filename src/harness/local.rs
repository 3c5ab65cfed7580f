//! The test's own sockets, for stages that play the other role: a server the
//! student's client talks to, or an address where nothing listens.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::conn::Conn;
use crate::harness::failure::{Check, Failure};
use crate::harness::journal::Journal;

/// Every port this test process has handed out, or seen a program say it
/// listens on. A lesson's stages run at once, and a stage's programs may
/// still call an address its test let go: a service retrying a device that
/// went away, an agent its stopped service. Given that port again, another
/// stage's listener would take the call meant for the first, and fail a
/// stage that did nothing wrong (seen: lesson 07's stage 7 got a push of
/// another stage's service, with another device's token).
static PORTS_SEEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// How many ports the system may offer, in a row, that were handed out
/// before: each is held until a fresh one comes, so it offers another.
const PORTS_PASSED_OVER: usize = 64;

/// Note that a program listens on `addr`: no listener of the test gets its
/// port, in this process, even once the program has ended.
pub fn remember_port(addr: SocketAddr) {
    ports_seen().insert(addr.port());
}

fn ports_seen() -> std::sync::MutexGuard<'static, BTreeSet<u16>> {
    // Each change is one insert: a panic elsewhere leaves the set whole.
    PORTS_SEEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A listener on a free port of 127.0.0.1 that this process never handed
/// out nor saw a program use, and its address.
pub fn listener() -> Check<(TcpListener, SocketAddr)> {
    on_a_fresh_port(|| TcpListener::bind("127.0.0.1:0"), TcpListener::local_addr)
        .map_err(|why| Failure::new(format!("the test could not bind a port: {why}")))
}

/// A UDP socket on a port of 127.0.0.1 that this process never handed out
/// nor saw a program use: a stage's game server may still be sending to
/// the port of a player another stage has let go.
pub fn udp_socket() -> Check<UdpSocket> {
    on_a_fresh_port(|| UdpSocket::bind("127.0.0.1:0"), UdpSocket::local_addr)
        .map(|(socket, _)| socket)
        .map_err(|why| Failure::new(format!("the test could not open a UDP socket: {why}")))
}

/// A socket from `bind`, and its address (`addr_of`), whose port is not in
/// PORTS_SEEN, which it joins; or why none could be had.
fn on_a_fresh_port<S>(
    bind: impl Fn() -> std::io::Result<S>,
    addr_of: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> Result<(S, SocketAddr), String> {
    // Held, not dropped, while the next is bound: dropped at once, a
    // port would be the system's next offer again.
    let mut passed_over = Vec::new();
    while passed_over.len() < PORTS_PASSED_OVER {
        let socket = bind().map_err(|error| error.to_string())?;
        let addr = addr_of(&socket).map_err(|error| error.to_string())?;
        if ports_seen().insert(addr.port()) {
            return Ok((socket, addr));
        }
        passed_over.push(socket);
    }
    Err(format!(
        "the system offered {PORTS_PASSED_OVER} ports in a row that this test had used"
    ))
}

/// An address on this machine where nothing listens: bound, read, released
/// (and, like every port [`listener`] gives, never given again), for a
/// program to bind. An address that must refuse calls is [`refusing_address`].
pub fn unused_address() -> Check<SocketAddr> {
    listener().map(|(_, addr)| addr)
}

/// An address that refuses every connection for as long as this lives: a
/// port of 127.0.0.1 held by a socket that is bound but never listens, and
/// without SO_REUSEADDR, so that no other program can bind it meanwhile.
/// Released, as [`unused_address`] does, a port could be taken by another
/// stage's server, and a client the stage expects to be refused would be
/// answered.
pub struct Refusing {
    pub addr: SocketAddr,
    #[cfg(target_os = "linux")]
    _held: std::os::fd::OwnedFd,
}

#[cfg(target_os = "linux")]
pub fn refusing_address() -> Check<Refusing> {
    on_a_fresh_port(bound_without_listening, socket_address)
        .map(|(held, addr)| Refusing { addr, _held: held })
        .map_err(|why| {
            Failure::new(format!(
                "the test could not hold a port that refuses: {why}"
            ))
        })
}

/// A TCP socket bound to a free port of 127.0.0.1 that does not listen,
/// without SO_REUSEADDR (std's `TcpListener::bind` would set it, and listen).
#[cfg(target_os = "linux")]
fn bound_without_listening() -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: `socket` returns a new descriptor or -1; the new one is owned
    // here (OwnedFd closes it). `bind` reads a sockaddr_in of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let held = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let pointer = (&addr as *const libc::sockaddr_in).cast();
        if libc::bind(held.as_raw_fd(), pointer, length) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(held)
    }
}

/// The address `socket` is bound to (an IPv4 one).
#[cfg(target_os = "linux")]
fn socket_address(socket: &std::os::fd::OwnedFd) -> std::io::Result<SocketAddr> {
    use std::os::fd::AsRawFd;
    // SAFETY: `getsockname` writes at most `length` bytes into `addr`.
    unsafe {
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let pointer = (&mut addr as *mut libc::sockaddr_in).cast();
        if libc::getsockname(socket.as_raw_fd(), pointer, &mut length) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ip = std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Ok(SocketAddr::from((ip, u16::from_be(addr.sin_port))))
    }
}

/// Elsewhere: a port bound and released, as [`unused_address`] gives.
#[cfg(not(target_os = "linux"))]
pub fn refusing_address() -> Check<Refusing> {
    unused_address().map(|addr| Refusing { addr })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_however_often_the_system_offers_it() {
        // Each listener dropped at once, its port free again: among a
        // thousand of the system's offers, some port comes twice (the
        // ephemeral range holds some 28 000).
        let mut given = BTreeSet::new();
        for _ in 0..1000 {
            let (_, addr) = listener().unwrap();
            assert!(
                given.insert(addr.port()),
                "port {} given twice",
                addr.port()
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_refusing_address_refuses_and_no_one_else_can_bind_it() {
        let refusing = refusing_address().unwrap();
        let error = TcpStream::connect(refusing.addr).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
        // std's bind sets SO_REUSEADDR, as most servers' do: still refused.
        assert!(TcpListener::bind(refusing.addr).is_err());
        drop(refusing);
    }

    #[test]
    fn a_udp_port_is_handed_out_once_too() {
        let mut given = BTreeSet::new();
        for _ in 0..1000 {
            let port = udp_socket().unwrap().local_addr().unwrap().port();
            assert!(given.insert(port), "port {port} given twice");
        }
    }
}
