//! Lesson 06, web: the stages, in the order you build them.
//!
//!     cargo test --test 06_web                 your code in lessons/06-web
//!     cargo test --test 06_web long_polling    one stage
//!     COURSE_TARGET=solutions cargo test --test 06_web
//!     COURSE_TIMES=1 cargo test --test 06_web  also print the delivery times
//!
//! Each stage starts your server with `server --bind 127.0.0.1:0 --chat-bind
//! 127.0.0.1:0`, reads the two addresses it prints, and joins the room over
//! real TCP connections: as `nc` on the chat port, and as a browser would on
//! the HTTP port (POST /join, then one of the four ways).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::browser::{headless_chromium, CHROMIUM_INSTALL};
use course::harness::ctx::{output_block, ProcessId, Server};
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_06-web"),
        solutions: option_env!("CARGO_BIN_EXE_06-web-solution"),
    };
    course::run_stages("06", programs, &STAGES);
}

const STAGES: [Stage; 11] = [
    Stage {
        slug: "page-and-send",
        title: "serves the page, takes POST /join and /send; an nc member sees the line",
        slide: "The page and POST /send",
        check: page_and_send,
        runs_alone: false,
    },
    Stage {
        slug: "short-polling",
        title: "GET /messages gives the lines after a cursor, in order, none twice",
        slide: "Short polling",
        check: short_polling,
        runs_alone: false,
    },
    Stage {
        slug: "long-polling",
        title: "a held poll answers as soon as a line comes, loses none, ends after wait",
        slide: "Long polling",
        check: long_polling,
        runs_alone: true,
    },
    Stage {
        slug: "server-sent-events",
        title: "an event stream: ids, keepalive comments, resume from Last-Event-ID",
        slide: "Server-Sent Events",
        check: server_sent_events,
        runs_alone: false,
    },
    Stage {
        slug: "websocket",
        title: "the WebSocket handshake, frames both ways, ping, close",
        slide: "The WebSocket handshake",
        check: websocket,
        runs_alone: false,
    },
    Stage {
        slug: "hostile-frames",
        title: "huge lengths, unmasked, oversized control, split and reserved-bit frames",
        slide: "Hostile frames",
        check: hostile_frames,
        runs_alone: false,
    },
    Stage {
        slug: "one-room",
        title: "nc, poll, long poll, SSE and WebSocket members see one room, in one order",
        slide: "One room, four ways",
        check: one_room,
        runs_alone: false,
    },
    Stage {
        slug: "a-real-browser",
        title:
            "headless Chromium shows an nc member's line and sends one back, over SSE and WebSocket",
        slide: "A real browser",
        check: a_real_browser,
        runs_alone: false,
    },
    Stage {
        slug: "held-connections",
        title: "500 held polls and streams do not stop a newcomer; past the bound, 503",
        slide: "Held connections",
        check: held_connections,
        runs_alone: false,
    },
    Stage {
        slug: "the-client",
        title: "the client takes part in the room each way while its user types",
        slide: "The client",
        check: the_client,
        runs_alone: false,
    },
    Stage {
        slug: "binds-where-asked",
        title: "listens on the address given with --bind, and serves the page there",
        slide: "Try it by hand",
        check: binds_where_asked,
        runs_alone: false,
    },
];

const SERVER_FILE: &str = "lessons/06-web/server.rs";
const POLLING_FILE: &str = "lessons/06-web/polling.rs";
const SSE_FILE: &str = "lessons/06-web/sse.rs";
const WEBSOCKET_FILE: &str = "lessons/06-web/websocket.rs";
const CLIENT_FILE: &str = "lessons/06-web/client.rs";

/// The longest line a stage reads, newline included.
const READ_LIMIT: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// The server, its two ports, and its members

/// The server under test and its two addresses.
struct Web {
    server: Server,
    http: SocketAddr,
    chat: SocketAddr,
}

/// Start the server with both ports on free ports, and read both addresses.
fn start(ctx: &mut Ctx, extra: &[&str]) -> Check<Web> {
    let mut args = vec!["--chat-bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = ctx.start_server(&args)?;
    let deadline = Instant::now() + ctx.patience().start;
    let running = ctx.process(server.id);
    running.wait_for_stdout(b"chat on ", deadline);
    let stdout = running.stdout().text();
    let chat = stdout
        .lines()
        .find_map(|line| line.strip_prefix("chat on "))
        .and_then(|addr| addr.trim().parse::<SocketAddr>().ok());
    let Some(chat) = chat else {
        return Err(Failure::new(
            "after `listening on IP:PORT`, the server must print `chat on IP:PORT`: the \
             address of its chat port for nc members",
        )
        .detail(output_block("its stdout", &stdout))
        .hint(format!(
            "The code that binds both ports and prints them is ready in {SERVER_FILE}, \
             fn run."
        )));
    };
    ctx.step(format!("it printed `chat on {chat}`"));
    Ok(Web {
        http: server.addr,
        server,
        chat,
    })
}

/// Read exactly `line` and its newline.
fn expect_line(conn: &mut Conn, line: &str) -> Check<()> {
    conn.expect(format!("{line}\n").as_bytes())
}

/// The room list a member sees.
fn room_list(names: &[&str]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    format!("* in the room: {}", sorted.join(", "))
}

/// Join on the chat port, as `nc` would; `everyone` is the room afterwards.
fn nc_join(ctx: &Ctx, web: &Web, name: &str, everyone: &[&str]) -> Check<Conn> {
    ctx.step(format!("{name} joins over nc"));
    let mut conn = ctx.connect(web.chat)?;
    expect_line(&mut conn, "* what is your name?")?;
    conn.send(format!("{name}\n").as_bytes())?;
    expect_line(&mut conn, &room_list(everyone)).map_err(|failure| {
        failure.more_hint(
            "The chat port speaks lesson 05's protocol: a newcomer's first line is `* in \
             the room: ` and every name, sorted. This code is ready in the starter \
             (chat.rs, room.rs).",
        )
    })?;
    Ok(conn)
}

/// An HTTP response, as a stage reads it.
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Send one request on `conn`: `METHOD TARGET`, a Host, and the body with its
/// length if there is one.
fn send_request(
    conn: &mut Conn,
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> Check<()> {
    let mut request = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    if method == "POST" {
        request.push_str(&format!(
            "Content-Type: text/plain\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    conn.send(&bytes)
}

/// Read a response's head, and its body by its Content-Length.
fn read_response(conn: &mut Conn) -> Check<Response> {
    let mut head = String::new();
    loop {
        let line = conn.read_line(READ_LIMIT)?;
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        head.push_str(&String::from_utf8_lossy(&line));
        if head.len() > 64 * 1024 {
            return Err(conn.fail("a response head longer than 64 KiB"));
        }
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| {
            conn.fail(format!(
                "the response does not start with a status line: {:?}",
                head.lines().next().unwrap_or_default()
            ))
            .hint("A response starts with `HTTP/1.1 200 OK` and CRLF (lesson 02).")
        })?;
    let mut response = Response {
        status,
        head: head.replace("\r\n", "\n").replace('\n', "\r\n"),
        body: Vec::new(),
    };
    let Some(length) = response.header("Content-Length") else {
        return Err(conn
            .fail("the response has no Content-Length")
            .hint("Every answer that is not a stream says its length, so the connection can carry the next."));
    };
    let length: usize = length
        .parse()
        .map_err(|_| conn.fail(format!("the Content-Length {length:?} is not a number")))?;
    response.body = conn.read_exact(length)?;
    Ok(response)
}

/// One request on a new connection.
fn fetch(ctx: &Ctx, addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Check<Response> {
    let mut conn = ctx.connect(addr)?;
    send_request(&mut conn, addr, method, target, body)?;
    read_response(&mut conn)
}

fn expect_status(response: &Response, code: u16, what: &str) -> Check<()> {
    if response.status == code {
        return Ok(());
    }
    Err(Failure::new(format!(
        "{what}: the answer was {}, not {code}",
        response.head.lines().next().unwrap_or_default()
    ))
    .detail(output_block("its body", &response.text())))
}

/// A web member: its name, its key, and its cursor.
struct Member {
    name: String,
    key: String,
    since: u64,
}

/// `POST /join` with `name`: the key and the cursor.
fn web_join(ctx: &Ctx, web: &Web, name: &str) -> Check<Member> {
    ctx.step(format!("{name} joins with POST /join"));
    let join_hint = format!(
        "`POST /join` with a name as its body answers 200 and `KEY SINCE`: a key to show \
         with each request, and the id to read from. Where: TODO 1 in {SERVER_FILE}, fn \
         read_body: the body is exactly Content-Length bytes after the head."
    );
    let response = fetch(ctx, web.http, "POST", "/join", name.as_bytes()).map_err(|failure| {
        failure.more_hint(format!(
            "{join_hint} Read exactly that many: the client keeps the connection open for its \
             next request, so `read_to_end` (or a read until the stream ends) waits for ever."
        ))
    })?;
    expect_status(&response, 200, &format!("joining as {name}"))
        .map_err(|failure| failure.hint(join_hint.clone()))?;
    let text = response.text();
    let parsed = text
        .trim()
        .split_once(' ')
        .and_then(|(key, since)| Some((key.to_string(), since.parse::<u64>().ok()?)));
    let Some((key, since)) = parsed else {
        return Err(
            Failure::new(format!("POST /join answered {text:?}, not `KEY SINCE`")).hint(join_hint),
        );
    };
    Ok(Member {
        name: name.to_string(),
        key,
        since,
    })
}

/// `POST /send?key=KEY` with `text` as the body.
fn web_send(ctx: &Ctx, web: &Web, member: &Member, text: &str) -> Check<()> {
    ctx.step(format!("{} sends {text:?} with POST /send", member.name));
    let target = format!("/send?key={}", member.key);
    let response = fetch(ctx, web.http, "POST", &target, text.as_bytes())?;
    expect_status(&response, 200, "POST /send")
}

/// A poll's answer: the lines, without their ids, and the next cursor.
struct Polled {
    lines: Vec<(u64, String)>,
    cursor: u64,
}

fn parse_polled(response: &Response) -> Check<Polled> {
    let poll_hint = format!(
        "A poll answers 200, a line `ID TEXT` for each line after `since`, and the header \
         `Room-Cursor: ID`, the id to ask from next. Where: TODO 2 in {POLLING_FILE}, fn body."
    );
    expect_status(response, 200, "GET /messages")
        .map_err(|failure| failure.hint(poll_hint.clone()))?;
    let cursor = response
        .header("Room-Cursor")
        .and_then(|cursor| cursor.parse().ok())
        .ok_or_else(|| {
            Failure::new("the poll's answer has no Room-Cursor header").hint(poll_hint.clone())
        })?;
    let mut lines = Vec::new();
    for line in response.text().lines() {
        let parsed = line
            .split_once(' ')
            .and_then(|(id, text)| Some((id.parse::<u64>().ok()?, text.to_string())));
        match parsed {
            Some(line) => lines.push(line),
            None => {
                return Err(
                    Failure::new(format!("the poll's line {line:?} is not `ID TEXT`"))
                        .detail(output_block("the answer's body", &response.text()))
                        .hint(poll_hint),
                )
            }
        }
    }
    Ok(Polled { lines, cursor })
}

fn texts(polled: &Polled) -> Vec<String> {
    polled.lines.iter().map(|(_, text)| text.clone()).collect()
}

fn poll(ctx: &Ctx, web: &Web, member: &Member, since: u64, wait: Option<f64>) -> Check<Polled> {
    let mut target = format!("/messages?key={}&since={since}", member.key);
    if let Some(wait) = wait {
        target.push_str(&format!("&wait={wait}"));
    }
    let mut conn = ctx.connect(web.http)?;
    send_request(&mut conn, web.http, "GET", &target, b"")?;
    if let Some(wait) = wait {
        // A held poll may rightly take `wait` seconds, more than a read's
        // patience: wait for its first byte that long, and more.
        let deadline = Instant::now() + Duration::from_secs_f64(wait) + ctx.patience().reply;
        wait_for_answer(&mut conn, deadline)?;
    }
    let response = read_response(&mut conn)?;
    parse_polled(&response)
}

/// Wait until the answer begins to come, or `deadline`.
fn wait_for_answer(conn: &mut Conn, deadline: Instant) -> Check<()> {
    loop {
        match conn.wait_readable() {
            Err(_) if Instant::now() < deadline => continue,
            other => return other,
        }
    }
}

fn expect_texts(got: &[String], wanted: &[String], what: &str) -> Check<()> {
    if got == wanted {
        return Ok(());
    }
    let show = |lines: &[String]| lines.join("\n");
    Err(
        Failure::new(format!("{what}: the lines are not the ones expected"))
            .bytes(show(wanted).as_bytes(), show(got).as_bytes()),
    )
}

// ---------------------------------------------------------------------------
// Stage 1

fn page_and_send(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;

    ctx.step("a browser asks for the page: GET /");
    let page = fetch(ctx, web.http, "GET", "/", b"")?;
    expect_status(&page, 200, "GET /")?;
    let content_type = page.header("Content-Type").unwrap_or_default();
    if !content_type.starts_with("text/html") || !page.text().contains("<script") {
        return Err(Failure::new(format!(
            "GET / should give the page, an HTML document with its script; it came as {content_type:?}"
        ))
        .hint(format!("The page is ready in the starter: page.html, served by {SERVER_FILE}, fn answer.")));
    }

    let name = ctx.rng().word(5);
    let member = web_join(ctx, &web, &name)?;
    expect_line(&mut bob, &format!("* {name} joined"))?;
    let said = ctx.rng().sentence(5);
    web_send(ctx, &web, &member, &said)?;
    expect_line(&mut bob, &format!("[{name}] {said}")).map_err(|failure| {
        failure.hint(format!(
            "`POST /send?key=KEY` takes its body as the member's line. Where: TODO 1 in \
             {SERVER_FILE}, fn read_body."
        ))
    })?;
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 2

fn short_polling(ctx: &mut Ctx) -> Check<()> {
    // A member who stops polling leaves once --idle has passed: that takes
    // its time, on a second server, while the rest of the stage runs on the
    // first, where no one stays silent for its 30 s.
    const IDLE: &str = "0.3";
    let quiet = start(ctx, &["--idle", IDLE])?;
    let mut dee = nc_join(ctx, &quiet, "dee", &["dee"])?;
    let cy = web_join(ctx, &quiet, "cy")?;
    expect_line(&mut dee, "* cy joined")?;
    poll(ctx, &quiet, &cy, cy.since, None)?;
    ctx.step(format!(
        "on the second server (--idle {IDLE}), cy stops polling; dee waits to hear her leave"
    ));
    let patience = Duration::from_secs_f64(6.0 * ctx.patience().scale());
    let (polled, left) = std::thread::scope(|scope| {
        let left = scope.spawn(|| {
            let stopped = Instant::now();
            loop {
                match dee.read_line(READ_LIMIT) {
                    // Still within --idle and the server's round: wait on.
                    Err(_) if stopped.elapsed() < patience => continue,
                    other => break other,
                }
            }
        });
        let polled = polls_in_order(ctx);
        (polled, left.join().expect("dee's thread does not panic"))
    });
    polled?;

    ctx.step("on the second server: the room hears cy leave");
    let left = left.map(|line| String::from_utf8_lossy(&line).into_owned());
    let failure = match left {
        Ok(line) if line == "* cy left\n" => None,
        Ok(line) => Some(dee.fail(format!("dee heard {line:?}, not `* cy left`"))),
        Err(failure) => Some(failure),
    };
    failure.map_or(Ok(()), Err).map_err(|failure: Failure| {
        failure.hint(
            "A closed tab says no goodbye: a web member not heard from for --idle seconds, \
             with no poll or stream open, leaves the room, announced as in lesson 05. This \
             code is ready in the starter (room.rs, fn leave_idle).",
        )
    })?;
    ctx.step("her key no longer works: 410 Gone");
    let target = format!("/messages?key={}&since=0", cy.key);
    let gone = fetch(ctx, quiet.http, "GET", &target, b"")?;
    expect_status(&gone, 410, "a poll with the key of a member who left")?;
    ctx.expect_running(quiet.server.id)
}

/// The polls of the short-polling stage, on a server of their own.
fn polls_in_order(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let ada = web_join(ctx, &web, "ada")?;
    expect_line(&mut bob, "* ada joined")?;
    let poll_hint = |failure: Failure| {
        failure.or_hint(format!(
            "A poll answers with a line `ID TEXT` for each line of the room after `since` \
             meant for this member, oldest first, each once. Where: TODO 2 in {POLLING_FILE}, \
             fn body."
        ))
    };

    ctx.step("ada polls from the cursor POST /join gave her");
    let first = poll(ctx, &web, &ada, ada.since, None)?;
    expect_texts(
        &texts(&first),
        &[room_list(&["ada", "bob"])],
        "ada's first poll",
    )
    .map_err(poll_hint)?;

    let said: Vec<String> = (0..5).map(|_| ctx.rng().sentence(3)).collect();
    ctx.step("bob says 5 lines in one write");
    let written: String = said.iter().map(|line| format!("{line}\n")).collect();
    bob.send(written.as_bytes())?;
    let wanted: Vec<String> = said.iter().map(|line| format!("[bob] {line}")).collect();
    let mut got = Vec::new();
    let mut cursor = first.cursor;
    let deadline = Instant::now() + Duration::from_secs_f64(5.0 * ctx.patience().scale());
    // bob's lines may reach the room between two polls: poll until all came.
    while got.len() < wanted.len() && Instant::now() < deadline {
        let polled = poll(ctx, &web, &ada, cursor, None)?;
        if polled.lines.iter().any(|(id, _)| *id <= cursor) {
            return Err(Failure::new(format!(
                "a poll with since={cursor} gave a line with an id not after {cursor}"
            ))
            .hint("since=ID asks for the lines after ID: never one already given."));
        }
        got.extend(texts(&polled));
        cursor = polled.cursor;
    }
    expect_texts(&got, &wanted, "ada's polls after bob spoke").map_err(poll_hint)?;

    ctx.step("ada polls again from the last cursor: nothing new, nothing twice");
    let again = poll(ctx, &web, &ada, cursor, None)?;
    expect_texts(&texts(&again), &[], "a poll with nothing new").map_err(poll_hint)?;

    ctx.step("ada polls from her first cursor again: the same lines, the same ids");
    let replay = poll(ctx, &web, &ada, first.cursor, None)?;
    expect_texts(
        &texts(&replay),
        &wanted,
        "polling again from an older cursor",
    )
    .map_err(poll_hint)?;

    ctx.step(
        "bob says 1100 lines, with /who after the first 200; ada polls from her first cursor, \
         now out of the log",
    );
    // bob's `* ada joined` leaves the log in this burst. His writer reports
    // what it wrote just after writing it; /who's answer, read before the
    // rest, shows that report made, so bob is not taken for a deaf member.
    let many = |numbers: std::ops::Range<usize>| -> String {
        numbers.map(|number| format!("many {number}\n")).collect()
    };
    bob.send(format!("{}/who\n", many(0..200)).as_bytes())?;
    let who = bob.read_line(READ_LIMIT)?;
    if !who.starts_with(b"* in the room: ") {
        return Err(bob
            .fail("bob's /who was not answered with the room's names")
            .bytes(b"* in the room: ada, bob\n", &who));
    }
    bob.send(many(200..1100).as_bytes())?;
    let deadline = Instant::now() + Duration::from_secs_f64(5.0 * ctx.patience().scale());
    let mut polled = poll(ctx, &web, &ada, first.cursor, None)?;
    while !polled
        .lines
        .iter()
        .any(|(_, text)| text == "[bob] many 1099")
        && Instant::now() < deadline
    {
        polled = poll(ctx, &web, &ada, first.cursor, None)?;
    }
    let missed_hint = format!(
        "The room keeps the last 1000 lines. A cursor older than that gets, first, the line \
         `ID ! you missed N lines`: never a silent gap. Where: TODO 2 in {POLLING_FILE}, fn body."
    );
    let texts_polled = texts(&polled);
    let first_line = texts_polled.first().cloned().unwrap_or_default();
    // The missed notice, then the 1000 lines the log keeps, but for the answer
    // to bob's /who, which was for him alone.
    if !first_line.starts_with("! you missed ") || texts_polled.len() != 1000 {
        return Err(Failure::new(format!(
            "a poll from a cursor out of the log gave {} lines, the first {first_line:?}",
            texts_polled.len()
        ))
        .bytes(b"! you missed N lines", first_line.as_bytes())
        .hint(missed_hint));
    }
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 3

fn long_polling(ctx: &mut Ctx) -> Check<()> {
    let hold_hint = format!(
        "With `wait=SECS`, a poll with nothing to give is held: answered the moment a \
         line comes, or after SECS with no line. Where: TODO 3 in {POLLING_FILE}, fn \
         messages: give lines_after a deadline."
    );
    // A poll no line answers takes its whole wait: on a second server, where
    // nobody speaks, while the rest of the stage runs on the first.
    let quiet = start(ctx, &[])?;
    let cy = web_join(ctx, &quiet, "cy")?;
    let cy_cursor = poll(ctx, &quiet, &cy, cy.since, None)?.cursor;
    ctx.step(format!(
        "on the second server, cy polls with wait={EMPTY_WAIT} and nobody speaks: an empty \
         answer after {EMPTY_WAIT} s"
    ));
    let mut waiting = ctx.connect(quiet.http)?;
    let target = format!(
        "/messages?key={}&since={cy_cursor}&wait={EMPTY_WAIT}",
        cy.key
    );
    let deadline = Instant::now() + Duration::from_secs_f64(EMPTY_WAIT) + ctx.patience().reply;
    let (held, empty) = std::thread::scope(|scope| {
        let empty = scope.spawn(|| {
            let started = Instant::now();
            send_request(&mut waiting, quiet.http, "GET", &target, b"")?;
            wait_for_answer(&mut waiting, deadline)?;
            let response = read_response(&mut waiting)?;
            Ok::<_, Failure>((started.elapsed(), parse_polled(&response)?))
        });
        let held = held_polls(ctx, &hold_hint);
        (held, empty.join().expect("cy's thread does not panic"))
    });
    held?;
    let (took, polled) = empty.map_err(|failure| failure.hint(hold_hint.clone()))?;
    ctx.measured(format!(
        "the wait={EMPTY_WAIT} poll was answered after {:.2} s",
        took.as_secs_f64()
    ));
    expect_texts(&texts(&polled), &[], "a poll that waited for nothing")?;
    if took < Duration::from_secs_f64(EMPTY_WAIT * 0.9)
        || took > Duration::from_secs_f64(EMPTY_WAIT + 2.0 * ctx.patience().scale())
    {
        return Err(Failure::new(format!(
            "a poll with wait={EMPTY_WAIT} and nothing to say should be answered after \
             {EMPTY_WAIT} s; it took {:.2} s",
            took.as_secs_f64()
        ))
        .hint(hold_hint));
    }
    ctx.expect_running(quiet.server.id)
}

/// The wait of the long poll that nothing answers.
const EMPTY_WAIT: f64 = 0.2;
/// How long a held poll must stay unanswered before bob speaks: an answer
/// at once takes a millisecond or two.
const HELD_FOR: Duration = Duration::from_millis(20);

/// Polls held until a line comes, and one that need not wait.
fn held_polls(ctx: &mut Ctx, hold_hint: &str) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let ada = web_join(ctx, &web, "ada")?;
    expect_line(&mut bob, "* ada joined")?;
    let first = poll(ctx, &web, &ada, ada.since, None)?;
    let mut cursor = first.cursor;

    let mut delays = Vec::new();
    for round in 0..5 {
        ctx.step(format!(
            "round {round}: ada sends a poll with wait=10; bob says a line once it is held"
        ));
        let mut conn = ctx.connect(web.http)?;
        let target = format!("/messages?key={}&since={cursor}&wait=10", ada.key);
        send_request(&mut conn, web.http, "GET", &target, b"")?;
        // Held: nothing comes for a moment (an answer at once takes a
        // millisecond or two; a server that answers at once fails all five).
        if conn.expect_quiet(HELD_FOR).is_err() {
            return Err(conn
                .fail(
                    "a poll with wait=10 and no new line was answered at once; it should be \
                     held until a line comes",
                )
                .hint(hold_hint));
        }
        let said = format!("line {round}");
        let sent_at = Instant::now();
        bob.send(format!("{said}\n").as_bytes())?;
        let response = read_response(&mut conn).map_err(|failure| failure.hint(hold_hint))?;
        delays.push(sent_at.elapsed());
        let polled = parse_polled(&response)?;
        expect_texts(
            &texts(&polled),
            &[format!("[bob] {said}")],
            "the held poll's answer",
        )?;
        cursor = polled.cursor;
    }
    delays.sort();
    let median = delays[delays.len() / 2];
    ctx.measured(format!(
        "a held poll answered a new line after {:.1} ms (median of 5; worst {:.1} ms)",
        median.as_secs_f64() * 1e3,
        delays[delays.len() - 1].as_secs_f64() * 1e3
    ));
    // Woken by the room, a held poll answers in a millisecond or less. One
    // that looks every 100 ms, from when it was held, answers some 80 ms
    // after the line (the test said it 20 ms in); one that looks every 50
    // ms, some 30 ms after. A limit of 20 ms fails both.
    let limit = Duration::from_secs_f64(0.02 * ctx.patience().scale());
    if median > limit {
        return Err(Failure::new(format!(
            "a held poll should answer within {:.0} ms of a new line; the median of 5 took {:.0} ms",
            limit.as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3
        ))
        .hint("Wake the held poll when the line comes (the room's Condvar), rather than checking now and then.")
        .more_hint(hold_hint));
    }

    ctx.step("bob says a line while ada has no poll open; ada's next poll gets it at once");
    bob.send(b"between two polls\n")?;
    let started = Instant::now();
    let polled = poll(ctx, &web, &ada, cursor, Some(10.0))?;
    expect_texts(
        &texts(&polled),
        &["[bob] between two polls".to_string()],
        "the poll after the gap",
    )?;
    if started.elapsed() > Duration::from_secs_f64(ctx.patience().scale()) {
        return Err(Failure::new("a line said between two polls was only given when the next poll's wait ran out")
            .hint("A poll first looks at what is already after its cursor; it waits only if there is nothing."));
    }
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 4

/// Open `GET /events` with `extra` header lines, and read the head.
fn open_events(
    ctx: &Ctx,
    web: &Web,
    member: &Member,
    since: Option<u64>,
    extra: &str,
) -> Check<Conn> {
    let mut conn = ctx.connect(web.http)?;
    let mut target = format!("/events?key={}", member.key);
    if let Some(since) = since {
        target.push_str(&format!("&since={since}"));
    }
    conn.send(
        format!(
            "GET {target} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{extra}\r\n",
            web.http
        )
        .as_bytes(),
    )?;
    let sse_hint = format!(
        "GET /events answers 200 with `Content-Type: text/event-stream` and no length, \
         then writes events for as long as the member stays. Where: TODO 4 in {SSE_FILE}."
    );
    let status = conn.read_line(READ_LIMIT)?;
    if !status.starts_with(b"HTTP/1.1 200") {
        return Err(conn
            .fail("GET /events was not answered 200")
            .bytes(b"HTTP/1.1 200 OK\r\n", &status)
            .hint(sse_hint));
    }
    let mut event_stream = false;
    loop {
        let line = conn.read_line(READ_LIMIT)?;
        if line == b"\r\n" {
            break;
        }
        let line = String::from_utf8_lossy(&line).to_ascii_lowercase();
        event_stream |= line.starts_with("content-type:") && line.contains("text/event-stream");
        if line.starts_with("content-length:") {
            return Err(conn
                .fail("an event stream has no Content-Length: it does not end")
                .hint(sse_hint));
        }
    }
    if !event_stream {
        return Err(conn
            .fail("GET /events must come with Content-Type: text/event-stream")
            .hint(sse_hint));
    }
    Ok(conn)
}

/// One event or comment block, up to its blank line, without the blank line.
fn read_event(conn: &mut Conn) -> Check<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    loop {
        let line = conn.read_line(READ_LIMIT)?;
        let line = String::from_utf8_lossy(&line)
            .trim_end_matches(['\r', '\n'])
            .to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(lines);
        }
        // A second `id:` or `data:` before any blank line: two events ran
        // together, and a browser would hand them to the page as one.
        let field = |line: &str| line.split(':').next().unwrap_or_default().to_string();
        if !line.starts_with(':') && lines.iter().any(|seen| field(seen) == field(&line)) {
            return Err(conn
                .fail(format!(
                    "a second `{}:` line came before the blank line that ends an event",
                    field(&line)
                ))
                .detail(output_block(
                    "the lines since the last blank line",
                    &format!("{}\n{line}", lines.join("\n")),
                ))
                .hint(format!(
                    "An event ends with a blank line: `id: ID\\n`, `data: TEXT\\n`, then \
                     `\\n`. Without it, EventSource keeps adding lines to one event and shows \
                     nothing. The same for the `: keepalive` comment. Where: TODO 4 in {SSE_FILE}, \
                     fn follow."
                )));
        }
        lines.push(line);
        if lines.len() > 8 {
            return Err(conn
                .fail("8 lines of an event stream came without the blank line that ends an event")
                .hint(format!(
                    "Each event and each comment ends with a blank line. Where: TODO 4 in \
                     {SSE_FILE}, fn follow."
                )));
        }
    }
}

/// Read events until one has `data:`; its id and data. Comments (the
/// keepalives) are skipped, at most 32 of them (10 s at --keepalive 0.3).
fn read_data_event(conn: &mut Conn) -> Check<(Option<u64>, String)> {
    let mut comments = 0;
    loop {
        let event = read_event(conn)?;
        if event.iter().all(|line| line.starts_with(':')) {
            comments += 1;
            if comments > 32 {
                return Err(conn
                    .fail("only keepalive comments came, no event with `data:`")
                    .hint(format!(
                        "Each line of the room for this member is an event: `id: ID`, \
                         `data: TEXT`, a blank line; and `out` is a BufWriter: nothing leaves \
                         it until it is flushed. Where: TODO 4 in {SSE_FILE}, fn follow."
                    )));
            }
        }
        let data = event.iter().find_map(|line| line.strip_prefix("data: "));
        let id = event
            .iter()
            .find_map(|line| line.strip_prefix("id: "))
            .and_then(|id| id.parse().ok());
        if let Some(data) = data {
            return Ok((id, data.to_string()));
        }
    }
}

fn server_sent_events(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &["--keepalive", "0.3"])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let ada = web_join(ctx, &web, "ada")?;
    expect_line(&mut bob, "* ada joined")?;
    let event_hint = format!(
        "Each line is an event: `id: ID`, `data: TEXT`, and a blank line, then a flush: \
         `out` is a BufWriter, and keeps what it is given until it is flushed. Where: TODO 4 \
         in {SSE_FILE}, fn follow."
    );

    ctx.step("ada opens GET /events from her cursor");
    let mut events = open_events(ctx, &web, &ada, Some(ada.since), "")?;
    let first = read_event(&mut events)?;
    if !first.iter().any(|line| line.starts_with("retry: ")) {
        return Err(events
            .fail(format!(
                "the stream's first block should be `retry: MS`; it was {first:?}"
            ))
            .hint(
                "`retry:` tells the browser how long to wait before it reconnects a broken stream.",
            ));
    }
    let (_, data) =
        read_data_event(&mut events).map_err(|failure| failure.hint(event_hint.clone()))?;
    expect_texts(&[data], &[room_list(&["ada", "bob"])], "ada's first event")?;

    let said: Vec<String> = (0..3).map(|_| ctx.rng().sentence(3)).collect();
    ctx.step("bob says 3 lines");
    bob.send(
        said.iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>()
            .as_bytes(),
    )?;
    let mut last_id = 0;
    for line in &said {
        let (id, data) =
            read_data_event(&mut events).map_err(|failure| failure.hint(event_hint.clone()))?;
        expect_texts(
            &[data],
            &[format!("[bob] {line}")],
            "an event of bob's line",
        )?;
        last_id = id.ok_or_else(|| {
            events
                .fail("an event without its `id:` line")
                .hint(event_hint.clone())
        })?;
    }

    ctx.step("nobody speaks for a while: a `: keepalive` comment within 2 s (--keepalive 0.3)");
    let started = Instant::now();
    let comment = read_event(&mut events).map_err(|failure| {
        failure.hint(format!(
            "In silence, the stream sends a comment line, `: keepalive`, every --keepalive \
             seconds, so that proxies do not close it. Where: TODO 4 in {SSE_FILE}."
        ))
    })?;
    if !comment.iter().all(|line| line.starts_with(':'))
        || started.elapsed() > Duration::from_secs_f64(2.0 * ctx.patience().scale())
    {
        return Err(events.fail(format!(
            "in silence the stream should send `: keepalive`; it sent {comment:?}"
        )));
    }

    ctx.step("ada's stream breaks; bob says 3 more lines; she comes back with Last-Event-ID");
    events.close();
    let missed: Vec<String> = (0..3).map(|_| ctx.rng().sentence(3)).collect();
    bob.send(
        missed
            .iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>()
            .as_bytes(),
    )?;
    let mut events = open_events(
        ctx,
        &web,
        &ada,
        None,
        &format!("Last-Event-ID: {last_id}\r\n"),
    )?;
    for line in &missed {
        let (_, data) = read_data_event(&mut events).map_err(|failure| {
            failure.hint(format!(
                "A browser that reconnects sends `Last-Event-ID: ID`: the stream starts with \
                 the lines after ID, exactly those it missed. Where: {SSE_FILE}, fn serve."
            ))
        })?;
        expect_texts(
            &[data],
            &[format!("[bob] {line}")],
            "resuming after Last-Event-ID",
        )?;
    }

    ctx.step(
        "bob says 1100 lines, more than the log keeps, 100 at a time; ada reads each 100 \
         before bob says more",
    );
    let delivered_hint = format!(
        "A stream that reads every line must stay in the room. The room cuts a stream that \
         falls a whole log (1000 lines) behind, judged by what the stream reports it wrote: \
         after each flush, `app.room.delivered(member, *cursor)`. Where: TODO 4 in \
         {SSE_FILE}, fn follow."
    );
    for number in 0..1100 {
        if number % 100 == 0 {
            let hundred: String = (number..number + 100)
                .map(|number| format!("many {number}\n"))
                .collect();
            bob.send(hundred.as_bytes())?;
        }
        let (_, data) =
            read_data_event(&mut events).map_err(|failure| failure.hint(delivered_hint.clone()))?;
        expect_texts(
            &[data],
            &[format!("[bob] many {number}")],
            "a stream that reads every line",
        )
        .map_err(|failure| failure.hint(delivered_hint.clone()))?;
    }
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// WebSocket, as a stage speaks it

const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The upgrade request for `/ws?key=KEY`, with `headers` as given.
fn upgrade_request(web: &Web, member: &Member, headers: &str) -> String {
    format!(
        "GET /ws?key={}&since={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{headers}\r\n",
        member.key, member.since, web.http
    )
}

/// Open a WebSocket with the RFC's own key, and check the 101.
fn ws_open(ctx: &Ctx, web: &Web, member: &Member) -> Check<Conn> {
    let mut conn = ctx.connect(web.http)?;
    let path = format!("/ws?key={}&since={}", member.key, member.since);
    ws_upgrade(
        &mut conn,
        web.http,
        &path,
        &format!("Where: TODO 5 in {WEBSOCKET_FILE}, fn accept_key."),
    )?;
    Ok(conn)
}

/// Upgrade `conn` to a WebSocket at `path`, and check the 101 and its accept.
fn ws_upgrade(conn: &mut Conn, host: SocketAddr, path: &str, where_: &str) -> Check<()> {
    conn.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )?;
    let handshake_hint = format!(
        "The answer to an upgrade is `HTTP/1.1 101 Switching Protocols`, `Upgrade: websocket`, \
         `Connection: Upgrade`, and `Sec-WebSocket-Accept`: base64 of the SHA-1 of the key \
         followed by the RFC's GUID. {where_}"
    );
    let status = conn.read_line(READ_LIMIT)?;
    if !status.starts_with(b"HTTP/1.1 101") {
        return Err(conn
            .fail("the upgrade was not answered 101")
            .bytes(b"HTTP/1.1 101 Switching Protocols\r\n", &status)
            .hint(handshake_hint));
    }
    let mut accept = None;
    loop {
        let line = conn.read_line(READ_LIMIT)?;
        if line == b"\r\n" {
            break;
        }
        let line = String::from_utf8_lossy(&line);
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("Sec-WebSocket-Accept") {
                accept = Some(value.trim().to_string());
            }
        }
    }
    let accept = accept.unwrap_or_default();
    if accept != RFC_ACCEPT {
        return Err(conn
            .fail(format!(
                "the key {RFC_KEY} (RFC 6455's example) must be accepted with {RFC_ACCEPT}"
            ))
            .bytes(RFC_ACCEPT.as_bytes(), accept.as_bytes())
            .hint(handshake_hint));
    }
    Ok(())
}

/// A client frame: FIN and the opcode, a mask, the payload masked. `form`
/// forces a length form: 7, 16 or 64 bits.
fn client_frame(first_byte: u8, payload: &[u8], form: Option<u8>, mask: [u8; 4]) -> Vec<u8> {
    let mut bytes = vec![first_byte];
    let length = payload.len();
    match form.unwrap_or(if length < 126 {
        7
    } else if length < 65536 {
        16
    } else {
        64
    }) {
        7 => bytes.push(0x80 | length as u8),
        16 => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(length as u16).to_be_bytes());
        }
        _ => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    bytes.extend_from_slice(&mask);
    bytes.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4]),
    );
    bytes
}

fn text_frame(payload: &str) -> Vec<u8> {
    client_frame(0x81, payload.as_bytes(), None, [0x37, 0xfa, 0x21, 0x3d])
}

/// A frame from the server: FIN, opcode, payload; it must not be masked.
struct ServerFrame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
    /// Which length form it used: 7, 16 or 64 bits.
    form: u8,
}

fn ws_read(conn: &mut Conn) -> Check<ServerFrame> {
    let head = conn.read_exact(2)?;
    if head[1] & 0x80 != 0 {
        return Err(conn
            .fail(format!(
                "a frame from the server has the mask bit set in its second byte ({:#04x}); \
                 only clients mask",
                head[1]
            ))
            .hint(format!(
                "Server frames are sent as they are. The top bit of the second byte is the \
                 mask bit, not part of the length: a length over 125 written in that byte \
                 sets it (126 and 2 bytes of length, or 127 and 8, are the longer forms). \
                 Where: TODO 7 in {WEBSOCKET_FILE}, fn frame."
            )));
    }
    let (length, form) = match head[1] & 0x7f {
        126 => {
            let bytes = conn.read_exact(2)?;
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 16)
        }
        127 => {
            let bytes = conn.read_exact(8)?;
            let mut array = [0u8; 8];
            array.copy_from_slice(&bytes);
            (u64::from_be_bytes(array), 64)
        }
        short => (u64::from(short), 7),
    };
    if length > 1 << 20 {
        return Err(conn.fail(format!("a frame from the server announces {length} bytes")));
    }
    let payload = conn.read_exact(length as usize)?;
    Ok(ServerFrame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        payload,
        form,
    })
}

/// Read frames, answering none, until a text frame; its text.
fn ws_read_text(conn: &mut Conn) -> Check<String> {
    let hint = format!(
        "A line of the room goes out as one text frame: opcode 0x1, FIN set, not masked. \
         Where: TODO 7 in {WEBSOCKET_FILE}, fn frame."
    );
    // Pings and pongs may come between lines, but not without end: every
    // read has its deadline, and so has the loop, counted in frames.
    for _ in 0..FRAMES_SKIPPED {
        let frame = ws_read(conn)?;
        match frame.opcode {
            0x1 if frame.fin => return Ok(String::from_utf8_lossy(&frame.payload).into_owned()),
            0x9 | 0xA => continue,
            other => {
                return Err(conn
                    .fail(format!(
                        "a frame with opcode {other:#x} came where a text frame was expected"
                    ))
                    .detail(format!(
                        "its payload: {:?}",
                        String::from_utf8_lossy(&frame.payload)
                    ))
                    .hint(hint))
            }
        }
    }
    Err(conn
        .fail(format!(
            "{FRAMES_SKIPPED} pings or pongs came, and no text frame"
        ))
        .hint(hint))
}

/// How many frames a stage lets pass while it waits for the one it wants.
const FRAMES_SKIPPED: usize = 64;

/// Read until a close frame; its code.
fn ws_expect_close(conn: &mut Conn, code: u16, why: &str) -> Check<()> {
    let hint = format!(
        "{why} The server sends a close frame (opcode 0x8) whose payload starts with the \
         code, {code}, as two bytes, then closes. Where: TODO 6 in {WEBSOCKET_FILE}, fn \
         read_frame."
    );
    for _ in 0..FRAMES_SKIPPED {
        let frame = ws_read(conn).map_err(|failure| failure.hint(hint.clone()))?;
        if frame.opcode != 0x8 {
            continue;
        }
        let got = frame
            .payload
            .get(..2)
            .map(|bytes| u16::from_be_bytes([bytes[0], bytes[1]]));
        if got != Some(code) {
            return Err(conn
                .fail(format!("the close frame's code is {got:?}, not {code}"))
                .hint(hint));
        }
        return Ok(());
    }
    Err(conn
        .fail(format!("{FRAMES_SKIPPED} frames came, and no close frame"))
        .hint(hint))
}

// ---------------------------------------------------------------------------
// Stage 5

fn websocket(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let ada = web_join(ctx, &web, "ada")?;
    expect_line(&mut bob, "* ada joined")?;

    let refusals = [
        (
            "a key that is not 16 bytes in base64",
            "Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n",
            [400, 400],
        ),
        ("no key", "Sec-WebSocket-Version: 13\r\n", [400, 400]),
        (
            "version 8",
            &format!("Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 8\r\n"),
            [400, 426],
        ),
    ];
    for (what, headers, codes) in refusals {
        ctx.step(format!("an upgrade with {what}"));
        let mut conn = ctx.connect(web.http)?;
        conn.send(upgrade_request(&web, &ada, headers).as_bytes())?;
        let response = read_response(&mut conn)?;
        if !codes.contains(&response.status) {
            return Err(conn
                .fail(format!(
                    "an upgrade with {what} must be refused with {}, not {}",
                    codes[1], response.status
                ))
                .hint(format!(
                    "Check the handshake before answering 101: version 13, and a key of 16 \
                     bytes in base64 (24 characters ending in ==). Where: {WEBSOCKET_FILE}, \
                     fn check_handshake."
                )));
        }
    }

    ctx.step("ada upgrades with RFC 6455's example key");
    let mut ws = ws_open(ctx, &web, &ada)?;
    let first = ws_read_text(&mut ws)?;
    expect_texts(
        &[first],
        &[room_list(&["ada", "bob"])],
        "ada's first message",
    )?;

    ctx.step("bob says a short line and a 3000-byte line");
    let long = ctx.rng().word(3000);
    bob.send(format!("short\n{long}\n").as_bytes())?;
    let frame_hint = format!(
        "Each line reaches a WebSocket member as one text frame, its length in the shortest \
         form: 7 bits up to 125 bytes, 126 and 16 bits up to 65535, 127 and 64 bits beyond. \
         Where: TODO 7 in {WEBSOCKET_FILE}, fn frame."
    );
    for (line, form) in [
        ("[bob] short".to_string(), 7),
        (format!("[bob] {long}"), 16),
    ] {
        let frame = ws_read(&mut ws).map_err(|failure| failure.or_hint(frame_hint.clone()))?;
        if frame.opcode != 0x1
            || !frame.fin
            || frame.payload != line.as_bytes()
            || frame.form != form
        {
            return Err(ws
                .fail(format!(
                    "expected a whole text frame of {} bytes in the {form}-bit length form; got opcode {:#x}, fin {}, {} bytes in the {}-bit form",
                    line.len(), frame.opcode, frame.fin, frame.payload.len(), frame.form
                ))
                .hint(frame_hint));
        }
    }

    let read_hint = format!(
        "A client frame is masked: 4 bytes of mask after the length, and each payload byte \
         XORed with mask[i % 4]. Lengths come in three forms. Where: TODO 6 in \
         {WEBSOCKET_FILE}, fn read_frame."
    );
    ctx.step("ada sends three masked text frames: 7-bit, 16-bit and 64-bit length forms");
    let medium = ctx.rng().word(300);
    let mask = [1, 2, 3, 4];
    ws.send(&text_frame("hello from ws"))?;
    ws.send(&client_frame(0x81, medium.as_bytes(), Some(16), mask))?;
    ws.send(&client_frame(0x81, b"sixty-four", Some(64), mask))?;
    for line in ["hello from ws", medium.as_str(), "sixty-four"] {
        expect_line(&mut bob, &format!("[ada] {line}"))
            .map_err(|failure| failure.hint(read_hint.clone()))?;
    }

    ctx.step("ada sends one message in three fragments");
    ws.send(&client_frame(0x01, b"in ", None, mask))?;
    ws.send(&client_frame(0x00, b"three ", None, mask))?;
    ws.send(&client_frame(0x80, b"parts", None, mask))?;
    expect_line(&mut bob, "[ada] in three parts").map_err(|failure| {
        failure.hint(format!(
            "A message may come in fragments: a text frame without FIN, continuation frames \
             (opcode 0), the last with FIN. Put them together, then take the message. \
             Where: {WEBSOCKET_FILE}, fn read_messages."
        ))
    })?;

    ctx.step("ada pings; the server pongs the same payload");
    ws.send(&client_frame(0x89, b"are you there", None, mask))?;
    loop {
        let frame = ws_read(&mut ws)?;
        if frame.opcode == 0x9 {
            continue;
        }
        if frame.opcode != 0xA || frame.payload != b"are you there" {
            return Err(ws
                .fail(format!("a ping must be answered by a pong (opcode 0xA) with its payload; got opcode {:#x}", frame.opcode))
                .hint(format!("Where: {WEBSOCKET_FILE}, fn read_messages.")));
        }
        break;
    }

    ctx.step("ada closes with code 1000: the server answers close, and closes");
    ws.send(&client_frame(0x88, &1000u16.to_be_bytes(), None, mask))?;
    ws_expect_close(
        &mut ws,
        1000,
        "A close frame is answered with a close frame.",
    )?;
    ws.expect_end()?;
    expect_line(&mut bob, "* ada left").map_err(|failure| {
        failure.hint("A WebSocket member leaves the room when its WebSocket closes.")
    })?;
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 6

fn hostile_frames(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let mask = [9, 8, 7, 6];
    let huge_length = {
        let mut bytes = vec![0x81, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 63).to_be_bytes());
        bytes.extend_from_slice(&mask);
        bytes
    };
    let too_big = {
        let mut bytes = vec![0x81, 0x80 | 127];
        bytes.extend_from_slice(&(100_000u64).to_be_bytes());
        bytes.extend_from_slice(&mask);
        bytes
    };
    let cases: [(&str, Vec<u8>, u16, &str); 10] = [
        ("a 64-bit length of 2^63", huge_length, 1002, "The most significant bit of a 64-bit length must be 0; such a frame is a protocol error, and nothing it announces may be allocated."),
        ("a length of 100 000 bytes", too_big, 1009, "A message over 64 KiB is refused with 1009 before its payload is read."),
        ("an unmasked text frame", vec![0x81, 0x02, b'h', b'i'], 1002, "Every frame from a client must be masked; one that is not is a protocol error."),
        ("a ping of 126 bytes", client_frame(0x89, &[b'p'; 126], Some(16), mask), 1002, "A control frame (close, ping, pong) carries at most 125 bytes."),
        ("a text frame with a reserved bit set", client_frame(0xC1, b"rsv", None, mask), 1002, "RSV1 to RSV3 must be 0 unless an extension was agreed on."),
        ("a fragmented ping", client_frame(0x09, b"half", None, mask), 1002, "A control frame is never fragmented."),
        ("a text frame that is not UTF-8", client_frame(0x81, b"caf\xe9", None, mask), 1007, "A text message must be UTF-8; one that is not is closed with 1007. This check is ready in the starter: fn take_message."),
        ("a close frame whose body is one byte", client_frame(0x88, &[0x03], None, mask), 1002, "A close body is empty, or a 2-byte code and a reason: one byte is a protocol error. This check is ready in the starter: fn close_code."),
        ("a close frame with code 1005 (only an API may use it)", client_frame(0x88, &1005u16.to_be_bytes(), None, mask), 1002, "Codes below 1000, 1005, 1006, 1015 and those not assigned may not be sent: answer 1002, not the same code. This check is ready in the starter: fn close_code."),
        ("a close frame whose reason is not UTF-8", client_frame(0x88, &[0x03, 0xE8, 0xff], None, mask), 1007, "A close reason is UTF-8 text; one that is not is closed with 1007. This check is ready in the starter: fn close_code."),
    ];
    for (index, (what, bytes, code, why)) in cases.into_iter().enumerate() {
        let name = format!("m{index}");
        let member = web_join(ctx, &web, &name)?;
        expect_line(&mut bob, &format!("* {name} joined"))?;
        let mut ws = ws_open(ctx, &web, &member)?;
        ctx.step(format!("{name} sends {what}"));
        ws.send(&bytes)?;
        ws_expect_close(&mut ws, code, why)?;
        ws.expect_end()?;
        expect_line(&mut bob, &format!("* {name} left"))?;
    }

    ctx.step("a member sends a text frame one byte at a time");
    let member = web_join(ctx, &web, "slow")?;
    expect_line(&mut bob, "* slow joined")?;
    let mut ws = ws_open(ctx, &web, &member)?;
    let first = ws_read_text(&mut ws)?;
    expect_texts(
        &[first],
        &[room_list(&["bob", "slow"])],
        "slow's first message",
    )?;
    ws.send_byte_by_byte(&client_frame(0x81, b"one byte at a time", Some(16), mask))?;
    expect_line(&mut bob, "[slow] one byte at a time").map_err(|failure| {
        failure.hint(format!(
            "A frame may arrive in pieces: read its parts with read_exact. Where: {WEBSOCKET_FILE}, fn read_frame."
        ))
    })?;
    ctx.step("the room goes on: bob speaks, slow hears");
    bob.send(b"still here\n")?;
    let heard = ws_read_text(&mut ws)?;
    expect_texts(
        &[heard],
        &["[bob] still here".to_string()],
        "after the hostile frames",
    )?;
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 7

/// How one member of the mixed room hears.
enum Ear {
    Nc(Conn),
    Poll {
        member: Member,
        cursor: u64,
        wait: bool,
    },
    Sse(Conn),
    Ws(Conn),
}

impl Ear {
    /// The next lines this member hears (at least one).
    fn hear(&mut self, ctx: &Ctx, web: &Web) -> Check<Vec<String>> {
        match self {
            Ear::Nc(conn) => {
                let line = conn.read_line(READ_LIMIT)?;
                Ok(vec![String::from_utf8_lossy(&line).trim_end().to_string()])
            }
            Ear::Poll {
                member,
                cursor,
                wait,
            } => {
                let deadline = Instant::now() + ctx.patience().reply;
                loop {
                    let polled = poll(ctx, web, member, *cursor, wait.then_some(2.0))?;
                    *cursor = polled.cursor;
                    if !polled.lines.is_empty() {
                        return Ok(texts(&polled));
                    }
                    if Instant::now() > deadline {
                        return Err(Failure::new(format!(
                            "{}'s polls heard nothing more",
                            member.name
                        ))
                        .hint(format!(
                            "A line said in the room reaches every member, whichever way it \
                             listens: a poll gets the lines after its cursor. Where: TODO 2 in \
                             {POLLING_FILE}."
                        )));
                    }
                }
            }
            Ear::Sse(conn) => Ok(vec![read_data_event(conn)?.1]),
            Ear::Ws(conn) => Ok(vec![ws_read_text(conn)?]),
        }
    }
}

fn one_room(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let nc = nc_join(ctx, &web, "nc", &["nc"])?;
    let mut members: Vec<(String, Ear)> = vec![("nc".into(), Ear::Nc(nc))];
    let mut web_members = Vec::new();
    for (name, way) in [("poll", 0), ("long", 1), ("sse", 2), ("ws", 3)] {
        let member = web_join(ctx, &web, name)?;
        let ear = match way {
            0 | 1 => Ear::Poll {
                cursor: member.since,
                member: Member {
                    name: member.name.clone(),
                    key: member.key.clone(),
                    since: member.since,
                },
                wait: way == 1,
            },
            2 => Ear::Sse(open_events(ctx, &web, &member, Some(member.since), "")?),
            _ => Ear::Ws(ws_open(ctx, &web, &member)?),
        };
        members.push((name.to_string(), ear));
        web_members.push(member);
    }
    let everyone = ["nc", "poll", "long", "sse", "ws"];

    ctx.step("each member says two lines, in turns, without waiting to hear");
    let mut said = Vec::new();
    for round in 0..2 {
        for (index, name) in everyone.iter().enumerate() {
            let line = format!("{name} says {round}");
            if index == 0 {
                if let Ear::Nc(conn) = &mut members[0].1 {
                    conn.send(format!("{line}\n").as_bytes())?;
                }
            } else if name == &"ws" {
                if let Ear::Ws(conn) = &mut members[4].1 {
                    conn.send(&text_frame(&line))?;
                }
            } else {
                web_send(ctx, &web, &web_members[index - 1], &line)?;
            }
            said.push(format!("[{name}] {line}"));
        }
    }
    // What each member should hear from here on: everyone's joins after its
    // own, the lines of the others, and the leave. Lines said over different
    // connections may reach the room in any order, but every member must
    // hear them in the room's one order.
    let mut heard_by: Vec<(String, Vec<String>)> = Vec::new();
    for (index, (name, ear)) in members.iter_mut().enumerate() {
        let mut wanted: Vec<String> = everyone[index + 1..]
            .iter()
            .map(|later| format!("* {later} joined"))
            .collect();
        if index > 0 {
            wanted.insert(0, room_list(&everyone[..=index]));
        }
        wanted.extend(
            said.iter()
                .filter(|line| !line.starts_with(&format!("[{name}]")))
                .cloned(),
        );
        let mut heard = Vec::new();
        while heard.len() < wanted.len() {
            let more = ear.hear(ctx, &web).map_err(|failure| {
                failure.more_hint(format!(
                    "{name} had heard {} of the {} lines it should:\n{}",
                    heard.len(),
                    wanted.len(),
                    heard.join("\n")
                ))
            })?;
            heard.extend(more);
        }
        let (mut sorted_heard, mut sorted_wanted) = (heard.clone(), wanted.clone());
        sorted_heard.sort();
        sorted_wanted.sort();
        if sorted_heard != sorted_wanted {
            return Err(Failure::new(format!("{name} did not hear the lines every member should"))
                .bytes(wanted.join("\n").as_bytes(), heard.join("\n").as_bytes())
                .hint("Every way reads the same log of the room: each member hears every line but its own, and the lines meant for others."));
        }
        for (other, other_heard) in &heard_by {
            let common = |lines: &[String], with: &[String]| -> Vec<String> {
                lines
                    .iter()
                    .filter(|line| with.contains(line))
                    .cloned()
                    .collect()
            };
            let (mine, theirs) = (common(&heard, other_heard), common(other_heard, &heard));
            if mine != theirs {
                return Err(Failure::new(format!("{name} and {other} heard the same lines in different orders"))
                    .bytes(theirs.join("\n").as_bytes(), mine.join("\n").as_bytes())
                    .hint("The room has one order: the order of its log. Every way must give the lines in that order."));
            }
        }
        heard_by.push((name.clone(), heard));
    }
    ctx.step("all five members heard the same room, in the same order");

    ctx.step("the nc member quits with /quit; the others hear it leave");
    for (index, (name, ear)) in members.iter_mut().enumerate() {
        if let Ear::Nc(conn) = ear {
            conn.send(b"/quit\n")?;
        }
        let wanted = if index == 0 { "* bye" } else { "* nc left" };
        let heard = ear.hear(ctx, &web)?;
        expect_texts(
            &heard,
            &[wanted.to_string()],
            &format!("{name}, after nc's /quit"),
        )?;
    }
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 8

fn a_real_browser(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let url = |via: &str| format!("http://{}/?via={via}&name=chromium-{via}", web.http);
    // A browser takes a second or more to start: it opens the first page as
    // it starts, and the second in a tab of its own as soon as it can.
    let profile = ctx.temp_dir()?;
    let devtools = course::harness::local::unused_address()?;
    ctx.step(format!(
        "headless Chromium starts on {}, its DevTools port {devtools}",
        url("sse")
    ));
    let mut words = headless_chromium(&profile);
    words.extend([
        format!("--remote-debugging-port={}", devtools.port()),
        // The tab in the background must keep its timers and connections
        // going as the one in front does.
        "--disable-background-timer-throttling".to_string(),
        "--disable-renderer-backgrounding".to_string(),
        url("sse"),
    ]);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let browser = ctx.start_tool("chromium", &words, CHROMIUM_INSTALL)?;
    let patience = ctx.patience().exit;
    let mut pages = vec![(
        "sse",
        DevTools::open(ctx, devtools, "via=sse", patience * 4)?,
    )];
    ctx.step(format!("Chromium opens {} in a second tab", url("ws")));
    pages.push(("ws", DevTools::open_tab(ctx, devtools, &url("ws"))?));

    // The two pages load at once: bob hears them join in either order.
    let mut wanted_joins = vec!["* chromium-sse joined", "* chromium-ws joined"];
    let started = Instant::now();
    while !wanted_joins.is_empty() {
        let joined = loop {
            match bob.read_line(READ_LIMIT) {
                Err(_) if started.elapsed() < patience * 4 => continue,
                other => break other,
            }
        };
        let came = match joined {
            Ok(line) => String::from_utf8_lossy(&line).trim_end().to_string(),
            Err(failure) => failure.what.clone(),
        };
        let Some(at) = wanted_joins.iter().position(|wanted| *wanted == came) else {
            return Err(Failure::new(format!(
                "Chromium opened the pages, but bob never heard `{}`; instead: {came}",
                wanted_joins.join("` and `")
            ))
            .hint(
                "The page joins by itself when its address has `name=`: it sends POST \
                 /join, then listens its way. Stage 1 checks POST /join.",
            ));
        };
        wanted_joins.remove(at);
    }

    for (via, tools) in &mut pages {
        let name = format!("chromium-{via}");
        let said = format!("hello {via} {}", ctx.rng().word(6));
        ctx.step(format!(
            "bob says {said:?} once the browsers are in the room"
        ));
        bob.send(format!("{said}\n").as_bytes())?;
        let wanted = format!("[bob] {said}");
        let page = page_text(tools, &wanted, patience)?;
        if !page.contains(&wanted) {
            return Err(Failure::new(format!(
                "the line bob said did not appear in the page Chromium showed over {via}"
            ))
            .detail(output_block("the room as the page showed it", &page))
            .hint(format!(
                "The page uses EventSource for sse and WebSocket for ws: check that those \
                 work as stages 4 and 5 do. Where: {SSE_FILE} and {WEBSOCKET_FILE}."
            )));
        }
        ctx.step(format!("the page showed `{wanted}`"));

        let typed = format!("typed in chromium over {via}");
        ctx.step(format!(
            "the test types {typed:?} in the page's box and sends it"
        ));
        tools.eval(&format!(
            "document.getElementById('line').value = {}; \
             document.getElementById('say').requestSubmit(); 'sent'",
            serde_json::to_string(&typed).unwrap_or_default()
        ))?;
        expect_line(&mut bob, &format!("[{name}] {typed}")).map_err(|failure| {
            failure.hint(format!(
                "The page sends a typed line with POST /send, or over its WebSocket. \
                 Where: TODO 1 in {SERVER_FILE} (the body), {WEBSOCKET_FILE} (frames)."
            ))
        })?;
    }
    // Killed, not asked to stop: a browser is not under test, and on a busy
    // machine Chromium may take seconds to shut down. Its sockets close all
    // the same, as when a laptop's lid shuts. The event stream's member
    // leaves later, once --idle has passed.
    ctx.kill(browser);
    expect_line(&mut bob, "* chromium-ws left").map_err(|failure| {
        failure.hint(format!(
            "When the browser goes away, its WebSocket closes, and its member leaves at \
             once. Where: {WEBSOCKET_FILE}, fn serve."
        ))
    })?;
    ctx.expect_running(web.server.id)
}

/// Chromium's DevTools protocol: JSON questions over a WebSocket, each
/// answered with its id.
struct DevTools {
    conn: Conn,
    next_id: u64,
}

impl DevTools {
    /// Connect to the page Chromium shows whose address holds `wanted`, on
    /// its DevTools port.
    fn open(ctx: &Ctx, devtools: SocketAddr, wanted: &str, patience: Duration) -> Check<DevTools> {
        let deadline = Instant::now() + patience;
        ctx.step("the test asks Chromium, over its DevTools port, what the page shows");
        let page = loop {
            let listed = try_fetch_json(ctx, devtools, "/json/list").and_then(|targets| {
                let page = targets.as_array().and_then(|all| {
                    all.iter()
                        .find(|target| {
                            target["type"] == "page"
                                && target["url"]
                                    .as_str()
                                    .is_some_and(|url| url.contains(wanted))
                        })
                        .cloned()
                });
                page.ok_or_else(|| Failure::new(format!("Chromium listed no page: {targets}")))
            });
            match listed {
                Ok(page) => break page,
                Err(failure) if Instant::now() > deadline => return Err(failure),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        DevTools::connect(ctx, devtools, &page)
    }

    /// Open `url` in a new tab, and connect to it.
    fn open_tab(ctx: &Ctx, devtools: SocketAddr, url: &str) -> Check<DevTools> {
        // The address is the whole query: its own `&` must not end it.
        let target = format!("/json/new?{}", url.replace('&', "%26"));
        let response = fetch(ctx, devtools, "PUT", &target, b"")?;
        let page = serde_json::from_slice(&response.body)
            .map_err(|error| Failure::new(format!("Chromium's /json/new is not JSON: {error}")))?;
        DevTools::connect(ctx, devtools, &page)
    }

    /// Connect to the page Chromium listed as `page`.
    fn connect(ctx: &Ctx, devtools: SocketAddr, page: &serde_json::Value) -> Check<DevTools> {
        let socket_url = page["webSocketDebuggerUrl"].as_str().ok_or_else(|| {
            Failure::new(format!("Chromium's page has no DevTools address: {page}"))
        })?;
        let path = socket_url
            .split_once("//")
            .and_then(|(_, rest)| rest.find('/').map(|at| rest[at..].to_string()))
            .unwrap_or_default();
        let mut conn = ctx.connect(devtools)?;
        ws_upgrade(&mut conn, devtools, &path, "")?;
        Ok(DevTools { conn, next_id: 1 })
    }

    /// Evaluate `expression` in the page (a promise is awaited); its value
    /// as text.
    fn eval(&mut self, expression: &str) -> Check<String> {
        let id = self.next_id;
        self.next_id += 1;
        let request = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": {"expression": expression, "awaitPromise": true, "returnByValue": true},
        });
        self.conn.send(&text_frame(&request.to_string()))?;
        loop {
            let answer = ws_read_text(&mut self.conn)?;
            let Ok(answer) = serde_json::from_str::<serde_json::Value>(&answer) else {
                continue;
            };
            if answer["id"] == id {
                return Ok(answer["result"]["result"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string());
            }
        }
    }
}

/// The text of the page's room once it holds `wanted`, or after `patience`.
fn page_text(tools: &mut DevTools, wanted: &str, patience: Duration) -> Check<String> {
    let wanted_json = serde_json::to_string(wanted).unwrap_or_default();
    // Each question waits in the page at most half a second, well within a
    // read's patience; the test asks again until `deadline`.
    let expression = format!(
        "new Promise(done => {{ const end = Date.now() + 500; const look = () => {{ \
         const text = document.getElementById('room').innerText; \
         if (text.includes({wanted_json}) || Date.now() > end) done(text); \
         else setTimeout(look, 10); }}; look(); }})"
    );
    let deadline = Instant::now() + patience * 2;
    loop {
        let text = tools.eval(&expression)?;
        if text.contains(wanted) || Instant::now() > deadline {
            return Ok(text);
        }
    }
}

fn try_fetch_json(ctx: &Ctx, addr: SocketAddr, target: &str) -> Check<serde_json::Value> {
    let response = fetch(ctx, addr, "GET", target, b"")?;
    serde_json::from_slice(&response.body)
        .map_err(|error| Failure::new(format!("Chromium's {target} is not JSON: {error}")))
}

// ---------------------------------------------------------------------------
// Stage 9

fn held_connections(ctx: &mut Ctx) -> Check<()> {
    // A deaf member takes megabytes to drop: on a server of its own, while
    // the held connections wait on the first.
    let flooded = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &flooded, "bob", &["bob"])?;
    ctx.step(
        "on a second server, deaf opens an event stream and never reads; bob says lines of \
         4000 bytes, 100 at a time, until deaf is dropped or 8000 have gone",
    );
    let deaf_member = web_join(ctx, &flooded, "deaf")?;
    expect_line(&mut bob, "* deaf joined")?;
    let deaf = open_events(ctx, &flooded, &deaf_member, None, "")?;
    let pid = ctx.process(flooded.server.id).pid();
    let line = ctx.rng().word(4000);
    let (held, flood) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| flood_the_deaf(&mut bob, &line, pid));
        let held = held_at_once(ctx);
        (held, flood.join().expect("bob's thread does not panic"))
    });
    held?;
    let (megabytes, grown) = flood?;
    drop(deaf);
    if let Some(grown) = grown {
        ctx.measured(format!(
            "while {megabytes} MB passed, the server's memory grew by {}",
            course::harness::resources::mebibytes(grown)
        ));
        if grown > 32 << 20 {
            return Err(Failure::new(format!(
                "while bob said {megabytes} MB to a reader that never read, the server grew \
                 by {}",
                course::harness::resources::mebibytes(grown)
            ))
            .hint(DEAF_HINT));
        }
    }
    ctx.expect_running(flooded.server.id)
}

const DEAF_HINT: &str = "A stream that falls a whole log (1000 lines) behind has stopped \
                         reading: cut it and drop the member, as lesson 05 dropped a member \
                         whose outbox was full. This code is ready in the starter: room.rs, \
                         fn append, and the stream's report of how far it got (fn delivered).";

/// bob says lines of `line` to a room where deaf never reads its stream,
/// until deaf is dropped: how many megabytes went, and how much the server
/// (`pid`) grew meanwhile, where that can be measured.
fn flood_the_deaf(bob: &mut Conn, line: &str, pid: u32) -> Check<(usize, Option<u64>)> {
    let before = course::harness::resources::resident_bytes(pid);
    let chunk: String = (0..100).map(|_| format!("{line}\n")).collect();
    let mut saying = bob.try_clone()?;
    let dropped = AtomicBool::new(false);
    let (heard, chunks) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            let mut chunks = 0;
            while chunks < 80 && !dropped.load(Ordering::SeqCst) {
                saying.send(chunk.as_bytes())?;
                chunks += 1;
            }
            Ok::<_, Failure>(chunks)
        });
        // As long as bob is still saying lines, the drop may yet come.
        let heard = loop {
            match bob.wait_readable() {
                Err(_) if !sender.is_finished() => continue,
                _ => break expect_line(bob, "* deaf left (dropped: not reading)"),
            }
        };
        dropped.store(true, Ordering::SeqCst);
        let chunks = sender.join().expect("bob's sending thread does not panic");
        (heard, chunks)
    });
    heard.map_err(|failure| failure.hint(DEAF_HINT))?;
    let megabytes = chunks? * chunk.len() / 1_000_000;
    let after = course::harness::resources::resident_bytes(pid);
    let grown = before
        .zip(after)
        .map(|(before, after)| after.saturating_sub(before));
    Ok((megabytes, grown))
}

/// 500 held polls and streams, and a newcomer who gets in all the same;
/// then the bound, on another server.
fn held_at_once(ctx: &mut Ctx) -> Check<()> {
    const POLLS: usize = 400;
    const STREAMS: usize = 100;
    const BOUND: usize = 600;
    let web = start(ctx, &["--max-connections", &BOUND.to_string()])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let ada = web_join(ctx, &web, "ada")?;
    expect_line(&mut bob, "* ada joined")?;
    let mut held = Vec::new();
    ctx.step(format!(
        "{STREAMS} members join, then open an event stream each"
    ));
    let mut streaming = Vec::with_capacity(STREAMS);
    for index in 0..STREAMS {
        streaming.push(web_join(ctx, &web, &format!("s{index}"))?);
        expect_line(&mut bob, &format!("* s{index} joined"))?;
    }
    for member in &streaming {
        held.push(open_events(ctx, &web, member, None, "")?);
    }
    ctx.step(format!(
        "ada sends {POLLS} long polls with wait=60, all held"
    ));
    let cursor = poll(ctx, &web, &ada, ada.since, None)?.cursor;
    for number in 1..=POLLS {
        let mut conn = ctx.connect(web.http)?;
        let target = format!("/messages?key={}&since={cursor}&wait=60", ada.key);
        send_request(&mut conn, web.http, "GET", &target, b"")?;
        held.push(conn);
        // Every 50, a page that is answered: the server has accepted every
        // connection before it. Without this pause, the system's listen
        // queue (128) may fill, and it answers a handshake a second later.
        if number % 50 == 0 {
            let page = fetch(ctx, web.http, "GET", "/", b"")?;
            expect_status(&page, 200, &format!("the page, with {number} polls held"))?;
        }
    }
    let pid = ctx.process(web.server.id).pid();
    let threads = course::harness::resources::threads(pid);
    ctx.step("a newcomer joins and speaks while they are held");
    let started = Instant::now();
    let newcomer = web_join(ctx, &web, "newcomer")?;
    expect_line(&mut bob, "* newcomer joined")?;
    web_send(ctx, &web, &newcomer, "I got in")?;
    expect_line(&mut bob, "[newcomer] I got in")?;
    ctx.measured(format!(
        "with {} held, the newcomer joined and spoke in {:.0} ms; the server runs {} threads",
        POLLS + STREAMS,
        started.elapsed().as_secs_f64() * 1e3,
        threads.map_or("(unmeasured)".to_string(), |count| count.to_string())
    ));
    drop(held);
    ctx.expect_running(web.server.id)?;
    bound_is_kept(ctx)
}

/// A second server with a bound of 50: 50 connections that say nothing are
/// held (each for its head's deadline), and the 51st gets 503.
fn bound_is_kept(ctx: &mut Ctx) -> Check<()> {
    const SMALL: usize = 50;
    ctx.step(format!(
        "a second server with --max-connections {SMALL}; {SMALL} connections that say nothing, then one more"
    ));
    let web = start(ctx, &["--max-connections", &SMALL.to_string()])?;
    let bound_hint = format!(
        "Each held connection costs a thread and a socket; past --max-connections, a \
         newcomer gets `503 Service Unavailable` with `Retry-After`, rather than the \
         machine running out. Where: {SERVER_FILE}, fn turn_away, and limits.rs."
    );
    let mut held = Vec::new();
    for _ in 0..SMALL {
        held.push(ctx.connect(web.http)?);
    }
    let mut extra = ctx.connect(web.http)?;
    send_request(&mut extra, web.http, "GET", "/", b"")?;
    let response = read_response(&mut extra).map_err(|failure| failure.hint(bound_hint.clone()))?;
    if response.status != 503 || response.header("Retry-After").is_none() {
        return Err(Failure::new(format!(
            "with {SMALL} connections open and --max-connections {SMALL}, a newcomer got {}, \
             not 503 with Retry-After",
            response.head.lines().next().unwrap_or_default()
        ))
        .hint(bound_hint));
    }
    ctx.step("the newcomer past the bound got 503 with Retry-After");
    drop(held);
    ctx.expect_running(web.server.id)
}

// ---------------------------------------------------------------------------
// Stage 10

fn the_client(ctx: &mut Ctx) -> Check<()> {
    let web = start(ctx, &[])?;
    let mut bob = nc_join(ctx, &web, "bob", &["bob"])?;
    let addr = web.http.to_string();
    for via in ["poll", "long", "sse", "ws"] {
        let name = format!("by-{via}");
        ctx.step(format!("the client joins with --via {via}"));
        // Short polling asks every 0.1 s here, not every second: a line said
        // just after an ask is heard sooner, and the stage ends sooner.
        let client = ctx.start(&[
            "client",
            "--connect",
            &addr,
            "--via",
            via,
            "--name",
            &name,
            "--poll-every",
            "0.1",
        ])?;
        expect_line(&mut bob, &format!("* {name} joined")).map_err(|failure| {
            failure.hint(format!(
                "The client joins with POST /join as it starts. Where: {CLIENT_FILE}, fn run."
            ))
        })?;
        let said = format!("hello {name}");
        bob.send(format!("{said}\n").as_bytes())?;
        let wanted = format!("[bob] {said}\n");
        let deadline = Instant::now() + Duration::from_secs_f64(3.0 * ctx.patience().scale());
        if !ctx
            .process(client)
            .wait_for_stdout(wanted.as_bytes(), deadline)
        {
            let stdout = ctx.process(client).stdout().text();
            return Err(Failure::new(format!(
                "the client --via {via} did not show bob's line while its user typed nothing"
            ))
            .detail(output_block("its stdout", &stdout))
            .hint(format!("Where: {CLIENT_FILE}, the way {via} listens.")));
        }
        type_line(ctx, client, &format!("typed by {name}\n"))?;
        expect_line(&mut bob, &format!("[{name}] typed by {name}")).map_err(|failure| {
            failure.hint(format!("A typed line goes to the room (POST /send, or a WebSocket frame). Where: {CLIENT_FILE}."))
        })?;
        ctx.process(client).close_stdin();
        expect_line(&mut bob, &format!("* {name} left")).map_err(|failure| {
            failure.hint(format!(
                "At the end of its input, the client sends /quit and exits. Where: {CLIENT_FILE}."
            ))
        })?;
        let patience = ctx.patience().exit;
        match ctx.process(client).wait_exit(Instant::now() + patience) {
            Some(status) if status.success() => {}
            other => {
                return Err(Failure::new(format!(
                    "the client --via {via} should exit with 0 after its input ends; {other:?}"
                ))
                .detail(output_block(
                    "its stderr",
                    &ctx.process(client).stderr().text(),
                )))
            }
        }
    }
    ctx.expect_running(web.server.id)
}

fn type_line(ctx: &mut Ctx, client: ProcessId, line: &str) -> Check<()> {
    ctx.process(client)
        .write_stdin(line.as_bytes())
        .map_err(|error| {
            Failure::new(format!(
                "the test could not type into the client: {error} (did it exit?)"
            ))
            .detail(output_block(
                "its stderr",
                &ctx.process(client).stderr().text(),
            ))
        })
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let server = start_server_at_chosen_address(ctx, &["--chat-bind", "127.0.0.1:0"])?;
    ctx.step("`GET /` at that address");
    let response = fetch(ctx, server.addr, "GET", "/", b"")?;
    expect_status(&response, 200, "the page, at the address given with --bind")
}
