//! Lesson 08, agent: the stages, in the order you build them.
//!
//!     cargo test --test 08_agent                  your code in lessons/08-agent
//!     cargo test --test 08_agent heartbeats       one stage
//!     COURSE_TARGET=solutions cargo test --test 08_agent
//!     COURSE_TIMES=1 cargo test --test 08_agent   also print each stage's time and what it measures
//!
//! The stages start your service with `server --bind 127.0.0.1:0`, your
//! agents with `agent --device NAME --connect ADDR --local 127.0.0.1:0`
//! (each prints `listening on` for its apps), your apps with `app --name
//! NAME --agent ADDR` and your sender with `send --connect ADDR --to
//! DEVICE/APP TEXT`. Stages 3 to 6 and 8 put the test's own NAT (`course nat`,
//! src/net/nat.rs) between agent and service; stage 1 and part of stage 6
//! play the service themselves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::ctx::{output_block, ProcessId};
use course::harness::local;
use course::harness::setup::switched_on;
use course::net::nat::{MappingInfo, Nat};
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

const PROGRAMS: Programs = Programs {
    lessons: env!("CARGO_BIN_EXE_08-agent"),
    solutions: option_env!("CARGO_BIN_EXE_08-agent-solution"),
};

fn main() {
    course::run_stages("08", PROGRAMS, &STAGES);
}

const STAGES: [Stage; 12] = [
    Stage {
        slug: "hello",
        title: "the agent connects and says who it is; an app registers with it",
        slide: "One agent, one connection",
        check: hello,
        runs_alone: false,
    },
    Stage {
        slug: "right-app",
        title: "a notification reaches the right app, and not the others",
        slide: "One connection, every app",
        check: right_app,
        runs_alone: false,
    },
    Stage {
        slug: "one-connection",
        title: "three apps on one device: one connection through the NAT",
        slide: "One connection, every app",
        check: one_connection,
        runs_alone: false,
    },
    Stage {
        slug: "heartbeats",
        title: "heartbeats keep an idle connection alive through the NAT",
        slide: "Heartbeats",
        check: heartbeats,
        runs_alone: false,
    },
    Stage {
        slug: "dead-connection",
        title: "a silently dead connection is noticed within two heartbeats, on both sides",
        slide: "Two missed heartbeats",
        check: dead_connection,
        runs_alone: false,
    },
    Stage {
        slug: "exactly-once",
        title: "after a reconnect, what was sent meanwhile arrives, exactly once",
        slide: "Acknowledge by position",
        check: exactly_once,
        runs_alone: false,
    },
    Stage {
        slug: "app-not-running",
        title: "an app that is not running gets its notifications when it registers",
        slide: "Apps that are not running",
        check: app_not_running,
        runs_alone: false,
    },
    Stage {
        slug: "reconnect-storm",
        title: "50 agents lose the service at once: they come back spread out, nothing lost; two of one name back off",
        slide: "Backoff with full jitter",
        check: reconnect_storm,
        runs_alone: false,
    },
    Stage {
        slug: "durable",
        title: "with --data, an accepted notification survives SIGKILL of the service",
        slide: "Durability",
        check: durable,
        runs_alone: false,
    },
    Stage {
        slug: "hostile",
        title: "a huge or trickled frame, a name that is not one, a deaf agent or app, made-up devices: only that peer loses",
        slide: "Hostile peers",
        check: hostile,
        runs_alone: false,
    },
    // The kernel's own NAT needs root and network namespaces; where they are
    // missing, the stage says so and is skipped, never passed.
    Stage {
        slug: "kernel-nat",
        title: "through the kernel's own NAT: heartbeats keep the mapping, a lost one is survived",
        slide: "The kernel's NAT",
        check: kernel_nat::check,
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

const AGENT_FILE: &str = "lessons/08-agent/agent.rs";
const STORE_FILE: &str = "lessons/08-agent/store.rs";
const SERVER_FILE: &str = "lessons/08-agent/server.rs";

/// The longest frame the protocol allows.
const MAX_FRAME: usize = 4096;

/// A frame: the body's length in 4 bytes, big-endian, then the body.
fn frame(body: &str) -> Vec<u8> {
    let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
    bytes.extend_from_slice(body.as_bytes());
    bytes
}

/// Read one frame's body from the program under test.
fn read_frame(conn: &mut Conn) -> Check<String> {
    let prefix = conn.read_exact(4)?;
    let length = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if length == 0 || length > MAX_FRAME {
        return Err(conn
            .fail(format!(
                "a frame announced {length} bytes; the protocol allows 1 to {MAX_FRAME}"
            ))
            .hint(
                "A frame is a 4-byte big-endian length, then that many bytes of text \
                 (lessons/08-agent/README.md). Write the length of the body alone.",
            ));
    }
    let body = conn.read_exact(length)?;
    String::from_utf8(body).map_err(|_| conn.fail("a frame's body is not UTF-8 text"))
}

/// Read a frame and check it is `wanted`, byte for byte.
fn expect_frame(conn: &mut Conn, wanted: &str, what: &str) -> Check<()> {
    let body = read_frame(conn).map_err(|failure| {
        let what = format!(
            "{what}, `{wanted}` (a 4-byte length, then the text): {}",
            failure.what
        );
        let mut failure = failure;
        failure.what = what;
        failure
    })?;
    if body != wanted {
        return Err(conn
            .fail(format!("{what}: the frame is not the one expected"))
            .bytes(wanted.as_bytes(), body.as_bytes()));
    }
    Ok(())
}

/// A device: its agent and the address where its apps register.
struct Device {
    agent: ProcessId,
    local: SocketAddr,
}

/// The words that start an agent for device `name`, its apps' listener on
/// a free port.
fn agent_args<'a>(name: &'a str, service: &'a str, keepalive: &'a str) -> [&'a str; 9] {
    [
        "agent",
        "--device",
        name,
        "--connect",
        service,
        "--local",
        "127.0.0.1:0",
        "--keepalive",
        keepalive,
    ]
}

fn start_agent(ctx: &mut Ctx, name: &str, service: SocketAddr, keepalive: &str) -> Check<Device> {
    start_agent_with(ctx, name, service, keepalive, &[])
}

/// The longest wait between two attempts to reach the service, for the
/// stages that cut a connection and wait for the agent to come back: it is
/// back within a tenth of a second of noticing, not up to half a second.
const QUICK_BACKOFF: [&str; 2] = ["--backoff-cap", "0.1"];

/// An agent with `extra` words after the usual ones.
fn start_agent_with(
    ctx: &mut Ctx,
    name: &str,
    service: SocketAddr,
    keepalive: &str,
    extra: &[&str],
) -> Check<Device> {
    let service = service.to_string();
    let mut args = agent_args(name, &service, keepalive).to_vec();
    args.extend_from_slice(extra);
    let started = ctx.start_server_with(&args).map_err(|failure| {
        failure.more_hint(format!(
            "The agent prints `listening on IP:PORT` for its apps first, as a server does \
             ({AGENT_FILE}, fn run)."
        ))
    })?;
    Ok(Device {
        agent: started.id,
        local: started.addr,
    })
}

/// Start an app and wait until the agent has taken its registration.
fn start_app(ctx: &mut Ctx, name: &str, device: &Device) -> Check<ProcessId> {
    let agent = device.local.to_string();
    let app = ctx.start(&["app", "--name", name, "--agent", &agent])?;
    let deadline = Instant::now() + ctx.patience().start;
    let registered = format!("registered as {name}");
    if !ctx
        .process(app)
        .wait_for_stdout(registered.as_bytes(), deadline)
    {
        let stdout = ctx.process(app).stdout().text();
        return Err(Failure::new(format!(
            "the app {name} did not print `{registered} ...` within {:.0} s",
            ctx.patience().start.as_secs_f64()
        ))
        .detail(output_block("its stdout", &stdout))
        .hint(
            "The app sends `REGISTER NAME 0` to the agent, which answers `OK 0`; then the \
             app prints `registered as NAME with the agent at ADDR`.",
        ));
    }
    Ok(app)
}

/// Hand one notification to the service with the `send` role.
fn send(ctx: &mut Ctx, service: SocketAddr, to: &str, text: &str, extra: &[&str]) -> Check<()> {
    let service = service.to_string();
    let mut args = vec!["send", "--connect", &service, "--to", to];
    args.extend_from_slice(extra);
    args.push(text);
    ctx.step(format!("send to {to}: {text:?} {}", extra.join(" ")));
    let finished = ctx.run(&args, b"")?;
    if !finished.status.success() {
        return Err(Failure::new(format!(
            "`send --to {to}` failed; the service should have accepted it"
        ))
        .detail(output_block("its stderr", &finished.stderr))
        .hint(
            "The service answers `SEND DEVICE/APP TTL KEY TEXT` with `OK ID` once it has \
             taken the notification.",
        ));
    }
    Ok(())
}

/// What an app has shown: (app, text) for each line `[APP #ID] TEXT`.
fn shown(ctx: &mut Ctx, app: ProcessId) -> Vec<(String, String)> {
    let stdout = ctx.process(app).stdout().text();
    stdout
        .lines()
        .filter_map(|line| {
            let (head, text) = line.strip_prefix('[')?.split_once("] ")?;
            let (name, _) = head.split_once(" #")?;
            Some((name.to_string(), text.to_string()))
        })
        .collect()
}

/// Wait until `app` has shown `text`, at most `within`.
fn wait_shown(
    ctx: &mut Ctx,
    app: ProcessId,
    name: &str,
    text: &str,
    within: Duration,
) -> Check<()> {
    let line = format!("] {text}\n");
    if ctx
        .process(app)
        .wait_for_stdout(line.as_bytes(), Instant::now() + within)
    {
        return Ok(());
    }
    let stdout = ctx.process(app).stdout().text();
    Err(Failure::new(format!(
        "the app {name} did not show {text:?} within {:.1} s",
        within.as_secs_f64()
    ))
    .detail(output_block(&format!("the app {name}'s stdout"), &stdout)))
}

/// Check that `app` showed exactly `texts`, in order, each once, each as
/// its own.
fn expect_shown_exactly(ctx: &mut Ctx, app: ProcessId, name: &str, texts: &[String]) -> Check<()> {
    let got = shown(ctx, app);
    let wanted: Vec<(String, String)> = texts
        .iter()
        .map(|text| (name.to_string(), text.clone()))
        .collect();
    if got == wanted {
        return Ok(());
    }
    let list = |items: &[(String, String)]| {
        items
            .iter()
            .map(|(app, text)| format!("[{app}] {text}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    Err(Failure::new(format!(
        "the app {name} should have shown {} notifications, each once, in the order sent; \
         it showed {}",
        wanted.len(),
        got.len()
    ))
    .detail(output_block("expected", &list(&wanted)))
    .detail(output_block("shown", &list(&got))))
}

fn random_text(ctx: &mut Ctx) -> String {
    let words = ctx.rng().between(2, 6);
    ctx.rng().sentence(words)
}

fn hello(ctx: &mut Ctx) -> Check<()> {
    let (listener, service) = local::listener()?;
    ctx.step("the test plays the push service");
    let name = ctx.rng().word(5);
    let device = start_agent(ctx, &name, service, "30").map_err(|failure| {
        failure.more_hint(format!(
            "Start with TODO 1 in {AGENT_FILE}, fn hello; the listener for apps is ready."
        ))
    })?;
    let mut uplink = accept(ctx, &listener, "the agent")?;
    let hello_hint = format!(
        "Where: TODO 1 in {AGENT_FILE}, fn hello. The agent's first frame says who the \
         device is and how often it will send a heartbeat, in milliseconds: `HELLO {name} \
         30000` for --keepalive 30."
    );
    expect_frame(
        &mut uplink,
        &format!("HELLO {name} 30000"),
        "the agent's first frame",
    )
    .map_err(|failure| failure.hint(hello_hint.clone()))?;
    uplink.send(&frame("WELCOME"))?;

    let app = ctx.rng().word(6);
    ctx.step(format!("the app {app} starts"));
    start_app(ctx, &app, &device)?;
    expect_frame(
        &mut uplink,
        &format!("REGISTER {app} 0"),
        "an app registered with the agent",
    )
    .map_err(|failure| {
        failure.hint(format!(
            "Where: {AGENT_FILE}, fn serve_app: once an app registers, the agent tells the \
             service `REGISTER APP LAST` (LAST: the last stream id it handed to that app, 0 \
             for none), on the one connection it already has."
        ))
    })?;

    ctx.step(format!("a second app under the name {app} must be refused"));
    let agent = device.local.to_string();
    let finished = ctx.run(&["app", "--name", &app, "--agent", &agent], b"")?;
    ctx.expect_one_line_error(&finished, &app, "registering a name that is taken")?;
    ctx.expect_running(device.agent)
}

/// Accept the program's connection to the test's own service.
fn accept(ctx: &Ctx, listener: &TcpListener, who: &str) -> Check<Conn> {
    let patience = ctx.patience().start;
    local::accept_conn(
        listener,
        Instant::now() + patience,
        ctx.journal(),
        ctx.patience().reply,
    )
    .ok_or_else(|| {
        Failure::new(format!(
            "{who} did not connect to the service within {:.0} s",
            patience.as_secs_f64()
        ))
        .hint(format!(
            "The agent connects to --connect as soon as it starts ({AGENT_FILE}, fn \
                 session), and again whenever the connection ends."
        ))
    })
}

fn right_app(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let device = start_agent(ctx, "ada", server.addr, "30")?;
    let mail = start_app(ctx, "mail", &device)?;
    let chat = start_app(ctx, "chat", &device)?;
    let within = ctx.patience().seconds(3.0);
    let hint = format!(
        "Where: TODO 2 in {STORE_FILE}, fn next_to_send: for each app registered on the \
         connection, every waiting notification after the last one sent to it. The agent \
         hands a `PUSH APP ID TEXT` to the app it names ({AGENT_FILE}, fn deliver)."
    );
    let texts: Vec<String> = (0..3).map(|_| random_text(ctx)).collect();
    for (to, text) in [
        ("mail", &texts[0]),
        ("chat", &texts[1]),
        ("mail", &texts[2]),
    ] {
        send(ctx, server.addr, &format!("ada/{to}"), text, &[])?;
        let app = if to == "mail" { mail } else { chat };
        wait_shown(ctx, app, to, text, within).map_err(|failure| failure.hint(hint.clone()))?;
    }
    ctx.step("a notification for a device that is not connected is accepted all the same");
    send(ctx, server.addr, "bob/mail", &texts[0], &[])?;
    expect_shown_exactly(ctx, mail, "mail", &[texts[0].clone(), texts[2].clone()])
        .map_err(|failure| failure.hint(hint.clone()))?;
    expect_shown_exactly(ctx, chat, "chat", &[texts[1].clone()])
        .map_err(|failure| failure.hint(hint))?;
    ctx.expect_running(server.id)
}

/// The test's NAT in front of `server`, forgetting mappings idle `idle`.
fn start_nat(ctx: &Ctx, server: SocketAddr, idle: Duration) -> Check<Nat> {
    let nat = Nat::start("127.0.0.1:0", server, idle, false)
        .map_err(|error| Failure::new(format!("the test could not start its NAT: {error}")))?;
    ctx.step(format!(
        "the test's NAT listens on {} and forgets a connection idle for {:.1} s",
        nat.addr(),
        idle.as_secs_f64()
    ));
    Ok(nat)
}

fn one_connection(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let nat = start_nat(ctx, server.addr, Duration::from_secs(600))?;
    let device = start_agent(ctx, "ada", nat.addr(), "30")?;
    let names = ["mail", "chat", "news"];
    let mut apps = Vec::new();
    for name in names {
        apps.push(start_app(ctx, name, &device)?);
    }
    let within = ctx.patience().seconds(3.0);
    for (name, app) in names.iter().zip(&apps) {
        let text = random_text(ctx);
        send(ctx, server.addr, &format!("ada/{name}"), &text, &[])?;
        wait_shown(ctx, *app, name, &text, within)?;
    }
    let connections = nat.connections();
    ctx.step(format!("{connections} connection(s) crossed the NAT"));
    if connections != 1 {
        return Err(Failure::new(format!(
            "three apps on one device opened {connections} connections through the NAT; \
             the device should hold exactly one"
        ))
        .hint(format!(
            "Only the agent talks to the service, on one connection made in {AGENT_FILE}, \
             fn session; apps register with the agent on this device, and it carries every \
             app's notifications. A connection per app costs a phone a radio wake-up per \
             app, and a NAT mapping each."
        )));
    }
    ctx.expect_running(device.agent)
}

fn heartbeats(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    // Short times, so the stage is quick: heartbeats every 0.4 s, a NAT
    // that forgets a connection after 1 s of silence (a home router waits
    // minutes). A heartbeat held back for up to 0.3 s by a busy machine
    // still passes the checks below.
    let every = ctx.patience().seconds(0.4);
    let idle = every.mul_f64(2.5);
    // A NAT for each device: what one agent does never shows in the other's.
    let nat = start_nat(ctx, server.addr, idle)?;
    let bob_nat = start_nat(ctx, server.addr, idle)?;
    let within = ctx.patience().seconds(2.0);

    // bob's app registers at the end: until then nothing but heartbeats
    // crosses his connection, so that the gaps between them show from the
    // first one on.
    ctx.step(format!(
        "device bob: an agent with a heartbeat every {:.1} s, well below the NAT's timeout; \
         its app starts later",
        every.as_secs_f64()
    ));
    let bob = start_agent(
        ctx,
        "bob",
        bob_nat.addr(),
        &format!("{:.2}", every.as_secs_f64()),
    )?;

    ctx.step("device ada: an agent with no heartbeats (--keepalive 0)");
    let ada = start_agent(ctx, "ada", nat.addr(), "0")?;
    let ada_mail = start_app(ctx, "mail", &ada)?;
    let first = random_text(ctx);
    send(ctx, server.addr, "ada/mail", &first, &[])?;
    wait_shown(ctx, ada_mail, "mail", &first, within)?;

    // Long enough for both NATs' timeout to pass, and for an agent that
    // sends one PING and no more, or one every two intervals, to go quiet
    // for longer than the check below allows.
    let watched = every.mul_f64(3.2);
    let margin = ctx.patience().seconds(0.1);
    let bob_since = first_mapping(ctx, &bob_nat, "bob")?.opened;
    let ada_since = first_mapping(ctx, &nat, "ada")?.last_byte;
    ctx.step(format!(
        "no notification for ada and bob until {:.1} s after bob's agent connected, and \
         {:.1} s after ada's last byte, longer than the NAT's {:.1} s",
        watched.as_secs_f64(),
        (idle + margin).as_secs_f64(),
        idle.as_secs_f64()
    ));
    // ada's last byte is read again each time: her agent's ACK may cross
    // just after her app shows the notification. An agent that sends bytes
    // all the same is waited for no longer than this.
    let at_most = Instant::now() + watched + idle;
    loop {
        let ada_last = first_mapping(ctx, &nat, "ada")?.last_byte.max(ada_since);
        let until = (bob_since + watched)
            .max(ada_last + idle + margin)
            .min(at_most);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        thread::sleep(left);
    }

    let lost = random_text(ctx);
    send(ctx, server.addr, "ada/mail", &lost, &[])?;
    let kept = random_text(ctx);
    send(ctx, server.addr, "bob/mail", &kept, &[])?;
    ctx.step("bob's app starts: its REGISTER, then the notification, cross the connection");
    let bob_mail = start_app(ctx, "mail", &bob)?;
    wait_shown(ctx, bob_mail, "mail", &kept, within).map_err(|failure| {
        failure.hint(format!(
            "The NAT forgot bob's connection although its agent was told --keepalive {:.2}. \
             Where: TODO 3 in {AGENT_FILE}, fn heartbeats: send `PING` every keepalive \
             interval; each one is traffic that keeps the NAT's mapping alive, and the \
             service answers `PONG`.",
            every.as_secs_f64()
        ))
    })?;
    // ada's mapping is gone: her notification went into it and nowhere. The
    // NAT says so as soon as the notification reaches it; an agent that sent
    // heartbeats after all would have kept the mapping and shown it.
    let ada_lost = notification_lost(ctx, &nat, ada_mail, &lost, within);
    ctx.measured(format!(
        "NAT idle {:.1} s: keepalive 0 lost the notification: {ada_lost}; keepalive {:.1} s \
         kept it",
        idle.as_secs_f64(),
        every.as_secs_f64()
    ));
    if !ada_lost {
        return Err(Failure::new(
            "with --keepalive 0 the agent must send no heartbeat; yet its connection \
             survived longer than the NAT's timeout",
        )
        .hint(
            "Keepalive 0 means no PING at all (the protocol, lessons/08-agent/README.md): \
             that is the case this stage shows losing a notification.",
        ));
    }
    // bob's agent: no mapping forgotten. On a busy machine a PONG may come
    // later than two heartbeats and the agent connect again, which is right;
    // an agent that stops sending heartbeats shows below, on every
    // connection it makes.
    let mappings = bob_nat.mappings();
    let forgotten = mappings
        .iter()
        .filter(|mapping| mapping.forgotten.is_some())
        .count();
    ctx.step(format!(
        "{} connection(s) of bob's crossed the NAT; {forgotten} forgotten",
        mappings.len()
    ));
    if forgotten > 0 {
        return Err(Failure::new(format!(
            "the NAT forgot {forgotten} of bob's {} connection(s); with heartbeats below \
             the NAT's timeout, none should go quiet for that long",
            mappings.len()
        ))
        .detail(output_block(
            "bob's agent's stdout",
            &ctx.process(bob.agent).stdout().text(),
        ))
        .hint(format!(
            "Where: TODO 3 in {AGENT_FILE}, fn heartbeats: send `PING` every keepalive \
             interval. Without them the connection goes quiet, the NAT forgets it, and the \
             agent must reconnect: a new mapping, and a radio wake-up, each time."
        )));
    }
    // A heartbeat sent once, or every two intervals, may still slip under
    // this NAT's timeout, the agent reconnecting whenever its deadline
    // passes; the longest the agent went without sending a byte on a
    // connection, while it was open, tells: one interval and a moment when
    // it is right, two or more when not, however long the PONGs take.
    let now = Instant::now();
    let longest = mappings
        .iter()
        .map(|mapping| {
            let closed = [mapping.device_closed, mapping.server_closed]
                .into_iter()
                .flatten()
                .min();
            mapping.longest_device_quiet_until(closed.unwrap_or(now))
        })
        .max()
        .unwrap_or_default();
    ctx.measured(format!(
        "heartbeats every {:.2} s: {} connection(s); the longest bob's agent sent nothing \
         {:.3} s",
        every.as_secs_f64(),
        mappings.len(),
        longest.as_secs_f64()
    ));
    ctx.step(format!(
        "the longest bob's agent sent nothing: {:.2} s",
        longest.as_secs_f64()
    ));
    if longest > every.mul_f64(1.8) {
        return Err(Failure::new(format!(
            "bob's agent sent no byte for {:.2} s at a stretch; with --keepalive {:.2}, a \
             PING should cross its connection every {:.2} s",
            longest.as_secs_f64(),
            every.as_secs_f64(),
            every.as_secs_f64()
        ))
        .detail(output_block(
            "bob's agent's stdout",
            &ctx.process(bob.agent).stdout().text(),
        ))
        .hint(format!(
            "Where: TODO 3 in {AGENT_FILE}, fn heartbeats: a loop, one `PING` each time \
             `recv_timeout(self.keepalive)` times out, not one PING, and not one every two \
             intervals. A NAT with a shorter timeout than the gap forgets the connection."
        )));
    }
    ctx.expect_running(server.id)
}

/// The first connection that crossed `nat`, waiting for it to come.
fn first_mapping(ctx: &Ctx, nat: &Nat, who: &str) -> Check<MappingInfo> {
    let deadline = Instant::now() + ctx.patience().start;
    loop {
        if let Some(mapping) = nat.mappings().first() {
            return Ok(*mapping);
        }
        if Instant::now() > deadline {
            return Err(Failure::new(format!(
                "{who}'s agent did not connect through the NAT within {:.0} s",
                ctx.patience().start.as_secs_f64()
            ))
            .hint(format!(
                "The agent connects to --connect as soon as it starts ({AGENT_FILE}, fn \
                 session)."
            )));
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `text`, sent to `app` through `nat`'s first mapping, was lost:
/// the NAT forgot the mapping (nothing passes after that), or `within`
/// passed without the app showing it.
fn notification_lost(
    ctx: &mut Ctx,
    nat: &Nat,
    app: ProcessId,
    text: &str,
    within: Duration,
) -> bool {
    let line = format!("] {text}\n");
    let until = Instant::now() + within;
    while Instant::now() < until {
        let forgotten = nat
            .mappings()
            .first()
            .is_some_and(|mapping| mapping.forgotten.is_some());
        if forgotten {
            return true;
        }
        let soon = Instant::now() + Duration::from_millis(20);
        if ctx.process(app).wait_for_stdout(line.as_bytes(), soon) {
            return false;
        }
    }
    true
}

fn dead_connection(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    // A NAT for each device: ada's first mapping is her NAT's first, bob's
    // his NAT's first.
    let nats = [
        start_nat(ctx, server.addr, Duration::from_secs(600))?,
        start_nat(ctx, server.addr, Duration::from_secs(600))?,
    ];
    // Heartbeats every 0.6 s: a dead connection should be closed within
    // 1.2 s; a deadline of four heartbeats (at least 1.8 s after the NAT
    // dropped it) or none at all takes longer than the 1.8 s allowed.
    let keepalive = ctx.patience().seconds(0.6);
    let every = format!("{:.2}", keepalive.as_secs_f64());
    let mut agents = Vec::new();
    for (name, nat) in ["ada", "bob"].into_iter().zip(&nats) {
        let device = start_agent_with(ctx, name, nat.addr(), &every, &QUICK_BACKOFF)?;
        let app = start_app(ctx, "mail", &device)?;
        let text = random_text(ctx);
        send(ctx, server.addr, &format!("{name}/mail"), &text, &[])?;
        wait_shown(ctx, app, "mail", &text, ctx.patience().seconds(2.0))?;
        agents.push(device.agent);
    }

    ctx.step("the NAT forgets every mapping, silently (no FIN, no RST)");
    let dropped = Instant::now();
    for nat in &nats {
        nat.forget_all();
    }
    // bob's phone is gone for good: only the service's own deadline can
    // free its connection (ada's is replaced when her agent comes back).
    ctx.kill(agents[1]);
    let limit = keepalive * 3;
    let deadline = dropped + limit + ctx.patience().seconds(1.0);
    // The NAT notes when each side closed; a look after the deadline still
    // counts, should this test itself have waited long for the machine.
    let (ada_mapping, bob_mapping) = loop {
        let (ada_mapping, bob_mapping) = (nats[0].mappings()[0], nats[1].mappings()[0]);
        let both = ada_mapping.device_closed.is_some() && bob_mapping.server_closed.is_some();
        if both || Instant::now() >= deadline {
            break (ada_mapping, bob_mapping);
        }
        thread::sleep(Duration::from_millis(20));
    };
    let since =
        |at: Option<Instant>, from: Instant| at.map(|at| at.saturating_duration_since(from));
    let agent_closed = since(ada_mapping.device_closed, dropped);
    let service_closed = since(bob_mapping.server_closed, dropped);
    // How long each side had heard nothing when it closed: from the last
    // byte the NAT carried to it (ada's agent: the PONG to her last PING;
    // the service: bob's last PING), not from the drop, which came some
    // time into an interval. Two missed heartbeats are two intervals.
    let agent_silence = since(ada_mapping.device_closed, ada_mapping.last_byte);
    let service_silence = since(bob_mapping.server_closed, bob_mapping.last_from_device);
    let shown_time = |time: Option<Duration>| {
        time.map_or("never".to_string(), |t| format!("{:.2} s", t.as_secs_f64()))
    };
    ctx.measured(format!(
        "keepalive {:.1} s: ada's agent closed after {} ({} after the last byte it heard), \
         the service bob's connection after {} ({})",
        keepalive.as_secs_f64(),
        shown_time(agent_closed),
        shown_time(agent_silence),
        shown_time(service_closed),
        shown_time(service_silence)
    ));
    ctx.step(format!(
        "ada's agent closed its side after {}; the service closed bob's after {}",
        shown_time(agent_closed),
        shown_time(service_closed)
    ));
    let sides = [
        (
            "agent",
            agent_closed,
            agent_silence,
            format!(
                "Where: TODO 4 in {AGENT_FILE}, fn session: a read deadline of two keepalive \
                 intervals. The service answers each PING with a PONG, so two intervals \
                 without a byte means the connection is dead, whatever TCP believes: close it \
                 and reconnect."
            ),
        ),
        (
            "service",
            service_closed,
            service_silence,
            format!(
                "Where: TODO 5 in {SERVER_FILE}, fn two_heartbeats: the HELLO says how often \
                 the agent will send a PING; with no frame for two intervals, close the \
                 connection. A service that waits for TCP keeps a dead connection, and its \
                 thread, for hours."
            ),
        ),
    ];
    // Halfway between two intervals and three: a deadline of three passes
    // the limit from the drop, never this one.
    let most_silence = keepalive * 5 / 2;
    for (side, closed, silence, hint) in sides {
        if closed.is_none_or(|time| time > limit) {
            return Err(Failure::new(format!(
                "after the NAT forgot the connection, the {side} closed it after {}; two \
                 missed heartbeats ({:.1} s) should be enough to know",
                shown_time(closed),
                (keepalive * 2).as_secs_f64()
            ))
            .hint(hint));
        }
        if let Some(silence) = silence.filter(|silence| *silence > most_silence) {
            return Err(Failure::new(format!(
                "the {side} closed the dead connection {:.2} s after the last byte it heard: \
                 {:.1} intervals of {:.1} s; two missed heartbeats are two intervals ({:.1} s)",
                silence.as_secs_f64(),
                silence.as_secs_f64() / keepalive.as_secs_f64(),
                keepalive.as_secs_f64(),
                (keepalive * 2).as_secs_f64()
            ))
            .hint(hint));
        }
    }
    ctx.step("the agent connects again through the NAT");
    let reconnect_by = Instant::now() + ctx.patience().seconds(5.0);
    while nats[0].connections() < 2 && Instant::now() < reconnect_by {
        thread::sleep(Duration::from_millis(20));
    }
    if nats[0].connections() < 2 {
        return Err(Failure::new(
            "the agent did not connect again after closing the dead connection",
        )
        .hint(format!("Where: {AGENT_FILE}, fn stay_connected.")));
    }
    ctx.expect_running(server.id)
}

fn exactly_once(ctx: &mut Ctx) -> Check<()> {
    positions_after_a_reconnect(ctx)?;
    outage_through_the_nat(ctx)
}

/// The test plays the service: it sends two notifications, cuts the
/// connection, and sends the second again after the reconnect, as a service
/// that never saw its acknowledgement would.
fn positions_after_a_reconnect(ctx: &mut Ctx) -> Check<()> {
    let (listener, service) = local::listener()?;
    ctx.step("the test plays the push service");
    let device = start_agent_with(ctx, "ada", service, "30", &QUICK_BACKOFF)?;
    let mut uplink = accept(ctx, &listener, "the agent")?;
    expect_frame(&mut uplink, "HELLO ada 30000", "the agent's first frame")?;
    uplink.send(&frame("WELCOME"))?;
    let app = start_app(ctx, "mail", &device)?;
    expect_frame(&mut uplink, "REGISTER mail 0", "the app registered")?;
    let texts: Vec<String> = (0..3).map(|_| random_text(ctx)).collect();
    let ack_hint = format!(
        "Where: TODO 6 in {AGENT_FILE}, fn deliver: after handing a notification to its \
         app, acknowledge its position, `ACK APP ID`: every notification for that app up to \
         ID is shown."
    );
    for (id, text) in [(41, &texts[0]), (42, &texts[1])] {
        uplink.send(&frame(&format!("PUSH mail {id} {text}")))?;
        expect_frame(
            &mut uplink,
            &format!("ACK mail {id}"),
            "the agent handed a notification to its app",
        )
        .map_err(|failure| failure.hint(ack_hint.clone()))?;
    }
    ctx.step("the test's service closes the connection; the agent must come back");
    uplink.close();
    let mut uplink = accept(ctx, &listener, "the agent, reconnecting,")?;
    expect_frame(
        &mut uplink,
        "HELLO ada 30000",
        "the agent's first frame, again",
    )?;
    uplink.send(&frame("WELCOME"))?;
    expect_frame(
        &mut uplink,
        "REGISTER mail 42",
        "the agent's registrations after a reconnect",
    )
    .map_err(|failure| {
        failure.hint(format!(
            "Where: TODO 1 in {AGENT_FILE}, fn hello: after HELLO, a REGISTER for each app \
                 that runs, with the last stream id handed to it, so that the service sends \
                 only what comes after."
        ))
    })?;
    ctx.step("the service sends 42 again (it never saw the ACK), then 43");
    uplink.send(&frame(&format!("PUSH mail 42 {}", texts[1])))?;
    uplink.send(&frame(&format!("PUSH mail 43 {}", texts[2])))?;
    wait_shown(ctx, app, "mail", &texts[2], ctx.patience().seconds(2.0))?;
    expect_shown_exactly(ctx, app, "mail", &texts).map_err(|failure| {
        failure.hint(format!(
            "Where: TODO 6 in {AGENT_FILE}, fn deliver: a notification whose stream id is not \
             above the last one handed to that app was shown already; acknowledge it again, \
             but do not show it twice."
        ))
    })
}

/// Through the NAT: every mapping dropped, notifications sent meanwhile, all
/// of them shown once when the agent is back.
fn outage_through_the_nat(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let nat = start_nat(ctx, server.addr, Duration::from_secs(600))?;
    let keepalive = format!("{:.2}", ctx.patience().seconds(0.3).as_secs_f64());
    let device = start_agent_with(ctx, "bob", nat.addr(), &keepalive, &QUICK_BACKOFF)?;
    let names = ["mail", "chat"];
    let mut apps = Vec::new();
    for name in names {
        apps.push(start_app(ctx, name, &device)?);
    }
    let mut sent: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    for (index, name) in names.iter().enumerate() {
        let text = random_text(ctx);
        send(ctx, server.addr, &format!("bob/{name}"), &text, &[])?;
        wait_shown(ctx, apps[index], name, &text, ctx.patience().seconds(2.0))?;
        sent[index].push(text);
    }
    ctx.step("the NAT forgets every mapping; three notifications per app are sent meanwhile");
    let dropped = Instant::now();
    nat.forget_all();
    for _ in 0..3 {
        for (index, name) in names.iter().enumerate() {
            let text = random_text(ctx);
            send(ctx, server.addr, &format!("bob/{name}"), &text, &[])?;
            sent[index].push(text);
        }
    }
    let within = ctx.patience().seconds(8.0);
    for (index, name) in names.iter().enumerate() {
        let last = sent[index].last().expect("sent").clone();
        wait_shown(ctx, apps[index], name, &last, within).map_err(|failure| {
            failure.hint(format!(
                "The agent should notice the dead connection within two heartbeats, connect \
                 again, and register its apps with their positions; the service then sends \
                 everything after them ({STORE_FILE}, fn register)."
            ))
        })?;
    }
    ctx.measured(format!(
        "outage to the last notification shown: {:.2} s",
        dropped.elapsed().as_secs_f64()
    ));
    ctx.step("one more notification each: anything shown twice would come before it");
    for (index, name) in names.iter().enumerate() {
        let text = random_text(ctx);
        send(ctx, server.addr, &format!("bob/{name}"), &text, &[])?;
        wait_shown(ctx, apps[index], name, &text, ctx.patience().seconds(2.0))?;
        sent[index].push(text);
    }
    for (index, name) in names.iter().enumerate() {
        expect_shown_exactly(ctx, apps[index], name, &sent[index])?;
    }
    ctx.expect_running(server.id)
}

/// Hand `SEND` frames to the service over one connection; the answers.
fn send_frames(ctx: &Ctx, service: SocketAddr, frames: &[String]) -> Check<Vec<String>> {
    let mut conn = ctx.connect(service)?;
    let mut answers = Vec::new();
    for body in frames {
        conn.send(&frame(body))?;
        answers.push(read_frame(&mut conn)?);
    }
    Ok(answers)
}

fn app_not_running(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let device = start_agent(ctx, "ada", server.addr, "30")?;
    let _mail = start_app(ctx, "mail", &device)?;
    ctx.step("no app called news runs on ada");
    let kept = random_text(ctx);
    send(ctx, server.addr, "ada/news", &kept, &[])?;
    let (expiring, replaced) = (random_text(ctx), random_text(ctx));
    send(ctx, server.addr, "ada/news", &expiring, &["--ttl", "1"])?;
    send(
        ctx,
        server.addr,
        "ada/news",
        &replaced,
        &["--collapse", "score"],
    )?;
    let latest = random_text(ctx);
    send(
        ctx,
        server.addr,
        "ada/news",
        &latest,
        &["--collapse", "score"],
    )?;
    let expired_at = Instant::now() + Duration::from_millis(1100);

    ctx.step("100 notifications for bob, whose agent is not connected: the 101st is refused");
    let frames: Vec<String> = (0..100)
        .map(|index| format!("SEND bob/later 3600 - filler {index}"))
        .collect();
    let answers = send_frames(ctx, server.addr, &frames)?;
    if let Some(refused) = answers.iter().find(|answer| !answer.starts_with("OK ")) {
        return Err(Failure::new(format!(
            "with fewer than 100 notifications waiting for the device, a SEND got {refused:?}"
        ))
        .hint(format!(
            "Where: {STORE_FILE}, fn accept: up to 100 may wait per device."
        )));
    }
    let over = send_frames(
        ctx,
        server.addr,
        &["SEND bob/later 3600 - one too many".to_string()],
    )?;
    if !over[0].starts_with("ERR ") {
        return Err(Failure::new(format!(
            "the 101st notification waiting for one device got {:?}; it should be refused \
             with `ERR` and a reason",
            over[0]
        ))
        .hint(format!(
            "Where: {STORE_FILE}, fn accept, MAX_WAITING: a service that takes everything runs \
             out of memory for a phone that never comes back. The sender, told, can retry."
        )));
    }
    while Instant::now() < expired_at {
        thread::sleep(Duration::from_millis(50));
    }
    ctx.step("the app news starts, after the TTL of one of its notifications has passed");
    let news = start_app(ctx, "news", &device)?;
    wait_shown(ctx, news, "news", &latest, ctx.patience().seconds(3.0)).map_err(|failure| {
        failure.hint(format!(
            "Notifications for an app that is not registered wait at the service, and go out \
             when the agent says `REGISTER news 0` ({STORE_FILE}, fn register and fn \
             next_to_send)."
        ))
    })?;
    let marker = random_text(ctx);
    send(ctx, server.addr, "ada/news", &marker, &[])?;
    wait_shown(ctx, news, "news", &marker, ctx.patience().seconds(2.0))?;
    expect_shown_exactly(ctx, news, "news", &[kept, latest, marker]).map_err(|failure| {
        failure.hint(format!(
            "Expected: the one kept, not the one whose --ttl 1 had passed, and of the two with \
             --collapse score only the later. Where: TODO 7 in {STORE_FILE}, fn accept: a new \
             notification with a collapse key replaces a waiting one with the same key for \
             that app."
        ))
    })?;
    ctx.expect_running(server.id)
}

/// Devices in the reconnect storm.
const FLEET: usize = 50;
/// The longest wait between two attempts in the storm: the whole fleet is
/// back within it once the service is. Below the first ceiling (0.5 s), so
/// every wait is a draw below it, and the storm is over in a second.
const STORM_BACKOFF_CAP: &str = "0.25";

/// An app played by the test on a plain socket (stage 8 runs one per device).
struct RawApp {
    device: String,
    stream: TcpStream,
}

impl RawApp {
    /// Register as `app` with the agent at `agent`.
    fn register(
        device: &str,
        agent: SocketAddr,
        app: &str,
        patience: Duration,
    ) -> Result<RawApp, String> {
        let mut stream = TcpStream::connect_timeout(&agent, patience)
            .map_err(|error| format!("{device}'s agent at {agent}: {error}"))?;
        stream
            .write_all(&frame(&format!("REGISTER {app} 0")))
            .map_err(|error| format!("{device}'s agent: {error}"))?;
        let mut raw = RawApp {
            device: device.to_string(),
            stream,
        };
        let answer = raw.read_frame(Instant::now() + patience)?;
        if !answer.starts_with("OK") {
            return Err(format!(
                "{device}'s agent answered {answer:?} to REGISTER {app} 0"
            ));
        }
        Ok(raw)
    }

    /// The next frame, before `deadline`.
    fn read_frame(&mut self, deadline: Instant) -> Result<String, String> {
        let mut prefix = [0u8; 4];
        self.read_all(&mut prefix, deadline)?;
        let length = u32::from_be_bytes(prefix) as usize;
        if length == 0 || length > MAX_FRAME {
            return Err(format!(
                "{}'s agent sent a frame of {length} bytes",
                self.device
            ));
        }
        let mut body = vec![0u8; length];
        self.read_all(&mut body, deadline)?;
        String::from_utf8(body)
            .map_err(|_| format!("{}'s agent sent a frame that is not text", self.device))
    }

    fn read_all(&mut self, buffer: &mut [u8], deadline: Instant) -> Result<(), String> {
        let mut filled = 0;
        while filled < buffer.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("nothing reached {}'s app in time", self.device));
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut buffer[filled..]) {
                Ok(0) => {
                    return Err(format!(
                        "{}'s agent closed the app's connection",
                        self.device
                    ))
                }
                Ok(count) => filled += count,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => return Err(format!("{}'s app: {error}", self.device)),
            }
        }
        Ok(())
    }

    /// Wait for `PUSH APP ID TEXT` and check its text; how long it took.
    fn expect_push(&mut self, text: &str, deadline: Instant) -> Result<Instant, String> {
        let body = self.read_frame(deadline)?;
        let shown = body.splitn(4, ' ').nth(3).unwrap_or_default();
        if !body.starts_with("PUSH ") || shown != text {
            return Err(format!(
                "{}'s app expected a PUSH of {text:?} and got {body:?} (a duplicate, or \
                 another's)",
                self.device
            ));
        }
        Ok(Instant::now())
    }
}

/// One SEND frame per device over one connection; each answer must be OK.
/// Returns the slowest answer.
fn send_to_fleet(ctx: &Ctx, service: SocketAddr, texts: &[String]) -> Check<Duration> {
    let frames: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| format!("SEND d{index:03}/app 3600 - {text}"))
        .collect();
    let mut conn = ctx.connect(service)?;
    let mut slowest = Duration::ZERO;
    for body in &frames {
        let asked = Instant::now();
        conn.send(&frame(body))?;
        let answer = read_frame(&mut conn)?;
        slowest = slowest.max(asked.elapsed());
        if !answer.starts_with("OK ") {
            return Err(conn.fail(format!("the service answered {answer:?} to {body:?}")));
        }
    }
    Ok(slowest)
}

/// A percentile of sorted durations.
fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Start the fleet's agents, d000 onwards, all at once (one after another,
/// each waiting for the one before, would take seconds on a busy machine).
fn start_fleet(ctx: &mut Ctx, service: SocketAddr, no_jitter: bool) -> Check<Vec<Device>> {
    let service = service.to_string();
    let mut runs = Vec::new();
    for index in 0..FLEET {
        let name = format!("d{index:03}");
        let mut args = agent_args(&name, &service, "60").to_vec();
        args.extend_from_slice(&["--backoff-cap", STORM_BACKOFF_CAP]);
        if no_jitter {
            args.push("--no-jitter");
        }
        runs.push(args.into_iter().map(String::from).collect());
    }
    let started = ctx.start_each(&runs)?;
    let deadline = Instant::now() + ctx.patience().start;
    let mut fleet = Vec::new();
    for agent in started {
        let local = ctx
            .process(agent)
            .wait_for_address(deadline)
            .map_err(|error| error.failure(false))?;
        fleet.push(Device { agent, local });
    }
    Ok(fleet)
}

fn reconnect_storm(ctx: &mut Ctx) -> Check<()> {
    // The twins push each other out while the storm goes on: they take a
    // second to show their backoff, about as long as the storm.
    let twin = start_twins(ctx)?;
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let patience = ctx.patience().start;
    // The test's NAT, which forgets nothing here, notes when each agent's
    // connection reaches the service.
    let nat = start_nat(ctx, addr, Duration::from_secs(600))?;
    ctx.step(format!(
        "{FLEET} agents start, devices d000 to d{:03}, each with one app (the test's), \
         waiting at most {STORM_BACKOFF_CAP} s between attempts (--backoff-cap)",
        FLEET - 1
    ));
    // COURSE_NO_JITTER=1 measures the same storm without jitter (the stage
    // then fails, as it should).
    let no_jitter = switched_on("COURSE_NO_JITTER");
    let fleet = start_fleet(ctx, nat.addr(), no_jitter)?;
    let mut apps = Vec::new();
    for (index, device) in fleet.iter().enumerate() {
        let name = format!("d{index:03}");
        apps.push(RawApp::register(&name, device.local, "app", patience).map_err(Failure::new)?);
    }
    ctx.step("a first notification to every device: all are connected");
    let first: Vec<String> = (0..FLEET).map(|_| random_text(ctx)).collect();
    send_to_fleet(ctx, addr, &first)?;
    let deadline = Instant::now() + ctx.patience().seconds(10.0);
    for (app, text) in apps.iter_mut().zip(&first) {
        app.expect_push(text, deadline).map_err(Failure::new)?;
    }
    let before = nat.connections();

    // Down for longer than any wait (the cap, 0.25 s): every agent's first
    // attempt fails, and it must wait and try again.
    ctx.kill(server.id);
    let outage = Duration::from_millis(300);
    ctx.step(format!(
        "the service is down for {:.1} s, then starts again on {addr}",
        outage.as_secs_f64()
    ));
    thread::sleep(outage);
    let bind = addr.to_string();
    let restarted = ctx.start_server_with(&["server", "--bind", &bind])?;
    let up = Instant::now();
    let second: Vec<String> = (0..FLEET).map(|_| random_text(ctx)).collect();
    let slowest_send = send_to_fleet(ctx, addr, &second)?;
    let back_by = up + ctx.patience().seconds(10.0);
    let arrivals: Vec<Result<Instant, String>> = thread::scope(|scope| {
        let readers: Vec<_> = apps
            .iter_mut()
            .zip(&second)
            .map(|(app, text)| scope.spawn(move || app.expect_push(text, back_by)))
            .collect();
        readers
            .into_iter()
            .map(|reader| {
                reader
                    .join()
                    .unwrap_or_else(|_| Err("a reader panicked".into()))
            })
            .collect()
    });
    let missing: Vec<String> = arrivals.into_iter().filter_map(Result::err).collect();
    if !missing.is_empty() {
        return Err(Failure::new(format!(
            "{} of {FLEET} devices did not get the notification sent after the restart within \
             {:.0} s",
            missing.len(),
            back_by.saturating_duration_since(up).as_secs_f64()
        ))
        .detail(output_block(
            "the first of them",
            &missing[..missing.len().min(5)].join("\n"),
        ))
        .hint(format!(
            "Every agent must come back by itself: after a failed attempt, wait (backoff) and \
             try again, for ever ({AGENT_FILE}, fn stay_connected)."
        )));
    }
    // When each agent's new connection was made, as the kernel under the
    // test's NAT saw it: the notifications' arrivals would also count the
    // time the test took to send them, and the NAT's own clock the moments
    // a busy machine held this test back.
    let mut times: Vec<Duration> = nat.mappings()[before..]
        .iter()
        .map(|mapping| mapping.device_connected.saturating_duration_since(up))
        .collect();
    times.sort();
    let (p10, p50, p90, last) = (
        percentile(&times, 0.1),
        percentile(&times, 0.5),
        percentile(&times, 0.9),
        percentile(&times, 1.0),
    );
    let spread = p90.saturating_sub(p10);
    let summary = format!(
        "after the restart, the agents' {} connections came at p10 {:.2} s, p50 {:.2} s, \
         p90 {:.2} s, last {:.2} s; the slowest SEND was answered in {:.0} ms",
        times.len(),
        p10.as_secs_f64(),
        p50.as_secs_f64(),
        p90.as_secs_f64(),
        last.as_secs_f64(),
        slowest_send.as_secs_f64() * 1e3
    );
    ctx.measured(format!(
        "storm{}: {summary}",
        if no_jitter { " without jitter" } else { "" }
    ));
    // With full jitter the fleet spreads over the last ceiling (0.25 s):
    // 80% of it over about 0.15 s, and less than 90 ms once in 10 000 runs
    // (a simulation of 50 draws). Without, it comes back in one wave,
    // within a few milliseconds.
    let wave = Duration::from_millis(75);
    if spread < wave {
        // The evidence is when the agents connected, not the SENDs on the
        // wire: the report shows those times, and leaves the wire out.
        return Err(Failure::new(format!(
            "the fleet came back together: 80% of the devices within {:.0} ms of each other, \
             where with full jitter they spread over {} ms or more",
            spread.as_secs_f64() * 1e3,
            wave.as_millis()
        ))
        .detail(summary)
        .without_wire()
        .hint(
            "Where: TODO 8 in lessons/08-agent/backoff.rs, fn next_delay: wait a random time \
             between zero and the (capped) ceiling. Agents that lost the service at the same \
             moment and wait the same times come back in waves that knock it over again.",
        ));
    }
    let responsive = ctx.patience().seconds(1.0);
    if slowest_send > responsive {
        return Err(Failure::new(format!(
            "during the storm a SEND waited {:.1} s for its answer",
            slowest_send.as_secs_f64()
        ))
        .hint("Accepting a notification must not wait for the agents' reconnections."));
    }
    ctx.step("one more notification each: a duplicate would come before it");
    let third: Vec<String> = (0..FLEET).map(|_| random_text(ctx)).collect();
    send_to_fleet(ctx, addr, &third)?;
    let deadline = Instant::now() + ctx.patience().seconds(10.0);
    for (app, text) in apps.iter_mut().zip(&third) {
        app.expect_push(text, deadline).map_err(Failure::new)?;
    }
    ctx.expect_running(restarted.id)?;
    twins_back_off(ctx, twin)?;
    // Stopped all at once, not one after another: on a busy machine,
    // programs that each have a moment to exit would take seconds.
    ctx.step("the fleet and the service are asked to stop (SIGTERM), all together");
    let mut programs: Vec<ProcessId> = fleet.iter().map(|device| device.agent).collect();
    programs.push(restarted.id);
    for id in &programs {
        ctx.process(*id).request_stop();
    }
    let deadline = Instant::now() + ctx.patience().seconds(10.0);
    for id in &programs {
        ctx.process(*id).wait_exit(deadline);
    }
    Ok(())
}

/// Two agents with one device's name, on a service of their own, without
/// jitter: once the second starts, each connection the service takes
/// replaces the other's. The first of them, for `twins_back_off`.
fn start_twins(ctx: &mut Ctx) -> Check<ProcessId> {
    let service = ctx.start_server(&[])?;
    ctx.step(format!(
        "on a second service ({}), an agent starts as device twin, without jitter \
         (--no-jitter)",
        service.addr
    ));
    // A heartbeat a second: a connection counts as one that held after two
    // (2 s), far longer than the twins let each other stay (about 0.5 s).
    let first = start_agent_with(ctx, "twin", service.addr, "1", &["--no-jitter"])?;
    let connected = format!("connected to {} as twin", service.addr);
    let deadline = Instant::now() + ctx.patience().start;
    if !ctx
        .process(first.agent)
        .wait_for_stdout(connected.as_bytes(), deadline)
    {
        let stdout = ctx.process(first.agent).stdout().text();
        return Err(Failure::new(format!(
            "the first twin did not print `{connected}` within {:.0} s",
            ctx.patience().start.as_secs_f64()
        ))
        .detail(output_block("its stdout", &stdout))
        .hint(format!(
            "The agent prints `connected to ADDR as DEVICE` once the service has answered \
             its HELLO with WELCOME, as in stage 1: TODO 1 in {AGENT_FILE}, fn hello."
        ))
        .without_wire());
    }
    ctx.step(
        "a second agent starts as device twin too: each connection the service takes \
         replaces the other's",
    );
    start_agent_with(ctx, "twin", service.addr, "1", &["--no-jitter"])?;
    Ok(first.agent)
}

/// The first twin, pushed out by the other twice, must wait longer the
/// second time: a connection that ended at once is a failure, not a
/// reason to start the backoff over.
fn twins_back_off(ctx: &mut Ctx, twin: ProcessId) -> Check<()> {
    ctx.step("the first twin, pushed out twice by the other, waits longer the second time");
    let within = ctx.patience().seconds(5.0);
    let deadline = Instant::now() + within;
    let waits = loop {
        let waits = reconnect_waits(&ctx.process(twin).stdout().text());
        if waits.len() >= 2 || Instant::now() >= deadline {
            break waits;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = ctx.process(twin).stdout().text();
    match waits[..] {
        [first, second, ..] if second > first => Ok(()),
        [first, second, ..] => Err(Failure::new(format!(
            "pushed out twice by another agent with its device's name, each time right after \
             it connected, the first twin waited {first:.2} s, then {second:.2} s"
        ))
        .detail(output_block("its stdout", &stdout))
        .hint(format!(
            "Only a connection that held (two heartbeats, fn held_long_enough) shows the \
             way to the service works and starts the backoff over. Reset after every \
             connection, two agents with one name push each other out twice a second, for \
             ever. Where: {AGENT_FILE}, fn stay_connected. The course gives that function \
             written: if it was changed, put back the check around `backoff.reset()`."
        ))
        .without_wire()),
        _ => Err(Failure::new(format!(
            "the first twin did not say `reconnecting in ... s` twice within {:.0} s",
            within.as_secs_f64()
        ))
        .detail(output_block("its stdout", &stdout))
        .hint(format!(
            "Each time its connection ends, the agent says `reconnecting in SECS s` and \
             waits that long (fn stay_connected, given in {AGENT_FILE}). The other twin \
             pushes it out each time it connects: about every half second here, so two \
             such lines should come within a second or two. Its stdout above shows where \
             it stopped: a connection that never ended, or a wait far longer than 1 s \
             (fn next_delay in lessons/08-agent/backoff.rs)."
        ))
        .without_wire()),
    }
}

/// The waits an agent announced, in seconds: its `reconnecting in 0.50 s`
/// lines.
fn reconnect_waits(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("reconnecting in ")?.strip_suffix(" s"))
        .filter_map(|seconds| seconds.parse().ok())
        .collect()
}

fn durable(ctx: &mut Ctx) -> Check<()> {
    let folder = ctx.temp_dir()?;
    let data = folder.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--data", &data])?;
    let keepalive = format!("{:.2}", ctx.patience().scale());
    let device = start_agent(ctx, "ada", server.addr, &keepalive)?;
    let mail = start_app(ctx, "mail", &device)?;
    let mut mail_texts = vec![random_text(ctx)];
    send(ctx, server.addr, "ada/mail", &mail_texts[0], &[])?;
    wait_shown(
        ctx,
        mail,
        "mail",
        &mail_texts[0],
        ctx.patience().seconds(2.0),
    )?;
    ctx.step("two notifications for news, which is not running");
    let mut news_texts = vec![random_text(ctx), random_text(ctx)];
    for text in &news_texts {
        send(ctx, server.addr, "ada/news", text, &[])?;
    }
    ctx.step("a second server on the same folder must refuse it");
    let owner = format!(
        "in use by another server (pid {})",
        ctx.process(server.id).pid()
    );
    let lock_hint = "Two servers on one folder would hand out the same stream ids and delete \
                     each other's files. The given lessons/08-agent/disk.rs, fn claim, locks \
                     DIR/server.lock before `listening on`: keep the `Disk`, and so its lock, \
                     for as long as the server runs.";
    let second = ctx
        .run(&["server", "--bind", "127.0.0.1:0", "--data", &data], b"")
        .map_err(|mut failure| {
            failure.what = "a second server on the same --data folder went on running; it \
                            should have exited with `error: DIR is in use by another server \
                            (pid N)`"
                .to_string();
            failure.hint(lock_hint)
        })?;
    ctx.expect_one_line_error(&second, &owner, "started on a folder in use")
        .map_err(|failure| failure.more_hint(lock_hint))?;
    ctx.kill(server.id);
    let bind = server.addr.to_string();
    let restarted = ctx.start_server_with(&["server", "--bind", &bind, "--data", &data])?;
    ctx.step("the agent must reconnect by itself");
    let text = random_text(ctx);
    send(ctx, server.addr, "ada/mail", &text, &[])?;
    mail_texts.push(text.clone());
    wait_shown(ctx, mail, "mail", &text, ctx.patience().seconds(8.0)).map_err(|failure| {
        failure.hint(
            "The agent reconnects after the service comes back; the new notification has a \
             stream id above every earlier one (ids never go back, even across a restart), so \
             the agent does not take it for one it has shown.",
        )
    })?;
    let news = start_app(ctx, "news", &device)?;
    wait_shown(
        ctx,
        news,
        "news",
        &news_texts[1],
        ctx.patience().seconds(3.0),
    )
    .map_err(|failure| {
        failure.hint(format!(
            "`OK` told the sender the notification was safe. Where: TODO 9 in {STORE_FILE}, fn \
             accept: save it on disk (disk.rs writes, fsyncs and renames) before answering, \
             and load what is saved when the service starts."
        ))
    })?;
    for (app, name, texts) in [
        (mail, "mail", &mut mail_texts),
        (news, "news", &mut news_texts),
    ] {
        let marker = random_text(ctx);
        send(ctx, server.addr, &format!("ada/{name}"), &marker, &[])?;
        wait_shown(ctx, app, name, &marker, ctx.patience().seconds(2.0))?;
        texts.push(marker);
        expect_shown_exactly(ctx, app, name, texts)?;
    }
    ctx.expect_running(restarted.id)
}

/// Expect the service to answer `ERR ...` (optionally) and close.
fn expect_refused(conn: &mut Conn, what: &str) -> Check<()> {
    let hint = format!(
        "{what}: answer `ERR` and a reason if you like, then close that one connection \
         ({SERVER_FILE}, fn serve; frame.rs, fn read_frame refuses a length over 4096 \
         before reading the body)."
    );
    // ERR frames (and an agent's WELCOME) may come first; any other frame
    // is wrong. A read that fails ends the loop: closed, reset, or silent,
    // which the wait for the end below tells apart.
    loop {
        match read_frame(conn) {
            Ok(body) if body.starts_with("ERR") || body == "WELCOME" => {}
            Ok(body) => {
                return Err(conn
                    .fail(format!("{what}: the service answered {body:?}"))
                    .hint(hint))
            }
            Err(_) => break,
        }
    }
    conn.expect_end().map_err(|failure| failure.hint(hint))
}

fn hostile(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let device = start_agent(ctx, "ada", server.addr, "30")?;
    let mail = start_app(ctx, "mail", &device)?;

    ctx.step("a connection announces a frame of 2 GiB");
    let mut huge = ctx.connect(server.addr)?;
    huge.send(&0x7fff_fff0u32.to_be_bytes())?;
    huge.send(b"SEND ada/mail")?;
    expect_refused(&mut huge, "a frame of 2 GiB").map_err(|failure| {
        failure.more_hint("Where: TODO 10 in lessons/08-agent/frame.rs, fn read_frame.")
    })?;

    for (body, what) in [
        ("HELLO eve 0", "an agent registering an app named ../../x"),
        (
            "SEND ada/m\u{1b}[2J 60 - hi",
            "a SEND to an app named with an escape code",
        ),
        (
            "SEND ../mail 60 - hi",
            "a SEND to a device named `..` (with --data, the data folder's parent)",
        ),
    ] {
        ctx.step(what);
        let mut conn = ctx.connect(server.addr)?;
        conn.send(&frame(body))?;
        if body.starts_with("HELLO") {
            conn.send(&frame("REGISTER ../../x 0"))?;
        }
        expect_refused(&mut conn, what)?;
    }
    ctx.step("an app named ../../x registers with the agent");
    let mut app = ctx.connect(device.local)?;
    app.send(&frame("REGISTER ../../x 0"))?;
    expect_refused(&mut app, "an app whose name is not one")?;
    crowd_at_the_agent(ctx, &device)?;

    let (stuck, patience) = (ctx.patience().seconds(0.3), ctx.patience().start);
    let (agent, service) = (device.local, server.addr);
    thread::scope(|scope| {
        let deaf = scope.spawn(move || flood_deaf_app(agent, service, stuck, patience));
        never_reads(ctx, server.addr)?;
        trickled_frame(ctx, server.addr)?;
        made_up_devices(ctx)?;
        let flooded = deaf.join().expect("the deaf app's thread does not panic");
        mail_still_served(ctx, server.addr, mail, flooded)
    })?;

    ctx.step("ada's mail app still gets its notifications");
    let text = random_text(ctx);
    send(ctx, server.addr, "ada/mail", &text, &[])?;
    wait_shown(ctx, mail, "mail", &text, ctx.patience().seconds(2.0))?;
    ctx.expect_running(device.agent)?;
    ctx.expect_running(server.id)
}

/// Connections the crowd opens before it waits for the agent to take them.
/// The kernel queues at most 128 not yet accepted (the backlog Rust's
/// `TcpListener::bind` asks for); past that it drops the next one's
/// handshake, and the test's connect waits a second for it to be sent again.
const CROWD_BATCH: usize = 25;

/// Wait until the agent has accepted every connection made before: it takes
/// them in order, and answers one that registers a name that is not one
/// only once it has taken it. Only a pace: what comes back is not checked.
fn agent_caught_up(agent: SocketAddr, patience: Duration) {
    let Ok(mut probe) = TcpStream::connect_timeout(&agent, patience) else {
        return;
    };
    let _ = probe.set_read_timeout(Some(patience));
    let _ = probe.write_all(&frame("REGISTER ../probe 0"));
    let _ = probe.read(&mut [0u8; 1]);
}

/// The agent's port for apps holds a bounded number of connections: past
/// it, `ERR` and closed, not a thread each; once they go, apps register.
fn crowd_at_the_agent(ctx: &mut Ctx, device: &Device) -> Check<()> {
    const CROWD: usize = 200;
    ctx.step(format!(
        "{CROWD} connections to the agent's port for apps say nothing; one more comes"
    ));
    let patience = ctx.patience().start;
    let mut crowd = Vec::new();
    for index in 0..CROWD {
        if index > 0 && index % CROWD_BATCH == 0 {
            agent_caught_up(device.local, patience);
        }
        match TcpStream::connect_timeout(&device.local, patience) {
            Ok(stream) => crowd.push(stream),
            Err(_) => break,
        }
    }
    let mut one_more = ctx.connect(device.local)?;
    expect_refused(&mut one_more, "one connection past the agent's limit").map_err(|failure| {
        failure.hint(format!(
            "The agent's port for apps is on the phone, but any program there can open it: \
             past MAX_APP_CONNECTIONS, given in {AGENT_FILE}, fn accept_apps, a connection \
             is answered ERR and closed, so {CROWD} silent ones cost no more than the limit."
        ))
    })?;
    drop(crowd);
    ctx.step("the crowd leaves; an app named late registers");
    let deadline = Instant::now() + ctx.patience().seconds(3.0);
    loop {
        let mut late = ctx.connect(device.local)?;
        late.send(&frame("REGISTER late 0"))?;
        let answer = read_frame(&mut late)?;
        if answer == "OK 0" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(late
                .fail(format!(
                    "the crowd left, yet the agent still refuses an app: {answer:?}"
                ))
                .hint(format!(
                    "Each connection's end frees its place ({AGENT_FILE}, fn accept_apps)."
                )));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// An agent that says it sends a heartbeat every 150 ms, sends them, and
/// never reads: it asks again and again for its 100 notifications of 1000
/// bytes each. The service must give up on it after two heartbeats without
/// progress, and serve everyone else meanwhile.
fn never_reads(ctx: &mut Ctx, service: SocketAddr) -> Check<()> {
    ctx.step("mallory's device gets 100 notifications of 1000 bytes");
    let frames: Vec<String> = (0..100)
        .map(|index| format!("SEND mallory/app 3600 - {index} {}", "x".repeat(990)))
        .collect();
    send_frames(ctx, service, &frames)?;
    ctx.step("mallory's agent says HELLO mallory 150, then REGISTER app 0 over and over, and never reads");
    let mut mallory = TcpStream::connect(service)
        .map_err(|error| Failure::new(format!("the test could not connect: {error}")))?;
    let _ = mallory.set_write_timeout(Some(Duration::from_millis(200)));
    small_receive_buffer(&mallory);
    let started = Instant::now();
    let give_up = started + ctx.patience().seconds(5.0);
    let mut hello = frame("HELLO mallory 150");
    hello.extend(frame("REGISTER app 0"));
    let mut pending = hello;
    let mut checked_others = false;
    loop {
        match mallory.write(&pending) {
            Ok(written) => {
                pending.drain(..written);
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        if pending.is_empty() {
            pending = frame("PING");
            for _ in 0..20 {
                pending.extend(frame("REGISTER app 0"));
            }
        }
        // By now the service's writes to mallory are stuck: they have been
        // sent megabytes of notifications.
        if !checked_others && started.elapsed() > Duration::from_millis(250) {
            checked_others = true;
            ctx.step("meanwhile, a notification for another device is accepted at once");
            let asked = Instant::now();
            send_frames(
                ctx,
                service,
                &["SEND ada/other 3600 - still there".to_string()],
            )?;
            ctx.measured(format!(
                "while one agent did not read, a SEND for another device was answered in \
                 {:.0} ms",
                asked.elapsed().as_secs_f64() * 1e3
            ));
            if asked.elapsed() > ctx.patience().seconds(1.0) {
                return Err(Failure::new(format!(
                    "while one agent did not read, a SEND for another device waited {:.1} s",
                    asked.elapsed().as_secs_f64()
                ))
                .hint(format!(
                    "Never write to a socket while holding the lock everyone needs \
                     ({STORE_FILE}: collect under the lock, write after)."
                )));
            }
        }
        if Instant::now() > give_up {
            return Err(Failure::new(format!(
                "an agent that never reads was still connected after {:.0} s",
                started.elapsed().as_secs_f64()
            ))
            .hint(format!(
                "Where: {SERVER_FILE}, fn serve_agent: a write deadline of two heartbeats too. \
                 A write that cannot finish in that time means the agent does not read: close \
                 its connection, and keep its notifications for when it comes back."
            )));
        }
        // Each REGISTER has the service send all 100 again: asked this
        // often, it fills the buffers between them (megabytes, on loopback)
        // in about a tenth of a second, where every 20 ms took most of one.
        thread::sleep(Duration::from_millis(2));
    }
    ctx.measured(format!(
        "the service closed mallory's connection after {:.2} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Keep `stream`'s receive buffer small, as a phone's is: a peer's writes
/// to it stop after kilobytes, not after the megabytes that loopback lets
/// a buffer grow to, so a writer's deadline shows sooner.
fn small_receive_buffer(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket, and an int option with its own size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Stage 11: stages 4 and 6 again, through the Linux kernel's NAT. The
/// devices sit on private networks in namespaces of their own, behind a
/// router namespace that masquerades with nftables and forgets an
/// established connection after a second of silence.
mod kernel_nat {
    use std::process::Command;

    use super::*;
    use course::harness::target::{split_command, Target};

    /// How long the router keeps an idle established connection: the
    /// shortest the kernel allows (a home router waits minutes).
    const TIMEOUT_SECS: u64 = 1;
    /// ada's and bob's phones share a network.
    const DEVICE_IP: &str = "10.208.1.2";
    const ROUTER_INSIDE: &str = "10.208.1.1";
    /// carol's phone is on a network of its own, so that the router can cut
    /// her off alone, while ada and bob stay quiet.
    const CAROL_IP: &str = "10.208.3.2";
    const ROUTER_CAROL_SIDE: &str = "10.208.3.1";
    const ROUTER_OUTSIDE: &str = "10.208.2.1";
    /// The address carol's connections leave the router with.
    const ROUTER_OUTSIDE_CAROL: &str = "10.208.2.3";
    const SERVICE_IP: &str = "10.208.2.2";

    /// Why the stage cannot run here, if it cannot.
    pub fn unavailable() -> Option<String> {
        if !cfg!(target_os = "linux") {
            return Some("network namespaces are Linux's".into());
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
        if !root {
            return Some("it needs root (network namespaces and nftables)".into());
        }
        for tool in ["ip", "nft"] {
            let found = Command::new(tool).arg("-V").output().is_ok();
            if !found {
                return Some(format!("`{tool}` is not installed (iproute2, nftables)"));
            }
        }
        let probe = format!("course08probe{}", std::process::id());
        let made = Command::new("ip")
            .args(["netns", "add", &probe])
            .output()
            .is_ok_and(|out| out.status.success());
        let _ = Command::new("ip").args(["netns", "del", &probe]).output();
        if !made {
            return Some("`ip netns add` is not allowed here".into());
        }
        None
    }

    /// The four namespaces; dropping it deletes them, also when the stage
    /// fails halfway.
    struct Lab {
        device: String,
        carol: String,
        router: String,
        service: String,
        /// The router's side of the link to carol's network.
        carol_link: String,
    }

    impl Drop for Lab {
        fn drop(&mut self) {
            for namespace in [&self.device, &self.carol, &self.router, &self.service] {
                let _ = Command::new("ip")
                    .args(["netns", "del", namespace])
                    .output();
            }
        }
    }

    /// Run a command to its end; a failure names it. What it printed.
    fn run(ctx: &Ctx, words: &[&str], input: Option<&str>) -> Check<String> {
        run_unlogged(words, input)
            .inspect(|_| ctx.journal().step(format!("ran `{}`", words.join(" "))))
    }

    /// `run`, without a step in the report: for a look taken again and again.
    fn run_unlogged(words: &[&str], input: Option<&str>) -> Check<String> {
        let mut command = Command::new(words[0]);
        command.args(&words[1..]);
        let output = match input {
            None => command.output(),
            Some(text) => {
                use std::process::Stdio;
                command
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                command.spawn().and_then(|mut child| {
                    if let Some(mut stdin) = child.stdin.take() {
                        stdin.write_all(text.as_bytes())?;
                    }
                    child.wait_with_output()
                })
            }
        };
        match output {
            Ok(out) if out.status.success() => {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Ok(out) => Err(Failure::new(format!(
                "the test could not set up the network: `{}` failed",
                words.join(" ")
            ))
            .detail(output_block(
                "its stderr",
                &String::from_utf8_lossy(&out.stderr),
            ))),
            Err(error) => Err(Failure::new(format!(
                "the test could not run `{}`: {error}",
                words.join(" ")
            ))),
        }
    }

    fn build(ctx: &Ctx) -> Check<Lab> {
        let id = std::process::id() % 100_000;
        let lab = Lab {
            device: format!("c8dev{id}"),
            carol: format!("c8car{id}"),
            router: format!("c8nat{id}"),
            service: format!("c8svc{id}"),
            carol_link: format!("c8f{id}"),
        };
        let (dev, car, nat, svc) = (&lab.device, &lab.carol, &lab.router, &lab.service);
        let (a, b, c, d, e, f) = (
            format!("c8a{id}"),
            format!("c8b{id}"),
            format!("c8c{id}"),
            format!("c8d{id}"),
            format!("c8e{id}"),
            lab.carol_link.clone(),
        );
        for namespace in [dev, car, nat, svc] {
            run(ctx, &["ip", "netns", "add", namespace], None)?;
            run(
                ctx,
                &["ip", "-n", namespace, "link", "set", "lo", "up"],
                None,
            )?;
        }
        run(
            ctx,
            &[
                "ip", "link", "add", &a, "netns", dev, "type", "veth", "peer", "name", &b, "netns",
                nat,
            ],
            None,
        )?;
        run(
            ctx,
            &[
                "ip", "link", "add", &c, "netns", nat, "type", "veth", "peer", "name", &d, "netns",
                svc,
            ],
            None,
        )?;
        run(
            ctx,
            &[
                "ip", "link", "add", &e, "netns", car, "type", "veth", "peer", "name", &f, "netns",
                nat,
            ],
            None,
        )?;
        for (namespace, link, addr) in [
            (dev, &a, DEVICE_IP),
            (nat, &b, ROUTER_INSIDE),
            (car, &e, CAROL_IP),
            (nat, &f, ROUTER_CAROL_SIDE),
            (nat, &c, ROUTER_OUTSIDE),
            (svc, &d, SERVICE_IP),
        ] {
            let cidr = format!("{addr}/24");
            run(
                ctx,
                &["ip", "-n", namespace, "addr", "add", &cidr, "dev", link],
                None,
            )?;
            run(
                ctx,
                &["ip", "-n", namespace, "link", "set", link, "up"],
                None,
            )?;
        }
        let outside_carol = format!("{ROUTER_OUTSIDE_CAROL}/24");
        run(
            ctx,
            &["ip", "-n", nat, "addr", "add", &outside_carol, "dev", &c],
            None,
        )?;
        for (namespace, router) in [(dev, ROUTER_INSIDE), (car, ROUTER_CAROL_SIDE)] {
            run(
                ctx,
                &[
                    "ip", "-n", namespace, "route", "add", "default", "via", router,
                ],
                None,
            )?;
        }
        run(
            ctx,
            &[
                "ip",
                "netns",
                "exec",
                nat,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
            None,
        )?;
        // Masquerade what leaves for the service. A packet of a connection
        // the router has forgotten is invalid and dropped, both ways, in
        // silence: no RST from the router's own stack either.
        let rules = [
            "table ip c8nat {".to_string(),
            "  chain post {".into(),
            "    type nat hook postrouting priority 100;".into(),
            format!("    ip saddr {CAROL_IP} oifname \"{c}\" snat to {ROUTER_OUTSIDE_CAROL}"),
            format!("    oifname \"{c}\" masquerade"),
            "  }".into(),
            "}".into(),
            "table inet c8filter {".into(),
            "  chain forward {".into(),
            "    type filter hook forward priority 0;".into(),
            "    ct state invalid drop".into(),
            "  }".into(),
            "  chain input {".into(),
            "    type filter hook input priority 0;".into(),
            // Counted: what reaches the router for a mapping of ada's and
            // bob's address that it has forgotten.
            format!("    iifname \"{c}\" ip daddr {ROUTER_OUTSIDE} counter drop"),
            format!("    iifname \"{c}\" drop"),
            "  }".into(),
            "}".into(),
        ]
        .join("\n");
        run(
            ctx,
            &["ip", "netns", "exec", nat, "nft", "-f", "-"],
            Some(&rules),
        )?;
        let timeout = format!("net.netfilter.nf_conntrack_tcp_timeout_established={TIMEOUT_SECS}");
        run(
            ctx,
            &["ip", "netns", "exec", nat, "sysctl", "-qw", &timeout],
            None,
        )?;
        // Without this, the kernel picks up a forgotten connection again
        // from its next segment, which no home router does.
        run(
            ctx,
            &[
                "ip",
                "netns",
                "exec",
                nat,
                "sysctl",
                "-qw",
                "net.netfilter.nf_conntrack_tcp_loose=0",
            ],
            None,
        )?;
        Ok(lab)
    }

    /// The program under test, as the run would start it.
    fn program() -> Check<Vec<String>> {
        let command = std::env::var("COURSE_CMD").unwrap_or_default();
        if !command.trim().is_empty() {
            return split_command(&command).map_err(Failure::new);
        }
        let path = match Target::from_env().map_err(Failure::new)? {
            Target::Lessons => PROGRAMS.lessons,
            Target::Solutions => PROGRAMS
                .solutions
                .ok_or_else(|| Failure::new(course::harness::setup::NO_SOLUTIONS))?,
        };
        Ok(vec![path.to_string()])
    }

    /// Start the program in `namespace` with `args`; with `address`, wait
    /// for the address it prints.
    fn start_in(
        ctx: &mut Ctx,
        namespace: &str,
        args: &[&str],
        address: bool,
    ) -> Check<(ProcessId, Option<SocketAddr>)> {
        let program = program()?;
        let mut words: Vec<&str> = vec!["netns", "exec", namespace];
        words.extend(program.iter().map(String::as_str));
        words.extend_from_slice(args);
        let id = ctx.start_tool("ip", &words, "sudo apt-get install iproute2")?;
        if !address {
            return Ok((id, None));
        }
        let deadline = Instant::now() + ctx.patience().start;
        match ctx.process(id).wait_for_address(deadline) {
            Ok(addr) => Ok((id, Some(addr))),
            Err(error) => Err(error.failure(false)),
        }
    }

    fn send_in(ctx: &mut Ctx, lab: &Lab, service: SocketAddr, to: &str, text: &str) -> Check<()> {
        ctx.step(format!("send to {to}: {text:?}"));
        let service = service.to_string();
        let (id, _) = start_in(
            ctx,
            &lab.service,
            &["send", "--connect", &service, "--to", to, text],
            false,
        )?;
        let deadline = Instant::now() + ctx.patience().exit;
        match ctx.process(id).wait_exit(deadline) {
            Some(status) if status.success() => Ok(()),
            _ => Err(Failure::new(format!("`send --to {to}` did not succeed"))),
        }
    }

    fn device_with_app(
        ctx: &mut Ctx,
        namespace: &str,
        name: &str,
        service: SocketAddr,
        keepalive: &str,
    ) -> Check<(ProcessId, ProcessId)> {
        let service = service.to_string();
        let mut args = agent_args(name, &service, keepalive).to_vec();
        args.extend_from_slice(&QUICK_BACKOFF);
        let (agent, local) = start_in(ctx, namespace, &args, true)?;
        let local = local.expect("an address").to_string();
        let (app, _) = start_in(
            ctx,
            namespace,
            &["app", "--name", "mail", "--agent", &local],
            false,
        )?;
        let deadline = Instant::now() + ctx.patience().start;
        if !ctx
            .process(app)
            .wait_for_stdout(b"registered as mail", deadline)
        {
            return Err(Failure::new(format!(
                "{name}'s app did not register with its agent"
            )));
        }
        Ok((agent, app))
    }

    pub fn check(ctx: &mut Ctx) -> Check<()> {
        if let Some(why) = unavailable() {
            return Err(Failure::missing_tool(
                "root, network namespaces and nftables",
                &format!("run it as root on Linux with iproute2 and nftables, as CI does ({why})"),
            ));
        }
        ctx.step(format!(
            "two device namespaces ({DEVICE_IP}: ada and bob; {CAROL_IP}: carol) behind a \
             router namespace that masquerades with nftables and forgets an idle connection \
             after {TIMEOUT_SECS} s; the service in a fourth ({SERVICE_IP})"
        ));
        let lab = build(ctx)?;
        let bind = format!("{SERVICE_IP}:0");
        let (server, service) = start_in(ctx, &lab.service, &["server", "--bind", &bind], true)?;
        let service = service.expect("an address");
        let within = ctx.patience().seconds(2.0);
        // Heartbeats well below the router's timeout: a PONG held back by
        // a busy machine for less than 0.3 s still comes within the
        // agent's deadline of two heartbeats.
        let every = format!("{:.2}", ctx.patience().seconds(0.3).as_secs_f64());
        let (ada_agent, ada) = device_with_app(ctx, &lab.device, "ada", service, "0")?;
        let (_, bob) = device_with_app(ctx, &lab.device, "bob", service, &every)?;
        let (_, carol) = device_with_app(ctx, &lab.carol, "carol", service, &every)?;
        let mut firsts = Vec::new();
        for (device, app) in [("ada", ada), ("bob", bob), ("carol", carol)] {
            let text = random_text(ctx);
            send_in(ctx, &lab, service, &format!("{device}/mail"), &text)?;
            wait_shown(ctx, app, "mail", &text, within)?;
            firsts.push(text);
        }

        // carol's outage and ada's and bob's quiet time, side by side.
        // Only carol's connection is cut: a new one from her passes, as a
        // new connection through a router that forgot the old one does.
        let ada_pid = ctx.process(ada_agent).pid();
        let ada_ports = ports(ctx, &lab.device, DEVICE_IP, Some(ada_pid))?;
        let carol_ports = ports(ctx, &lab.carol, CAROL_IP, None)?;
        let outside_ports = ports(ctx, &lab.service, ROUTER_OUTSIDE_CAROL, None)?;
        ctx.step(
            "the router drops every packet of carol's connection until it has forgotten her \
             mapping, and ada's (longer than its timeout); three notifications for carol are \
             sent meanwhile, none for ada and bob",
        );
        let cut = format!(
            "table inet c8cut {{\n  chain pre {{\n    type filter hook prerouting priority -300;\n    \
             iifname \"{}\" tcp sport {{ {} }} drop\n    \
             ip daddr {ROUTER_OUTSIDE_CAROL} tcp dport {{ {} }} drop\n  }}\n}}\n",
            lab.carol_link,
            carol_ports.join(", "),
            outside_ports.join(", ")
        );
        run(
            ctx,
            &["ip", "netns", "exec", &lab.router, "nft", "-f", "-"],
            Some(&cut),
        )?;
        let quiet_since = Instant::now();
        let mut carol_texts = vec![firsts[2].clone()];
        for _ in 0..3 {
            let text = random_text(ctx);
            send_in(ctx, &lab, service, "carol/mail", &text)?;
            carol_texts.push(text);
        }
        // The router's table says when it forgot: ada's last packet, and
        // carol's, came before the quiet time began. A mapping counts as
        // forgotten once it was seen in the table and is gone from it; where
        // the table cannot be read, or an agent sends heartbeats after all,
        // the wait is whole. Meanwhile carol's agent is back: when her app
        // shows the last notification, as seen from here.
        let timeout = Duration::from_secs(TIMEOUT_SECS);
        let at_most = quiet_since + timeout + Duration::from_millis(500);
        let carol_line = format!("] {}\n", carol_texts.last().expect("sent"));
        let mut carol_back = None;
        let mut seen = [false, false];
        let forgotten = loop {
            let now = [
                remembered(&lab, DEVICE_IP, &ada_ports),
                remembered(&lab, CAROL_IP, &carol_ports),
            ];
            for (seen, now) in seen.iter_mut().zip(now) {
                *seen |= now == Some(true);
            }
            let forgotten = seen
                .iter()
                .zip(now)
                .all(|(seen, now)| *seen && now == Some(false));
            if forgotten || Instant::now() >= at_most {
                break forgotten;
            }
            let soon = Instant::now() + Duration::from_millis(20);
            if carol_back.is_none()
                && ctx
                    .process(carol)
                    .wait_for_stdout(carol_line.as_bytes(), soon)
            {
                carol_back = Some(quiet_since.elapsed());
            }
            thread::sleep(soon.saturating_duration_since(Instant::now()));
        };
        let quiet = quiet_since.elapsed();
        run(
            ctx,
            &[
                "ip",
                "netns",
                "exec",
                &lab.router,
                "nft",
                "delete",
                "table",
                "inet",
                "c8cut",
            ],
            None,
        )?;
        ctx.measured(if forgotten {
            format!(
                "kernel NAT: {:.2} s after the cut began, the router had forgotten ada's and \
                 carol's old connections",
                quiet.as_secs_f64()
            )
        } else {
            format!(
                "kernel NAT: {:.2} s after the cut began, the router's table still held ada's \
                 or carol's old connection, or could not be read",
                quiet.as_secs_f64()
            )
        });
        ctx.step("one notification for ada and one for bob");
        let (lost, kept) = (random_text(ctx), random_text(ctx));
        let dropped_before = dropped_for_ada_and_bob(&lab);
        send_in(ctx, &lab, service, "ada/mail", &lost)?;
        let lost_sent = Instant::now();
        send_in(ctx, &lab, service, "bob/mail", &kept)?;
        wait_shown(ctx, bob, "mail", &kept, within).map_err(|failure| {
            failure.hint(format!(
                "Heartbeats every {every} s should have kept the router's mapping. Where: \
                 TODO 3 in {AGENT_FILE}, fn heartbeats."
            ))
        })?;

        let last = carol_texts.last().expect("sent").clone();
        wait_shown(ctx, carol, "mail", &last, ctx.patience().seconds(10.0)).map_err(|failure| {
            failure.hint(format!(
                "After the router forgot its connection, carol's agent should notice \
                     within two heartbeats, connect again (a new mapping), and register its \
                     app with its position ({AGENT_FILE})."
            ))
        })?;
        ctx.measured(format!(
            "kernel NAT: the last notification of carol's outage was shown {:.2} s after the \
             cut began",
            carol_back
                .unwrap_or_else(|| quiet_since.elapsed())
                .as_secs_f64()
        ));
        let marker = random_text(ctx);
        send_in(ctx, &lab, service, "carol/mail", &marker)?;
        wait_shown(ctx, carol, "mail", &marker, within)?;
        carol_texts.push(marker);
        expect_shown_exactly(ctx, carol, "mail", &carol_texts)?;
        expect_shown_exactly(ctx, bob, "mail", &[firsts[1].clone(), kept])?;

        // Through a live mapping a notification takes milliseconds. Through
        // a forgotten one the router drops it, and counts it: bob's mapping
        // lives (his notification came), so what it counts is ada's.
        let ada_until = lost_sent + ctx.patience().seconds(0.5);
        let lost_line = format!("] {lost}\n");
        let ada_lost = loop {
            let dropped = dropped_for_ada_and_bob(&lab);
            if dropped
                .zip(dropped_before)
                .is_some_and(|(now, before)| now > before)
            {
                break true;
            }
            let soon = Instant::now() + Duration::from_millis(20);
            if ctx.process(ada).wait_for_stdout(lost_line.as_bytes(), soon) {
                break false;
            }
            if Instant::now() > ada_until {
                break true;
            }
        };
        ctx.measured(format!(
            "kernel NAT, {TIMEOUT_SECS} s timeout: keepalive 0 lost it: {ada_lost}"
        ));
        if !ada_lost {
            return Err(Failure::new(
                "with --keepalive 0 the connection survived the router's timeout: does the \
                 agent send heartbeats although told not to?",
            ));
        }
        ctx.expect_running(server)
    }

    /// The ports of the connections to the service that `namespace` holds
    /// at the address `ours` (all of them, or those of process `pid`).
    fn ports(ctx: &Ctx, namespace: &str, ours: &str, pid: Option<u32>) -> Check<Vec<String>> {
        let listed = run(
            ctx,
            &[
                "ip",
                "netns",
                "exec",
                namespace,
                "ss",
                "-Htnp",
                "state",
                "established",
            ],
            None,
        )?;
        let (ours, theirs) = (format!("{ours}:"), format!("{SERVICE_IP}:"));
        let process = pid.map(|pid| format!("pid={pid},"));
        let found: Vec<String> = listed
            .lines()
            .filter(|line| line.contains(&theirs))
            .filter(|line| {
                process
                    .as_ref()
                    .is_none_or(|process| line.contains(process))
            })
            .flat_map(str::split_whitespace)
            .filter_map(|word| word.strip_prefix(&ours))
            .map(str::to_string)
            .collect();
        if found.is_empty() {
            return Err(Failure::new(format!(
                "the test found no connection from {ours} to {theirs} with `ss`"
            ))
            .detail(output_block("`ss -Htnp state established`", &listed)));
        }
        Ok(found)
    }

    /// Whether the router still has a mapping for a connection from `ip`
    /// and one of `ports`, if its table can be read. Reading it drops what
    /// has timed out.
    fn remembered(lab: &Lab, ip: &str, ports: &[String]) -> Option<bool> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.router,
                "cat",
                "/proc/net/nf_conntrack",
            ])
            .output()
            .ok()
            .filter(|out| out.status.success())?;
        let table = String::from_utf8_lossy(&out.stdout);
        let from = format!("src={ip} ");
        let found = table.lines().any(|line| {
            line.contains(&from)
                && ports
                    .iter()
                    .any(|port| line.contains(&format!("sport={port} ")))
        });
        Some(found)
    }

    /// How many packets the router dropped for a forgotten mapping of ada's
    /// and bob's outside address, if nftables says. Looked at every 20 ms:
    /// not a step of the report each time.
    fn dropped_for_ada_and_bob(lab: &Lab) -> Option<u64> {
        let listed = run_unlogged(
            &[
                "ip",
                "netns",
                "exec",
                &lab.router,
                "nft",
                "list",
                "chain",
                "inet",
                "c8filter",
                "input",
            ],
            None,
        )
        .ok()?;
        let line = listed.lines().find(|line| line.contains(ROUTER_OUTSIDE))?;
        let after = line.split_once("packets ")?.1;
        after.split_whitespace().next()?.parse().ok()
    }
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let service = start_server_at_chosen_address(ctx, &[])?;
    let text = random_text(ctx);
    send(ctx, service.addr, "ada/mail", &text, &[])?;
    ctx.expect_running(service.id)
}

/// Notifications the service holds in all, every device together
/// (`MAX_HELD` in store.rs).
const MAX_HELD: usize = 10_000;

/// A peer that sends a frame a byte at a time, each byte well within the
/// read deadline, must be cut once the frame is late: a deadline per read
/// lets it hold its place for ever, and a thousand such peers fill the
/// service.
fn trickled_frame(ctx: &mut Ctx, service: SocketAddr) -> Check<()> {
    const EVERY: Duration = Duration::from_millis(60);
    let body = "ACK trickle 1";
    let bytes = frame(body);
    ctx.step(format!(
        "eve says HELLO eve 150 (a heartbeat every 0.15 s: silent for 0.3 s, she is dead), \
         then sends the {}-byte frame {body:?} one byte every {} ms",
        bytes.len(),
        EVERY.as_millis()
    ));
    let mut eve = ctx.connect(service)?;
    eve.send(&frame("HELLO eve 150"))?;
    let welcome = read_frame(&mut eve)?;
    if welcome != "WELCOME" {
        return Err(eve
            .fail(format!("HELLO eve 150 was answered {welcome:?}"))
            .bytes(b"WELCOME", welcome.as_bytes()));
    }
    let hint = format!(
        "A socket's read timeout bounds each read, not a frame: every byte of eve's came \
         within it. Give the whole frame its time, whatever trickles in: \
         `read_frame_within` (given in lessons/08-agent/frame.rs) sets the timeout to what \
         is left before each read; {SERVER_FILE} uses it for the first frame, a sender's \
         frames, and an agent's: two heartbeats, from TODO 5, fn two_heartbeats."
    );
    for &byte in &bytes {
        let cut = eve.send(&[byte]).is_err() || eve.expect_quiet(EVERY).is_err();
        if cut {
            return expect_refused(&mut eve, "a frame that came a byte at a time")
                .map_err(|failure| failure.hint(hint.clone()));
        }
    }
    Err(eve
        .fail(format!(
            "eve's frame took {:.1} s, a byte every {} ms, and the service kept her \
             connection; with heartbeats every 0.15 s, a frame must come whole within 0.3 s",
            EVERY.as_secs_f64() * bytes.len() as f64,
            EVERY.as_millis()
        ))
        .hint(hint))
}

/// A sender that makes up a device for each notification, past what the
/// whole service may hold: refused, not kept.
fn made_up_devices(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let count = MAX_HELD + 1;
    ctx.step(format!(
        "on a new service, a sender sends {count} notifications, each to a device of its \
         own (d0/app, d1/app, …), on one connection"
    ));
    let patience = ctx.patience().seconds(10.0);
    let stream = TcpStream::connect_timeout(&server.addr, ctx.patience().start)
        .map_err(|error| Failure::new(format!("cannot connect to the service: {error}")))?;
    let mut writer = stream
        .try_clone()
        .map_err(|error| Failure::new(format!("cannot use the connection: {error}")))?;
    let mut reader = RawApp {
        device: "the sender".to_string(),
        stream,
    };
    let deadline = Instant::now() + patience;
    let answers = thread::scope(|scope| {
        scope.spawn(move || {
            let frames: Vec<u8> = (0..count)
                .flat_map(|index| frame(&format!("SEND d{index}/app 60 - made up")))
                .collect();
            let _ = writer.set_write_timeout(Some(patience));
            let _ = writer.write_all(&frames);
        });
        let mut answers = Vec::with_capacity(count);
        while answers.len() < count {
            match reader.read_frame(deadline) {
                Ok(answer) => answers.push(answer),
                Err(_) => break,
            }
        }
        answers
    });
    let accepted = answers
        .iter()
        .filter(|answer| answer.starts_with("OK"))
        .count();
    let store_hint = format!(
        "Each device may hold 100 notifications, but a sender can make up device names \
         without end: the whole service holds at most MAX_HELD ({MAX_HELD}) and refuses \
         the rest with ERR, as it refuses one more for a full device. Where: {STORE_FILE}, \
         fn accept."
    );
    if accepted > MAX_HELD {
        return Err(Failure::new(format!(
            "the service accepted {accepted} notifications for {accepted} made-up devices; \
             it may hold {MAX_HELD} in all"
        ))
        .hint(store_hint));
    }
    match answers.last() {
        Some(last) if answers.len() == count && last.starts_with("ERR") => Ok(()),
        Some(last) if answers.len() == count => Err(Failure::new(format!(
            "the service answered the notification past {MAX_HELD} with {last:?}"
        ))
        .bytes(
            format!("ERR the service holds {MAX_HELD} notifications already; try again later")
                .as_bytes(),
            last.as_bytes(),
        )
        .hint(store_hint)),
        _ => Err(Failure::new(format!(
            "the service answered {} of {count} notifications, then nothing more in {:.0} s",
            answers.len(),
            patience.as_secs_f64()
        ))
        .hint(store_hint)),
    }?;
    ctx.expect_running(server.id)
}

/// One frame's body from a socket the test drives by hand, within the
/// socket's read timeout.
fn read_raw_frame(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length == 0 || length > MAX_FRAME {
        return Err(std::io::Error::other(format!("a frame of {length} bytes")));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    String::from_utf8(body).map_err(|_| std::io::Error::other("a frame that is not text"))
}

/// An app that registers with the agent at `agent`, keeps a small receive
/// buffer, and never reads, while notifications of 1000 bytes, good for a
/// second, come for it.
/// The agent takes them as fast as it can hand them over; at the device's
/// 100 waiting the service refuses one, and the test tries again. It stops
/// once the refusals have lasted `stuck` (the agent has stopped taking
/// them), or DEAF_BYTES have gone. How much went, the last refusal, and
/// the app's socket, still open: a closed one would free a stuck agent.
/// Plain sockets only: it runs beside the rest of the stage.
fn flood_deaf_app(
    agent: SocketAddr,
    service: SocketAddr,
    stuck: Duration,
    patience: Duration,
) -> std::io::Result<(usize, Option<String>, TcpStream)> {
    // The crowd has left, and the app named late with it, but the agent
    // frees each place only once that connection's thread has seen the
    // close: on a busy machine, a moment later. Refused for that, deaf tries
    // again; refused for anything else, or for longer, it fails.
    let give_up = Instant::now() + patience;
    let deaf = loop {
        let mut deaf = TcpStream::connect(agent)?;
        small_receive_buffer(&deaf);
        deaf.write_all(&frame("REGISTER deaf 0"))?;
        deaf.set_read_timeout(Some(patience))?;
        let registered = read_raw_frame(&mut deaf)?;
        if registered.starts_with("OK") {
            break deaf;
        }
        if !registered.contains("too many connections") || Instant::now() >= give_up {
            return Err(std::io::Error::other(format!(
                "ada's agent answered {registered:?} to REGISTER deaf 0"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut sender = TcpStream::connect(service)?;
    sender.set_read_timeout(Some(patience))?;
    let text = "x".repeat(990);
    let (mut sent, mut refused_since) = (0usize, None::<(Instant, String)>);
    while sent < DEAF_BYTES {
        let body = format!("SEND ada/deaf 1 - {sent} {text}");
        sender.write_all(&frame(&body))?;
        let answer = read_raw_frame(&mut sender)?;
        if !answer.starts_with("ERR") {
            sent += body.len();
            refused_since = None;
            continue;
        }
        let since = refused_since.get_or_insert((Instant::now(), answer)).0;
        if since.elapsed() >= stuck {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok((sent, refused_since.map(|(_, answer)| answer), deaf))
}

/// Bytes of notifications the test sends at most for an app that never
/// reads: more than loopback's socket buffers take (its large segments let
/// a sender's buffer grow past a megabyte).
const DEAF_BYTES: usize = 6 << 20;

/// What `flood_deaf_app` saw, then: ada's mail app must still be served.
fn mail_still_served(
    ctx: &mut Ctx,
    service: SocketAddr,
    mail: ProcessId,
    flooded: std::io::Result<(usize, Option<String>, TcpStream)>,
) -> Check<()> {
    let (sent, refused, _deaf) = flooded.map_err(|error| {
        Failure::new(format!("the app named deaf, played by the test: {error}"))
    })?;
    ctx.step(format!(
        "meanwhile, an app named deaf registered with ada's agent and never read: {} KiB of \
         notifications came for it; the service then refused more ({})",
        sent >> 10,
        refused.as_deref().unwrap_or("never")
    ));
    // Until deaf's notifications expire, ada's device holds its 100.
    ctx.step("once they expire (a second), one notification for ada's mail app");
    let text = random_text(ctx);
    let give_up = Instant::now() + ctx.patience().seconds(3.0);
    loop {
        let answers = send_frames(ctx, service, &[format!("SEND ada/mail 60 - {text}")])?;
        if answers
            .first()
            .is_some_and(|answer| answer.starts_with("OK"))
        {
            break;
        }
        if Instant::now() > give_up {
            return Err(Failure::new(format!(
                "the service still refused a notification for ada/mail after deaf's had \
                 expired: {answers:?}"
            ))
            .hint(format!(
                "A notification goes once its TTL has passed ({STORE_FILE}, fn drop_expired)."
            )));
        }
        thread::sleep(Duration::from_millis(50));
    }
    wait_shown(ctx, mail, "mail", &text, ctx.patience().seconds(1.0)).map_err(|failure| {
        failure.hint(format!(
            "The agent hands every app its notifications from the one connection's reader: \
             while it waits for an app that does not read, no other app gets anything, and \
             past two heartbeats the service cuts the device. A write to an app waits only \
             a moment (APP_WRITE_WAIT, given in {AGENT_FILE}); an app whose socket is full \
             is cut and unregistered, and gets what it missed when it registers again."
        ))
    })
}
