//! Lesson 04, concurrency: the stages, in the order you build them.
//!
//!     cargo test --test 04_concurrency                 your code in lessons/04-concurrency
//!     cargo test --test 04_concurrency crowd           one stage
//!     COURSE_TARGET=solutions cargo test --test 04_concurrency
//!
//! Each stage starts your server with `server --bind 127.0.0.1:0` (the last on
//! a port the test chose, to check `--bind`), reads the address it prints, and
//! speaks lesson 03's mailbox protocol to it, over many real TCP connections at
//! once.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::ctx::ProcessId;
use course::harness::journal::Journal;
use course::harness::mailbox::{expect_fresh_mailbox, expect_id, owns_its_folder, MAX_LINE};
use course::harness::resources::{threads, unmeasurable};
use course::harness::setup::Patience;
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_04-concurrency"),
        solutions: option_env!("CARGO_BIN_EXE_04-concurrency-solution"),
    };
    course::run_stages("04", programs, &STAGES);
}

const STAGES: [Stage; 9] = [
    Stage {
        slug: "two-at-once",
        title: "serves client B while client A is connected and silent",
        slide: "The sequential server blocks",
        check: two_at_once,
        runs_alone: false,
    },
    Stage {
        slug: "crowd",
        title: "answers 100 clients, connected together, in reverse order",
        slide: "A bounded pool",
        check: crowd,
        runs_alone: false,
    },
    Stage {
        slug: "no-lost-updates",
        title: "50 clients send 100 messages each to one mailbox: 5000 arrive, once",
        slide: "Shared state behind a Mutex",
        check: no_lost_updates,
        runs_alone: false,
    },
    Stage {
        slug: "bounded",
        title: "with 300 connections open, its threads stay within --max-connections and --workers",
        slide: "Back-pressure",
        check: bounded,
        runs_alone: false,
    },
    Stage {
        slug: "slow-and-silent",
        title: "closes slow and silent clients after the idle timeout",
        slide: "Idle timeouts and slowloris",
        check: slow_and_silent,
        runs_alone: false,
    },
    Stage {
        slug: "graceful-shutdown",
        title: "on SIGTERM, finishes the requests in progress and exits 0",
        slide: "Graceful shutdown",
        check: graceful_shutdown,
        runs_alone: false,
    },
    Stage {
        slug: "slowloris",
        title: "behind 300 clients that send a byte at a time, a new client is answered within 1 s",
        slide: "Slow clients hold threads, not workers",
        check: slowloris,
        runs_alone: false,
    },
    Stage {
        slug: "owns-its-folder",
        title: "with --data, exits at start on a folder another server owns or it cannot write in",
        slide: "One folder, one owner",
        check: owns_its_folder,
        runs_alone: false,
    },
    Stage {
        slug: "binds-where-asked",
        title: "listens on the address given with --bind, and serves there",
        slide: "Try it by hand",
        check: binds_where_asked,
        runs_alone: false,
    },
];

const SERVER_FILE: &str = "lessons/04-concurrency/server.rs";
const POOL_FILE: &str = "lessons/04-concurrency/pool.rs";
const READER_FILE: &str = "lessons/04-concurrency/timed_stream.rs";
const CONNECTIONS_FILE: &str = "lessons/04-concurrency/connections.rs";

fn two_at_once(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    ctx.step("client A connects and says nothing");
    let _silent = ctx.connect(server.addr)?;
    ctx.step("client B connects and has one second to be served");
    let one_second = ctx.patience().reply / 2;
    let mut second = Conn::connect(server.addr, ctx.journal(), one_second)?;
    let started = Instant::now();
    second.send(b"USER bob\nCOUNT\n")?;
    let where_to_look = format!(
        "Where: TODO 1 in {SERVER_FILE}, fn accept_loop: give each connection a thread of \
         its own (`connections.start`), and let the loop go back to accept at once; then \
         TODO 2 in {POOL_FILE}, so that the workers answer the requests. A worker must not \
         hold the queue's lock while it runs a job: `while let Ok(job) = \
         rx.lock().unwrap().recv()` keeps the lock for the whole loop body, so no other \
         worker can take a job meanwhile; take the job in one statement, and run it after."
    );
    match second.expect(b"OK\nOK 0\n") {
        Err(_) if started.elapsed() >= one_second => Err(second
            .fail("B waited while A was connected: your server serves one client at a time")
            .hint(format!(
                "While the accept loop serves A, nobody accepts B: B's connection waits in \
                 the system's queue. {where_to_look}"
            ))),
        Err(failure) => Err(failure.more_hint(format!(
            "B must be served while A is connected and silent. A connection closed here \
             often means that B's request went to the pool's queue and no worker took it \
             (the server says \"no worker could answer this request\"): until TODO 2 is \
             done, the workers end at once, the queue closes, and a connection that hands it \
             a request is closed. {where_to_look}"
        ))),
        Ok(()) => Ok(()),
    }
}

fn crowd(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&["--workers", "128"])?;
    ctx.step("100 clients connect, one after another, and say nothing yet");
    let mut crowd = (0..100)
        .map(|_| ctx.connect(server.addr))
        .collect::<Check<Vec<Conn>>>()?;
    ctx.step("each says USER and COUNT, the last to connect first");
    for (number, conn) in crowd.iter_mut().enumerate().rev() {
        conn.send(format!("USER client{number}\nCOUNT\n").as_bytes())?;
        conn.expect(b"OK\nOK 0\n").map_err(|failure| {
            failure.more_hint(format!(
                "100 clients are served at once, each by a thread of its own. Does each \
                 worker of the pool take requests from the queue (TODO 2 in {POOL_FILE})?"
            ))
        })?;
    }
    Ok(())
}

fn no_lost_updates(ctx: &mut Ctx) -> Check<()> {
    const SENDERS: usize = 50;
    const EACH: usize = 100;
    let server = ctx.start_server(&["--workers", "64"])?;
    let senders = (0..SENDERS)
        .map(|_| ctx.connect(server.addr))
        .collect::<Check<Vec<Conn>>>()?;
    ctx.step(format!(
        "{SENDERS} clients send {EACH} messages each to `inbox`, all at the same time"
    ));
    let acknowledged: Vec<Vec<(u64, String)>> = thread::scope(|scope| {
        let running: Vec<_> = senders
            .into_iter()
            .enumerate()
            .map(|(number, mut conn)| scope.spawn(move || send_many(&mut conn, number, EACH)))
            .collect();
        running
            .into_iter()
            .map(|sender| sender.join().expect("a sending thread does not panic"))
            .collect::<Check<_>>()
    })?;
    let mut expected = HashSet::new();
    for (id, body) in acknowledged.into_iter().flatten() {
        if !expected.insert((id, body)) {
            return Err(
                Failure::new(format!("two messages were acknowledged with the id {id}"))
                    .hint(lost_update_hint()),
            );
        }
    }
    let ids: HashSet<u64> = expected.iter().map(|(id, _)| *id).collect();
    if ids.len() != expected.len() {
        return Err(Failure::new(format!(
            "{} messages were acknowledged with only {} different ids",
            expected.len(),
            ids.len()
        ))
        .hint(lost_update_hint()));
    }

    ctx.step("inbox fetches them all");
    let mut inbox = ctx.connect(server.addr)?;
    inbox.send(b"USER inbox\nFETCH\n")?;
    inbox.expect(b"OK\n")?;
    let header = inbox.read_line(MAX_LINE)?;
    let total = SENDERS * EACH;
    if header != format!("MSGS {total}\n").as_bytes() {
        return Err(inbox
            .fail(format!(
                "{total} messages were acknowledged, and FETCH did not say {total}"
            ))
            .bytes(format!("MSGS {total}\n").as_bytes(), &header)
            .hint(lost_update_hint()));
    }
    let mut fetched = HashSet::new();
    for _ in 0..total {
        let line = inbox.read_line(MAX_LINE)?;
        let text = String::from_utf8_lossy(&line);
        let words: Vec<&str> = text.trim_end().split(' ').collect();
        let (Some(id), Some(length)) = (
            words.get(1).and_then(|id| id.parse::<u64>().ok()),
            words.get(3).and_then(|length| length.parse::<usize>().ok()),
        ) else {
            return Err(inbox
                .fail("a MSG line of FETCH's reply could not be read")
                .bytes(b"MSG <id> <from> <length>\n", &line));
        };
        let body = inbox.read_exact(length)?;
        fetched.insert((id, String::from_utf8_lossy(&body).into_owned()));
    }
    if fetched != expected {
        let missing = expected.difference(&fetched).count();
        return Err(Failure::new(format!(
            "FETCH returned {total} messages, but {missing} acknowledged ones were not among \
             them"
        ))
        .hint(lost_update_hint()));
    }
    Ok(())
}

/// Send `count` messages to `inbox`, each waiting for its `OK <id>`.
fn send_many(conn: &mut Conn, number: usize, count: usize) -> Check<Vec<(u64, String)>> {
    conn.send(format!("USER sender{number}\n").as_bytes())?;
    conn.expect(b"OK\n")?;
    let mut acknowledged = Vec::with_capacity(count);
    for index in 0..count {
        let body = format!("from {number}, message {index}");
        conn.send(format!("SEND inbox {}\n{body}", body.len()).as_bytes())?;
        let line = conn.read_line(MAX_LINE)?;
        let id = std::str::from_utf8(&line)
            .ok()
            .and_then(|text| text.strip_prefix("OK "))
            .and_then(|text| text.trim_end().parse().ok())
            .ok_or_else(|| {
                conn.fail("SEND was not answered `OK <id>`")
                    .bytes(b"OK <id>\n", &line)
            })?;
        acknowledged.push((id, body));
    }
    Ok(acknowledged)
}

fn lost_update_hint() -> String {
    "Two workers changed the mailbox at the same time, and one change was lost. Every \
     access to the shared mailbox goes through its Mutex, and taking an id and storing \
     the message happen under one lock."
        .to_string()
}

fn bounded(ctx: &mut Ctx) -> Check<()> {
    const CLIENTS: usize = 300;
    const MAX_CONNECTIONS: usize = 200;
    const WORKERS: usize = 8;
    // The main thread, the signal handler's, and room for two more.
    const OTHER_THREADS: usize = 4;
    let server = ctx.start_server(&[
        "--max-connections",
        &MAX_CONNECTIONS.to_string(),
        "--workers",
        &WORKERS.to_string(),
    ])?;
    ctx.step(format!(
        "{CLIENTS} clients connect and say USER; --max-connections {MAX_CONNECTIONS}"
    ));
    let mut clients = Vec::with_capacity(CLIENTS);
    for number in 0..CLIENTS {
        let mut conn = ctx.connect(server.addr)?;
        conn.send(format!("USER client{number}\n").as_bytes())?;
        // Under the cap, every 50th waits to be answered: the server has
        // then accepted all before it. Without the pause, the system's
        // listen queue (128) may fill, and it completes a handshake only a
        // second later.
        if number < MAX_CONNECTIONS && number % 50 == 49 {
            conn.wait_readable().map_err(|failure| {
                failure.more_hint(format!(
                    "With --max-connections {MAX_CONNECTIONS}, the first {MAX_CONNECTIONS} \
                     clients are served at once."
                ))
            })?;
        }
        clients.push(conn);
    }
    // The first clients fill the cap: wait until each of them is answered.
    for conn in &mut clients[..MAX_CONNECTIONS] {
        conn.wait_readable().map_err(|failure| {
            failure.more_hint(format!(
                "With --max-connections {MAX_CONNECTIONS}, the first {MAX_CONNECTIONS} \
                 clients are served at once."
            ))
        })?;
    }
    let pid = ctx.process(server.id).pid();
    let most = MAX_CONNECTIONS + WORKERS + OTHER_THREADS;
    // A connection's thread gives its place back, then ends; meanwhile the
    // next connection's thread may start. So one look may see a few threads
    // still ending: the count must come down to the bound within this time,
    // and a server with no cap (300 connections, 300 threads) never does.
    let ending = ctx.patience().seconds(1.0);
    let count_threads = |ctx: &Ctx| -> Check<()> {
        let since = Instant::now();
        let count = loop {
            let count = threads(pid).ok_or_else(|| unmeasurable("threads"))?;
            if count <= most || since.elapsed() >= ending {
                break count;
            }
            thread::sleep(Duration::from_millis(10));
        };
        ctx.step(format!("the server has {count} threads"));
        if count <= most {
            return Ok(());
        }
        Err(Failure::new(format!(
            "with {CLIENTS} connections open, --max-connections {MAX_CONNECTIONS} and \
             --workers {WORKERS}, the server has {count} threads; at most {most} are expected"
        ))
        .hint(format!(
            "A thread per connection with no cap grows without bound: whoever opens \
             connections decides how many threads your server runs. Start each \
             connection's thread with `connections.start` (TODO 1 in {SERVER_FILE}; it \
             waits while the cap is reached, see {CONNECTIONS_FILE}), not `thread::spawn`, \
             and start --workers threads once (TODO 2 in {POOL_FILE})."
        )))
    };
    count_threads(ctx)?;
    ctx.step("each client in turn asks COUNT and quits; the next is then served");
    for (number, conn) in clients.iter_mut().enumerate() {
        // Counted again once a few have left: by then a server without a
        // cap has surely accepted every connection.
        if number == 20 {
            count_threads(ctx)?;
        }
        conn.send(b"COUNT\nQUIT\n")?;
        conn.expect(b"OK\nOK 0\nBYE\n").map_err(|failure| {
            failure.more_hint(format!(
                "Client {number} of {CLIENTS} was not served. Past the cap, connections wait \
                 in the system's listen queue until one closes; none may be dropped."
            ))
        })?;
    }
    Ok(())
}

fn slow_and_silent(ctx: &mut Ctx) -> Check<()> {
    let idle = Duration::from_millis(500);
    let server = ctx.start_server(&["--workers", "2", "--idle-timeout", "0.5"])?;
    let patience = ctx.patience().reply;
    ctx.step("a silent client connects; a slow one sends `USER slow\\n` a byte at a time");
    let mut silent = Conn::connect(server.addr, ctx.journal(), idle + patience)?;
    let mut slow = Conn::connect(server.addr, ctx.journal(), idle + patience)?;
    let started = Instant::now();
    let mut dripper = slow.try_clone()?;
    let (stop, stopped) = mpsc::channel::<()>();
    thread::scope(|scope| {
        // One byte each 100 ms: a request that never completes in time,
        // though no read waits longer than a fifth of the idle timeout.
        // It stops with the stage, rather than send into a closed
        // connection until the server's reset ends it.
        scope.spawn(move || {
            for byte in b"USER slow\n" {
                if dripper.send(std::slice::from_ref(byte)).is_err()
                    || stopped.recv_timeout(Duration::from_millis(100))
                        != Err(RecvTimeoutError::Timeout)
                {
                    break;
                }
            }
        });
        let result =
            silent_and_slow_closed(ctx, server.addr, idle, started, &mut silent, &mut slow);
        drop(stop);
        result
    })
}

/// The silent client keeps its connection for now, a third is served, then
/// the silent and the slow client are closed at the idle timeout.
fn silent_and_slow_closed(
    ctx: &Ctx,
    addr: std::net::SocketAddr,
    idle: Duration,
    started: Instant,
    silent: &mut Conn,
    slow: &mut Conn,
) -> Check<()> {
    let patience = ctx.patience().reply;
    // Checked here, while it is sure to be early: after the third
    // client's exchange, a slow machine could make "at once" look late.
    silent.expect_quiet(idle / 4).map_err(|failure| {
        failure.hint(format!(
            "The idle timeout is 0.5 s here: a client that has sent nothing for less than \
             that keeps its connection (TODO 3 in {READER_FILE})."
        ))
    })?;
    ctx.step("with --workers 2, a third client must still be served");
    let mut third = Conn::connect(addr, ctx.journal(), idle + patience)?;
    third.send(b"USER third\nCOUNT\n")?;
    third.expect(b"OK\nOK 0\n").map_err(|failure| {
        failure.more_hint(format!(
            "The slow and the silent client have sent no whole request: they hold their \
             own threads, and no worker (TODO 1 in {SERVER_FILE}). After the idle \
             timeout (0.5 s here) they are closed: TODO 3 in {READER_FILE}."
        ))
    })?;
    for (who, conn) in [("silent", silent), ("slow", slow)] {
        expect_dropped(conn, idle + patience).map_err(|failure| {
            failure.hint(format!(
                "A client whose next request does not arrive whole within --idle-timeout \
                 is closed: the {who} client was not. Give the whole request a deadline \
                 (TODO 3 in {READER_FILE}): a timeout per read alone lets a client that \
                 sends a byte every so often stay forever."
            ))
        })?;
        if started.elapsed() < idle / 2 {
            return Err(Failure::new(format!(
                "the {who} client was closed after {:.2}s, before the idle timeout of 0.5 s",
                started.elapsed().as_secs_f64()
            )));
        }
    }
    Ok(())
}

/// Wait for the server to close `conn` (after an `ERR` line, or at once);
/// a reset counts as closed. `conn` must have been opened with at least this
/// patience: a read that timed out sooner would look like a close.
fn expect_dropped(conn: &mut Conn, patience: Duration) -> Check<()> {
    let started = Instant::now();
    let mut received = Vec::new();
    loop {
        match conn.read_exact(1) {
            Ok(byte) => {
                received.extend_from_slice(&byte);
                if received.len() > MAX_LINE
                    || !b"ERR ".starts_with(&received[..received.len().min(4)])
                {
                    return Err(conn
                        .fail("the server sent something other than an ERR line before closing")
                        .bytes(b"ERR <reason>\n", &received));
                }
            }
            Err(failure) if started.elapsed() + Duration::from_millis(50) >= patience => {
                return Err(conn
                    .fail(format!(
                        "the connection was not closed within {:.1}s",
                        started.elapsed().as_secs_f64()
                    ))
                    .detail(failure.what.clone()));
            }
            Err(_) => return Ok(()),
        }
    }
}

fn graceful_shutdown(ctx: &mut Ctx) -> Check<()> {
    let data = ctx.temp_dir()?.to_string_lossy().into_owned();
    let stopping = stop_during_requests(ctx, &data)?;
    // While that server gives frank's half request its grace, a second
    // server is stopped under a flood of requests: the two share nothing.
    stop_while_a_client_keeps_asking(ctx)?;
    let mut sent = stopping.finish(ctx)?;

    ctx.step("restarted with the same --data: bob fetches every acknowledged message");
    let server = ctx.start_server(&["--data", &data])?;
    let mut bob = ctx.connect(server.addr)?;
    bob.send(b"USER bob\nFETCH\n")?;
    sent.sort();
    let mut expected = format!("OK\nMSGS {}\n", sent.len()).into_bytes();
    for (id, from, body) in &sent {
        expected.extend_from_slice(format!("MSG {id} {from} {}\n{body}", body.len()).as_bytes());
    }
    bob.expect(&expected).map_err(|failure| {
        failure.more_hint(
            "Every message acknowledged with `OK <id>` must survive the stop, and none that \
             was not acknowledged (frank's half of one) may be delivered.",
        )
    })
}

/// The grace the stage gives its servers: short, so that the stage is, and
/// long enough for alice's last request on a busy machine.
const GRACE: &str = "0.5";

/// A message acknowledged to bob: its id, who sent it, its body.
type Acknowledged = (u64, &'static str, String);

/// A server stopped by SIGTERM, whose idle and half-sent clients are still to
/// be closed: carol and frank.
struct Stopping {
    server: ProcessId,
    stopped_at: Instant,
    carol: Conn,
    frank: Conn,
    /// Alice's acknowledged messages.
    sent: Vec<Acknowledged>,
}

/// SIGTERM while alice is half-way through a SEND, carol is idle and frank
/// has sent half a request and stalls; alice's SEND is answered, and her
/// connection closed.
fn stop_during_requests(ctx: &mut Ctx, data: &str) -> Check<Stopping> {
    let server = ctx.start_server(&["--data", data, "--workers", "4", "--grace", GRACE])?;
    let patience = ctx.patience();
    let mut alice = ctx.connect(server.addr)?;
    alice.send(b"USER alice\n")?;
    alice.expect(b"OK\n")?;
    let mut sent = Vec::new();
    for number in 0..3 {
        let body = format!("before the stop, {number}");
        alice.send(format!("SEND bob {}\n{body}", body.len()).as_bytes())?;
        sent.push((expect_id(&mut alice)?, "alice", body));
    }
    ctx.step("carol connects and stays idle");
    let mut carol = Conn::connect(server.addr, ctx.journal(), patience.exit)?;
    carol.send(b"USER carol\n")?;
    carol.expect(b"OK\n")?;
    ctx.step("frank sends half a request, `SEND bob 10\\nhalf`, and stalls");
    let mut frank = Conn::connect(server.addr, ctx.journal(), patience.exit)?;
    frank.send(b"USER frank\nSEND bob 10\nhalf")?;
    frank.expect(b"OK\n")?;
    ctx.step("alice begins a SEND: its line and half its body");
    alice.send(b"COUNT\nSEND bob 10\nhello")?;
    alice.expect(b"OK 0\n")?;

    ctx.step("SIGTERM, then the rest of alice's body");
    let stopped_at = send_sigterm(ctx, server.id)?;
    alice.send(b"world")?;
    let id = expect_id(&mut alice).map_err(stop_hint)?;
    sent.push((id, "alice", "helloworld".to_string()));
    expect_dropped(&mut alice, patience.reply).map_err(stop_hint)?;
    Ok(Stopping {
        server: server.id,
        stopped_at,
        carol,
        frank,
        sent,
    })
}

impl Stopping {
    /// Carol's and frank's connections are closed, and the server exits 0.
    /// Returns alice's acknowledged messages.
    fn finish(mut self, ctx: &mut Ctx) -> Check<Vec<Acknowledged>> {
        let patience = ctx.patience();
        ctx.step("the first server: carol's idle connection is closed");
        // An idle connection looks whether the server is stopping once a
        // second, or once a grace if that is shorter.
        expect_dropped(&mut self.carol, patience.exit).map_err(stop_hint)?;
        ctx.step(
            "the first server: frank's half request gets a short grace, then his connection \
             is closed",
        );
        expect_dropped(&mut self.frank, patience.exit).map_err(|failure| {
            failure.more_hint(
                "A request begun before the stop gets a short grace (--grace, 0.5 s here), \
                 not the whole idle timeout: a client that stalls half-way must not hold up \
                 the shutdown.",
            )
        })?;
        wait_for_clean_exit(ctx, self.server, self.stopped_at)?;
        Ok(self.sent)
    }
}

/// SIGTERM while dave floods the server with COUNTs, sending without waiting
/// for the replies: whenever the server looks, more of his requests have
/// arrived. The server must close his connection and exit all the same.
fn stop_while_a_client_keeps_asking(ctx: &mut Ctx) -> Check<()> {
    ctx.step(
        "meanwhile, a second server; dave sends COUNT after COUNT without waiting for the \
         replies",
    );
    let server = ctx.start_server(&["--grace", GRACE])?;
    let patience = ctx.patience();
    let mut dave = ctx.connect(server.addr)?;
    dave.send(b"USER dave\n")?;
    dave.expect(b"OK\n")?;
    let mut asking = dave.try_clone()?;
    let enough = AtomicBool::new(false);
    let (replies, stopped_at) = thread::scope(|scope| {
        let (going, started) = mpsc::channel();
        let enough = &enough;
        scope.spawn(move || {
            // A send that fails: the server closed the connection.
            while !enough.load(Ordering::SeqCst) && asking.send(&b"COUNT\n".repeat(64)).is_ok() {}
        });
        let reading = scope.spawn(move || read_replies(&mut dave, &going, enough));
        let stopped = (|| {
            if started.recv_timeout(patience.reply).is_err() {
                return Err(Failure::new("dave's first COUNTs were not answered"));
            }
            ctx.step("SIGTERM, while dave goes on sending");
            let stopped_at = send_sigterm(ctx, server.id)?;
            wait_for_clean_exit(ctx, server.id, stopped_at)?;
            Ok(stopped_at)
        })();
        // Whatever happened, dave stops now; his own failure first, as it
        // says more than the wait it caused.
        enough.store(true, Ordering::SeqCst);
        let replies = reading.join().expect("dave's thread does not panic")?;
        Ok::<_, Failure>((replies, stopped?))
    })?;
    ctx.step(format!(
        "dave had {} COUNTs answered, {} of them after SIGTERM",
        replies.total,
        replies.total - replies.before(stopped_at)
    ));
    Ok(())
}

fn send_sigterm(ctx: &mut Ctx, server: ProcessId) -> Check<Instant> {
    let stopped_at = Instant::now();
    if ctx.process(server).request_stop() {
        Ok(stopped_at)
    } else {
        Err(Failure::new(
            "the server had exited before SIGTERM could be sent",
        ))
    }
}

fn stop_hint(failure: Failure) -> Failure {
    failure.more_hint(format!(
        "On SIGTERM: stop accepting, let each request already begun finish and get its \
         reply, close idle connections, wait for the workers, exit 0 (TODO 4 in \
         {SERVER_FILE})."
    ))
}

/// The server must exit 0, and soon after SIGTERM.
fn wait_for_clean_exit(ctx: &mut Ctx, server: ProcessId, stopped_at: Instant) -> Check<()> {
    let patience = ctx.patience().exit;
    match ctx.process(server).wait_exit(stopped_at + patience) {
        Some(status) if status.success() => {
            ctx.step(format!(
                "it exited 0, {:.2}s after SIGTERM",
                stopped_at.elapsed().as_secs_f64()
            ));
            Ok(())
        }
        Some(status) => Err(stop_hint(Failure::new(format!(
            "after SIGTERM the server exited with {status}; a graceful stop exits 0"
        )))),
        None => Err(Failure::new(format!(
            "the server was still running {:.0}s after SIGTERM",
            patience.as_secs_f64()
        ))
        .hint(format!(
            "Once stopping, a worker serves what had already arrived and closes: it does \
             not wait for more (a client that keeps sending would keep the server alive), \
             and a request in progress gets a short grace, not the idle timeout. See \
             {READER_FILE}."
        ))),
    }
}

/// How many replies dave read, and when.
struct Replies {
    total: usize,
    /// (when, how many so far), after each read.
    times: Vec<(Instant, usize)>,
}

impl Replies {
    fn before(&self, instant: Instant) -> usize {
        self.times
            .iter()
            .take_while(|(at, _)| *at <= instant)
            .last()
            .map_or(0, |&(_, count)| count)
    }
}

/// Dave's replies: `OK 0\n` each, until the server closes the connection or
/// the stage has seen `enough`. Tells `going` once a few came.
fn read_replies(conn: &mut Conn, going: &mpsc::Sender<()>, enough: &AtomicBool) -> Check<Replies> {
    const REPLY: &[u8] = b"OK 0\n";
    let mut replies = Replies {
        total: 0,
        times: Vec::new(),
    };
    let mut position = 0;
    let mut told = false;
    while !enough.load(Ordering::SeqCst) {
        // A read that fails: the server closed the connection (or reset it,
        // as it does when it closes with requests of dave's still unread).
        let Ok(Some(bytes)) = conn.read_any(64 * 1024) else {
            break;
        };
        for (index, &byte) in bytes.iter().enumerate() {
            if byte != REPLY[position % REPLY.len()] {
                let start = index.saturating_sub(position % REPLY.len());
                return Err(conn
                    .fail("dave's COUNT was not answered `OK 0`")
                    .bytes(REPLY, &bytes[start..(start + REPLY.len()).min(bytes.len())]));
            }
            position += 1;
        }
        replies.total = position / REPLY.len();
        replies.times.push((Instant::now(), replies.total));
        if replies.total >= 3 && !told {
            told = going.send(()).is_ok();
        }
    }
    Ok(replies)
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let server = start_server_at_chosen_address(ctx, &[])?;
    let mut conn = ctx.connect(server.addr)?;
    expect_fresh_mailbox(&mut conn, "alice")
}

/// How many slow clients the slowloris stage opens, and what each sends, a byte
/// at a time: the start of a request line, never its end.
const SLOW_CLIENTS: usize = 300;
const DRIP: &[u8] = b"USER slowloris";
/// How often each sends its next byte: far more often than any deadline
/// below (six times in `SHORT_IDLE`), so that only a deadline for the whole
/// request closes them.
const DRIP_EVERY: Duration = Duration::from_millis(50);
/// They connect this many at a time, fewer than the system's listen queue
/// holds (128 with Rust's `TcpListener::bind`).
const BATCH: usize = 50;
/// The short request deadline that the stage's second server is given.
const SHORT_IDLE: Duration = Duration::from_millis(300);

/// A slow client of the slowloris stage: its connection, and when it began to
/// connect (the server's deadline for it cannot start sooner).
struct Slow {
    conn: Conn,
    started: Instant,
}

/// Two servers, each behind slow clients of its own, at the same time: one
/// with the default options, where a worker held by a slow client would
/// show; one with a short --idle-timeout, to see the slow clients closed.
fn slowloris(ctx: &mut Ctx) -> Check<()> {
    let idle = SHORT_IDLE.as_secs_f64().to_string();
    ctx.step(format!(
        "two servers: A with the default options, B with --idle-timeout {idle}, to see the \
         slow clients closed; both at the same time"
    ));
    let patient = ctx.start_server(&[])?;
    let strict = ctx.start_server(&["--idle-timeout", &idle])?;
    let (journal, patience) = (ctx.journal(), ctx.patience());
    // Closing 300 connections at once on a busy machine may take a while;
    // a server without a whole-request deadline never closes them at all.
    let close_within = patience.exit;
    thread::scope(|scope| {
        let on_a =
            scope.spawn(|| behind_slow_clients(journal, patience, "A", patient.addr, |_| Ok(())));
        let on_b = behind_slow_clients(journal, patience, "B", strict.addr, |slow| {
            not_closed_before_its_deadline(journal, strict.addr, SHORT_IDLE, close_within)?;
            closed_at_their_deadline(slow, SHORT_IDLE, close_within)
        });
        on_a.join().expect("server A's slow clients do not panic")?;
        on_b
    })
}

/// Open the slow clients of server `name`, let each send a byte each
/// `DRIP_EVERY`, and once each has sent two, check that a new client is
/// answered within a second; then `then`, while they go on sending.
fn behind_slow_clients(
    journal: &Journal,
    patience: Patience,
    name: &str,
    addr: std::net::SocketAddr,
    then: impl FnOnce(&mut [Slow]) -> Check<()>,
) -> Check<()> {
    // Long enough for any wait on them below.
    let wait = SHORT_IDLE + patience.exit;
    journal.step(format!(
        "server {name}: {SLOW_CLIENTS} clients connect, and each sends {} a byte each {} ms, \
         never a whole request",
        course::harness::escape::escape(DRIP),
        DRIP_EVERY.as_millis()
    ));
    let mut slow = Vec::with_capacity(SLOW_CLIENTS);
    let mut senders = Vec::with_capacity(SLOW_CLIENTS);
    for _ in 0..SLOW_CLIENTS / BATCH {
        for _ in 0..BATCH {
            let started = Instant::now();
            let mut conn = Conn::connect(addr, journal, wait)?;
            conn.send(&DRIP[..1])?;
            senders.push(conn.try_clone()?);
            slow.push(Slow { conn, started });
        }
        // A client that is answered was accepted after every connection
        // before it: the server holds them all, each under its deadline.
        // Without this, a server slow to accept leaves some in the system's
        // queue, where the system drops the end of a handshake once the
        // queue is full and completes it a second or more later.
        journal.step(format!(
            "server {name}: {} slow clients are connected; a client that says QUIT is answered",
            slow.len()
        ));
        let mut quitter = Conn::connect(addr, journal, patience.exit)?;
        quitter.send(b"QUIT\n")?;
        quitter
            .expect(b"BYE\n")
            .map_err(|failure| failure.more_hint(slowloris_hint()))?;
    }
    let (stop, stopped) = mpsc::channel::<()>();
    let (dripped, second_byte_sent) = mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(move || drip(senders, &stopped, &dripped));
        let result = (|| {
            if second_byte_sent.recv_timeout(wait).is_err() {
                return Err(Failure::new(format!(
                    "the slow clients of server {name} could not send their second byte"
                )));
            }
            new_client_answered_in_a_second(journal, patience, name, addr)?;
            then(&mut slow)
        })();
        drop(stop);
        result
    })
}

/// Send the next byte of `DRIP` on each connection each `DRIP_EVERY`, until
/// `stopped`; say on `dripped` when the second byte has gone out on all.
fn drip(mut senders: Vec<Conn>, stopped: &mpsc::Receiver<()>, dripped: &mpsc::Sender<()>) {
    for position in 1.. {
        if stopped.recv_timeout(DRIP_EVERY) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        // A send fails once the server has closed that connection.
        senders.retain_mut(|conn| conn.send(&[DRIP[position % DRIP.len()]]).is_ok());
        let _ = dripped.send(());
    }
}

fn new_client_answered_in_a_second(
    journal: &Journal,
    patience: Patience,
    name: &str,
    addr: std::net::SocketAddr,
) -> Check<()> {
    let one_second = patience.reply / 2;
    journal.step(format!(
        "server {name}: each slow client has sent 2 bytes; a new client connects and has \
         {:.1}s to be answered",
        one_second.as_secs_f64()
    ));
    let hint = slowloris_hint();
    let started = Instant::now();
    let mut client = Conn::connect(addr, journal, one_second)?;
    client.send(b"USER prompt\nCOUNT\n")?;
    client
        .expect(b"OK\nOK 0\n")
        .map_err(|failure| failure.more_hint(&hint))?;
    let took = started.elapsed();
    if took > one_second {
        return Err(Failure::new(format!(
            "the new client of server {name} was answered after {:.2}s, not within {:.1}s",
            took.as_secs_f64(),
            one_second.as_secs_f64()
        ))
        .hint(hint));
    }
    journal.step(format!(
        "server {name}: it was answered in {:.3}s",
        took.as_secs_f64()
    ));
    Ok(())
}

fn slowloris_hint() -> String {
    format!(
        "Each slow client holds half a request (this is slowloris). A worker must never \
         wait for a client: each connection's own thread reads until a whole request has \
         come (TODO 1 in {SERVER_FILE}), and only then hands it to a worker. If the workers \
         read the requests, the slow clients hold every one of them, and the next client \
         waits for their deadline."
    )
}

/// One more slow client, watched from its first byte: open at least 90% of
/// `idle` while it drips, and closed by `idle` and `patience`. The 300 take
/// longer than `idle` to connect, so theirs cannot show an early close.
fn not_closed_before_its_deadline(
    journal: &Journal,
    addr: std::net::SocketAddr,
    idle: Duration,
    patience: Duration,
) -> Check<()> {
    journal.step(format!(
        "server B: one more slow client, watched from its first byte: it sends a byte each {} \
         ms and must stay open for {:.2}s",
        DRIP_EVERY.as_millis(),
        idle.mul_f64(0.9).as_secs_f64()
    ));
    let started = Instant::now();
    let mut watched = Conn::connect(addr, journal, patience)?;
    for &byte in DRIP.iter().cycle() {
        let open_for = started.elapsed();
        if open_for >= idle.mul_f64(0.9) {
            break;
        }
        let quiet = watched
            .send(&[byte])
            .and_then(|()| watched.expect_quiet(DRIP_EVERY));
        if quiet.is_err() {
            return Err(Failure::new(format!(
                "a slow client was closed {:.2}s after it connected, before its deadline of \
                 {}s",
                started.elapsed().as_secs_f64(),
                idle.as_secs_f64()
            ))
            .hint(
                "A client that is sending its request, however slowly, has until the \
                 deadline to finish it: count --idle-timeout from the start of the wait.",
            ));
        }
    }
    Ok(())
}

/// Each slow client must be closed at its deadline, `idle` after it
/// connected: not much after (`not_closed_before_its_deadline` checks that
/// none is closed before).
fn closed_at_their_deadline(slow: &mut [Slow], idle: Duration, patience: Duration) -> Check<()> {
    for (number, client) in slow.iter_mut().enumerate() {
        let deadline = client.started + idle + patience;
        expect_dropped(
            &mut client.conn,
            deadline.saturating_duration_since(Instant::now()),
        )
        .map_err(|failure| {
            failure.hint(format!(
                "Slow client {number} of {SLOW_CLIENTS} was not closed within {:.1}s of \
                 connecting, with --idle-timeout {}. Its request must arrive whole by the \
                 deadline, counted from the start of the wait, not from its last byte: a \
                 timeout per read never fires for a client that sends a byte each {} ms. \
                 See TODO 3 in {READER_FILE}.",
                client.started.elapsed().as_secs_f64(),
                idle.as_secs_f64(),
                DRIP_EVERY.as_millis()
            ))
        })?;
    }
    Ok(())
}
