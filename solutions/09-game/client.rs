//! The game client: it sends what its player presses, and draws what the
//! server says, smoothly. It decides nothing about the world: only
//! information travels, and the client does the rest (drawing, smoothing).
//!
//! One loop, one frame every 20 ms: take the datagrams that came, take the
//! keys that were pressed, send the inputs the server has not confirmed,
//! draw. The keyboard has a thread of its own, because reading it blocks.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::interpolation::Timeline;
use crate::packet::{self, Header, Input, Message, MAX_DATAGRAM, MAX_INPUTS};
use crate::screen::{self, Key, Screen};
use crate::sequence::{self, Link};

/// How often the client draws: 50 frames a second.
const FRAME: Duration = Duration::from_millis(20);
/// How often JOIN is sent again while no WELCOME comes, and for how long.
const JOIN_RETRY: Duration = Duration::from_millis(250);
const JOIN_PATIENCE: Duration = Duration::from_secs(5);
/// A server silent this long is gone (the server's rule for clients, too).
const SERVER_SILENCE: Duration = Duration::from_secs(3);

pub struct Options {
    pub connect: String,
    pub name: String,
    pub headless: bool,
    pub delay: Duration,
}

/// Who the server said we are.
struct Seat {
    id: u8,
    token: u64,
    tick_hz: u8,
}

pub fn run(options: &Options) -> Result<()> {
    let server = resolve(&options.connect)?;
    let socket = open_socket(server)?;
    let mut link = Link::default();
    let seat = join(&socket, &mut link, &options.name, &options.connect)?;
    let mut screen = Screen::new(options.headless, seat.id);
    screen.welcome(seat.id, seat.tick_hz);
    let keys = screen::read_keys(options.headless);

    let mut timeline = Timeline::new(seat.tick_hz, options.delay);
    // Inputs the server has not confirmed, oldest first: each INPUT datagram
    // repeats all of them, so one that is lost costs nothing.
    let mut unconfirmed: VecDeque<Input> = VecDeque::new();
    let mut next_input = 1u32;
    let send_every = Duration::from_secs_f64(1.0 / f64::from(seat.tick_hz.max(1)));
    let (mut next_frame, mut next_send) = (Instant::now(), Instant::now());
    let mut last_heard = Instant::now();
    let mut delivered = 1.0;

    loop {
        // The network, until it is time to draw.
        while let Some((header, message)) = receive_before(&socket, next_frame, &options.connect)? {
            if let Message::Snapshot {
                tick,
                applied,
                players,
            } = message
            {
                last_heard = Instant::now();
                if link.received.record(header.sequence) {
                    timeline.add(tick, players, last_heard);
                }
                unconfirmed.retain(|input| input.number > applied);
                delivered = sequence::delivered_share(header.ack_bits);
            }
        }
        // The keyboard.
        loop {
            match keys.try_recv() {
                Ok(Key::Move(buttons)) => {
                    // Bounded: 32 unconfirmed inputs means the server has
                    // heard nothing for a while; the oldest is dropped.
                    if unconfirmed.len() == MAX_INPUTS {
                        unconfirmed.pop_front();
                    }
                    unconfirmed.push_back(Input {
                        number: next_input,
                        buttons,
                    });
                    next_input += 1;
                }
                Ok(Key::Quit) | Err(TryRecvError::Disconnected) => {
                    let leave = Message::Leave {
                        id: seat.id,
                        token: seat.token,
                    };
                    let _ = socket.send(&packet::encode(link.next_header(), &leave));
                    screen.goodbye();
                    return Ok(());
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        if now >= next_send {
            // Sent every tick even with nothing new: the server takes
            // silence as leaving, so this is also the client's heartbeat.
            let inputs = Message::Inputs {
                id: seat.id,
                token: seat.token,
                inputs: unconfirmed.iter().copied().collect(),
            };
            let _ = socket.send(&packet::encode(link.next_header(), &inputs));
            next_send += send_every;
        }
        if now.duration_since(last_heard) > SERVER_SILENCE {
            screen.goodbye();
            bail!("the server at {} stopped answering", options.connect);
        }
        if let Some((at, players)) = timeline.frame(now) {
            screen.draw(at, &players, delivered);
        }
        next_frame += FRAME;
        if next_frame < now {
            next_frame = now + FRAME;
        }
    }
}

fn resolve(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} has no address"))
}

/// A socket of our own, "connected" to the server: UDP has no connections,
/// but `connect` makes the system keep only the server's datagrams for us
/// and tell us when nothing listens there (a refused port).
fn open_socket(server: SocketAddr) -> Result<UdpSocket> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(any).context("cannot open a UDP socket")?;
    socket
        .connect(server)
        .with_context(|| format!("cannot reach {server}"))?;
    Ok(socket)
}

/// Send JOIN until WELCOME comes: either may be lost, so we ask again.
fn join(socket: &UdpSocket, link: &mut Link, name: &str, addr: &str) -> Result<Seat> {
    let started = Instant::now();
    while started.elapsed() < JOIN_PATIENCE {
        let join = Message::Join {
            name: name.to_string(),
        };
        socket
            .send(&packet::encode(link.next_header(), &join))
            .map_err(|error| unreachable(error, addr))?;
        let retry = Instant::now() + JOIN_RETRY;
        while let Some((header, message)) = receive_before(socket, retry, addr)? {
            link.received.record(header.sequence);
            match message {
                Message::Welcome { id, token, tick_hz } => return Ok(Seat { id, token, tick_hz }),
                Message::Full => bail!("the game at {addr} is full"),
                _ => {}
            }
        }
    }
    bail!("no answer from {addr} (is a game server running there?)")
}

/// The next datagram of this game that comes before `deadline`, if any.
/// Anything else that arrives is dropped.
fn receive_before(
    socket: &UdpSocket,
    deadline: Instant,
    addr: &str,
) -> Result<Option<(Header, Message)>> {
    let mut buffer = [0u8; MAX_DATAGRAM + 1];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv(&mut buffer) {
            Ok(len) => {
                if let Some(decoded) = packet::decode(&buffer[..len]) {
                    return Ok(Some(decoded));
                }
            }
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(None)
            }
            Err(error) => return Err(unreachable(error, addr)),
        }
    }
}

fn unreachable(error: std::io::Error, addr: &str) -> anyhow::Error {
    match error.kind() {
        ErrorKind::ConnectionRefused => anyhow!("nothing is listening at {addr}"),
        _ => anyhow!("cannot talk to {addr}: {error}"),
    }
}
