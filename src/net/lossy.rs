//! `course lossy`: a UDP relay that makes the network bad on purpose.
//!
//! ```text
//! cargo run -- lossy --to 127.0.0.1:7009 --loss 20 --delay 50 --jitter 30 --dup 5
//! ```
//!
//! Datagrams sent to the relay go on to `--to`, and the answers come back,
//! each one lost, delayed, jittered (and so reordered) or duplicated as the
//! options say. Each client gets a socket of its own towards the server, so
//! the server sees one address per client, as it would through a NAT.
//!
//! The bad luck is reproducible: the fate of the nth datagram of a flow (a
//! client, one way) depends only on the seed (`--seed`, else `COURSE_SEED`),
//! so the same traffic loses the same datagrams on every run. Linux's netem
//! does the same inside the kernel, but needs root and is missing on some
//! systems; this needs nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::harness::seed::{self, Rng};

/// The largest datagram relayed whole: UDP's own limit.
const MAX_DATAGRAM: usize = 65_507;
/// Datagrams waiting for their time at most; beyond, the newest is dropped
/// (and counted), as a router's full queue does.
const MAX_WAITING: usize = 4096;
/// Clients at most: each costs a socket and a thread.
const MAX_FLOWS: usize = 256;
/// How often the relay's threads look up from a wait to see if it stopped.
const POLL: Duration = Duration::from_millis(50);

#[derive(clap::Args, Debug, Clone)]
pub struct LossyArgs {
    /// The address clients send to; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub bind: String,
    /// The server the datagrams go on to.
    #[arg(long)]
    pub to: String,
    /// Percent of datagrams lost, each way.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Milliseconds every datagram is held, each way.
    #[arg(long, default_value_t = 0)]
    pub delay: u64,
    /// Up to this many milliseconds more or less than --delay, at random:
    /// datagrams overtake each other.
    #[arg(long, default_value_t = 0)]
    pub jitter: u64,
    /// Percent of datagrams delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub dup: f64,
    /// The seed of the bad luck; by default `COURSE_SEED`, else the clock.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What happens to datagrams, each way.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Percent lost.
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    /// Percent delivered twice.
    pub duplicate: f64,
}

/// What the relay did, each way.
#[derive(Debug, Default)]
pub struct Counts {
    pub received: AtomicU64,
    pub lost: AtomicU64,
    pub duplicated: AtomicU64,
    pub delivered: AtomicU64,
}

/// A running relay. Dropping it stops it.
pub struct Relay {
    addr: SocketAddr,
    /// Towards the server, and back.
    pub up: Arc<Counts>,
    pub down: Arc<Counts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// The address clients send to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// One datagram waiting for its time.
struct Letter {
    due: Instant,
    /// Arrival order, so that equal times keep it.
    order: u64,
    bytes: Vec<u8>,
    via: Arc<UdpSocket>,
    /// `None`: the socket is connected to where it goes.
    to: Option<SocketAddr>,
    counts: Arc<Counts>,
}

impl PartialEq for Letter {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.order) == (other.due, other.order)
    }
}
impl Eq for Letter {}
impl PartialOrd for Letter {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Letter {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.order).cmp(&(other.due, other.order))
    }
}

/// The datagrams waiting, soonest first, and the bell that wakes the
/// postman when one is added.
#[derive(Default)]
struct Mailbag {
    letters: Mutex<(BinaryHeap<Reverse<Letter>>, u64)>,
    bell: Condvar,
}

/// One client's way through, in one direction: its own luck.
struct Direction {
    rng: Rng,
    bad: Impairment,
    counts: Arc<Counts>,
}

impl Direction {
    /// Decide the fate of one datagram and post it (or not). Every datagram
    /// draws the same four numbers whatever happens to it, so the nth
    /// datagram's fate depends on the seed alone.
    fn post(&mut self, bag: &Mailbag, bytes: &[u8], via: &Arc<UdpSocket>, to: Option<SocketAddr>) {
        let (lost, delay, doubled, second_delay) =
            (self.percent(), self.delay(), self.percent(), self.delay());
        self.counts.received.fetch_add(1, Ordering::Relaxed);
        if lost < self.bad.loss {
            self.counts.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut delays = vec![delay];
        if doubled < self.bad.duplicate {
            self.counts.duplicated.fetch_add(1, Ordering::Relaxed);
            delays.push(second_delay);
        }
        let now = Instant::now();
        let mut letters = bag.letters.lock().unwrap_or_else(|e| e.into_inner());
        for delay in delays {
            if letters.0.len() >= MAX_WAITING {
                self.counts.lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            letters.1 += 1;
            let order = letters.1;
            letters.0.push(Reverse(Letter {
                due: now + delay,
                order,
                bytes: bytes.to_vec(),
                via: Arc::clone(via),
                to,
                counts: Arc::clone(&self.counts),
            }));
        }
        bag.bell.notify_one();
    }

    /// A number in 0..100.
    fn percent(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }

    /// The delay, give or take the jitter.
    fn delay(&mut self) -> Duration {
        let jitter = self.bad.jitter.as_secs_f64();
        let share = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let seconds = self.bad.delay.as_secs_f64() + jitter * (2.0 * share - 1.0);
        Duration::from_secs_f64(seconds.max(0.0))
    }
}

/// Start a relay on `bind` towards `to`.
pub fn start(bind: SocketAddr, to: SocketAddr, bad: Impairment, seed: u64) -> Result<Relay> {
    let front = UdpSocket::bind(bind).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {bind} is already in use"),
        _ => anyhow!("cannot bind {bind}: {error}"),
    })?;
    front.set_read_timeout(Some(POLL))?;
    let front = Arc::new(front);
    let stop = Arc::new(AtomicBool::new(false));
    let bag = Arc::new(Mailbag::default());
    let (up, down) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
    let addr = front.local_addr()?;

    let postman = {
        let (bag, stop) = (Arc::clone(&bag), Arc::clone(&stop));
        thread::spawn(move || deliver(&bag, &stop))
    };
    let reception = {
        let (bag, stop, front) = (Arc::clone(&bag), Arc::clone(&stop), Arc::clone(&front));
        let (up, down) = (Arc::clone(&up), Arc::clone(&down));
        thread::spawn(move || {
            let mut flows = Flows {
                to,
                bad,
                seed,
                up,
                down,
                known: HashMap::new(),
            };
            flows.receive_from_clients(&front, &bag, &stop);
        })
    };
    Ok(Relay {
        addr,
        up,
        down,
        stop,
        threads: vec![postman, reception],
    })
}

/// The clients seen so far, each with its own socket towards the server.
struct Flows {
    to: SocketAddr,
    bad: Impairment,
    seed: u64,
    up: Arc<Counts>,
    down: Arc<Counts>,
    known: HashMap<SocketAddr, (Arc<UdpSocket>, Direction, JoinHandle<()>)>,
}

impl Flows {
    fn receive_from_clients(
        &mut self,
        front: &Arc<UdpSocket>,
        bag: &Arc<Mailbag>,
        stop: &Arc<AtomicBool>,
    ) {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        while !stop.load(Ordering::SeqCst) {
            let (len, client) = match front.recv_from(&mut buffer) {
                Ok(received) => received,
                // A timeout, to look at `stop`; or, on Windows, a client
                // that has gone (an ICMP answer to an earlier send).
                Err(_) => continue,
            };
            if !self.known.contains_key(&client) {
                if self.known.len() >= MAX_FLOWS {
                    continue;
                }
                match self.open_flow(client, front, bag, stop) {
                    Ok(flow) => self.known.insert(client, flow),
                    Err(error) => {
                        eprintln!("lossy: cannot open a socket for {client}: {error}");
                        continue;
                    }
                };
            }
            let (upstream, direction, _) = self.known.get_mut(&client).expect("just added");
            direction.post(bag, &buffer[..len], upstream, None);
        }
        for (_, (_, _, thread)) in self.known.drain() {
            let _ = thread.join();
        }
    }

    /// A socket towards the server for one client, and a thread that carries
    /// the server's answers back to that client.
    fn open_flow(
        &self,
        client: SocketAddr,
        front: &Arc<UdpSocket>,
        bag: &Arc<Mailbag>,
        stop: &Arc<AtomicBool>,
    ) -> std::io::Result<(Arc<UdpSocket>, Direction, JoinHandle<()>)> {
        let any: SocketAddr = if self.to.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let upstream = UdpSocket::bind(any)?;
        upstream.connect(self.to)?;
        upstream.set_read_timeout(Some(POLL))?;
        let upstream = Arc::new(upstream);
        // Two streams of luck per client: its datagrams, and the answers.
        let flow = self.known.len();
        let towards_server = Direction {
            rng: Rng::for_stage(self.seed, 2 * flow),
            bad: self.bad,
            counts: Arc::clone(&self.up),
        };
        let mut towards_client = Direction {
            rng: Rng::for_stage(self.seed, 2 * flow + 1),
            bad: self.bad,
            counts: Arc::clone(&self.down),
        };
        let thread = {
            let (upstream, front, bag, stop) = (
                Arc::clone(&upstream),
                Arc::clone(front),
                Arc::clone(bag),
                Arc::clone(stop),
            );
            thread::spawn(move || {
                let mut buffer = vec![0u8; MAX_DATAGRAM];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(len) = upstream.recv(&mut buffer) {
                        towards_client.post(&bag, &buffer[..len], &front, Some(client));
                    }
                }
            })
        };
        Ok((upstream, towards_server, thread))
    }
}

/// Send each waiting datagram when its time comes.
fn deliver(bag: &Mailbag, stop: &AtomicBool) {
    let mut letters = bag.letters.lock().unwrap_or_else(|e| e.into_inner());
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        let wait = match letters.0.peek() {
            Some(Reverse(letter)) if letter.due <= now => {
                let Reverse(letter) = letters.0.pop().expect("just peeked");
                // Sent without the lock: a send may take a moment.
                drop(letters);
                let sent = match letter.to {
                    Some(to) => letter.via.send_to(&letter.bytes, to),
                    None => letter.via.send(&letter.bytes),
                };
                if sent.is_ok() {
                    letter.counts.delivered.fetch_add(1, Ordering::Relaxed);
                }
                letters = bag.letters.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            Some(Reverse(letter)) => (letter.due - now).min(POLL),
            None => POLL,
        };
        letters = bag
            .bell
            .wait_timeout(letters, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// `course lossy`: run a relay until stopped, with a line of counts on
/// stderr every 5 seconds.
pub fn run(args: &LossyArgs) -> Result<()> {
    for (name, percent) in [("--loss", args.loss), ("--dup", args.dup)] {
        if !(0.0..=100.0).contains(&percent) {
            return Err(anyhow!(
                "{name} is a percent, from 0 to 100 (it was {percent})"
            ));
        }
    }
    let bind = first_addr(&args.bind)?;
    let to = first_addr(&args.to)?;
    let seed = match args.seed {
        Some(seed) => seed,
        None => seed::run_seed().map_err(|message| anyhow!(message))?,
    };
    let bad = Impairment {
        loss: args.loss,
        delay: Duration::from_millis(args.delay),
        jitter: Duration::from_millis(args.jitter),
        duplicate: args.dup,
    };
    let relay = start(bind, to, bad, seed)?;
    println!("listening on {}", relay.addr());
    std::io::stdout().flush()?;
    eprintln!("relaying to {to} (seed {seed}: the same seed, the same bad luck)");
    loop {
        thread::sleep(Duration::from_secs(5));
        eprintln!(
            "to the server: {}; back: {}",
            counts(&relay.up),
            counts(&relay.down)
        );
    }
}

fn counts(counts: &Counts) -> String {
    format!(
        "{} in, {} lost, {} doubled, {} out",
        counts.received.load(Ordering::Relaxed),
        counts.lost.load(Ordering::Relaxed),
        counts.duplicated.load(Ordering::Relaxed),
        counts.delivered.load(Ordering::Relaxed)
    )
}

fn first_addr(text: &str) -> Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("cannot resolve {text}"))?
        .next()
        .ok_or_else(|| anyhow!("{text} has no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How long `through` waits for the relay and the sink at most.
    const GIVE_UP: Duration = Duration::from_secs(20);
    /// Datagrams the relay may hold before the client waits: a hundred of
    /// them fill about half of a sink's socket buffer (some 200 KiB, and a
    /// tiny datagram costs about a kilobyte of it).
    const MOST_HELD: u64 = 100;

    /// Send `count` numbered datagrams through a relay to a sink, and return
    /// the numbers that arrived, in arrival order. At each tenth datagram the
    /// client waits for the relay to have it, to hold at most MOST_HELD, and
    /// for the sink to have read all the relay sent; at the end, for the
    /// relay to have dealt with every datagram and the sink to have read
    /// them. A burst of hundreds would overflow the system's socket buffers
    /// (a relay or a sink starved of CPU on a busy machine makes one), and a
    /// quiet moment on a busy machine is not the end; neither is a loss of
    /// the relay's.
    fn through(bad: Impairment, seed: u64, count: u32) -> Vec<u32> {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let relay = start(
            "127.0.0.1:0".parse().unwrap(),
            sink.local_addr().unwrap(),
            bad,
            seed,
        )
        .unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let read = Arc::new(AtomicU64::new(0));
        let reader = {
            let (done, read) = (Arc::clone(&done), Arc::clone(&read));
            thread::spawn(move || {
                let mut arrived = Vec::new();
                let mut buffer = [0u8; 8];
                loop {
                    match sink.recv(&mut buffer) {
                        Ok(len) => {
                            arrived.push(u32::from_be_bytes(buffer[..len].try_into().unwrap()));
                            read.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) if done.load(Ordering::SeqCst) => return arrived,
                        Err(_) => {}
                    }
                }
            })
        };
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        let deadline = Instant::now() + GIVE_UP;
        let up = &relay.up;
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        // Datagrams the relay holds: received (or doubled), not yet sent on
        // nor lost. A relay starved of CPU while the client sends would
        // later send them all at once, more than the sink's socket buffer
        // holds, and the system would drop the rest unseen.
        let held = || {
            (load(&up.received) + load(&up.duplicated))
                .saturating_sub(load(&up.delivered) + load(&up.lost))
        };
        let sink_behind = || load(&read) < load(&up.delivered);
        for number in 0..count {
            client.send_to(&number.to_be_bytes(), relay.addr()).unwrap();
            if number % 10 == 9 || number + 1 == count {
                let behind = || {
                    load(&up.received) <= u64::from(number) || held() > MOST_HELD || sink_behind()
                };
                // A short sleep, not a spin: the sink and the relay need
                // the CPU this thread would take.
                while behind() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        }
        // Every datagram received was lost, or sent on (once or twice), and
        // the sink has read every one sent on.
        while (held() > 0 || sink_behind()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        done.store(true, Ordering::SeqCst);
        let arrived = reader.join().unwrap();
        // Shown only when a test fails: what the relay counted, against what
        // the sink read, tells a lost datagram from a sink that stopped early.
        eprintln!(
            "seed {seed}: the relay counted {}; the sink read {} of {count} sent{}",
            counts(up),
            arrived.len(),
            if Instant::now() >= deadline {
                ", and the test's time ran out"
            } else {
                ""
            }
        );
        arrived
    }

    #[test]
    fn the_same_seed_loses_the_same_datagrams() {
        let bad = Impairment {
            loss: 20.0,
            duplicate: 5.0,
            ..Impairment::default()
        };
        // Three relays of their own, at once.
        let [mut first, mut second, mut other] = thread::scope(|scope| {
            [42, 42, 43]
                .map(|seed| scope.spawn(move || through(bad, seed, 500)))
                .map(|run| run.join().unwrap())
        });
        for run in [&mut first, &mut second, &mut other] {
            run.sort();
        }
        assert_eq!(first, second);
        assert_ne!(first, other);
        // About 20% lost and 5% doubled, of 500.
        assert!(
            (350..=450).contains(&first.len()),
            "{} arrived",
            first.len()
        );
        let doubled = first.windows(2).filter(|pair| pair[0] == pair[1]).count();
        assert!((5..=50).contains(&doubled), "{doubled} doubled");
    }

    #[test]
    fn jitter_reorders_and_delay_holds() {
        let bad = Impairment {
            delay: Duration::from_millis(40),
            jitter: Duration::from_millis(30),
            ..Impairment::default()
        };
        let started = Instant::now();
        let arrived = through(bad, 7, 200);
        assert!(started.elapsed() >= Duration::from_millis(10));
        assert_eq!(arrived.len(), 200, "nothing may be lost without --loss");
        assert!(
            arrived.windows(2).any(|pair| pair[0] > pair[1]),
            "no datagram overtook another"
        );
    }

    #[test]
    fn answers_come_back_to_each_client() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = start(
            "127.0.0.1:0".parse().unwrap(),
            server.local_addr().unwrap(),
            Impairment::default(),
            1,
        )
        .unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut seen = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            client.send_to(&[index as u8], relay.addr()).unwrap();
            let mut byte = [0u8; 1];
            let (_, from) = server.recv_from(&mut byte).unwrap();
            assert_eq!(byte[0], index as u8);
            seen.push(from);
            server.send_to(&[100 + index as u8], from).unwrap();
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 3, "the server sees one address per client");
        for (index, client) in clients.iter().enumerate() {
            client
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut byte = [0u8; 1];
            client.recv(&mut byte).unwrap();
            assert_eq!(byte[0], 100 + index as u8);
        }
    }
}
