//! Lesson 01, echo: the stages, in the order you build them.
//!
//!     cargo test --test 01_echo                 your code in lessons/01-echo
//!     cargo test --test 01_echo listens         one stage
//!     COURSE_TARGET=solutions cargo test --test 01_echo
//!
//! Each stage starts your server with `server --bind 127.0.0.1:0` (the last on
//! a port the test chose, to check `--bind`), reads the address it prints, and
//! talks to it over real TCP connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::local;
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_01-echo"),
        solutions: option_env!("CARGO_BIN_EXE_01-echo-solution"),
    };
    course::run_stages("01", programs, &STAGES);
}

const STAGES: [Stage; 8] = [
    Stage {
        slug: "listens",
        title: "prints its address, accepts a connection there, closes it when the client is done",
        slide: "bind, listen, accept",
        check: listens,
        runs_alone: false,
    },
    Stage {
        slug: "echoes-a-line",
        title: "sends `hello\\n` back byte for byte",
        slide: "A read is not a message",
        check: echoes_a_line,
        runs_alone: false,
    },
    Stage {
        slug: "echoes-everything",
        title: "echoes many lines, any bytes, and 1 MiB in one go",
        slide: "A read is not a message",
        check: echoes_everything,
        runs_alone: false,
    },
    Stage {
        slug: "half-close",
        title: "after the client stops sending, sends what it owes, then closes",
        slide: "Half-close",
        check: half_close,
        runs_alone: false,
    },
    Stage {
        slug: "next-client",
        title: "serves the next client after one leaves, cleanly or by a reset",
        slide: "One client after another",
        check: next_client,
        runs_alone: false,
    },
    Stage {
        slug: "one-server-per-port",
        title: "a second server on a taken port exits with one clear line",
        slide: "One server per port",
        check: one_server_per_port,
        runs_alone: false,
    },
    Stage {
        slug: "the-client",
        title: "the client sends its input, prints the replies, and exits",
        slide: "connect",
        check: the_client,
        runs_alone: false,
    },
    Stage {
        slug: "binds-where-asked",
        title: "listens on the address given with --bind, and serves there",
        slide: "bind, listen, accept",
        check: binds_where_asked,
        runs_alone: false,
    },
];

const SERVER_FILE: &str = "lessons/01-echo/server.rs";

fn listens(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[]).map_err(|failure| {
        failure.more_hint(format!(
            "Start at TODO 1 in {SERVER_FILE}: bind a TcpListener, and the code after it \
             prints the address."
        ))
    })?;
    // The system completes a connection before the server accepts it, so a
    // successful connect proves only that the server listens. An accepted
    // connection shows itself when the test stops sending: the server reads
    // end of stream and closes. Twice, as a server that accepted once and then
    // stopped would fail the second.
    for _ in 0..2 {
        let mut conn = ctx.connect(server.addr)?;
        conn.shut_down_sending()?;
        conn.expect_closed().map_err(|failure| {
            failure.more_hint(
                "The test connected, then shut down its sending side, and waited for your \
                 server to close the connection. A connection your server accepts and \
                 serves ends that way: `read` returns 0, the function serving it returns, \
                 the stream is dropped. A connection that is never accepted stays open.",
            )
        })?;
    }
    ctx.expect_running(server.id)
}

fn echoes_a_line(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut conn = ctx.connect(server.addr)?;
    conn.send(b"hello\n")?;
    conn.expect(b"hello\n").map_err(|failure| {
        failure.more_hint(format!(
            "Where: TODO 2 in {SERVER_FILE}, fn echo. Read into the buffer, then write back \
             exactly the bytes you read. (Begun TODO 5? Then `serve` calls the loop in \
             lessons/01-echo/zero_copy.rs, and that is the one to look at.)"
        ))
    })
}

fn echoes_everything(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut conn = ctx.connect(server.addr)?;

    ctx.step("sending 50 lines in one write");
    let lines: String = (0..50)
        .map(|_| {
            let words = ctx.rng().between(1, 12);
            ctx.rng().sentence(words) + "\n"
        })
        .collect();
    conn.send(lines.as_bytes())?;
    conn.expect(lines.as_bytes()).map_err(one_read_hint)?;

    ctx.step("sending every byte value, 0 to 255, in a random order");
    let mut every_byte: Vec<u8> = (0..=255).collect();
    for index in (1..every_byte.len()).rev() {
        let other = ctx.rng().below(index + 1);
        every_byte.swap(index, other);
    }
    conn.send(&every_byte)?;
    conn.expect(&every_byte).map_err(|failure| {
        // Other bytes came back, or too few: two different mistakes.
        let changed = failure
            .received
            .as_ref()
            .is_some_and(|received| !every_byte.starts_with(received));
        if changed {
            failure.more_hint(
                "Echo bytes, not text: a server that turns the bytes into a String, or \
                 stops at a zero byte or a newline, changes them.",
            )
        } else {
            one_read_hint(failure)
        }
    })?;

    ctx.step("sending 1 MiB in one write while reading the echo at the same time");
    let payload = ctx.rng().bytes(1 << 20);
    send_while_reading(&mut conn, &payload).map_err(one_read_hint)
}

fn one_read_hint(failure: Failure) -> Failure {
    failure.more_hint(
        "One read is not one message: a read returns whatever has arrived, a few bytes or \
         many lines. Loop: read, write back what you read, read again, until read returns 0.",
    )
}

/// Send `payload` on one thread while this one reads it back. A test that
/// sent it all first would deadlock with a correct server once both sides'
/// buffers filled up.
fn send_while_reading(conn: &mut Conn, payload: &[u8]) -> Check<()> {
    let mut writer = conn.try_clone()?;
    thread::scope(|scope| {
        let sending = scope.spawn(|| writer.send(payload));
        let echoed = conn.expect(payload);
        let sent = sending.join().expect("the sending thread does not panic");
        // The reader's failure says more (what came back); report it first.
        echoed.and(sent)
    })
}

fn half_close(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let mut conn = ctx.connect(server.addr)?;
    let words = ctx.rng().between(3, 8);
    let line = ctx.rng().sentence(words) + "\n";
    conn.send(line.as_bytes())?;
    conn.shut_down_sending()?;
    ctx.step("shut down the sending side, then read what the server still owes");
    let close_hint = |failure: Failure| {
        failure.more_hint(
            "When read returns 0, the client has shut down its sending side: it will send \
             nothing more, but it still reads. Write back all you owe, then close your side \
             (return from the function that owns the stream, and it is dropped).",
        )
    };
    conn.expect(line.as_bytes()).map_err(close_hint)?;
    conn.expect_closed().map_err(close_hint)?;

    ctx.step("again with 256 KiB, shut down right after the last byte");
    let mut conn = ctx.connect(server.addr)?;
    let payload = ctx.rng().bytes(256 << 10);
    let mut writer = conn.try_clone()?;
    thread::scope(|scope| {
        let sending = scope.spawn(|| {
            writer.send(&payload)?;
            writer.shut_down_sending()
        });
        let echoed = conn.expect(&payload).and_then(|()| conn.expect_closed());
        let sent = sending.join().expect("the sending thread does not panic");
        echoed.and(sent)
    })
    .map_err(close_hint)
}

fn next_client(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let survive_hint = |failure: Failure| {
        failure.more_hint(
            "One client's error belongs to that client. If the function serving a client \
             returns an error, log it and go back to accept; do not end the server with `?`.",
        )
    };

    ctx.step("client A: one line, then a clean close");
    let line = ctx.rng().sentence(4) + "\n";
    let mut first = ctx.connect(server.addr)?;
    first.send(line.as_bytes())?;
    first.expect(line.as_bytes())?;
    first.close();

    ctx.step("client B: sends 64 KiB, then vanishes with a reset before reading the echo");
    let mut vanishing = ctx.connect(server.addr)?;
    vanishing.send(&ctx.rng().bytes(64 << 10))?;
    vanishing.wait_readable()?;
    vanishing.abort();

    for name in ["C", "D", "E", "F", "G"] {
        ctx.step(format!("client {name}: one line"));
        let words = ctx.rng().between(1, 6);
        let line = ctx.rng().sentence(words) + "\n";
        let mut conn = ctx.connect(server.addr).map_err(survive_hint)?;
        conn.send(line.as_bytes()).map_err(survive_hint)?;
        conn.expect(line.as_bytes()).map_err(survive_hint)?;
        conn.close();
    }
    ctx.expect_running(server.id).map_err(survive_hint)
}

fn one_server_per_port(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let taken = server.addr.to_string();
    let second = ctx.start(&["server", "--bind", &taken])?;
    let deadline = Instant::now() + ctx.patience().exit;
    let Some(status) = ctx.process(second).wait_exit(deadline) else {
        return Err(Failure::new(format!(
            "the second server, on the taken address {taken}, was still running after {}s",
            ctx.patience().exit.as_secs()
        ))
        .hint(
            "Only one server can listen on a port. The second bind fails with \
             `AddrInUse`: report it and exit with a non-zero status.",
        ));
    };
    let stdout = ctx.process(second).stdout().text();
    let stderr = ctx.process(second).stderr().text();
    let finished = course::harness::ctx::Finished {
        status,
        stdout,
        stderr,
    };
    ctx.expect_one_line_error(
        &finished,
        &taken,
        &format!("started on the taken address {taken}"),
    )
    .map_err(|failure| {
        failure.more_hint(format!(
            "Where: TODO 1 in {SERVER_FILE}. Map `ErrorKind::AddrInUse` to the error \
             `address {{addr}} is already in use`; main prints it as one line and exits with 1."
        ))
    })?;
    ctx.step("the first server must still echo");
    let mut conn = ctx.connect(server.addr)?;
    conn.send(b"still here\n")?;
    conn.expect(b"still here\n")
}

fn the_client(ctx: &mut Ctx) -> Check<()> {
    const CLIENT_FILE: &str = "lessons/01-echo/client.rs";
    let count = ctx.rng().between(20, 40);
    let lines: Vec<String> = (0..count)
        .map(|_| {
            let words = ctx.rng().between(1, 10);
            ctx.rng().sentence(words) + "\n"
        })
        .collect();
    let input = lines.concat();
    let last_line = lines.last().map_or(0, String::len);
    let peer = EchoPeer::start(ctx, input.len() - last_line)?;
    ctx.step(format!(
        "the test runs an echo server at {}; it echoes the last line only once the client \
         has shut down its sending side",
        peer.addr
    ));
    let connect = peer.addr.to_string();
    ctx.step(format!("gave the client {count} lines on stdin"));
    let finished = ctx.run(&["client", "--connect", &connect], input.as_bytes());
    let received = peer.finish();
    let finished = finished.map_err(|failure| {
        failure
            .more_hint(format!(
                "Where: TODO 4 in {CLIENT_FILE}. After the last line, shut down the sending \
                 side; the server then closes, the printing thread ends, and so does the \
                 client."
            ))
            .slide("Half-close")
    })?;
    if received.as_deref() != Some(input.as_bytes()) {
        let received = received.unwrap_or_default();
        return Err(
            Failure::new("the test's server did not receive the client's input")
                .bytes(input.as_bytes(), &received)
                .hint(format!(
                    "Where: TODO 3 in {CLIENT_FILE}. Connect to the address given with \
                 --connect; the code after it sends each line of stdin."
                )),
        );
    }
    if finished.stdout.as_bytes() != input.as_bytes() {
        return Err(
            Failure::new("the client did not print every reply, in order")
                .bytes(input.as_bytes(), finished.stdout.as_bytes())
                .slide("Half-close")
                .hint(
                    "Print what the server sends until it closes: after the half-close, keep \
                 reading. A client that exits, or shuts down its reading side \
                 (`Shutdown::Both`), as soon as its input ends loses the replies still on \
                 their way: here the last line's echo, which the test's server sends only \
                 after it has read the half-close, as a slow or distant server may.",
                ),
        );
    }
    if !finished.status.success() {
        return Err(
            Failure::new("the client printed every reply but exited with an error").detail(
                course::harness::ctx::output_block("its stderr", &finished.stderr),
            ),
        );
    }

    ctx.step("now against an address where nothing listens");
    // Held until the stage ends: no other stage's server can take it.
    let refusing = local::refusing_address()?;
    let nowhere = refusing.addr.to_string();
    let refused = ctx.run(&["client", "--connect", &nowhere], b"hello\n")?;
    ctx.expect_one_line_error(
        &refused,
        &nowhere,
        &format!("against {nowhere}, where nothing listens"),
    )
    .map_err(|failure| {
        failure.more_hint(format!(
            "Where: TODO 3 in {CLIENT_FILE}. A refused connection \
             (`ErrorKind::ConnectionRefused`) becomes the error `nothing is listening at \
             {{addr}}`."
        ))
    })?;
    Ok(())
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let server = start_server_at_chosen_address(ctx, &[])?;
    let words = ctx.rng().between(2, 6);
    let line = ctx.rng().sentence(words) + "\n";
    let mut conn = ctx.connect(server.addr)?;
    conn.send(line.as_bytes())?;
    conn.expect(line.as_bytes())
}

/// The test's own echo server, for grading the client: it serves one
/// connection, echoing as bytes arrive, and keeps a copy of what it received.
/// Its connection is journaled, so a report shows the client's bytes.
///
/// The bytes after the first `held_from` are echoed only once the client
/// has shut down its sending side. So a reply is always still owed when the
/// client half-closes, and a client that stops reading there misses it on
/// every run, not only when the echo happens to be slow.
struct EchoPeer {
    addr: SocketAddr,
    accepted: Arc<AtomicBool>,
    received: mpsc::Receiver<Vec<u8>>,
    patience: Duration,
}

impl EchoPeer {
    fn start(ctx: &Ctx, held_from: usize) -> Check<EchoPeer> {
        let (listener, addr) = local::listener()?;
        let patience = ctx.patience().exit;
        let journal = ctx.journal().clone();
        let (sender, received) = mpsc::channel();
        let accepted = Arc::new(AtomicBool::new(false));
        let accepting = accepted.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + patience;
            if let Some(conn) = local::accept_conn(&listener, deadline, &journal, patience) {
                accepting.store(true, Ordering::SeqCst);
                let _ = sender.send(echo_until_closed(conn, held_from));
            }
        });
        Ok(EchoPeer {
            addr,
            accepted,
            received,
            patience,
        })
    }

    /// What the peer received, once the client has exited (None if the
    /// client never connected: then there is nothing to wait for).
    fn finish(self) -> Option<Vec<u8>> {
        if !self.accepted.load(Ordering::SeqCst) {
            return None;
        }
        self.received.recv_timeout(self.patience).ok()
    }
}

fn echo_until_closed(mut conn: Conn, held_from: usize) -> Vec<u8> {
    let mut received = Vec::new();
    while let Ok(Some(bytes)) = conn.read_any(4096) {
        let echoed_so_far = received.len().min(held_from);
        received.extend_from_slice(&bytes);
        let echo_now = &received[echoed_so_far..received.len().min(held_from)];
        if !echo_now.is_empty() && conn.send(echo_now).is_err() {
            return received;
        }
    }
    // The client has shut down its sending side (or gone): what was held back
    // is owed now.
    if received.len() > held_from {
        let _ = conn.send(&received[held_from..]);
    }
    received
}
