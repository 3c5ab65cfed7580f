//! The game server: one UDP socket, one thread, a fixed tick.
//!
//! There are no connections to accept and no thread per client: every
//! datagram, from every player, arrives on the same socket, and the address
//! it came from says who sent it. Between ticks the server applies the inputs
//! that arrive; on each tick it sends every player the whole world. A
//! datagram that is lost is simply not there: the next tick's snapshot says
//! everything again.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};

use crate::packet::{self, Header, Input, Message, MAX_DATAGRAM, MAX_PLAYERS};
use crate::sequence::Link;
use crate::world::Player;

/// One player the server knows, and what it knows of their datagrams.
struct Client {
    name: String,
    /// Where they joined from: the only address allowed to speak for them.
    addr: SocketAddr,
    /// The secret they were given, which every datagram of theirs repeats.
    token: u64,
    player: Player,
    /// The newest input number applied: older ones are never applied again.
    applied: u32,
    /// New inputs that may still be applied: INPUTS_PER_TICK more each
    /// tick, at most INPUT_BURST (see `spend_input`).
    input_budget: u32,
    last_heard: Instant,
    /// Whether they have spoken from their address with their token. Until
    /// then the address is only what a JOIN said, and anyone can write any
    /// source address on a datagram: snapshots, 20 a second, would go to
    /// someone who never asked. Until then they get a WELCOME, no more.
    answered: bool,
    /// Our datagrams to them are numbered; theirs to us are acknowledged.
    link: Link,
}

/// New inputs a player may have applied at once, and how many more each
/// tick allows. A key held down repeats some 30 times a second, under two
/// a tick at 20 ticks a second; the burst lets a client catch up after a
/// few lost datagrams. Without a limit, a client that numbers its inputs
/// ahead and sends them by the hundred moves its player a hundred steps a
/// tick: a speed hack that no honest client could tell from a fast network.
const INPUT_BURST: u32 = 10;
const INPUTS_PER_TICK: u32 = 2;

impl Client {
    /// Take one input from the budget; false once it is spent. What is not
    /// applied now is not lost: the client repeats every input until a
    /// snapshot says it was applied, and the budget grows back each tick.
    fn spend_input(&mut self) -> bool {
        let allowed = self.input_budget > 0;
        self.input_budget = self.input_budget.saturating_sub(1);
        allowed
    }
}

pub struct Game {
    clients: HashMap<u8, Client>,
    tick: u32,
    tick_hz: u8,
    silence: Duration,
}

pub fn run(bind: &str, tick_hz: u8, silence: Duration) -> Result<()> {
    let socket = UdpSocket::bind(bind).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {bind} is already in use"),
        _ => anyhow!("cannot bind {bind}: {error}"),
    })?;
    println!("listening on {}", socket.local_addr()?);
    std::io::stdout().flush()?;

    let mut game = Game {
        clients: HashMap::new(),
        tick: 0,
        tick_hz,
        silence,
    };
    // One byte more than the largest datagram we accept: a datagram that
    // fills it was longer than the limit (the system cut it to fit).
    let mut buffer = [0u8; MAX_DATAGRAM + 1];
    let interval = Duration::from_secs_f64(1.0 / f64::from(tick_hz));
    let mut next_tick = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if now >= next_tick {
            game.tick(&socket, now);
            // Ticks are due at fixed times, not a fixed pause after the last
            // one: a pause would add each tick's own work and drift slow. A
            // tick late by a little (a busy machine) is caught up at once; a
            // server a whole second behind (a suspended machine) skips the
            // ticks it missed rather than sending them in a burst.
            next_tick += interval;
            if now.duration_since(next_tick) > Duration::from_secs(1) {
                next_tick = now + interval;
            }
            continue;
        }
        socket
            .set_read_timeout(Some(next_tick - now))
            .context("cannot set the socket's read timeout")?;
        match socket.recv_from(&mut buffer) {
            Ok((len, from)) => game.receive(&socket, &buffer[..len], from, Instant::now()),
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // Windows reports "port unreachable", caused by an earlier
            // send_to to a player who has gone, on the next receive. It is
            // about that player only.
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => return Err(error).context("receiving a datagram failed"),
        }
    }
}

impl Game {
    /// Handle one datagram from `from`. Anything malformed, foreign or
    /// unproven is dropped without an answer: answering a forged source
    /// address would make the server a weapon against that address.
    fn receive(&mut self, socket: &UdpSocket, datagram: &[u8], from: SocketAddr, now: Instant) {
        let Some((header, message)) = packet::decode(datagram) else {
            return;
        };
        match message {
            Message::Join { name } => self.join(socket, name, from, now),
            Message::Inputs { id, token, inputs } => {
                if let Some(client) = self.proven(id, token, from) {
                    client.last_heard = now;
                    client.answered = true;
                    if client.link.received.record(header.sequence) {
                        apply_new_inputs(client, inputs);
                    }
                }
            }
            Message::Leave { id, token } => {
                if self.proven(id, token, from).is_some() {
                    if let Some(client) = self.clients.remove(&id) {
                        eprintln!("{} left", client.name);
                    }
                }
            }
            // Only the server sends these.
            Message::Welcome { .. } | Message::Full | Message::Snapshot { .. } => {}
        }
    }

    /// Let a player in, or welcome them again: their first WELCOME may have
    /// been lost, and then they send JOIN again.
    fn join(&mut self, socket: &UdpSocket, name: String, from: SocketAddr, now: Instant) {
        if !valid_name(&name) {
            return;
        }
        let known = self.clients.iter().find(|(_, client)| client.addr == from);
        let (id, token) = match known {
            Some((id, client)) => (*id, client.token),
            None => {
                let Some(id) = self.free_seat() else {
                    send(socket, from, Header::default(), &Message::Full);
                    return;
                };
                eprintln!("{name} joined as player {id} from {from}");
                let client = Client {
                    name,
                    addr: from,
                    token: random_token(),
                    player: Player::spawn(id),
                    applied: 0,
                    input_budget: INPUT_BURST,
                    last_heard: now,
                    answered: false,
                    link: Link::default(),
                };
                let token = client.token;
                self.clients.insert(id, client);
                (id, token)
            }
        };
        let tick_hz = self.tick_hz;
        let client = self.clients.get_mut(&id).expect("just found or added");
        let header = client.link.next_header();
        send(
            socket,
            from,
            header,
            &Message::Welcome { id, token, tick_hz },
        );
    }

    /// A seat for a newcomer: the first free id, or else the seat of the
    /// player who joined longest ago and never answered their WELCOME. That
    /// JOIN may have carried someone else's address; without this, a stream
    /// of such JOINs would keep the game full for everyone, where now they
    /// only push out each other. A player who answered keeps their seat.
    fn free_seat(&mut self) -> Option<u8> {
        if let Some(id) = (0..MAX_PLAYERS as u8).find(|id| !self.clients.contains_key(id)) {
            return Some(id);
        }
        let id = self
            .clients
            .iter()
            .filter(|(_, client)| !client.answered)
            .min_by_key(|(_, client)| client.last_heard)
            .map(|(id, _)| *id)?;
        if let Some(gone) = self.clients.remove(&id) {
            eprintln!(
                "{} lost their seat: they never answered their WELCOME",
                gone.name
            );
        }
        Some(id)
    }

    /// The client `id`, if this datagram really is theirs: from the address
    /// they joined from, with their token. Anyone can write any id into a
    /// datagram; only the real player has both.
    fn proven(&mut self, id: u8, token: u64, from: SocketAddr) -> Option<&mut Client> {
        self.clients
            .get_mut(&id)
            .filter(|client| client.addr == from && client.token == token)
    }

    /// One tick: drop the silent, then tell everyone where everyone is.
    fn tick(&mut self, socket: &UdpSocket, now: Instant) {
        self.tick = self.tick.wrapping_add(1);
        let silence = self.silence;
        self.clients.retain(|_, client| {
            let alive = now.duration_since(client.last_heard) < silence;
            if !alive {
                eprintln!(
                    "{} left (silent for {} s)",
                    client.name,
                    silence.as_secs_f32()
                );
            }
            alive
        });
        // Only players who answered: a forged JOIN is not in the game, and
        // gets nothing but its WELCOME.
        let mut players: Vec<_> = self
            .clients
            .values()
            .filter(|client| client.answered)
            .map(|client| client.player.state())
            .collect();
        players.sort_by_key(|player| player.id);
        for client in self.clients.values_mut().filter(|client| client.answered) {
            client.input_budget = (client.input_budget + INPUTS_PER_TICK).min(INPUT_BURST);
            let snapshot = Message::Snapshot {
                tick: self.tick,
                applied: client.applied,
                players: players.clone(),
            };
            let header = client.link.next_header();
            send(socket, client.addr, header, &snapshot);
        }
    }
}

/// Apply, once each and in order, the inputs not applied yet. The client
/// repeats every input until a snapshot says it was applied, so the same
/// input arrives many times, and datagrams overtake each other: the number
/// decides, not the arrival.
fn apply_new_inputs(client: &mut Client, mut inputs: Vec<Input>) {
    inputs.sort_by_key(|input| input.number);
    for input in inputs {
        if input.number > client.applied {
            if !client.spend_input() {
                break;
            }
            client.player.apply(input);
            client.applied = input.number;
        }
    }
}

/// Send one datagram. A failure concerns that one player (their address
/// went away): the others must still get their snapshot, so it is ignored.
fn send(socket: &UdpSocket, to: SocketAddr, header: Header, message: &Message) {
    let _ = socket.send_to(&packet::encode(header, message), to);
}

/// 1 to 16 letters, digits, `_` or `-`: lesson 05's rule for names.
fn valid_name(name: &str) -> bool {
    (1..=16).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
}

/// A token nobody can guess from outside. std's `RandomState` is seeded from
/// the system's random source; a real server would use a cryptographic
/// generator (the `getrandom` crate) for secrets that must resist more than
/// a guess.
fn random_token() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}
