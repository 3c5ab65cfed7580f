//! `course game-bench ADDR`: what lesson 09's game costs on the wire, and how
//! far in the past a client must draw as the network gets worse.
//!
//! ```text
//! cargo run --bin 09-game-solution -- server
//! cargo run --release -- game-bench 127.0.0.1:7009
//! ```
//!
//! 1. Bandwidth: `--players` bots join; half of them press a key every tick,
//!    half stand still. It counts the bytes of every snapshot each bot gets
//!    (plus 28 bytes of IP and UDP headers), and what the same snapshot would
//!    cost sent as a delta against the one before it (only the players that
//!    moved), the compression real games use.
//! 2. Interpolation delay: one bot plays through the course's lossy relay at
//!    several loss rates, and for each delay a client might draw behind, it
//!    counts the frames that would find no snapshot after the moment drawn:
//!    frames that must hold, and look frozen.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::harness::game::{
    inputs_datagram, join_datagram, leave_datagram, parse, FromServer, Snapshot, DOWN, LEFT, RIGHT,
    UP,
};
use crate::harness::seed::Rng;
use crate::net::lossy::{self, Impairment};

/// IPv4 (20 bytes) and UDP (8) headers: on the wire with every datagram.
const IP_AND_UDP: usize = 28;
/// A client draws a frame every 20 ms.
const FRAME: Duration = Duration::from_millis(20);

#[derive(clap::Args, Debug, Clone)]
pub struct GameBenchArgs {
    /// The game server's address, such as 127.0.0.1:7009.
    pub addr: String,
    /// Players for the bandwidth measure.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub players: u8,
    /// Seconds each measure runs.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub seconds: u64,
}

/// A bot: a UDP socket seated in the game.
struct Bot {
    socket: UdpSocket,
    id: u8,
    token: u64,
    tick_hz: u8,
    sequence: u16,
    next_input: u32,
}

impl Bot {
    fn join(server: SocketAddr, name: &str) -> Result<Bot> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(server)?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buffer = [0u8; 1500];
        for _ in 0..25 {
            socket.send(&join_datagram(name))?;
            if let Ok(len) = socket.recv(&mut buffer) {
                if let Ok(FromServer::Welcome { id, token, tick_hz }) = parse(&buffer[..len]) {
                    return Ok(Bot {
                        socket,
                        id,
                        token,
                        tick_hz,
                        sequence: 0,
                        next_input: 1,
                    });
                }
            }
        }
        bail!("{name} got no WELCOME from {server}")
    }

    /// One tick's input (or none), sent.
    fn press(&mut self, buttons: Option<u8>) -> Result<()> {
        let inputs: Vec<(u32, u8)> = buttons.map(|b| (self.next_input, b)).into_iter().collect();
        if buttons.is_some() {
            self.next_input += 1;
        }
        self.sequence = self.sequence.wrapping_add(1);
        self.socket.send(&inputs_datagram(
            self.sequence,
            self.id,
            self.token,
            &inputs,
        ))?;
        Ok(())
    }

    /// Every snapshot that arrives before `deadline` (and any already
    /// waiting, even past it), with its arrival.
    fn snapshots_until(&self, deadline: Instant) -> Vec<(Snapshot, Instant)> {
        let mut buffer = [0u8; 1500];
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = self
                .socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.socket.recv(&mut buffer) {
                Ok(len) => {
                    if let Ok(FromServer::Snapshot(snapshot)) = parse(&buffer[..len]) {
                        got.push((snapshot, Instant::now()));
                    }
                }
                Err(_) if left.is_zero() => return got,
                Err(_) => {}
            }
        }
    }

    fn leave(&self) {
        let _ = self.socket.send(&leave_datagram(self.id, self.token));
    }
}

/// What `snapshot` would cost as a delta against `base`: the same header,
/// the base's tick, and only the players that moved, came or went.
fn delta_size(snapshot: &Snapshot, base: &Snapshot) -> usize {
    let changed = snapshot
        .players
        .iter()
        .filter(|player| !base.players.contains(player))
        .count();
    let gone = base
        .players
        .iter()
        .filter(|(id, _, _)| snapshot.position(*id).is_none())
        .count();
    // header 13, tick 4, applied 4, base tick 4, counts 2, 5 per changed
    // player, 1 per player gone.
    13 + 4 + 4 + 4 + 2 + 5 * changed + gone
}

pub fn run(args: &GameBenchArgs) -> Result<()> {
    let server = args
        .addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", args.addr))?
        .next()
        .ok_or_else(|| anyhow!("{} has no address", args.addr))?;
    let seconds = Duration::from_secs(args.seconds);
    bandwidth(server, args.players, seconds)?;
    println!();
    interpolation_delay(server, seconds)
}

fn bandwidth(server: SocketAddr, players: u8, seconds: Duration) -> Result<()> {
    let mut bots = (0..players)
        .map(|n| Bot::join(server, &format!("bench{n}")))
        .collect::<Result<Vec<_>>>()?;
    let tick = Duration::from_secs_f64(1.0 / f64::from(bots[0].tick_hz.max(1)));
    let mut rng = Rng::for_stage(9, 0);
    let (mut full, mut delta, mut count) = (0usize, 0usize, 0usize);
    let mut last: Vec<Option<Snapshot>> = vec![None; bots.len()];
    let end = Instant::now() + seconds;
    let mut next_tick = Instant::now();
    while Instant::now() < end {
        for (index, bot) in bots.iter_mut().enumerate() {
            // Half the players move every tick; half stand still.
            let buttons = (index % 2 == 0).then(|| *rng.pick(&[UP, DOWN, LEFT, RIGHT]));
            bot.press(buttons)?;
        }
        next_tick += tick;
        for (index, bot) in bots.iter().enumerate() {
            for (snapshot, _) in bot.snapshots_until(next_tick.min(end)) {
                full += snapshot.size + IP_AND_UDP;
                delta += match &last[index] {
                    Some(base) => delta_size(&snapshot, base),
                    None => snapshot.size,
                } + IP_AND_UDP;
                count += 1;
                last[index] = Some(snapshot);
            }
        }
    }
    for bot in &bots {
        bot.leave();
    }
    let per_client = |bytes: usize| bytes as f64 / seconds.as_secs_f64() / f64::from(players);
    println!(
        "bandwidth: {players} players at {} Hz, half of them moving, {count} snapshots",
        bots[0].tick_hz
    );
    println!("| snapshots | bytes/s per client (with IP+UDP) | ratio |");
    println!("|---|---|---|");
    println!("| full | {:.0} | 1.00 |", per_client(full));
    println!(
        "| delta (players that moved) | {:.0} | {:.2} |",
        per_client(delta),
        delta as f64 / full.max(1) as f64
    );
    Ok(())
}

fn interpolation_delay(server: SocketAddr, seconds: Duration) -> Result<()> {
    let delays = [50u64, 100, 150, 200, 300];
    println!(
        "interpolation: share of frames that must hold (no snapshot yet after the time drawn),"
    );
    println!("through the lossy relay with 30±20 ms of delay, by loss and by delay drawn behind");
    print!("| loss |");
    for delay in delays {
        print!(" {delay} ms |");
    }
    println!();
    println!("|---|{}", "---|".repeat(delays.len()));
    for loss in [0.0, 5.0, 10.0, 20.0, 40.0] {
        let bad = Impairment {
            loss,
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(20),
            duplicate: 0.0,
        };
        let relay = lossy::start("127.0.0.1:0".parse()?, server, bad, 9)?;
        let mut bot = Bot::join(relay.addr(), "benchlossy")?;
        let tick_seconds = 1.0 / f64::from(bot.tick_hz.max(1));
        let started = Instant::now();
        let end = started + seconds;
        let mut arrivals = Vec::new();
        while Instant::now() < end {
            bot.press(None)?;
            let next = (Instant::now() + Duration::from_millis(50)).min(end);
            for (snapshot, at) in bot.snapshots_until(next) {
                let tick_time = f64::from(snapshot.tick) * tick_seconds;
                arrivals.push((tick_time, at.duration_since(started).as_secs_f64()));
            }
        }
        bot.leave();
        print!("| {loss:.0}% |");
        for delay in delays {
            print!(
                " {:.1}% |",
                100.0 * held_share(&arrivals, delay as f64 / 1000.0)
            );
        }
        println!();
    }
    Ok(())
}

/// Of the frames a client drawing `delay` behind would draw, the share that
/// find no snapshot after the moment drawn. `arrivals`: (server time of the
/// snapshot, when it arrived), in seconds.
fn held_share(arrivals: &[(f64, f64)], delay: f64) -> f64 {
    let Some(first) = arrivals.iter().map(|(_, at)| *at).reduce(f64::min) else {
        return 1.0;
    };
    let last = arrivals.iter().map(|(_, at)| *at).fold(first, f64::max);
    let (mut frames, mut held) = (0u32, 0u32);
    // Start once the client has had a moment to learn the server's clock.
    let mut now = first + 0.5;
    while now <= last {
        let seen: Vec<&(f64, f64)> = arrivals.iter().filter(|(_, at)| *at <= now).collect();
        let lead = seen
            .iter()
            .map(|(tick, at)| tick - at)
            .fold(f64::MIN, f64::max);
        let drawn = now + lead - delay;
        frames += 1;
        if !seen.iter().any(|(tick, _)| *tick >= drawn) {
            held += 1;
        }
        now += FRAME.as_secs_f64();
    }
    f64::from(held) / f64::from(frames.max(1))
}
