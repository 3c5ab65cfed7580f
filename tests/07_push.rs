//! Lesson 07, push: the stages, in the order you build them.
//!
//!     cargo test --test 07_push                  your code in lessons/07-push
//!     cargo test --test 07_push store            one stage
//!     COURSE_TARGET=solutions cargo test --test 07_push
//!
//! The stages play every part the program does not: a push service for the
//! device to register with, a device for the service to push to, senders,
//! forgers. All of it over real TCP connections on 127.0.0.1, and, in the
//! last stage, across network namespaces joined by a router that does NAT.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::ctx::{output_block, ProcessId, Server};
use course::harness::local;
use course::harness::mailbox::expect_id;
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_07-push"),
        solutions: option_env!("CARGO_BIN_EXE_07-push-solution"),
    };
    course::run_stages("07", programs, &STAGES);
}

const STAGES: [Stage; 14] = [
    Stage {
        slug: "registers",
        title: "the device listens on its own socket and registers its callback",
        slide: "The client as server",
        check: registers,
        runs_alone: false,
    },
    Stage {
        slug: "delivers",
        title: "the service connects to the device and delivers; the device acknowledges",
        slide: "Delivery by callback",
        check: delivers,
        runs_alone: false,
    },
    Stage {
        slug: "at-once",
        title: "a push reaches the device's screen within 100 ms of SEND",
        slide: "Push against polling",
        check: at_once,
        runs_alone: false,
    },
    Stage {
        slug: "authentic",
        title: "forged pushes and unknown keys are refused; a name needs its token",
        slide: "Who may push",
        check: authentic,
        runs_alone: false,
    },
    Stage {
        slug: "store-and-forward",
        title: "device away, 5 notifications, device back: all 5, in order, once",
        slide: "Store and forward",
        check: store_and_forward,
        runs_alone: false,
    },
    Stage {
        slug: "bounded-queue",
        title: "at most 100 wait per device; the device is told how many it lost",
        slide: "Store and forward",
        check: bounded_queue,
        runs_alone: false,
    },
    Stage {
        slug: "ttl-and-collapse",
        title: "a notification past its TTL is never delivered; collapse keys replace",
        slide: "Time to live, collapse keys",
        check: ttl_and_collapse,
        runs_alone: false,
    },
    Stage {
        slug: "lost-ack",
        title: "an acknowledgement lost: the service sends again, the device shows it once",
        slide: "At least once, shown once",
        check: lost_ack,
        runs_alone: false,
    },
    Stage {
        slug: "durable",
        title: "with --data, an accepted notification survives SIGKILL of the service",
        slide: "What OK promises",
        check: durable,
        runs_alone: false,
    },
    Stage {
        slug: "the-device",
        title: "notifications print while the user types, and `to bob:` reaches bob",
        slide: "The device does three things at once",
        check: the_device,
        runs_alone: false,
    },
    Stage {
        slug: "unreachable",
        title: "a callback nobody answers: stored, marked unreachable within 1 s, others served",
        slide: "When the callback cannot be reached",
        check: unreachable,
        runs_alone: false,
    },
    Stage {
        slug: "python-device",
        title: "a device in Python, written from the README alone, gets its pushes",
        slide: "One protocol, two languages",
        check: python_device,
        runs_alone: false,
    },
    Stage {
        slug: "behind-nat",
        title: "behind a real NAT the callback cannot be reached; notifications wait",
        slide: "Behind NAT: why lesson 08",
        check: behind_nat,
        runs_alone: false,
    },
    Stage {
        slug: "binds-where-asked",
        title: "the service listens on the address given with --bind, and serves there",
        slide: "Try it by hand",
        check: binds_where_asked,
        runs_alone: false,
    },
];

const DEVICE_FILE: &str = "lessons/07-push/device.rs";
const DELIVERY_FILE: &str = "lessons/07-push/delivery.rs";
const SERVICE_FILE: &str = "lessons/07-push/service.rs";

/// The key the service accepts when it is given none (README.md).
pub const DEMO_KEY: &str = "demo-key";
/// The longest line a stage reads.
const LINE_LIMIT: usize = 1024;

// ---------------------------------------------------------------------------
// The test as a device: its own listener, registered with the service.

/// A device the test plays: registered at its own listener.
struct FakeDevice {
    name: String,
    token: String,
    /// `None` while the device is away: its callback refuses connections.
    listener: Option<TcpListener>,
}

/// What came on a push connection.
#[derive(Debug, PartialEq)]
enum Frame {
    Push {
        id: u64,
        from: String,
        body: Vec<u8>,
    },
    Lost(u64),
}

/// Register `name` with the service at a listener of the test's own.
fn register_fake(ctx: &Ctx, service: SocketAddr, name: &str) -> Check<FakeDevice> {
    let (listener, callback) = local::listener()?;
    ctx.step(format!("the test, as device {name}, listens on {callback}"));
    let mut conn = ctx.connect(service)?;
    conn.send(format!("REGISTER {name} {callback}\n").as_bytes())?;
    let token = expect_token(&mut conn)?;
    Ok(FakeDevice {
        name: name.to_string(),
        token,
        listener: Some(listener),
    })
}

impl FakeDevice {
    /// Close the listener: the callback now refuses every connection.
    fn go_away(&mut self, ctx: &Ctx) {
        ctx.step(format!("{} goes away: its callback now refuses", self.name));
        self.listener = None;
    }

    /// Come back on a new listener, and register it with the token.
    fn come_back(&mut self, ctx: &Ctx, service: SocketAddr) -> Check<()> {
        let (listener, callback) = local::listener()?;
        ctx.step(format!("{} comes back, listening on {callback}", self.name));
        let mut conn = ctx.connect(service)?;
        conn.send(format!("REGISTER {} {callback} {}\n", self.name, self.token).as_bytes())?;
        conn.expect(format!("OK {}\n", self.token).as_bytes())
            .map_err(|failure| {
                failure.hint(
                    "A device that registers again with its token keeps its name and its \
                     token: the service answers `OK <the same token>`.",
                )
            })?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Accept push connections until `count` frames have come, answering
    /// each with its ACK; `within` bounds the wait for each connection.
    fn receive(&self, ctx: &Ctx, count: usize, within: Duration) -> Check<Vec<Frame>> {
        let mut frames = Vec::new();
        while frames.len() < count {
            let mut conn = self.accept(ctx, within).map_err(|mut failure| {
                if !frames.is_empty() {
                    failure.what = format!(
                        "{} frames of the {count} expected came, then {}",
                        frames.len(),
                        failure.what
                    );
                }
                failure
            })?;
            while let Some(frame) = self.read_frame(&mut conn)? {
                let ack = match &frame {
                    Frame::Push { id, .. } => format!("ACK {id}\n"),
                    Frame::Lost(_) => "ACK LOST\n".to_string(),
                };
                conn.send(ack.as_bytes())?;
                frames.push(frame);
                if frames.len() == count {
                    break;
                }
            }
        }
        Ok(frames)
    }

    /// The next push connection from the service.
    fn accept(&self, ctx: &Ctx, within: Duration) -> Check<Conn> {
        let listener = self.listener.as_ref().expect("the device is here");
        let deadline = Instant::now() + within;
        local::accept_conn(listener, deadline, ctx.journal(), ctx.patience().reply).ok_or_else(
            || {
                Failure::new(format!(
                    "the service did not connect to {}'s callback within {:.1} s",
                    self.name,
                    within.as_secs_f64()
                ))
                .hint(format!(
                    "When a notification waits for a device with a callback, the service \
                     connects to that address and sends `PUSH <token> <id> <from> <length>` \
                     and the body. Where: TODO 2 in {DELIVERY_FILE}, fn deliver."
                ))
            },
        )
    }

    /// One frame, checked against our token; `None` once the service closes.
    fn read_frame(&self, conn: &mut Conn) -> Check<Option<Frame>> {
        let line = match conn.read_line(LINE_LIMIT) {
            Ok(line) => line,
            Err(failure) if failure.what.contains("closed before a whole line") => return Ok(None),
            Err(failure) => return Err(failure),
        };
        let text = String::from_utf8_lossy(&line);
        let words: Vec<&str> = text.trim_end().split(' ').collect();
        let frame = match words.as_slice() {
            ["PUSH", token, id, from, length] if *token == self.token => {
                match (id.parse(), length.parse::<usize>()) {
                    (Ok(id), Ok(length)) if length <= 4096 => Some(Frame::Push {
                        id,
                        from: from.to_string(),
                        body: conn.read_exact(length)?,
                    }),
                    _ => None,
                }
            }
            ["LOST", token, count] if *token == self.token => count.parse().ok().map(Frame::Lost),
            _ => None,
        };
        frame.map(Some).ok_or_else(|| {
            conn.fail(
                "the service sent a frame that is not a PUSH or LOST with this device's token",
            )
            .bytes(
                format!("PUSH {} <id> <from> <length>\\n", self.token).as_bytes(),
                &line,
            )
            .hint(
                "A push starts with `PUSH`, the device's token (the one REGISTER \
                     answered), the notification's id, its sender and the body's length; \
                     then the body.",
            )
        })
    }
}

/// Read `OK <token>`, a token being 32 hex digits.
fn expect_token(conn: &mut Conn) -> Check<String> {
    let line = conn.read_line(LINE_LIMIT)?;
    let text = String::from_utf8_lossy(&line);
    match text.strip_prefix("OK ").map(str::trim_end) {
        Some(token) if token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(token.to_string())
        }
        _ => Err(conn
            .fail("REGISTER should be answered `OK <token>`, 32 hex digits")
            .bytes(b"OK <32 hex digits>\n", &line)
            .hint(format!(
                "The token is 128 random bits, written as 32 hex digits. Where: {SERVICE_FILE}, \
                 fn register."
            ))),
    }
}

// ---------------------------------------------------------------------------
// The test as a sender, and as an observer of the service.

/// `SEND` a notification on `conn` and return its id.
fn send_note(conn: &mut Conn, to: &str, ttl: &str, collapse: &str, body: &str) -> Check<u64> {
    let request = format!(
        "SEND {DEMO_KEY} {to} {ttl} {collapse} {}\n{body}",
        body.len()
    );
    conn.send(request.as_bytes())?;
    expect_id(conn)
}

/// Ask `STATUS` until it says `state` and `pending`, or fail at `deadline`.
fn wait_status(
    conn: &mut Conn,
    name: &str,
    state: &str,
    pending: usize,
    deadline: Instant,
) -> Check<Duration> {
    let started = Instant::now();
    let wanted = format!("OK {state} {pending}\n");
    loop {
        conn.send(format!("STATUS {DEMO_KEY} {name}\n").as_bytes())?;
        let line = conn.read_line(LINE_LIMIT)?;
        if line == wanted.as_bytes() {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(conn
                .fail(format!(
                    "the service's STATUS for {name} did not come to `{}` in time",
                    wanted.trim_end()
                ))
                .bytes(wanted.as_bytes(), &line));
        }
        // Often enough to time an answer and to end a stage soon after the
        // state comes, seldom enough to leave the service to its work.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until every notification for `name` has been delivered: the
/// service says `reachable 0`, having forgotten each one it got an ACK for.
fn nothing_waits(ctx: &Ctx, conn: &mut Conn, name: &str) -> Check<Duration> {
    wait_status(
        conn,
        name,
        "reachable",
        0,
        Instant::now() + ctx.patience().seconds(2.0),
    )
}

/// The bodies of the pushes in `frames`, checking ids and order.
fn expect_pushes(frames: &[Frame], wanted: &[(u64, &str)], what: &str) -> Check<()> {
    let got: Vec<(u64, String)> = frames
        .iter()
        .filter_map(|frame| match frame {
            Frame::Push { id, body, .. } => Some((*id, String::from_utf8_lossy(body).into_owned())),
            Frame::Lost(_) => None,
        })
        .collect();
    let wanted: Vec<(u64, String)> = wanted
        .iter()
        .map(|(id, text)| (*id, text.to_string()))
        .collect();
    if got == wanted {
        return Ok(());
    }
    // A long list is shown from a little before where it first differs.
    let first_difference = wanted.iter().zip(&got).take_while(|(a, b)| a == b).count();
    let skip = first_difference.saturating_sub(2);
    let show = |list: &[(u64, String)]| {
        let shown: Vec<String> = list
            .iter()
            .skip(skip)
            .take(8)
            .map(|(id, text)| format!("#{id} {text:?}"))
            .collect();
        let before = if skip > 0 { "..., " } else { "" };
        let after = if list.len() > skip + 8 { ", ..." } else { "" };
        format!(
            "{before}{}{after} ({} in all)",
            shown.join(", "),
            list.len()
        )
    };
    Err(Failure::new(format!(
        "{what}: the pushes were not the ones expected, from push {} of the list on",
        first_difference + 1
    ))
    .detail(format!(
        "expected: {}\nreceived: {}",
        show(&wanted),
        show(&got)
    )))
}

// ---------------------------------------------------------------------------
// The device under test.

/// Start `device --name NAME --connect SERVICE`, with its token file in a
/// folder of the stage's own.
fn start_device(ctx: &mut Ctx, service: SocketAddr, name: &str) -> Check<Server> {
    let token_file = new_token_file(ctx)?;
    start_device_keeping(ctx, service, name, &token_file)
}

/// A path for a device's token file, in a folder of the stage's own.
fn new_token_file(ctx: &mut Ctx) -> Check<String> {
    Ok(ctx.temp_dir()?.join("token").to_string_lossy().into_owned())
}

/// Start a device that keeps its token in `token_file`: started again with
/// the same file, it is the same device.
fn start_device_keeping(
    ctx: &mut Ctx,
    service: SocketAddr,
    name: &str,
    token_file: &str,
) -> Check<Server> {
    let service = service.to_string();
    let args = [
        "device",
        "--name",
        name,
        "--bind",
        "127.0.0.1:0",
        "--connect",
        &service,
        "--token-file",
        token_file,
    ];
    ctx.start_server_with(&args).map_err(|failure| {
        failure.more_hint(format!(
            "The device binds a listening socket of its own and prints `listening on \
             IP:PORT` for it first, before it registers. Where: TODO 1 in {DEVICE_FILE}, \
             fn run."
        ))
    })
}

/// Wait until the device has written its token in `token_file`.
fn kept_token(ctx: &mut Ctx, token_file: &str) -> Check<()> {
    ctx.step(format!(
        "waited for the device to keep its token in {token_file}"
    ));
    let deadline = Instant::now() + ctx.patience().seconds(2.0);
    loop {
        let kept = std::fs::read_to_string(token_file).unwrap_or_default();
        if kept.ends_with('\n') && kept.trim().len() == 32 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(format!(
                "registered, the device did not keep its token in {token_file} within 2 s"
            ))
            .hint(format!(
                "Once the service answers `OK <token>`, the device writes the token, and a \
                 newline, in --token-file: started again, it proves it is the same device \
                 with it. That happens after TODO 1 in {DEVICE_FILE}, fn run: is the \
                 device stuck there, accepting pushes itself rather than on a thread \
                 (`thread::spawn`) of their own?"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Start a device against the real service, and wait until the service
/// knows it (`STATUS` says `reachable`): the device prints its address
/// before it registers.
fn start_registered_device(ctx: &mut Ctx, service: SocketAddr, name: &str) -> Check<Server> {
    let device = start_device(ctx, service, name)?;
    let mut conn = ctx.connect(service)?;
    let deadline = Instant::now() + ctx.patience().start;
    wait_status(&mut conn, name, "reachable", 0, deadline).map_err(|failure| {
        failure.hint(format!(
            "Once it listens, the device registers with the service: `REGISTER <name> \
             <IP:PORT>`. Where: TODO 1 in {DEVICE_FILE}, fn register."
        ))
    })?;
    Ok(device)
}

/// Wait until the device has printed `line`.
fn wait_shown(ctx: &mut Ctx, device: ProcessId, line: &str, within: Duration) -> Check<Duration> {
    let started = Instant::now();
    let wanted = format!("{line}\n");
    if ctx
        .process(device)
        .wait_for_stdout(wanted.as_bytes(), started + within)
    {
        return Ok(started.elapsed());
    }
    let stdout = ctx.process(device).stdout().text();
    Err(Failure::new(format!(
        "the device did not print `{line}` within {:.2} s",
        within.as_secs_f64()
    ))
    .detail(output_block("the device's stdout", &stdout))
    .hint(format!(
        "The device takes pushes on the socket it listens on: a thread accepts them \
         (`accept_pushes`, TODO 1 in {DEVICE_FILE}, fn run). For each `PUSH` with its \
         token it prints `#<id> from <sender>: <text>` on a line of its own, the moment it \
         comes (TODO 3, fn take_pushes). Where the service is your program, its stderr, \
         above, says whether it reached the device."
    )))
}

fn count_in_stdout(ctx: &mut Ctx, device: ProcessId, piece: &str) -> usize {
    ctx.process(device).stdout().text().matches(piece).count()
}

fn type_into(ctx: &mut Ctx, device: ProcessId, text: &str) -> Check<()> {
    ctx.process(device)
        .write_stdin(text.as_bytes())
        .map_err(|error| Failure::new(format!("the test could not type into the device: {error}")))
}

// ---------------------------------------------------------------------------
// The test as the push service, for the device under test.

/// The test's own push service: a listener the device registers with.
struct FakeService {
    listener: TcpListener,
    addr: SocketAddr,
}

impl FakeService {
    fn new() -> Check<FakeService> {
        let (listener, addr) = local::listener()?;
        Ok(FakeService { listener, addr })
    }

    /// Take the device's REGISTER, check it names `callback`, answer a token.
    fn take_registration(&self, ctx: &mut Ctx, name: &str, callback: SocketAddr) -> Check<String> {
        let token = format!("{:016x}{:016x}", ctx.rng().next_u64(), ctx.rng().next_u64());
        let deadline = Instant::now() + ctx.patience().exit;
        let mut conn = local::accept_conn(
            &self.listener,
            deadline,
            ctx.journal(),
            ctx.patience().reply,
        )
        .ok_or_else(|| {
            Failure::new("the device did not connect to the push service to register").hint(
                format!(
                    "Once it listens, the device connects to the service (--connect) \
                         and sends `REGISTER <name> <IP:PORT>`, the address it printed. \
                         Where: TODO 1 in {DEVICE_FILE}, fn register."
                ),
            )
        })?;
        let wanted = format!("REGISTER {name} {callback}\n");
        let line = conn.read_line(LINE_LIMIT)?;
        if line != wanted.as_bytes() {
            return Err(conn
                .fail("the device's registration is not `REGISTER <name> <its callback>`")
                .bytes(wanted.as_bytes(), &line)
                .hint(format!(
                    "The callback is the address the device listens on, the one it printed. \
                     A device new to the service sends no token. Where: TODO 1 in \
                     {DEVICE_FILE}, fn register."
                )));
        }
        conn.send(format!("OK {token}\n").as_bytes())?;
        Ok(token)
    }
}

/// Push one frame to the device's callback and return its answer line.
fn push_to_device(ctx: &Ctx, callback: SocketAddr, frame: &[u8]) -> Check<Vec<u8>> {
    let mut conn = ctx.connect(callback)?;
    conn.send(frame)?;
    match conn.read_line(LINE_LIMIT) {
        Ok(line) => Ok(line),
        // Closing without a word refuses too.
        Err(failure) if failure.what.contains("closed") => Ok(Vec::new()),
        Err(failure) => Err(failure),
    }
}

// ---------------------------------------------------------------------------
// The stages.

fn registers(ctx: &mut Ctx) -> Check<()> {
    let service = FakeService::new()?;
    ctx.step("the test plays the push service; the device is started against it");
    let device = start_device(ctx, service.addr, "ada")?;
    service.take_registration(ctx, "ada", device.addr)?;
    ctx.step("the test connects to the address the device printed: it must accept");
    let conn = ctx.connect(device.addr).map_err(|failure| {
        failure.more_hint(format!(
            "The device must go on accepting connections on its listening socket after it \
             registered: that is where pushes come. Where: TODO 1 in {DEVICE_FILE}."
        ))
    })?;
    conn.close();
    ctx.expect_running(device.id)
}

fn delivers(ctx: &mut Ctx) -> Check<()> {
    let service = ctx.start_server(&[])?;
    let tester = register_fake(ctx, service.addr, "tester")?;
    let mut sender = ctx.connect(service.addr)?;
    let text = ctx.rng().sentence(4);
    ctx.step("a sender sends tester a notification");
    let id = send_note(&mut sender, "tester", "-", "-", &text)?;
    let frames = tester.receive(ctx, 1, ctx.patience().seconds(2.0))?;
    let wanted = Frame::Push {
        id,
        from: "app".into(),
        body: text.clone().into_bytes(),
    };
    if frames[0] != wanted {
        return Err(Failure::new(format!(
            "the push was {:?}, expected {wanted:?}",
            frames[0]
        )));
    }
    ctx.step("acknowledged: the service forgets it");
    nothing_waits(ctx, &mut sender, "tester").map_err(|failure| {
        failure.hint(format!(
            "After `ACK <id>`, the notification is delivered: the service removes it from \
                 the device's queue. Where: TODO 2 in {DELIVERY_FILE}, fn deliver."
        ))
    })?;

    ctx.step("now the device under test, and the `send` command");
    let device = start_registered_device(ctx, service.addr, "ada")?;
    let text = ctx.rng().sentence(3);
    let addr = service.addr.to_string();
    let sent = ctx.run(&["send", "--connect", &addr, "--to", "ada", &text], b"")?;
    let id = sent
        .stdout
        .trim()
        .strip_prefix("sent #")
        .and_then(|id| id.parse::<u64>().ok())
        .ok_or_else(|| {
            Failure::new("`send` should print `sent #<id>`")
                .detail(output_block("its stdout", &sent.stdout))
                .detail(output_block("its stderr", &sent.stderr))
        })?;
    wait_shown(
        ctx,
        device.id,
        &format!("#{id} from app: {text}"),
        ctx.patience().seconds(2.0),
    )?;
    nothing_waits(ctx, &mut sender, "ada").map_err(|failure| {
        failure.hint(format!(
            "The device answers each push with `ACK <id>`. Where: TODO 3 in {DEVICE_FILE}, \
                 fn take_pushes."
        ))
    })?;
    Ok(())
}

fn at_once(ctx: &mut Ctx) -> Check<()> {
    const PUSHES: usize = 7;
    let service = ctx.start_server(&[])?;
    let device = start_registered_device(ctx, service.addr, "ada")?;
    let mut sender = ctx.connect(service.addr)?;
    let mut times = Vec::new();
    for round in 0..PUSHES {
        let text = format!("{} {round}", ctx.rng().word(6));
        let started = Instant::now();
        let id = send_note(&mut sender, "ada", "-", "-", &text)?;
        let line = format!("#{id} from app: {text}");
        wait_shown(ctx, device.id, &line, ctx.patience().seconds(2.0))?;
        times.push(started.elapsed());
    }
    times.sort();
    let median = times[PUSHES / 2];
    ctx.step(format!(
        "from SEND to the device's screen: median {:.1} ms, slowest {:.1} ms",
        median.as_secs_f64() * 1e3,
        times[PUSHES - 1].as_secs_f64() * 1e3
    ));
    let allowed = ctx.patience().seconds(0.1);
    if median > allowed {
        return Err(Failure::new(format!(
            "a push took {:.0} ms (the median of {PUSHES}) from SEND to the device's screen; \
             at most {:.0} ms is allowed",
            median.as_secs_f64() * 1e3,
            allowed.as_secs_f64() * 1e3
        ))
        .hint(format!(
            "The service should connect to the device as soon as a notification is accepted: \
             wake the device's delivery thread rather than let it look now and then \
             ({SERVICE_FILE}, fn accept and fn next_work). The device should flush each \
             line it prints."
        )));
    }
    Ok(())
}

fn authentic(ctx: &mut Ctx) -> Check<()> {
    let service = FakeService::new()?;
    let device = start_device(ctx, service.addr, "ada")?;
    let token = service.take_registration(ctx, "ada", device.addr)?;
    let forged_hint = format!(
        "A push must carry the device's token, the one the service gave at REGISTER; any \
         other is answered `ERR <reason>` and the connection closed, the text never shown. \
         Where: TODO 3 in {DEVICE_FILE}, fn take_pushes."
    );
    let forgeries: [(&str, String); 5] = [
        ("no token", "PUSH 7 app 6\nforged".to_string()),
        (
            "a wrong token",
            format!("PUSH {} 7 app 6\nforged", "0".repeat(32)),
        ),
        ("its token with one digit changed", {
            let mut wrong = token.clone().into_bytes();
            wrong[31] = if wrong[31] == b'0' { b'1' } else { b'0' };
            format!("PUSH {} 7 app 6\nforged", String::from_utf8_lossy(&wrong))
        }),
        // What `starts_with` or `contains` instead of equality lets in.
        (
            "its token less its last digit",
            format!("PUSH {} 7 app 6\nforged", &token[..31]),
        ),
        (
            "its token and one digit more",
            format!("PUSH {token}0 7 app 6\nforged"),
        ),
    ];
    for (what, frame) in &forgeries {
        ctx.step(format!("a forger pushes with {what}"));
        let answer = push_to_device(ctx, device.addr, frame.as_bytes())?;
        if answer.starts_with(b"ACK") {
            return Err(
                Failure::new(format!("the device acknowledged a push with {what}"))
                    .bytes(b"ERR <reason>\n", &answer)
                    .hint(forged_hint),
            );
        }
    }
    ctx.step("the real service pushes with the token");
    let answer = push_to_device(
        ctx,
        device.addr,
        format!("PUSH {token} 8 app 4\nreal").as_bytes(),
    )?;
    if answer != b"ACK 8\n" {
        return Err(
            Failure::new("the device did not acknowledge a push with its token")
                .bytes(b"ACK 8\n", &answer)
                .hint(forged_hint),
        );
    }
    wait_shown(
        ctx,
        device.id,
        "#8 from app: real",
        ctx.patience().seconds(1.0),
    )?;
    if count_in_stdout(ctx, device.id, "forged") > 0 {
        let stdout = ctx.process(device.id).stdout().text();
        return Err(Failure::new("the device showed a forged push")
            .detail(output_block("the device's stdout", &stdout))
            .hint(forged_hint));
    }

    ctx.step("the real service: an unknown API key, and a name held by another device");
    let server = ctx.start_server(&["--api-key", "k-123"])?;
    let mut sender = ctx.connect(server.addr)?;
    let ada = register_fake(ctx, server.addr, "ada")?;
    sender.send(b"SEND wrong-key ada - - 2\nhi")?;
    expect_err(&mut sender, "a SEND with an unknown API key")?;
    sender.send(b"SEND k-123 ada - - 2\nhi")?;
    expect_id(&mut sender)?;
    let (_, callback) = local::listener()?;
    let mut thief = ctx.connect(server.addr)?;
    thief.send(format!("REGISTER ada {callback}\n").as_bytes())?;
    expect_err(
        &mut thief,
        "REGISTER of a name another device holds, without its token",
    )?;
    thief.send(format!("REGISTER ada {callback} {}\n", "f".repeat(32)).as_bytes())?;
    expect_err(
        &mut thief,
        "REGISTER of a name another device holds, with a wrong token",
    )?;
    drop(ada);
    Ok(())
}

/// Read `ERR <reason>`.
fn expect_err(conn: &mut Conn, what: &str) -> Check<()> {
    let line = conn.read_line(LINE_LIMIT)?;
    if line.starts_with(b"ERR ") && line.len() > 5 {
        return Ok(());
    }
    Err(conn
        .fail(format!("{what} should be refused with `ERR <reason>`"))
        .bytes(b"ERR <reason>\n", &line)
        .hint(format!(
            "Senders present an API key the service knows (`--api-key`); a name belongs to \
             the device holding its token. Where: {SERVICE_FILE}, fn register, and \
             lessons/07-push/server.rs."
        )))
}

fn store_and_forward(ctx: &mut Ctx) -> Check<()> {
    let service = ctx.start_server(&[])?;
    let mut ada = register_fake(ctx, service.addr, "ada")?;
    ada.go_away(ctx);
    let mut sender = ctx.connect(service.addr)?;
    let mut sent = Vec::new();
    for _ in 0..5 {
        let text = ctx.rng().sentence(2);
        sent.push((send_note(&mut sender, "ada", "-", "-", &text)?, text));
    }
    let store_hint = format!(
        "A device that cannot be reached keeps its notifications at the service, in order; \
         when it registers again, they are delivered. Where: TODO 4 in {SERVICE_FILE}, fn \
         accept, and TODO 2 in {DELIVERY_FILE}."
    );
    wait_status(
        &mut sender,
        "ada",
        "unreachable",
        5,
        Instant::now() + ctx.patience().seconds(2.0),
    )
    .map_err(|failure| failure.hint(store_hint.clone()))?;
    ada.come_back(ctx, service.addr)?;
    let frames = ada
        .receive(ctx, 5, ctx.patience().seconds(2.0))
        .map_err(|f| f.more_hint(store_hint.clone()))?;
    let wanted: Vec<(u64, &str)> = sent.iter().map(|(id, text)| (*id, text.as_str())).collect();
    expect_pushes(&frames, &wanted, "after ada came back").map_err(|f| f.hint(store_hint))?;
    ctx.step("all acknowledged: nothing waits any more");
    nothing_waits(ctx, &mut sender, "ada")?;

    ctx.step("the device under test: bob starts, stops, misses a notification, starts again");
    let token_file = new_token_file(ctx)?;
    let bob = start_device_keeping(ctx, service.addr, "bob", &token_file)?;
    nothing_waits(ctx, &mut sender, "bob")?;
    // The device keeps its token once the service has answered: stopped
    // before that, it would come back a stranger to its own name.
    kept_token(ctx, &token_file)?;
    ctx.stop(bob.id)?;
    let id = send_note(&mut sender, "bob", "-", "-", "while you were out")?;
    wait_status(
        &mut sender,
        "bob",
        "unreachable",
        1,
        Instant::now() + ctx.patience().seconds(2.0),
    )?;
    let bob = start_device_keeping(ctx, service.addr, "bob", &token_file)?;
    wait_shown(
        ctx,
        bob.id,
        &format!("#{id} from app: while you were out"),
        ctx.patience().seconds(2.0),
    )
    .map_err(|failure| {
        failure.hint(format!(
            "Started again, the device registers with the token it kept (--token-file), \
             `REGISTER bob <its new callback> <token>`: the service knows it is bob, takes \
             its new callback, and delivers what waited. Without the token the service \
             refuses the name (the device's stderr, above, says so). Where: TODO 1 in \
             {DEVICE_FILE}, fn register."
        ))
    })?;
    Ok(())
}

fn bounded_queue(ctx: &mut Ctx) -> Check<()> {
    const SENT: usize = 107;
    let data = ctx.temp_dir()?.to_string_lossy().into_owned();
    let service = ctx.start_server(&["--data", &data])?;
    let mut ada = register_fake(ctx, service.addr, "ada")?;
    ada.go_away(ctx);
    let mut sender = ctx.connect(service.addr)?;
    ctx.step(format!("{SENT} notifications for ada while she is away"));
    let mut sent = Vec::new();
    for index in 0..SENT {
        let text = format!("n{index}");
        sent.push((send_note(&mut sender, "ada", "-", "-", &text)?, text));
    }
    let bound_hint = format!(
        "At most 100 notifications wait per device: past that the oldest is dropped (its id \
         into `dropped`, so its file goes too), and the device is told how many it lost, \
         with `LOST <token> <count>` before the pushes. Where: TODO 4 in {SERVICE_FILE}, \
         fn accept."
    );
    wait_status(
        &mut sender,
        "ada",
        "unreachable",
        100,
        Instant::now() + ctx.patience().seconds(2.0),
    )
    .map_err(|failure| failure.hint(bound_hint.clone()))?;
    ada.come_back(ctx, service.addr)?;
    let frames = ada
        .receive(ctx, 101, ctx.patience().seconds(2.0))
        .map_err(|failure| failure.hint(bound_hint.clone()))?;
    if frames[0] != Frame::Lost((SENT - 100) as u64) {
        return Err(Failure::new(format!(
            "the first frame was {:?}; expected LOST {}",
            frames[0],
            SENT - 100
        ))
        .hint(bound_hint));
    }
    let wanted: Vec<(u64, &str)> = sent[SENT - 100..]
        .iter()
        .map(|(id, text)| (*id, text.as_str()))
        .collect();
    expect_pushes(&frames, &wanted, "the 100 newest, in order")
        .map_err(|f| f.hint(bound_hint.clone()))?;
    nothing_waits(ctx, &mut sender, "ada")?;

    ctx.step("the service, killed and restarted on its --data folder: the dropped stay dropped");
    ctx.kill(service.id);
    let service = ctx.start_server(&["--data", &data])?;
    let mut sender = ctx.connect(service.addr)?;
    nothing_waits(ctx, &mut sender, "ada").map_err(|failure| failure.hint(bound_hint))?;
    flooded(ctx)
}

/// A sender floods one device with SENDs, reading no reply until it is done:
/// the device's queue stays at 100, and another device is served meanwhile.
fn flooded(ctx: &mut Ctx) -> Check<()> {
    const FLOOD: usize = 3000;
    let service = ctx.start_server(&[])?;
    let ok = register_fake(ctx, service.addr, "ok")?;
    let mut carol = register_fake(ctx, service.addr, "carol")?;
    carol.go_away(ctx);
    ctx.step(format!(
        "a sender floods carol with {FLOOD} SENDs on one connection, reading no reply \
         until all are written (not shown on the wire below)"
    ));
    let addr = service.addr;
    let flooder = std::thread::spawn(move || flood(addr, "carol", FLOOD));
    let mut sender = ctx.connect(service.addr)?;
    let id = send_note(&mut sender, "ok", "-", "-", "still served")?;
    let frames = ok
        .receive(ctx, 1, ctx.patience().seconds(2.0))
        .map_err(|failure| {
            failure.more_hint(
                "A sender that floods holds its own connection's thread only: the others are \
             served meanwhile.",
            )
        })?;
    expect_pushes(&frames, &[(id, "still served")], "ok, during the flood")?;
    let answered = flooder
        .join()
        .map_err(|_| Failure::new("the flooding thread panicked"))?
        .map_err(|what| Failure::new(format!("the flooding sender: {what}")))?;
    ctx.step(format!(
        "the flood done: {answered} SENDs answered `OK <id>`"
    ));
    wait_status(
        &mut sender,
        "carol",
        "unreachable",
        100,
        Instant::now() + ctx.patience().seconds(2.0),
    )
    .map_err(|failure| {
        failure.hint(format!(
            "However many come, at most 100 wait for one device. Where: TODO 4 in \
             {SERVICE_FILE}, fn accept."
        ))
    })?;
    drop(carol);
    Ok(())
}

/// Write `count` SENDs for `to` without reading, then read every reply;
/// return how many were `OK <id>`.
fn flood(service: SocketAddr, to: &str, count: usize) -> Result<usize, String> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(service).map_err(|error| error.to_string())?;
    let patience = Some(Duration::from_secs(20));
    stream
        .set_write_timeout(patience)
        .and_then(|()| stream.set_read_timeout(patience))
        .map_err(|error| error.to_string())?;
    let body = "x".repeat(100);
    let one = format!("SEND {DEMO_KEY} {to} - - {}\n{body}", body.len());
    for _ in 0..count {
        (&stream)
            .write_all(one.as_bytes())
            .map_err(|error| format!("writing its SENDs: {error}"))?;
    }
    let mut replies = BufReader::new(&stream);
    let mut answered = 0;
    for _ in 0..count {
        let mut line = String::new();
        match replies.read_line(&mut line) {
            Ok(0) => return Err(format!("the service closed after {answered} replies")),
            Ok(_) if line.starts_with("OK ") => answered += 1,
            Ok(_) => return Err(format!("a SEND was answered {line:?}")),
            Err(error) => return Err(format!("after {answered} replies: {error}")),
        }
    }
    Ok(answered)
}

fn ttl_and_collapse(ctx: &mut Ctx) -> Check<()> {
    let service = ctx.start_server(&[])?;
    let mut ada = register_fake(ctx, service.addr, "ada")?;
    let mut sender = ctx.connect(service.addr)?;
    ctx.step("ada is here: a notification with TTL 0 (now or never) is delivered now");
    let now = send_note(&mut sender, "ada", "0", "-", "right now")?;
    let frames = ada.receive(ctx, 1, ctx.patience().seconds(2.0))?;
    expect_pushes(
        &frames,
        &[(now, "right now")],
        "TTL 0 to a reachable device",
    )?;
    ada.go_away(ctx);
    let kept = send_note(&mut sender, "ada", "-", "-", "no TTL")?;
    wait_status(
        &mut sender,
        "ada",
        "unreachable",
        1,
        Instant::now() + ctx.patience().seconds(2.0),
    )?;
    ctx.step("while ada is away: TTL 0, TTL 1, and two with collapse key `mail`");
    send_note(&mut sender, "ada", "0", "-", "now or never")?;
    send_note(&mut sender, "ada", "1", "-", "one second")?;
    // The service took it before it answered: from here, it is surely older
    // than any wait below.
    let short = Instant::now();
    send_note(&mut sender, "ada", "-", "mail", "1 new mail")?;
    let mail = send_note(&mut sender, "ada", "600", "mail", "2 new mails")?;
    // The behaviour under test is the passing of time: a TTL of 1 s.
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(short.elapsed()));
    ada.come_back(ctx, service.addr)?;
    let frames = ada.receive(ctx, 2, ctx.patience().seconds(2.0))?;
    expect_pushes(
        &frames,
        &[(kept, "no TTL"), (mail, "2 new mails")],
        "after ada came back",
    )
    .map_err(|failure| {
        failure.hint(format!(
            "Expired notifications are dropped, never sent (TTL 0: sent only if the \
                 device can be reached at once). A new notification with a collapse key \
                 replaces the waiting one with the same key. Where: {SERVICE_FILE}, fn \
                 accept and fn drop_expired."
        ))
    })?;
    nothing_waits(ctx, &mut sender, "ada")?;
    Ok(())
}

fn lost_ack(ctx: &mut Ctx) -> Check<()> {
    let service = ctx.start_server(&[])?;
    let ada = register_fake(ctx, service.addr, "ada")?;
    let mut sender = ctx.connect(service.addr)?;
    let id = send_note(&mut sender, "ada", "-", "-", "say it twice")?;
    ctx.step("ada reads the push and closes without ACK, as if the ACK were lost");
    let mut conn = ada.accept(ctx, ctx.patience().seconds(2.0))?;
    ada.read_frame(&mut conn)?;
    conn.abort();
    let frames = ada
        .receive(ctx, 1, ctx.patience().seconds(4.0))
        .map_err(|failure| {
            failure.hint(format!(
                "The test closed the connection without `ACK <id>`, as if the ACK were lost: \
             the notification is not delivered, and the service must keep it and connect \
             again. Forget it (`service.delivered`) only once its ACK came, and return the \
             error of a missing ACK. Where: TODO 2 in {DELIVERY_FILE}, fn deliver."
            ))
        })?;
    expect_pushes(&frames, &[(id, "say it twice")], "sent again")?;
    nothing_waits(ctx, &mut sender, "ada")?;

    ctx.step("the device under test gets push #5 twice (its first ACK lost), then #6");
    let fake = FakeService::new()?;
    let device = start_device(ctx, fake.addr, "bob")?;
    let token = fake.take_registration(ctx, "bob", device.addr)?;
    let ack_hint = format!(
        "A push seen before is acknowledged again (the service did not get the first ACK) \
         but not shown again. Where: TODO 3 in {DEVICE_FILE}, fn take_pushes."
    );
    for (id, text) in [(5, "once"), (5, "once"), (6, "after")] {
        let frame = format!("PUSH {token} {id} app {}\n{text}", text.len());
        let answer = push_to_device(ctx, device.addr, frame.as_bytes())
            .map_err(|failure| failure.hint(ack_hint.clone()))?;
        let wanted = format!("ACK {id}\n");
        if answer != wanted.as_bytes() {
            return Err(Failure::new(format!("push #{id} was not acknowledged"))
                .bytes(wanted.as_bytes(), &answer)
                .hint(ack_hint));
        }
    }
    wait_shown(
        ctx,
        device.id,
        "#6 from app: after",
        ctx.patience().seconds(1.0),
    )?;
    let shown = count_in_stdout(ctx, device.id, "#5 from app: once");
    if shown != 1 {
        let stdout = ctx.process(device.id).stdout().text();
        return Err(
            Failure::new(format!("push #5 was shown {shown} times, not once"))
                .detail(output_block("the device's stdout", &stdout))
                .hint(format!(
                    "Remember the ids shown (a bounded set) and show each once. Where: TODO 3 \
                 in {DEVICE_FILE}, fn take_pushes."
                )),
        );
    }
    Ok(())
}

fn durable(ctx: &mut Ctx) -> Check<()> {
    let data = ctx.temp_dir()?.to_string_lossy().into_owned();
    let service = ctx.start_server(&["--data", &data])?;
    let mut ada = register_fake(ctx, service.addr, "ada")?;
    ada.go_away(ctx);
    let mut sender = ctx.connect(service.addr)?;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let text = ctx.rng().sentence(3);
        sent.push((send_note(&mut sender, "ada", "-", "-", &text)?, text));
    }
    ctx.step("two more with collapse key `mail`: only the newer may come back");
    send_note(&mut sender, "ada", "-", "mail", "1 new mail")?;
    let text = "2 new mails".to_string();
    sent.push((send_note(&mut sender, "ada", "-", "mail", &text)?, text));
    ctx.step("a second server on the same folder must refuse it");
    let second = ctx.run(&["server", "--bind", "127.0.0.1:0", "--data", &data], b"")?;
    ctx.expect_one_line_error(
        &second,
        "in use by another server",
        "started on a folder in use",
    )?;
    ctx.step("the notifications accepted; the service is killed at once");
    ctx.kill(service.id);
    let service = ctx.start_server(&["--data", &data])?;
    let durable_hint = format!(
        "With --data, a notification is on disk (written, synced, renamed) before `OK <id>`, \
         and so is the device's token; a restarted service reads them back. One that was \
         replaced (a collapse key) or dropped (the bound) leaves the disk too: its id goes \
         into `dropped`. Where: TODO 4 in {SERVICE_FILE}, fn accept; lessons/07-push/disk.rs."
    );
    ada.come_back(ctx, service.addr)
        .map_err(|f| f.more_hint(durable_hint.clone()))?;
    let frames = ada
        .receive(ctx, sent.len(), ctx.patience().seconds(2.0))
        .map_err(|f| f.more_hint(durable_hint.clone()))?;
    let wanted: Vec<(u64, &str)> = sent.iter().map(|(id, text)| (*id, text.as_str())).collect();
    expect_pushes(&frames, &wanted, "after the restart").map_err(|f| f.hint(durable_hint))?;
    let mut sender = ctx.connect(service.addr)?;
    nothing_waits(ctx, &mut sender, "ada")?;
    ctx.step("killed and restarted again: delivered notifications stay delivered");
    ctx.kill(service.id);
    let service = ctx.start_server(&["--data", &data])?;
    let mut sender = ctx.connect(service.addr)?;
    nothing_waits(ctx, &mut sender, "ada")?;
    Ok(())
}

fn the_device(ctx: &mut Ctx) -> Check<()> {
    let service = ctx.start_server(&[])?;
    let ada = start_registered_device(ctx, service.addr, "ada")?;
    let bob = start_registered_device(ctx, service.addr, "bob")?;
    ctx.step("ada's user types half a line, `to bob: hello`, and stops");
    type_into(ctx, ada.id, "to bob: hello")?;
    let mut sender = ctx.connect(service.addr)?;
    let id = send_note(&mut sender, "ada", "-", "-", "while you type")?;
    wait_shown(
        ctx,
        ada.id,
        &format!("#{id} from app: while you type"),
        ctx.patience().seconds(1.0),
    )
    .map_err(|failure| {
        failure.more_hint(format!(
            "Pushes come on their own threads, never waiting for the keyboard. Where: \
                 {DEVICE_FILE}, fn accept_pushes."
        ))
    })?;
    ctx.step("she finishes the line: ` bob`");
    type_into(ctx, ada.id, " bob\n")?;
    let tell_hint = format!(
        "`to NAME: text` goes through the service as `TELL <name> <token> <to> <length>`, \
         and the service pushes it to NAME like any notification, from the device's name. \
         Where: {DEVICE_FILE}, fn read_keyboard and fn tell."
    );
    let wait = ctx.patience().seconds(2.0);
    let shown = ctx
        .process(ada.id)
        .wait_for_stdout(b"sent #", Instant::now() + wait);
    if !shown {
        return Err(Failure::new("ada did not print `sent #<id> to bob`")
            .detail(output_block(
                "ada's stdout",
                &ctx.process(ada.id).stdout().text(),
            ))
            .hint(tell_hint));
    }
    let stdout = ctx.process(ada.id).stdout().text();
    let tell_id = stdout
        .split("sent #")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("?")
        .to_string();
    wait_shown(
        ctx,
        bob.id,
        &format!("#{tell_id} from ada: hello bob"),
        wait,
    )
    .map_err(|failure| failure.more_hint(tell_hint))?;
    ctx.step("ada's input ends: she exits, with success");
    ctx.process(ada.id).close_stdin();
    let deadline = Instant::now() + ctx.patience().exit;
    let exited = ctx.process(ada.id).wait_exit(deadline);
    match exited {
        Some(status) if status.success() => Ok(()),
        other => Err(Failure::new(format!(
            "at the end of its input the device should exit with 0; it {}",
            other.map_or("still runs".to_string(), |status| format!(
                "exited ({status})"
            ))
        ))),
    }
}

fn unreachable(ctx: &mut Ctx) -> Check<()> {
    let service = ctx.start_server(&[])?;
    ctx.step("hole registers a callback that accepts connections and never answers");
    let (hole_listener, hole_callback) = local::listener()?;
    let mut conn = ctx.connect(service.addr)?;
    conn.send(format!("REGISTER hole {hole_callback}\n").as_bytes())?;
    expect_token(&mut conn)?;
    let ok = register_fake(ctx, service.addr, "ok")?;
    let mut sender = ctx.connect(service.addr)?;
    let started = Instant::now();
    send_note(&mut sender, "hole", "-", "-", "into the void")?;
    ctx.step("right after, a notification for ok, a device that answers");
    let id = send_note(&mut sender, "ok", "-", "-", "served")?;
    let frames = ok
        .receive(ctx, 1, ctx.patience().seconds(0.5))
        .map_err(|failure| {
            failure.more_hint(format!(
                "A device that never answers must hold up no one else: deliver on a thread per \
             device, each step with a deadline. Where: {DELIVERY_FILE}."
            ))
        })?;
    expect_pushes(&frames, &[(id, "served")], "ok")?;
    let limit = Duration::from_secs(1) + ctx.patience().seconds(0.5);
    wait_status(&mut sender, "hole", "unreachable", 1, started + limit).map_err(|failure| {
        failure.hint(format!(
            "A device that does not acknowledge within 1 s is unreachable; its notification \
             stays stored, not lost. Where: {DELIVERY_FILE}, fn deliver and \
             send_and_wait_ack."
        ))
    })?;
    ctx.step(format!(
        "hole marked unreachable {:.2} s after the SEND, its notification stored",
        started.elapsed().as_secs_f64()
    ));
    drop(hole_listener);
    Ok(())
}

fn python_device(ctx: &mut Ctx) -> Check<()> {
    ctx.require_tool("python3", "sudo apt-get install python3")?;
    let service = ctx.start_server(&[])?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/lessons/07-push/device.py");
    let addr = service.addr.to_string();
    let id = ctx.start_tool(
        "python3",
        &[
            script,
            "--name",
            "py",
            "--connect",
            &addr,
            "--bind",
            "127.0.0.1:0",
        ],
        "sudo apt-get install python3",
    )?;
    let deadline = Instant::now() + ctx.patience().start;
    let callback = ctx
        .process(id)
        .wait_for_address(deadline)
        .map_err(|error| {
            let mut failure = error.failure(false);
            failure.what = format!("the Python device: {}", failure.what);
            failure
        })?;
    ctx.step(format!("the Python device listens on {callback}"));
    let mut sender = ctx.connect(service.addr)?;
    let text = ctx.rng().sentence(3);
    nothing_waits(ctx, &mut sender, "py")?;
    let note = send_note(&mut sender, "py", "-", "-", &text)?;
    wait_shown(
        ctx,
        id,
        &format!("#{note} from app: {text}"),
        ctx.patience().seconds(2.0),
    )?;
    nothing_waits(ctx, &mut sender, "py")?;
    ctx.step("a forger pushes to the Python device without its token");
    let answer = push_to_device(ctx, callback, b"PUSH 7 app 6\nforged")?;
    if answer.starts_with(b"ACK") || count_in_stdout(ctx, id, "forged") > 0 {
        return Err(Failure::new(
            "the Python device took a push without its token",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Behind a real NAT: three network namespaces, as root.
//
//   service ns             router ns                   device ns
//   10.77.0.1 eth0 ─── pub 10.77.0.2 │ 10.78.0.1 prv ─── eth0 10.78.0.2
//                          masquerade out of `pub`; nothing new comes in

/// The service's address on the public side, and the router's.
const PUBLIC_SERVICE: &str = "10.77.0.1";
const PUBLIC_ROUTER: &str = "10.77.0.2";
/// The device's private address, and the router's on the private side.
const PRIVATE_DEVICE: &str = "10.78.0.2";
const PRIVATE_ROUTER: &str = "10.78.0.1";

/// The router's rules: connections from the private side go out under the
/// router's address; from the public side, only their answers come back.
const ROUTER_RULES: &str = "
table ip course_nat {
    chain postrouting {
        type nat hook postrouting priority 100;
        oifname \"pub\" masquerade
    }
}
table inet course_filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname \"prv\" oifname \"pub\" accept
    }
}
";

/// The namespaces of one run, deleted when dropped, also when the stage
/// fails or panics; their veth pairs go with them.
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .output();
        }
    }
}

/// Run a setup command; its failure is the machine's, not the program's.
fn setup_command(words: &[&str], stdin: Option<&str>) -> Result<(), String> {
    use std::io::Write as _;
    let mut command = std::process::Command::new(words[0]);
    command
        .args(&words[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|error| format!("`{}`: {error}", words.join(" ")))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|error| format!("`{}`: {error}", words.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` failed: {}",
            words.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Build the three namespaces and the router between them.
fn build_nat(ctx: &Ctx) -> Result<(Namespaces, [String; 3]), String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let prefix = format!(
        "c07-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    );
    let [service, router, device] = ["svc", "rtr", "dev"].map(|role| format!("{prefix}-{role}"));
    let mut namespaces = Namespaces { names: Vec::new() };
    for name in [&service, &router, &device] {
        setup_command(&["ip", "netns", "add", name], None)?;
        namespaces.names.push(name.clone());
    }
    ctx.step(format!(
        "built network namespaces {service} (the service), {router} (a router that \
         masquerades) and {device} (the device, on a private network)"
    ));
    let ip = |ns: &str, words: &str| {
        let mut all = vec!["ip", "-n", ns];
        all.extend(words.split(' '));
        setup_command(&all, None)
    };
    ip(
        &router,
        &format!("link add pub type veth peer name eth0 netns {service}"),
    )?;
    ip(
        &router,
        &format!("link add prv type veth peer name eth0 netns {device}"),
    )?;
    ip(&service, &format!("addr add {PUBLIC_SERVICE}/24 dev eth0"))?;
    ip(&router, &format!("addr add {PUBLIC_ROUTER}/24 dev pub"))?;
    ip(&router, &format!("addr add {PRIVATE_ROUTER}/24 dev prv"))?;
    ip(&device, &format!("addr add {PRIVATE_DEVICE}/24 dev eth0"))?;
    for (ns, link) in [
        (&service, "eth0"),
        (&router, "pub"),
        (&router, "prv"),
        (&device, "eth0"),
        (&service, "lo"),
        (&router, "lo"),
        (&device, "lo"),
    ] {
        ip(ns, &format!("link set {link} up"))?;
    }
    ip(&device, &format!("route add default via {PRIVATE_ROUTER}"))?;
    // The service's packets for 10.78.x go to the router, which drops them:
    // a black hole, as the Internet is for a private address.
    ip(&service, &format!("route add default via {PUBLIC_ROUTER}"))?;
    setup_command(
        &[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ],
        None,
    )?;
    setup_command(
        &["ip", "netns", "exec", &router, "nft", "-f", "-"],
        Some(ROUTER_RULES),
    )?;
    Ok((namespaces, [service, router, device]))
}

/// Run `work` on a thread inside network namespace `ns`: its sockets are
/// that namespace's, as a program's there would be.
#[cfg(unix)]
fn in_namespace<T: Send + 'static>(
    ns: &str,
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|error| format!("{path}: {error}"))?;
        // SAFETY: setns on this thread alone, with a namespace file that
        // stays open for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        work()
    })
    .join()
    .map_err(|_| "the thread in the namespace panicked".to_string())?
}

/// One request line (and its body) to `service`, and its reply line.
fn ask(service: SocketAddr, request: &str) -> Result<String, String> {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&service, Duration::from_secs(2))
        .map_err(|error| format!("connecting to {service}: {error}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    stream
        .write_all(request.as_bytes())
        .map_err(|error| error.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|error| format!("waiting for the reply to {:?}: {error}", request.trim()))?;
    Ok(line)
}

/// Ask STATUS for `name` from inside `ns` until it says `wanted`.
#[cfg(unix)]
fn nat_status(
    ns: &str,
    service: SocketAddr,
    name: &str,
    wanted: &str,
    within: Duration,
) -> Check<Duration> {
    let (name, wanted) = (name.to_string(), wanted.to_string());
    in_namespace(ns, move || {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < within {
            last = ask(service, &format!("STATUS {DEMO_KEY} {name}\n"))?;
            if last == wanted {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "STATUS for {name} said {last:?} after {:.1} s, not {wanted:?}",
            within.as_secs_f64()
        ))
    })
    .map_err(|what| {
        Failure::new(what).hint(format!(
            "Behind a NAT, the device's callback cannot be reached at all: the connection \
             black-holes. After 1 s without an answer the device is unreachable, and its \
             notifications are stored. Where: {DELIVERY_FILE}, fn deliver."
        ))
    })
}

#[cfg(not(unix))]
fn behind_nat(_ctx: &mut Ctx) -> Check<()> {
    Err(Failure::missing_tool(
        "Linux's network namespaces",
        "run this stage on Linux",
    ))
}

#[cfg(unix)]
fn behind_nat(ctx: &mut Ctx) -> Check<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Failure::missing_tool(
            "root, to build network namespaces and a NAT",
            "run it as root, as CI does: sudo -E cargo test --test 07_push behind",
        ));
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        ctx.require_tool(tool, &format!("sudo apt-get install {package}"))?;
    }
    let (_namespaces, [service_ns, _, device_ns]) = match build_nat(ctx) {
        Ok(built) => built,
        Err(why) => {
            return Err(Failure::missing_tool(
                "network namespaces and a NAT this machine allows",
                &format!("it refused: {why}"),
            ))
        }
    };
    let bind = format!("{PUBLIC_SERVICE}:0");
    let (service_id, service) = start_in_namespace(
        ctx,
        &service_ns,
        &["server", "--bind", &bind, "--answer-time", "0.3"],
        "the service",
    )?;
    ctx.step(format!(
        "the service listens on {service}, on the public side"
    ));
    let token_file = new_token_file(ctx)?;
    let (bind, service_text) = (format!("{PRIVATE_DEVICE}:0"), service.to_string());
    let device_args = [
        "device",
        "--name",
        "ada",
        "--bind",
        &bind,
        "--connect",
        &service_text,
        "--token-file",
        &token_file,
    ];
    let (device_id, callback) =
        start_in_namespace(ctx, &device_ns, &device_args, "the device, behind the NAT")?;
    ctx.step(format!(
        "the device listens on {callback}, a private address"
    ));
    let patience = ctx.patience().start;
    nat_status(&service_ns, service, "ada", "OK reachable 0\n", patience).map_err(|failure| {
        failure.hint("The device's REGISTER must reach the service through the NAT.")
    })?;
    let stderr = ctx.process(service_id).stderr().text();
    if let Some(line) = stderr.lines().find(|line| line.contains("registered")) {
        ctx.step(format!("the service logged: {line}"));
    }

    ctx.step("from the service's namespace, the test tries the callback itself");
    let reached = in_namespace(&service_ns, move || {
        // Across the veth pair a connection completes in a millisecond.
        Ok(std::net::TcpStream::connect_timeout(&callback, Duration::from_millis(200)).is_ok())
    })
    .map_err(Failure::new)?;
    if reached {
        return Err(Failure::new(
            "the test could connect to the device's private address from the service's side: \
             the NAT is not in place, so this stage shows nothing",
        )
        .hint("This is the test's own setup failing; please report it."));
    }

    ctx.step("a sender, next to the service, sends ada a notification");
    let reply = in_namespace(&service_ns, move || {
        ask(service, &format!("SEND {DEMO_KEY} ada - - 9\nover here"))
    })
    .map_err(Failure::new)?;
    let Some(id) = reply.strip_prefix("OK ").map(|id| id.trim().to_string()) else {
        return Err(Failure::new(format!(
            "SEND was answered {reply:?}, not `OK <id>`"
        )));
    };
    // The service was started with --answer-time 0.3.
    let limit = Duration::from_millis(300) + ctx.patience().seconds(0.5);
    let took = nat_status(&service_ns, service, "ada", "OK unreachable 1\n", limit)?;
    ctx.step(format!(
        "ada marked unreachable {:.2} s after the SEND; notification #{id} stored",
        took.as_secs_f64()
    ));
    if count_in_stdout(ctx, device_id, "over here") > 0 {
        return Err(Failure::new(
            "the device showed the notification, though its callback cannot be reached",
        ));
    }
    Ok(())
}

/// Start the program under test with `args` inside network namespace `ns`
/// (`ip netns exec`), and wait for the address it prints.
fn start_in_namespace(
    ctx: &mut Ctx,
    ns: &str,
    args: &[&str],
    who: &str,
) -> Check<(ProcessId, SocketAddr)> {
    let mut words: Vec<String> = vec!["netns".into(), "exec".into(), ns.to_string()];
    words.extend(ctx.program().iter().cloned());
    words.extend(args.iter().map(|word| word.to_string()));
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let install = "sudo apt-get install iproute2";
    let id = ctx.start_tool("ip", &words, install)?;
    let deadline = Instant::now() + ctx.patience().start;
    let addr = ctx
        .process(id)
        .wait_for_address(deadline)
        .map_err(|error| {
            let mut failure = error.failure(false);
            failure.what = format!("{who}: {}", failure.what);
            failure
        })?;
    Ok((id, addr))
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let service = start_server_at_chosen_address(ctx, &[])?;
    ctx.step("a device registers there");
    register_fake(ctx, service.addr, "ada")?;
    ctx.expect_running(service.id)
}
