//! Lesson 03, messages: the stages, in the order you build them.
//!
//!     cargo test --test 03_messages                 your code in lessons/03-messages
//!     cargo test --test 03_messages frames          one stage
//!     COURSE_TARGET=solutions cargo test --test 03_messages
//!
//! Each stage starts your server with `server --bind 127.0.0.1:0` (the last on
//! a port the test chose, to check `--bind`), reads the address it prints, and
//! speaks the mailbox protocol (lessons/03-messages/README.md) to it over real
//! TCP connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::ctx::{output_block, Finished, Server};
use course::harness::journal::Journal;
use course::harness::mailbox::{expect_fresh_mailbox, expect_id, owns_its_folder, MAX_LINE};
use course::harness::resources::{mebibytes, resident_bytes, unmeasurable};
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_03-messages"),
        solutions: option_env!("CARGO_BIN_EXE_03-messages-solution"),
    };
    course::run_stages("03", programs, &STAGES);
}

const STAGES: [Stage; 9] = [
    Stage {
        slug: "hello",
        title: "answers USER with `OK` and SEND with `OK <id>`",
        slide: "Framing by line",
        check: hello,
        runs_alone: false,
    },
    Stage {
        slug: "delivers",
        title: "delivers what alice sends to bob, in order, byte for byte, once",
        slide: "Framing by length",
        check: delivers,
        runs_alone: false,
    },
    Stage {
        slug: "frames",
        title: "answers each request once, however the bytes are cut",
        slide: "One read is not one message",
        check: frames,
        runs_alone: false,
    },
    Stage {
        slug: "errors",
        title: "answers a bad request with `ERR <reason>` and goes on serving",
        slide: "Errors keep the connection alive",
        check: errors,
        runs_alone: false,
    },
    Stage {
        slug: "limits",
        title: "refuses an oversized line or body, and 100 MiB do not grow it",
        slide: "Limits are a security property",
        check: limits,
        runs_alone: false,
    },
    Stage {
        slug: "durable",
        title: "with --data, keeps every acknowledged message through a SIGKILL",
        slide: "By memory, by disk, by network",
        check: durable,
        runs_alone: false,
    },
    Stage {
        slug: "the-client",
        title: "the Rust client and the Python client both work with the server",
        slide: "One protocol, two languages",
        check: the_client,
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

const PROTOCOL_FILE: &str = "lessons/03-messages/protocol.rs";
const SERVER_FILE: &str = "lessons/03-messages/server.rs";

/// The largest body the protocol allows.
const MAX_BODY: usize = 64 * 1024;
/// How long a refused client of stage 5 trickles bytes at least: well past
/// the server's drain bound (`DRAIN`). It also lasts a second past the
/// test's wait for carol's reply, however long COURSE_PATIENCE makes that:
/// a drain that each byte starts again must never end before carol gives up.
const TRICKLE_FOR: Duration = Duration::from_secs(5);

fn hello(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut alice = ctx.connect(server.addr)?;
    alice.send(b"USER alice\n")?;
    alice.expect(b"OK\n").map_err(|failure| {
        failure.hint(format!(
            "The server should read the request line `USER alice\\n` and answer `OK\\n`. \
             Start at TODO 1 in {PROTOCOL_FILE}, fn read_line: until it reads a line, the \
             server sees no request, and closes the connection without a reply."
        ))
    })?;
    let words = ctx.rng().between(2, 6);
    let text = ctx.rng().sentence(words);
    alice.send(format!("SEND bob {}\n{text}", text.len()).as_bytes())?;
    expect_id(&mut alice)?;
    ctx.step("COUNT: the body must have been read whole, so COUNT is the next request");
    alice.send(b"COUNT\n")?;
    alice.expect(b"OK 0\n").map_err(|failure| {
        failure
            .more_hint(format!(
                "Where: TODO 2 in {PROTOCOL_FILE}, fn read_body. After `SEND bob <length>\\n` \
             come exactly <length> bytes of body; read all of them, or they are taken for \
             the next request."
            ))
            .slide("Framing by length")
    })
}

fn delivers(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut alice = login(ctx, server.addr, "alice")?;
    let mut every_byte: Vec<u8> = (0..=255).collect();
    for index in (1..every_byte.len()).rev() {
        let other = ctx.rng().below(index + 1);
        every_byte.swap(index, other);
    }
    let bodies: Vec<Vec<u8>> = vec![
        ctx.rng().sentence(5).into_bytes(),
        b"two lines\nMSG 99 eve 3\nand a fake header\n".to_vec(),
        every_byte,
        Vec::new(),
        ctx.rng().bytes(MAX_BODY),
    ];
    ctx.step("alice sends bob 5 messages: text, newlines, every byte value, empty, 64 KiB");
    let mut ids = Vec::new();
    for body in &bodies {
        let mut request = format!("SEND bob {}\n", body.len()).into_bytes();
        request.extend_from_slice(body);
        alice.send(&request)?;
        let id = expect_id(&mut alice)?;
        if ids.contains(&id) {
            return Err(alice.fail(format!("the id {id} was given to two messages")));
        }
        ids.push(id);
    }

    quit(alice)?;

    ctx.step("bob, on another connection, counts and fetches");
    let mut bob = login(ctx, server.addr, "bob")?;
    bob.send(b"COUNT\n")?;
    bob.expect(format!("OK {}\n", bodies.len()).as_bytes())?;
    bob.send(b"FETCH\n")?;
    let mut expected = format!("MSGS {}\n", bodies.len()).into_bytes();
    for (id, body) in ids.iter().zip(&bodies) {
        expected.extend_from_slice(format!("MSG {id} alice {}\n", body.len()).as_bytes());
        expected.extend_from_slice(body);
    }
    bob.expect(&expected).map_err(|failure| {
        failure
            .more_hint(format!(
                "Where: TODO 3 in {SERVER_FILE}, fn write_messages. FETCH answers `MSGS <n>`, \
             then, oldest first, `MSG <id> <from> <length>` and the body's bytes as they \
             are: no newline after a body, no text conversion."
            ))
            .slide("Requests and replies")
    })?;
    ctx.step("fetched messages are gone");
    bob.send(b"COUNT\nFETCH\n")?;
    bob.expect(b"OK 0\nMSGS 0\n")
        .map_err(|failure| failure.more_hint("FETCH removes the messages it sends."))?;
    quit(bob)?;
    ctx.step("alice's own mailbox is empty: the messages were for bob");
    let mut alice = login(ctx, server.addr, "alice")?;
    alice.send(b"COUNT\n")?;
    alice.expect(b"OK 0\n")
}

fn frames(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let framing_hint = |failure: Failure| {
        failure.more_hint(format!(
            "Keep one BufReader for the whole connection, and read lines and bodies from \
             it: the bytes after a `\\n` are often already in its buffer. See fn read_line \
             and fn read_body in {PROTOCOL_FILE}."
        ))
    };
    let mut alice = ctx.connect(server.addr)?;
    alice.send_byte_by_byte(b"USER alice\n")?;
    alice.expect(b"OK\n").map_err(framing_hint)?;

    ctx.step("three requests in one write");
    alice.send(b"COUNT\nSEND bob 3\nabcCOUNT\n")?;
    alice.expect(b"OK 0\n").map_err(framing_hint)?;
    let first = expect_id(&mut alice).map_err(framing_hint)?;
    alice.expect(b"OK 0\n").map_err(framing_hint)?;

    ctx.step("a SEND cut across three writes, inside its line and inside its body");
    let body = b"hello\nworld!";
    for part in [&b"SEND bob 1"[..], b"2\nhello", b"\nworld!"] {
        alice.send(part)?;
    }
    let second = expect_id(&mut alice).map_err(framing_hint)?;

    ctx.step("a request ending in \\r\\n, as telnet sends it");
    alice.send(b"COUNT\r\n")?;
    alice.expect(b"OK 0\n").map_err(|failure| {
        failure.more_hint(format!(
            "A `\\r` before the `\\n` belongs to the line ending, not to the request \
             (fn read_line in {PROTOCOL_FILE})."
        ))
    })?;

    ctx.step("QUIT: the one reply left is BYE, so no reply came twice");
    quit(alice).map_err(framing_hint)?;

    ctx.step("bob fetches both messages whole");
    let mut bob = login(ctx, server.addr, "bob")?;
    bob.send(b"FETCH\n")?;
    let mut expected =
        format!("MSGS 2\nMSG {first} alice 3\nabcMSG {second} alice 12\n").into_bytes();
    expected.extend_from_slice(body);
    bob.expect(&expected).map_err(framing_hint)
}

fn errors(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut conn = ctx.connect(server.addr)?;
    let name_33: String = "n".repeat(33);
    let refused: [(&str, Vec<u8>); 9] = [
        ("SEND before USER", b"SEND bob 5\nhello".to_vec()),
        ("COUNT before USER", b"COUNT\n".to_vec()),
        ("an unknown command", b"HELLO\n".to_vec()),
        ("USER without a name", b"USER\n".to_vec()),
        ("a name with a `!`", b"USER bad!name\n".to_vec()),
        (
            "a name of 33 letters",
            format!("USER {name_33}\n").into_bytes(),
        ),
        ("SEND without a length", b"SEND bob\n".to_vec()),
        ("a length that is not a number", b"SEND bob abc\n".to_vec()),
        ("SEND to a bad name", b"SEND no.such 3\nxyz".to_vec()),
    ];
    for (index, (what, request)) in refused.iter().enumerate() {
        // The last one needs a user, so that only the name is wrong.
        if index == refused.len() - 1 {
            conn.send(b"USER alice\n")?;
            conn.expect(b"OK\n")?;
        }
        ctx.step(format!("{what}: must be refused with ERR"));
        conn.send(request)?;
        expect_err(&mut conn, what)?;
    }
    ctx.step("the same connection still works");
    conn.send(b"USER alice\nSEND bob 2\nhi")?;
    conn.expect(b"OK\n")?;
    let id = expect_id(&mut conn)?;
    quit(conn)?;
    ctx.step("bob gets only the message that was accepted");
    let mut bob = login(ctx, server.addr, "bob")?;
    bob.send(b"FETCH\n")?;
    bob.expect(format!("MSGS 1\nMSG {id} alice 2\nhi").as_bytes())
        .map_err(|failure| {
            failure.more_hint(
                "A refused SEND stores nothing, but its body was sent: read it, then refuse.",
            )
        })
}

fn limits(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    ctx.step(format!(
        "a second server, with --drain {DRAIN}, for a client that trickles after its ERR; \
         at the same time as the rest, on the first"
    ));
    let trickled = ctx.start_server(&["--drain", DRAIN])?;
    let (journal, patience) = (ctx.journal().clone(), ctx.patience());
    thread::scope(|scope| {
        let trickle =
            scope.spawn(|| trickle_after_refusal(&journal, patience.reply, trickled.addr));
        let rest = limits_of_one_server(ctx, server);
        let trickle = trickle.join().expect("the trickling client does not panic");
        rest.and(trickle)
    })
}

/// Lines and bodies at and over their limits, and floods, on `server`.
fn limits_of_one_server(ctx: &mut Ctx, server: Server) -> Check<()> {
    let limit_hint = |failure: Failure| {
        failure.more_hint(format!(
            "Check the size before you read: fn read_line reads at most MAX_LINE bytes, and \
             parse_length refuses a SEND whose length is over MAX_BODY, before its body is \
             read, both in {PROTOCOL_FILE}. The server then answers ERR and closes."
        ))
    };
    let line_hint = |failure: Failure| {
        failure
            .more_hint(format!(
                "Where: TODO 1 in {PROTOCOL_FILE}, fn read_line. Read at most MAX_LINE bytes \
                 (`take`), even when no `\\n` comes: then it returns Line::TooLong, and the \
                 server answers ERR and closes."
            ))
            .slide("Framing by line")
    };
    ctx.step(format!(
        "a SEND of {MAX_BODY} bytes, the limit itself: accepted, and the request after \
         its body is answered"
    ));
    let mut alice = login(ctx, server.addr, "alice")?;
    let mut request = format!("SEND bob {MAX_BODY}\n").into_bytes();
    request.extend(ctx.rng().bytes(MAX_BODY));
    request.extend_from_slice(b"COUNT\n");
    alice.send(&request)?;
    let body_hint = |failure: Failure| {
        failure
            .more_hint(format!(
                "Where: TODO 2 in {PROTOCOL_FILE}, fn read_body. A length up to MAX_BODY \
                 included is allowed; read exactly that many bytes, all of them, before the \
                 next request line."
            ))
            .slide("Framing by length")
    };
    expect_id(&mut alice).map_err(body_hint)?;
    alice.expect(b"OK 0\n").map_err(body_hint)?;

    ctx.step(format!(
        "a SEND announcing {} bytes, one over the limit",
        MAX_BODY + 1
    ));
    alice.send(format!("SEND bob {}\n", MAX_BODY + 1).as_bytes())?;
    expect_err(&mut alice, "a length over 65536").map_err(limit_hint)?;
    alice.expect_closed().map_err(limit_hint)?;
    alice.close();

    ctx.step("a request line of 2000 bytes");
    let mut long = ctx.connect(server.addr)?;
    let mut line = vec![b'A'; 2000];
    line.push(b'\n');
    long.send(&line)?;
    expect_err(&mut long, "a line of 2000 bytes").map_err(line_hint)?;
    long.expect_closed().map_err(line_hint)?;
    long.close();

    let pid = ctx.process(server.id).pid();
    quit(login(ctx, server.addr, "alice")?)?;
    let before = resident_bytes(pid).ok_or_else(|| unmeasurable("memory"))?;
    ctx.step(format!(
        "the server's resident memory: {}",
        mebibytes(before)
    ));
    ctx.step("pushing 100 MiB as one line with no newline, until the server closes");
    push_flood(ctx, server.addr, b"")?;
    ctx.step("pushing 100 MiB as the body of `SEND bob 104857600`");
    push_flood(ctx, server.addr, b"USER eve\nSEND bob 104857600\n")?;
    let after = resident_bytes(pid).unwrap_or(before);
    ctx.step(format!(
        "the server's resident memory: {}",
        mebibytes(after)
    ));
    const ALLOWED: u64 = 4 << 20;
    if after > before + ALLOWED {
        return Err(limit_hint(
            Failure::new(format!(
                "the server's memory grew from {} to {} while a client pushed \
             100 MiB at it; at most {} MiB of growth is allowed",
                mebibytes(before),
                mebibytes(after),
                ALLOWED >> 20
            ))
            .hint(
                "Whatever a peer sends, a server keeps only a bounded part of it in memory. \
             Reading until a `\\n` that never comes, or sizing a buffer by a length the peer \
             chose, lets any client take all your memory.",
            ),
        ));
    }
    ctx.expect_running(server.id)?;
    ctx.step("the server still serves the next client");
    let mut alice = login(ctx, server.addr, "alice")?;
    alice.send(b"COUNT\n")?;
    alice.expect(b"OK 0\n")
}

/// The drain bound the trickle's server is given: short, so that the stage
/// is; the trickle sends far more often than that.
const DRAIN: &str = "0.3";
/// How often the refused client sends its next byte: a twelfth of the drain,
/// so that a timeout per read never fires.
const TRICKLE_EVERY: Duration = Duration::from_millis(25);

/// A refused peer that goes on sending a byte now and then must not hold
/// this one-client-at-a-time server past its drain bound (`--drain`, in
/// all).
fn trickle_after_refusal(journal: &Journal, patience: Duration, addr: SocketAddr) -> Check<()> {
    journal.step(format!(
        "second server: a line of 2000 bytes; after the ERR this client sends a byte every \
         {} ms, while carol connects and says USER",
        TRICKLE_EVERY.as_millis()
    ));
    let mut refused = Conn::connect(addr, journal, patience)?;
    let mut line = vec![b'A'; 2000];
    line.push(b'\n');
    refused.send(&line)?;
    expect_err(&mut refused, "a line of 2000 bytes")?;
    let carol_served = AtomicBool::new(false);
    let trickle_for = TRICKLE_FOR.max(patience + Duration::from_secs(1));
    let started = Instant::now();
    let carol = thread::scope(|scope| {
        scope.spawn(|| {
            // Stops when the server closes on it, or once carol is served.
            while !carol_served.load(Ordering::Relaxed) && started.elapsed() < trickle_for {
                if refused.send(b"x").is_err() {
                    break;
                }
                thread::sleep(TRICKLE_EVERY);
            }
        });
        let carol = login_with(journal, patience, addr, "carol");
        carol_served.store(true, Ordering::Relaxed);
        carol
    });
    refused.abort();
    let carol = carol.map_err(|failure| {
        failure
            .hint(format!(
                "carol waited while the server was still reading the refused client, which \
                 sends a byte every {} ms. A read timeout bounds each read, not the drain: \
                 every byte starts it again. Give the drain one deadline for the whole of it, \
                 --drain ({DRAIN} s here; fn refuse_and_close and fn drain in {SERVER_FILE}).",
                TRICKLE_EVERY.as_millis()
            ))
            .slide("Closing without losing the ERR")
    })?;
    journal.step(format!(
        "second server: carol was served {:.2} s after the trickle began",
        started.elapsed().as_secs_f64()
    ));
    quit(carol)
}

/// Open a connection, send `opening`, then up to 100 MiB of `A`s, and stop
/// when the server closes on us.
fn push_flood(ctx: &mut Ctx, addr: SocketAddr, opening: &[u8]) -> Check<()> {
    let mut conn = ctx.connect(addr)?;
    conn.send(opening)?;
    let chunk = vec![b'A'; 1 << 20];
    let mut pushed = 0;
    while pushed < 100 {
        if conn.send(&chunk).is_err() {
            break;
        }
        pushed += 1;
    }
    ctx.step(format!("{pushed} MiB went out before the connection ended"));
    conn.abort();
    Ok(())
}

fn durable(ctx: &mut Ctx) -> Check<()> {
    let data = ctx.temp_dir()?;
    let data = data.to_string_lossy().into_owned();
    let server = ctx.start_server(&["--data", &data])?;
    let mut alice = login(ctx, server.addr, "alice")?;
    let count = ctx.rng().between(3, 6);
    let mut sent = Vec::new();
    for _ in 0..count {
        let words = ctx.rng().between(1, 8);
        let text = ctx.rng().sentence(words);
        alice.send(format!("SEND bob {}\n{text}", text.len()).as_bytes())?;
        sent.push((expect_id(&mut alice)?, text));
    }
    ctx.step(format!(
        "{count} messages acknowledged; killing the server at once"
    ));
    ctx.kill(server.id);

    let server = ctx.start_server(&["--data", &data])?;
    let durable_hint = |failure: Failure| {
        failure.more_hint(
            "Where: TODO 4 in lessons/03-messages/disk.rs, fn write_durably, which fn save \
             calls. With --data, a message is written to a file, synced (fsync) and renamed \
             to its `.msg` name before the server answers `OK <id>`; the next server finds \
             it there when it starts.",
        )
    };
    ctx.step("bob fetches from the restarted server");
    let mut bob = login(ctx, server.addr, "bob")?;
    bob.send(b"FETCH\n")?;
    let mut expected = format!("MSGS {count}\n").into_bytes();
    for (id, text) in &sent {
        expected.extend_from_slice(format!("MSG {id} alice {}\n{text}", text.len()).as_bytes());
    }
    bob.expect(&expected).map_err(durable_hint)?;
    quit(bob)?;

    let mut ids: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
    ctx.step("a new message after the restart gets a new id");
    let mut alice = login(ctx, server.addr, "alice")?;
    alice.send(b"SEND bob 3\nnew")?;
    let id = expect_new_id(&mut alice, &ids)?;
    ids.push(id);
    quit(alice)?;
    ctx.step("fetched messages stay gone after another restart");
    ctx.kill(server.id);
    let server = ctx.start_server(&["--data", &data])?;
    let mut bob = login(ctx, server.addr, "bob")?;
    bob.send(b"FETCH\n")?;
    bob.expect(format!("MSGS 1\nMSG {id} alice 3\nnew").as_bytes())
        .map_err(|failure| {
            failure.more_hint("A fetched message is deleted from disk, or it comes back.")
        })?;
    quit(bob)?;

    ctx.step(
        "bob has fetched every message, so the disk holds none; after a kill and a restart, \
         a SEND still gets an id larger than all before",
    );
    ctx.kill(server.id);
    let server = ctx.start_server(&["--data", &data])?;
    let mut alice = login(ctx, server.addr, "alice")?;
    alice.send(b"SEND bob 4\nlast")?;
    ids.push(expect_new_id(&mut alice, &ids)?);
    ctx.step("killed right after that `OK <id>`, restarted: the next SEND gets a larger id");
    ctx.kill(server.id);
    let server = ctx.start_server(&["--data", &data])?;
    let mut alice = login(ctx, server.addr, "alice")?;
    alice.send(b"SEND bob 5\nafter")?;
    expect_new_id(&mut alice, &ids)?;
    quit(alice)
}

/// Read `OK <id>\n` and check the id is larger than each of `earlier`.
fn expect_new_id(conn: &mut Conn, earlier: &[u64]) -> Check<u64> {
    let id = expect_id(conn)?;
    let highest = earlier.iter().copied().max().unwrap_or(0);
    if id <= highest {
        return Err(conn
            .fail(format!(
                "the server answered `OK {id}`, but ids up to {highest} were given before the \
                 restart: an id is never given twice, and ids only grow"
            ))
            .hint(
                "Counting on from the highest id found on disk is not enough: once the newest \
                 messages have been fetched and deleted, their ids would come again. Keep the \
                 next id on disk too (mailbox.rs and disk.rs do, in DIR/next.id), saved \
                 before the `OK <id>` goes out.",
            ));
    }
    Ok(id)
}

fn the_client(ctx: &mut Ctx) -> Check<()> {
    const CLIENT_FILE: &str = "lessons/03-messages/client.rs";
    let server = ctx.start_server(&[])?;
    let addr = server.addr.to_string();
    let from_rust = ctx.rng().sentence(4);
    let from_python = ctx.rng().sentence(4);
    let from_python_again = ctx.rng().sentence(7);

    ctx.step("the Rust client, as alice, sends to bob");
    let input = format!("send bob {from_rust}\ncount\n");
    let alice = ctx.run(
        &["client", "--connect", &addr, "--user", "alice"],
        input.as_bytes(),
    )?;
    expect_printed(&alice, &["sent #", "0 waiting"], "the Rust client")?;

    // Two answers: a fetch that reads only the first message would pass with
    // one.
    ctx.step("the Python client, as bob, fetches it and answers twice");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/lessons/03-messages/client.py");
    let input =
        format!("count\nfetch\nsend alice {from_python}\nsend alice {from_python_again}\nquit\n");
    let bob = ctx.run_tool(
        "python3",
        &[script, "--connect", &addr, "--user", "bob"],
        input.as_bytes(),
        "on Debian or Ubuntu `sudo apt-get install python3`, on macOS `brew install \
         python`, on Windows the installer from python.org",
    )?;
    let from_alice = format!("from alice: {from_rust}");
    expect_printed(
        &bob,
        &["1 waiting", "1 fetched", &from_alice, "sent #", "sent #"],
        "the Python client",
    )?;

    ctx.step("the Rust client, as alice, fetches bob's two answers");
    let alice = ctx.run(
        &["client", "--connect", &addr, "--user", "alice"],
        b"fetch\nquit\n",
    )?;
    let from_bob = format!("from bob: {from_python}");
    let from_bob_again = format!("from bob: {from_python_again}");
    let wanted = ["2 fetched", &from_bob, &from_bob_again];
    expect_printed(&alice, &wanted, "the Rust client").map_err(|failure| {
        failure.more_hint(format!(
            "Where: TODO 5 in {CLIENT_FILE}, fn fetch: read `MSGS <n>`, then n times a \
             `MSG <id> <from> <length>` line and exactly <length> bytes of body."
        ))
    })
}

/// The program exited 0 and printed each of `wanted`, in order.
fn expect_printed(finished: &Finished, wanted: &[&str], who: &str) -> Check<()> {
    let mut rest = finished.stdout.as_str();
    for piece in wanted {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => {
                return Err(Failure::new(format!("{who} did not print `{piece}`"))
                    .detail(output_block("its stdout", &finished.stdout))
                    .hint(
                        "The client prints `sent #<id>` for send, `<n> waiting` for count, \
                         and for fetch `<n> fetched` then `#<id> from <name>: <text>` for \
                         each message.",
                    ))
            }
        }
    }
    if !finished.status.success() {
        return Err(Failure::new(format!("{who} exited with an error"))
            .detail(output_block("its stderr", &finished.stderr)));
    }
    Ok(())
}

/// Connect as `name`, and check the server says `OK`.
fn login(ctx: &Ctx, addr: SocketAddr, name: &str) -> Check<Conn> {
    login_with(ctx.journal(), ctx.patience().reply, addr, name)
}

/// [`login`], for a thread of its own, without the stage's `Ctx`.
fn login_with(journal: &Journal, patience: Duration, addr: SocketAddr, name: &str) -> Check<Conn> {
    let mut conn = Conn::connect(addr, journal, patience)?;
    conn.send(format!("USER {name}\n").as_bytes())?;
    conn.expect(b"OK\n")?;
    Ok(conn)
}

/// Say QUIT, and check the server says `BYE` and closes.
fn quit(mut conn: Conn) -> Check<()> {
    conn.send(b"QUIT\n")?;
    conn.expect(b"BYE\n")?;
    conn.expect_closed().map_err(|failure| {
        failure.more_hint(
            "After BYE the server closes the connection: this server serves one client at \
             a time, and the next one waits until then.",
        )
    })
}

/// Read `ERR <reason>\n`.
fn expect_err(conn: &mut Conn, what: &str) -> Check<()> {
    let line = conn.read_line(MAX_LINE)?;
    let reason = line
        .strip_prefix(b"ERR ")
        .and_then(|rest| rest.strip_suffix(b"\n"))
        .filter(|reason| !reason.trim_ascii().is_empty());
    if reason.is_none() {
        return Err(conn
            .fail(format!("{what} should be answered `ERR <reason>`"))
            .bytes(b"ERR <reason>\n", &line)
            .hint(format!(
                "Every request gets exactly one reply. A bad one gets `ERR`, a space, and a \
                 reason in words; the connection stays open for the next request (see \
                 fn serve_client in {SERVER_FILE})."
            )));
    }
    Ok(())
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let server = start_server_at_chosen_address(ctx, &[])?;
    let mut conn = ctx.connect(server.addr)?;
    expect_fresh_mailbox(&mut conn, "alice")?;
    quit(conn)
}
