//! `course nat`: a userspace NAT for lesson 08. A TCP relay that forgets a
//! connection idle for longer than `--idle`, silently, as a home router or a
//! carrier's NAT does: no FIN, no RST, nothing. Both ends keep an open
//! socket; every byte after that goes nowhere.
//!
//! ```text
//! cargo run -- nat --idle 5 --to 127.0.0.1:7008
//! ```
//!
//! It prints `listening on IP:PORT`; point an agent's `--connect` there. On
//! its standard input, the line `drop` forgets every mapping at once (as a
//! router that reboots, or a phone that moves to another network) and
//! `count` prints how many connections it has carried.
//!
//! How it differs from a kernel's NAT: it ends the TCP connections and opens
//! new ones, so the kernel acknowledges a byte sent into a forgotten mapping
//! and the sender's writes never block; with a real NAT the sender
//! retransmits into the void until TCP gives up, after many minutes. To an
//! application both look the same: what it sends never arrives.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Mappings held at once; a NAT's table is finite too.
const MAX_MAPPINGS: usize = 4096;
/// How long the relay waits to reach the destination.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

#[derive(clap::Args, Debug, Clone)]
pub struct NatArgs {
    /// The address to listen on; port 0 asks the system for a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// Seconds of silence (both ways) after which a mapping is forgotten.
    #[arg(long, value_name = "SECS")]
    pub idle: f64,
    /// Where every connection goes, such as 127.0.0.1:7008.
    #[arg(long, value_name = "ADDR")]
    pub to: String,
}

/// Run the NAT until its input ends, logging what happens.
pub fn run(args: &NatArgs) -> Result<()> {
    if !args.idle.is_finite() || args.idle <= 0.0 {
        bail!("--idle must be a number of seconds above 0");
    }
    let to = args
        .to
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| anyhow!("{} is not an address", args.to))?;
    let nat = Nat::start(&args.bind, to, Duration::from_secs_f64(args.idle), true)
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    println!("listening on {}", nat.addr());
    io::stdout().flush()?;
    for line in io::stdin().lock().lines() {
        match line?.trim() {
            "drop" => println!("forgot {} mappings", nat.forget_all()),
            "count" => println!(
                "{} connections carried, {} mappings open",
                nat.connections(),
                nat.open()
            ),
            "" => {}
            other => println!("{other:?}: the commands are `drop` and `count`"),
        }
        io::stdout().flush()?;
    }
    Ok(())
}

/// What the NAT knows of one connection it carried.
#[derive(Debug, Clone, Copy)]
pub struct MappingInfo {
    pub opened: Instant,
    /// When the device's last byte before the mapping was made, or its
    /// connection, reached this machine, as the kernel saw it (on Linux;
    /// elsewhere, `opened`): a moment that a busy machine holding this
    /// process back does not move.
    pub device_connected: Instant,
    /// When the mapping was forgotten (idle, or dropped), if it was.
    pub forgotten: Option<Instant>,
    /// When the device's side (the one that connected) closed its socket.
    pub device_closed: Option<Instant>,
    /// When the far side (the `--to` server) closed its socket.
    pub server_closed: Option<Instant>,
    /// When the last byte was carried, either way.
    pub last_byte: Instant,
    /// When the last byte from the device was carried.
    pub last_from_device: Instant,
    /// The longest the device went without sending a byte: with heartbeats,
    /// about one interval, whatever the far side's answers take.
    pub longest_device_quiet: Duration,
}

impl MappingInfo {
    /// The longest the device went without a byte, counting the silence
    /// going on now.
    pub fn longest_device_quiet_until(&self, now: Instant) -> Duration {
        self.longest_device_quiet
            .max(now.saturating_duration_since(self.last_from_device))
    }
}

struct Mapping {
    number: usize,
    device: TcpStream,
    server: TcpStream,
    state: Mutex<MappingState>,
}

struct MappingState {
    info: MappingInfo,
}

struct Shared {
    to: SocketAddr,
    idle: Duration,
    log: bool,
    stopped: AtomicBool,
    mappings: Mutex<Vec<Arc<Mapping>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running NAT; dropping it stops it and closes every connection it holds.
pub struct Nat {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Nat {
    /// Listen on `bind` and carry every connection to `to`, forgetting a
    /// mapping idle for longer than `idle`. With `log`, say what happens on
    /// stdout.
    pub fn start(bind: &str, to: SocketAddr, idle: Duration, log: bool) -> io::Result<Nat> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            to,
            idle,
            log,
            stopped: AtomicBool::new(false),
            mappings: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept_loop(&listener, &accepting));
        Ok(Nat { addr, shared })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forget every mapping at once, silently; returns how many there were.
    pub fn forget_all(&self) -> usize {
        let now = Instant::now();
        let mappings = lock(&self.shared.mappings);
        let mut forgotten = 0;
        for mapping in mappings.iter() {
            let mut state = lock(&mapping.state);
            if state.info.forgotten.is_none() {
                state.info.forgotten = Some(now);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Connections carried since the start.
    pub fn connections(&self) -> usize {
        lock(&self.shared.mappings).len()
    }

    /// Mappings neither forgotten nor closed.
    pub fn open(&self) -> usize {
        self.mappings()
            .iter()
            .filter(|info| {
                info.forgotten.is_none()
                    && info.device_closed.is_none()
                    && info.server_closed.is_none()
            })
            .count()
    }

    /// Every connection carried so far, oldest first.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        lock(&self.shared.mappings)
            .iter()
            .map(|mapping| lock(&mapping.state).info)
            .collect()
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for mapping in lock(&self.shared.mappings).iter() {
            let _ = mapping.device.shutdown(Shutdown::Both);
            let _ = mapping.server.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for device in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(device) = device else {
            continue;
        };
        let shared = Arc::clone(shared);
        thread::spawn(move || open_mapping(device, &shared));
    }
}

/// Connect to the destination and carry bytes both ways. Where it cannot
/// be reached, the device's connection is closed: its peer is not there.
fn open_mapping(device: TcpStream, shared: &Arc<Shared>) {
    let server = match TcpStream::connect_timeout(&shared.to, CONNECT_WAIT) {
        Ok(server) => server,
        Err(error) => {
            if shared.log {
                println!("{} cannot be reached: {error}", shared.to);
            }
            return;
        }
    };
    let (Ok(device_reader), Ok(server_reader)) = (device.try_clone(), server.try_clone()) else {
        return;
    };
    let _ = device.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mapping = {
        let mut mappings = lock(&shared.mappings);
        if mappings.len() >= MAX_MAPPINGS {
            return;
        }
        let now = Instant::now();
        let device_connected = now.checked_sub(since_last_arrival(&device)).unwrap_or(now);
        let mapping = Arc::new(Mapping {
            number: mappings.len() + 1,
            device,
            server,
            state: Mutex::new(MappingState {
                info: MappingInfo {
                    opened: now,
                    device_connected,
                    forgotten: None,
                    device_closed: None,
                    server_closed: None,
                    last_byte: now,
                    last_from_device: now,
                    longest_device_quiet: Duration::ZERO,
                },
            }),
        });
        mappings.push(Arc::clone(&mapping));
        mapping
    };
    if shared.log {
        let from = mapping.device.peer_addr().map(|addr| addr.to_string());
        println!(
            "mapping {}: {} -> {}",
            mapping.number,
            from.unwrap_or_default(),
            shared.to
        );
        let _ = io::stdout().flush();
    }
    let upward = Arc::clone(&mapping);
    let upward_shared = Arc::clone(shared);
    thread::spawn(move || carry(device_reader, &upward, &upward_shared, Direction::Up));
    carry(server_reader, &mapping, shared, Direction::Down);
}

/// How long ago the kernel last took data on `stream`, or completed its
/// handshake if none came yet (`tcpi_last_data_recv`, in milliseconds).
#[cfg(target_os = "linux")]
fn since_last_arrival(stream: &TcpStream) -> Duration {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero tcp_info is valid; getsockopt fills at most
    // `length` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let status = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut length,
        )
    };
    if status != 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(u64::from(info.tcpi_last_data_recv))
}

#[cfg(not(target_os = "linux"))]
fn since_last_arrival(_stream: &TcpStream) -> Duration {
    Duration::ZERO
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// From the device to the server.
    Up,
    /// From the server to the device.
    Down,
}

/// Copy one direction until its reader ends. A mapping idle past the limit
/// is forgotten when its next byte comes, as a NAT's table entry times out
/// and the next packet finds none: from then on, bytes are read and thrown
/// away, and neither a close nor a reset passes.
fn carry(mut from: TcpStream, mapping: &Mapping, shared: &Shared, direction: Direction) {
    let mut to = match direction {
        Direction::Up => &mapping.server,
        Direction::Down => &mapping.device,
    };
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let count = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(count) => count,
        };
        let now = Instant::now();
        let arrived = now.checked_sub(since_last_arrival(&from)).unwrap_or(now);
        if !still_mapped(mapping, shared, direction, arrived) {
            continue;
        }
        if to.write_all(&buffer[..count]).is_err() {
            break;
        }
    }
    let now = Instant::now();
    let mut state = lock(&mapping.state);
    match direction {
        Direction::Up => state.info.device_closed = Some(now),
        Direction::Down => state.info.server_closed = Some(now),
    }
    if state.info.forgotten.is_none() {
        // A live mapping carries the close on: the other side reads its end.
        let _ = to.shutdown(Shutdown::Write);
    }
}

/// Whether the mapping still exists; a byte now keeps it alive. The
/// device's silences are measured between the moments its bytes `arrived`
/// (as the kernel saw them), not between the moments this thread, perhaps
/// held back by a busy machine, got to read them.
fn still_mapped(
    mapping: &Mapping,
    shared: &Shared,
    direction: Direction,
    arrived: Instant,
) -> bool {
    let now = Instant::now();
    let mut state = lock(&mapping.state);
    if state.info.forgotten.is_none() && now.duration_since(state.info.last_byte) > shared.idle {
        state.info.forgotten = Some(state.info.last_byte + shared.idle);
        if shared.log {
            println!(
                "mapping {}: forgotten after {:.1} s idle",
                mapping.number,
                shared.idle.as_secs_f64()
            );
            let _ = io::stdout().flush();
        }
    }
    if state.info.forgotten.is_some() {
        return false;
    }
    if direction == Direction::Up {
        let arrived = arrived.max(state.info.last_from_device);
        let quiet = arrived - state.info.last_from_device;
        state.info.longest_device_quiet = state.info.longest_device_quiet.max(quiet);
        state.info.last_from_device = arrived;
    }
    state.info.last_byte = now;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long a test waits to show that nothing comes back: an echo
    /// through a live mapping takes well under a millisecond.
    const SILENCE: Duration = Duration::from_millis(250);

    fn connect(nat: &Nat) -> TcpStream {
        let stream = TcpStream::connect(nat.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    /// A NAT in front of an echo server.
    fn nat_before_echo(idle: Duration) -> Nat {
        Nat::start(
            "127.0.0.1:0",
            crate::net::testing::echo_server(),
            idle,
            false,
        )
        .unwrap()
    }

    fn echo(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(bytes)?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back)?;
        Ok(back)
    }

    #[test]
    fn carries_bytes_both_ways_and_counts_connections() {
        let nat = nat_before_echo(Duration::from_secs(5));
        let mut first = connect(&nat);
        let mut second = connect(&nat);
        assert_eq!(echo(&mut first, b"hello").unwrap(), b"hello");
        assert_eq!(echo(&mut second, b"again").unwrap(), b"again");
        assert_eq!(nat.connections(), 2);
        assert_eq!(nat.open(), 2);
    }

    #[test]
    fn a_close_passes_while_the_mapping_lives() {
        let nat = nat_before_echo(Duration::from_secs(5));
        let mut stream = connect(&nat);
        assert_eq!(echo(&mut stream, b"x").unwrap(), b"x");
        stream.shutdown(Shutdown::Write).unwrap();
        // The echo server sees the end and closes; the close comes back.
        let mut rest = Vec::new();
        assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn forgets_an_idle_mapping_silently() {
        let idle = Duration::from_millis(200);
        let nat = nat_before_echo(idle);
        let mut stream = connect(&nat);
        assert_eq!(echo(&mut stream, b"before").unwrap(), b"before");
        // The NAT saw its last byte before the echo came back: once `idle`
        // has passed here, it has passed there.
        let quiet_since = Instant::now();
        while quiet_since.elapsed() <= idle {
            thread::sleep(idle.saturating_sub(quiet_since.elapsed()) + Duration::from_millis(1));
        }
        // No answer, and no end either: the read times out.
        stream.set_read_timeout(Some(SILENCE)).unwrap();
        let error = echo(&mut stream, b"after").unwrap_err();
        assert!(matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert!(nat.mappings()[0].forgotten.is_some());
        assert!(nat.mappings()[0].device_closed.is_none());
    }

    #[test]
    fn forget_all_drops_every_mapping_at_once_and_new_ones_work() {
        let nat = nat_before_echo(Duration::from_secs(5));
        let mut old = [connect(&nat), connect(&nat)];
        for stream in &mut old {
            assert_eq!(echo(stream, b"a").unwrap(), b"a");
        }
        assert_eq!(nat.forget_all(), 2);
        // Nothing comes back on either: both wait out the same silence.
        for stream in &mut old {
            let _ = stream.write_all(b"b");
        }
        let quiet_until = Instant::now() + SILENCE;
        for stream in &mut old {
            let left = quiet_until.saturating_duration_since(Instant::now());
            stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut back = [0u8; 1];
            assert!(
                stream.read_exact(&mut back).is_err(),
                "a forgotten mapping carried bytes"
            );
        }
        let mut new = connect(&nat);
        assert_eq!(echo(&mut new, b"c").unwrap(), b"c");
        assert_eq!((nat.connections(), nat.open()), (3, 1));
    }
}
