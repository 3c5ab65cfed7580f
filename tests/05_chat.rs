//! Lesson 05, chat: the stages, in the order you build them.
//!
//!     cargo test --test 05_chat                 your code in lessons/05-chat
//!     cargo test --test 05_chat broadcasts      one stage
//!     COURSE_TARGET=solutions cargo test --test 05_chat
//!     COURSE_TIMES=1 cargo test --test 05_chat  also print the delivery times
//!                                               that stages 7 and 8 measure
//!
//! Each stage starts your server with `server --bind 127.0.0.1:0` (the last on
//! a port the test chose, to check `--bind`), reads the address it prints, and
//! joins the room over real TCP connections, as `nc` would. Stage 9 runs your
//! client against the test's own small server.

use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::{Duration, Instant};

use course::harness::bind::start_server_at_chosen_address;
use course::harness::ctx::output_block;
use course::harness::local;
use course::harness::resources::{mebibytes, resident_bytes, unmeasurable};
use course::{Check, Conn, Ctx, Failure, Programs, Stage};

fn main() {
    let programs = Programs {
        lessons: env!("CARGO_BIN_EXE_05-chat"),
        solutions: option_env!("CARGO_BIN_EXE_05-chat-solution"),
    };
    course::run_stages("05", programs, &STAGES);
}

const STAGES: [Stage; 10] = [
    Stage {
        slug: "joins",
        title: "asks for a name, shows the newcomer the room, tells the others",
        slide: "Joining the room",
        check: joins,
        runs_alone: false,
    },
    Stage {
        slug: "broadcasts",
        title: "a line reaches every other member in order, not the sender",
        slide: "A broadcast hub",
        check: broadcasts,
        runs_alone: false,
    },
    Stage {
        slug: "leaves",
        title: "clean and abrupt departures are announced; the name is free again",
        slide: "Leaving, cleanly or not",
        check: leaves,
        runs_alone: false,
    },
    Stage {
        slug: "names",
        title: "empty, long, odd and taken names are refused with a reason",
        slide: "Names",
        check: names,
        runs_alone: false,
    },
    Stage {
        slug: "commands",
        title: "/who, /msg, /nick and /quit work as the protocol says",
        slide: "Commands",
        check: commands,
        runs_alone: false,
    },
    Stage {
        slug: "hostile-input",
        title: "split lines, packed lines, huge lines and escape codes; the room goes on",
        slide: "Relayed text is hostile",
        check: hostile_input,
        runs_alone: false,
    },
    Stage {
        slug: "slow-reader",
        title: "a member who never reads is dropped; the others never wait",
        slide: "The slow reader",
        check: slow_reader,
        runs_alone: false,
    },
    Stage {
        slug: "full-room",
        title: "200 members: every line reaches the 199 others, in order, in time",
        slide: "A full room",
        check: full_room,
        runs_alone: false,
    },
    Stage {
        slug: "the-client",
        title: "the client shows lines as they come, sends what is typed, and exits",
        slide: "The client does two things at once",
        check: the_client,
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

const ROOM_FILE: &str = "lessons/05-chat/room.rs";
const SESSION_FILE: &str = "lessons/05-chat/session.rs";
const LINES_FILE: &str = "lessons/05-chat/lines.rs";
const CLIENT_FILE: &str = "lessons/05-chat/client.rs";

/// The server's first line to every connection.
const PROMPT: &str = "* what is your name?";
/// The longest line a stage reads from the server, newline included.
const READ_LIMIT: usize = 16 * 1024;

/// Read exactly `line` and its newline.
fn expect_line(conn: &mut Conn, line: &str) -> Check<()> {
    conn.expect(format!("{line}\n").as_bytes())
}

/// The room list a member sees: every name, sorted, after `* in the room: `.
fn room_list(names: &[&str]) -> String {
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    format!("* in the room: {}", sorted.join(", "))
}

/// Connect and give `name` once the prompt has come.
fn connect_named(ctx: &Ctx, addr: SocketAddr, name: &str) -> Check<Conn> {
    let mut conn = ctx.connect(addr)?;
    give_name(&mut conn, name)?;
    Ok(conn)
}

/// Give `name` once the prompt has come.
fn give_name(conn: &mut Conn, name: &str) -> Check<()> {
    expect_prompt(conn)?;
    conn.send(format!("{name}\n").as_bytes())
}

/// Read the prompt every connection starts with.
fn expect_prompt(conn: &mut Conn) -> Check<()> {
    expect_line(conn, PROMPT).map_err(|failure| {
        failure.more_hint(format!(
            "Every connection starts with the server asking `{PROMPT}` on a line of its own \
             (see lessons/05-chat/README.md, the protocol)."
        ))
    })
}

/// Join as `name`; `everyone` is the room afterwards, `name` included.
fn join(ctx: &Ctx, addr: SocketAddr, name: &str, everyone: &[&str]) -> Check<Conn> {
    let mut conn = connect_named(ctx, addr, name)?;
    expect_line(&mut conn, &room_list(everyone)).map_err(|failure| {
        failure
            .hint(
                "Once its name is accepted, a newcomer's first line is `* in the room: ` \
                 and every name in the room, sorted, its own included.",
            )
            .more_hint(format!(
                "Where: TODO 1 in {ROOM_FILE}, fn join: deliver that line to the newcomer \
                 alone."
            ))
    })?;
    Ok(conn)
}

/// Join `names` one after another; each member hears of those who come after.
fn fill_room<const N: usize>(ctx: &Ctx, addr: SocketAddr, names: [&str; N]) -> Check<[Conn; N]> {
    let mut members: Vec<Conn> = Vec::new();
    for count in 1..=N {
        let newcomer = names[count - 1];
        ctx.step(format!("{newcomer} joins"));
        let conn = join(ctx, addr, newcomer, &names[..count])?;
        for member in &mut members {
            expect_line(member, &format!("* {newcomer} joined")).map_err(|failure| {
                failure.hint(format!(
                    "Where: TODO 1 in {ROOM_FILE}, fn join. Everyone already in the room \
                     gets `* NAME joined`; the newcomer does not."
                ))
            })?;
        }
        members.push(conn);
    }
    match members.try_into() {
        Ok(members) => Ok(members),
        Err(_) => unreachable!("N names make N members"),
    }
}

/// `count` different names, random and reproducible.
fn random_names(ctx: &mut Ctx, count: usize) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    while names.len() < count {
        let length = ctx.rng().between(3, 9);
        let name = ctx.rng().word(length);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn joins(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[]).map_err(|failure| {
        failure.more_hint(format!(
            "Start with TODO 1 in {ROOM_FILE}; the code that binds and prints the address \
             is ready in lessons/05-chat/server.rs."
        ))
    })?;
    let names = random_names(ctx, 3);
    let _members = fill_room(ctx, server.addr, [&names[0], &names[1], &names[2]])?;
    ctx.expect_running(server.id)
}

fn broadcasts(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let [mut ada, mut bob, mut cy] = fill_room(ctx, addr, ["ada", "bob", "cy"])?;
    ctx.step("dee connects and reads the prompt, but gives no name yet");
    let mut dee = ctx.connect(addr)?;
    expect_line(&mut dee, PROMPT)?;

    let say_hint = |failure: Failure| {
        failure.hint(format!(
            "Where: TODO 2 in {ROOM_FILE}, fn say. Deliver `[NAME] TEXT` to every member \
             but the sender, in the order the sender said them."
        ))
    };
    ctx.step("ada says 10 lines in one write");
    let lines: Vec<String> = (0..10)
        .map(|_| {
            let words = ctx.rng().between(1, 10);
            ctx.rng().sentence(words)
        })
        .collect();
    let written: String = lines.iter().map(|line| format!("{line}\n")).collect();
    ada.send(written.as_bytes())?;
    for member in [&mut bob, &mut cy] {
        let relayed: String = lines.iter().map(|line| format!("[ada] {line}\n")).collect();
        member.expect(relayed.as_bytes()).map_err(say_hint)?;
    }

    ctx.step("bob answers; ada's next line must be bob's, not her own lines back");
    bob.send(b"got them all\n")?;
    expect_line(&mut cy, "[bob] got them all").map_err(say_hint)?;
    expect_line(&mut ada, "[bob] got them all").map_err(|failure| {
        say_hint(failure).more_hint("The sender already knows what it said: skip it.")
    })?;

    ctx.step("dee gives her name now: nothing said before may have reached her");
    dee.send(b"dee\n")?;
    expect_line(&mut dee, &room_list(&["ada", "bob", "cy", "dee"])).map_err(|failure| {
        say_hint(failure).more_hint(
            "A connection that has not given its name is not in the room yet: it hears \
             nothing but the prompt.",
        )
    })?;
    Ok(())
}

fn leaves(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let [mut ada, mut bob, cy] = fill_room(ctx, addr, ["ada", "bob", "cy"])?;

    let leave_hint = |failure: Failure| {
        failure.hint(format!(
            "Where: TODO 3 in {ROOM_FILE}, fn leave. When a member's connection ends, by a \
             close or by a reset, take it out of the room and tell the others `* NAME left`."
        ))
    };
    ctx.step("cy closes her connection cleanly");
    cy.close();
    expect_line(&mut ada, "* cy left").map_err(leave_hint)?;
    expect_line(&mut bob, "* cy left").map_err(leave_hint)?;

    ctx.step("ada says a line; bob vanishes without reading it (a reset)");
    ada.send(b"are you there?\n")?;
    bob.wait_readable()?;
    bob.abort();
    expect_line(&mut ada, "* bob left").map_err(leave_hint)?;

    ctx.step("bob and cy come back under the same names");
    let mut bob = join(ctx, addr, "bob", &["ada", "bob"]).map_err(leave_hint)?;
    expect_line(&mut ada, "* bob joined")?;
    let _cy = join(ctx, addr, "cy", &["ada", "bob", "cy"]).map_err(leave_hint)?;
    expect_line(&mut ada, "* cy joined")?;
    expect_line(&mut bob, "* cy joined")?;
    ctx.expect_running(server.id)
}

fn names(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let mut ada = join(ctx, addr, "ada", &["ada"])?;
    let refused = [
        ("", "an empty name"),
        ("abcdefghijklmnopq", "17 characters"),
        ("two words", "a space"),
        ("<b>", "brackets"),
        ("h\u{e9}lo", "a letter outside A-Z"),
        ("ada", "a name that is taken"),
    ];
    let name_hint = format!(
        "Where: TODO 4 in {SESSION_FILE}, fn check_name. A name is 1 to 16 of A-Z a-z 0-9 \
         _ -, and not taken; otherwise the server sends `! ` and the reason on one line, \
         then closes."
    );
    for (name, what) in refused {
        ctx.step(format!("a newcomer tries {what}: {name:?}"));
        let mut conn = connect_named(ctx, addr, name)?;
        let answer = conn.read_line(READ_LIMIT).map_err(|failure| {
            failure
                .hint(format!("The name {name:?} must be refused."))
                .more_hint(name_hint.clone())
        })?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let reason = answer.strip_prefix("! ").map(str::trim).unwrap_or_default();
        if reason.is_empty() {
            return Err(conn
                .fail(format!(
                    "the name {name:?} ({what}) got {answer:?}, not `! ` and a reason"
                ))
                .hint(name_hint));
        }
        conn.expect_closed()
            .map_err(|failure| failure.more_hint(name_hint.clone()))?;
    }
    ctx.step("names of 16 characters, and with digits, _ and -, are welcome");
    let longest = "Sixteen_chars-16";
    let _longest = join(ctx, addr, longest, &["ada", longest])
        .map_err(|failure| failure.more_hint(name_hint.clone()))?;
    expect_line(&mut ada, &format!("* {longest} joined")).map_err(|failure| {
        failure.more_hint(
            "ada must hear only of the newcomer who got in: a refused name never joined.",
        )
    })?;
    name_deadline(ctx)
}

/// A newcomer that sends its name one byte at a time, a byte every 30 ms,
/// must be told and closed when the name's deadline passes, as one that
/// sends nothing would be. A server whose timeout starts again at each read
/// would wait for as long as the bytes come: they come for longer than the
/// test waits for the answer, so that server fails on every run.
fn name_deadline(ctx: &mut Ctx) -> Check<()> {
    const SECONDS: &str = "0.3";
    const EVERY: Duration = Duration::from_millis(30);
    ctx.step(format!(
        "a second server with --name-timeout {SECONDS}; a newcomer sends `a` every {} ms \
         and never a newline",
        EVERY.as_millis()
    ));
    let server = ctx.start_server(&["--name-timeout", SECONDS])?;
    let mut conn = ctx.connect(server.addr)?;
    expect_line(&mut conn, PROMPT)?;
    let mut trickle = conn.try_clone()?;
    let deadline_hint = format!(
        "The name has one deadline for its whole line (--name-timeout, {SECONDS} s here). \
         A read timeout starts again at each read, so a byte every {} ms never trips it, \
         and the newcomer holds a thread and a socket for ever. This code is ready in \
         the starter: {SESSION_FILE}, fn serve, and DeadlineReader in {LINES_FILE}.",
        EVERY.as_millis()
    );
    // A byte each EVERY for longer than the read below waits.
    let most_bytes = ctx.patience().reply.as_millis() / EVERY.as_millis() + 10;
    let started = Instant::now();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let answer = thread::scope(|scope| {
        scope.spawn(move || {
            // Paced by the wait for the stop signal.
            for _ in 0..most_bytes {
                if stopped.recv_timeout(EVERY).is_ok() || trickle.send(b"a").is_err() {
                    return;
                }
            }
        });
        let answer = conn.read_line(READ_LIMIT);
        let _ = stop.send(());
        answer
    });
    let answer = answer.map_err(|failure| {
        failure
            .hint(format!(
                "After {:.1} s the newcomer trickling its name was neither told nor closed.",
                started.elapsed().as_secs_f64()
            ))
            .more_hint(deadline_hint.clone())
    })?;
    ctx.step(format!(
        "the newcomer was answered after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    if !answer.starts_with(b"! ") {
        return Err(conn
            .fail("a newcomer out of time must be told with `! ` and a reason")
            .bytes(
                format!("! no name came within {SECONDS} s\n").as_bytes(),
                &answer,
            )
            .hint(deadline_hint));
    }
    // The newcomer may still be sending bytes the server will never read:
    // its close may come as a reset.
    conn.expect_end()
        .map_err(|failure| failure.more_hint(deadline_hint))?;
    ctx.expect_running(server.id)
}

fn commands(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let [mut ada, mut bob, mut cy] = fill_room(ctx, addr, ["ada", "bob", "cy"])?;
    let command_hint = |failure: Failure| {
        failure.hint(format!(
            "The commands and their answers are in lessons/05-chat/README.md; {SESSION_FILE}, \
             fn command, runs them."
        ))
    };
    let msg_hint = |failure: Failure| {
        failure.hint(format!(
            "`/msg NAME TEXT` reaches NAME alone, as `[SENDER -> you] TEXT`; a NAME that is \
             not in the room gets the sender `! no one here is called NAME`. Where: TODO 5 \
             in {ROOM_FILE}, fn tell."
        ))
    };

    ctx.step("ada sends /who");
    ada.send(b"/who\n")?;
    expect_line(&mut ada, &room_list(&["ada", "bob", "cy"])).map_err(command_hint)?;

    ctx.step("ada sends /msg bob, then /msg to someone who is not here");
    let secret = ctx.rng().sentence(4);
    ada.send(format!("/msg bob {secret}\n/msg nobody hello\n").as_bytes())?;
    expect_line(&mut bob, &format!("[ada -> you] {secret}")).map_err(msg_hint)?;
    expect_line(&mut ada, "! no one here is called nobody").map_err(msg_hint)?;

    ctx.step("bob sends /nick robert; everyone hears it, bob too");
    bob.send(b"/nick robert\n")?;
    for member in [&mut ada, &mut bob, &mut cy] {
        expect_line(member, "* bob is now robert").map_err(|failure| {
            command_hint(failure).more_hint(format!(
                "cy's first line here must be the rename: the /msg to bob reaches bob alone \
                 (TODO 5 in {ROOM_FILE}, fn tell)."
            ))
        })?;
    }
    ada.send(b"/who\n")?;
    expect_line(&mut ada, &room_list(&["ada", "cy", "robert"])).map_err(command_hint)?;

    ctx.step("cy tries /nick ada (taken) and /dance (no such command)");
    cy.send(b"/nick ada\n/dance\n")?;
    expect_line(&mut cy, "! the name ada is taken").map_err(command_hint)?;
    let answer = cy.read_line(READ_LIMIT)?;
    if !answer.starts_with(b"! ") {
        return Err(cy
            .fail("an unknown command must be answered with `! ` and a reason")
            .bytes(b"! unknown command /dance ...\n", &answer)
            .hint("Tell the member which commands there are.")
            .more_hint(format!("Where: {SESSION_FILE}, fn command.")));
    }

    nick_meets_the_name_rule(ctx, addr, &mut cy)?;

    ctx.step("cy sends /quit: she hears `* bye`, her connection closes, the others hear");
    cy.send(b"/quit\n")?;
    expect_line(&mut cy, "* bye").map_err(command_hint)?;
    cy.expect_closed().map_err(command_hint)?;
    expect_line(&mut ada, "* cy left").map_err(command_hint)?;
    expect_line(&mut bob, "* cy left").map_err(command_hint)?;
    Ok(())
}

/// One rule for names: a name that joining refuses, `/nick` refuses too,
/// with the same `! ` line, rather than cleaning it into one that passes.
fn nick_meets_the_name_rule(ctx: &mut Ctx, addr: SocketAddr, cy: &mut Conn) -> Check<()> {
    let name = format!("\u{1b}[2J{}", ctx.rng().word(7));
    let rule_hint = format!(
        "A name follows one rule wherever it is given: at joining and in /nick (and as the \
         NAME of /msg). Check the name as it came, with fn check_name in {SESSION_FILE}; a \
         name cleaned first, `ESC[2J` removed, would pass as a name that joining refuses. \
         Clean only the text that others read."
    );
    ctx.step(format!("a newcomer tries to join as {name:?}"));
    let mut newcomer = connect_named(ctx, addr, &name)?;
    let refusal = newcomer.read_line(READ_LIMIT)?;
    if !refusal.starts_with(b"! ") {
        return Err(newcomer
            .fail(format!("the name {name:?} must be refused at joining"))
            .bytes(b"! a name holds only letters, digits, _ and -\n", &refusal)
            .hint(rule_hint));
    }
    if refusal.contains(&0x1b) {
        return Err(newcomer
            .fail("the refusal repeats the name's escape sequence to the newcomer's terminal")
            .bytes(b"! a name holds only letters, digits, _ and -\n", &refusal)
            .hint("Say what is wrong with the name without repeating it."));
    }
    newcomer.close();

    ctx.step(format!(
        "cy tries /nick {name:?}: the same refusal, and no rename"
    ));
    cy.send(format!("/nick {name}\n").as_bytes())?;
    cy.expect(&refusal)
        .map_err(|failure| failure.hint(rule_hint.clone()))?;
    cy.send(b"/who\n")?;
    expect_line(cy, &room_list(&["ada", "cy", "robert"])).map_err(|failure| {
        failure.hint(format!(
            "After a refused /nick, cy is still cy. {rule_hint}"
        ))
    })
}

fn hostile_input(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let [mut ada, mut bob] = fill_room(ctx, addr, ["ada", "bob"])?;
    let lines_hint = format!(
        "Read lines with a buffered reader: a read returns whatever has arrived, a piece \
         of a line or several lines. Where: {LINES_FILE}, fn read_line."
    );

    ada.send_byte_by_byte(b"one byte at a time\n")?;
    expect_line(&mut bob, "[ada] one byte at a time")
        .map_err(|failure| failure.more_hint(lines_hint.clone()))?;

    ctx.step("ada sends three lines in one write, one of them ending in \\r\\n");
    ada.send(b"first\nsecond\r\nthird\n")?;
    bob.expect(b"[ada] first\n[ada] second\n[ada] third\n")
        .map_err(|failure| failure.more_hint(lines_hint.clone()))?;

    let too_long_hint = format!(
        "A line longer than 4096 bytes, newline included, is refused with `! ` and a \
         reason; the member stays, and the next line is relayed as usual. Where: TODO 6 in \
         {LINES_FILE}, fn read_line: read at most the limit, then throw away the rest of \
         the line without keeping it."
    );
    ctx.step("ada sends a line of 64 KiB, then a short one, in one write");
    let mut huge = vec![b'a'; 64 * 1024];
    huge.extend_from_slice(b"\nafter the huge line\n");
    ada.send(&huge)?;
    let answer = ada
        .read_line(READ_LIMIT)
        .map_err(|failure| failure.hint(too_long_hint.clone()))?;
    if !answer.starts_with(b"! ") {
        return Err(ada
            .fail("the 64 KiB line was not refused with an error line")
            .bytes(b"! that line is over 4096 bytes ...\n", &answer)
            .hint(too_long_hint));
    }
    expect_line(&mut bob, "[ada] after the huge line")
        .map_err(|failure| failure.hint(too_long_hint.clone()))?;

    let pid = ctx.process(server.id).pid();
    let before = resident_bytes(pid).ok_or_else(|| unmeasurable("memory"))?;
    ctx.step("ada sends 16 MiB without a newline, then the newline");
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..16 {
        ada.send(&chunk)?;
    }
    ada.send(b"\n")?;
    let answer = ada
        .read_line(READ_LIMIT)
        .map_err(|failure| failure.hint(too_long_hint.clone()))?;
    let after = resident_bytes(pid).ok_or_else(|| unmeasurable("memory"))?;
    let grown = after.saturating_sub(before);
    ctx.measured(format!(
        "after the 16 MiB line, memory grew by {}",
        mebibytes(grown)
    ));
    if !answer.starts_with(b"! ") || grown > 8 << 20 {
        return Err(Failure::new(format!(
            "after a 16 MiB line the server's memory grew by {}; it answered {}",
            mebibytes(grown),
            String::from_utf8_lossy(&answer).trim_end()
        ))
        .hint(too_long_hint));
    }

    ctx.step("ada sends escape sequences and control characters");
    ada.send(b"look \x1b[2J\x1b[Hhere\x1b]0;owned\x07 and\x07 \x08th\x00e\x7fre\rnow\n")?;
    expect_line(&mut bob, "[ada] look here and therenow").map_err(|failure| {
        failure
            .hint(
                "Relayed as they came, `ESC [2J` clears bob's screen, `ESC ]0;...BEL` \
                 renames his window, and `\\r` lets ada overwrite what looks like someone \
                 else's line. Remove control characters and whole escape sequences.",
            )
            .more_hint(format!("Where: TODO 7 in {LINES_FILE}, fn clean."))
    })?;

    ctx.step("the room goes on: bob speaks, ada hears");
    bob.send(b"still here\n")?;
    expect_line(&mut ada, "[bob] still here")?;
    ctx.expect_running(server.id)
}

/// The delivery times of many lines, for a report.
struct Times(Vec<Duration>);

impl Times {
    fn at(&self, fraction: f64) -> Duration {
        let index = ((self.0.len() as f64 - 1.0) * fraction).round() as usize;
        self.0.get(index).copied().unwrap_or_default()
    }

    fn summary(mut self) -> (Times, String) {
        self.0.sort_unstable();
        let text = format!(
            "{} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            self.0.len(),
            self.at(0.5).as_secs_f64() * 1e3,
            self.at(0.99).as_secs_f64() * 1e3,
            self.at(1.0).as_secs_f64() * 1e3
        );
        (self, text)
    }
}

fn slow_reader(ctx: &mut Ctx) -> Check<()> {
    /// Lines ada may send (of 4000 bytes: 32 MiB) before slow must be gone.
    const MOST_LINES: usize = 8192;
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let pid = ctx.process(server.id).pid();
    let [mut ada, mut bob, mut cy] = fill_room(ctx, addr, ["ada", "bob", "cy"])?;
    ctx.step("slow joins, then never reads a byte");
    let mut slow = ctx.connect(addr)?;
    slow.send(b"slow\n")?;
    for member in [&mut ada, &mut bob, &mut cy] {
        expect_line(member, "* slow joined")?;
    }
    let before = resident_bytes(pid).ok_or_else(|| unmeasurable("memory"))?;
    // 99 lines in 100 within 200 ms, and none later than a second: on a busy
    // machine, one line may wait for the scheduler; a room that waits for
    // slow makes many lines late, or stops.
    let limit = Duration::from_secs_f64(0.2 * ctx.patience().scale());
    let ceiling = Duration::from_secs_f64(ctx.patience().scale());
    let most_memory: u64 = 24 << 20;
    let wait_hint = format!(
        "A write to a member who does not read blocks once the buffers between you fill \
         up. If the room writes to sockets itself, or waits for room in a full outbox \
         (`send` on a sync_channel), everyone waits for slow. Where: TODO 8 in {ROOM_FILE}, \
         fn send_each: `try_send`, and drop the member whose outbox is full."
    );

    ctx.step(format!(
        "ada says lines of 4000 bytes, one at a time; bob and cy must get them within {} \
         ms (99 in 100) and none later than {} ms",
        limit.as_millis(),
        ceiling.as_millis()
    ));
    let filler = ctx.rng().word(3994);
    let mut times = Vec::new();
    let mut dropped_at = None;
    let mut grown = 0;
    for index in 0..MOST_LINES {
        let text = format!("{index:05} {filler}");
        let sent = Instant::now();
        ada.send(format!("{text}\n").as_bytes())?;
        let relayed = format!("[ada] {text}\n");
        for reader in [&mut bob, &mut cy] {
            loop {
                let line = reader.read_line(READ_LIMIT).map_err(|failure| {
                    failure
                        .hint(format!(
                            "Line {index} from ada never came while slow was not reading."
                        ))
                        .more_hint(wait_hint.clone())
                })?;
                if line.starts_with(b"* slow left") {
                    dropped_at.get_or_insert(index);
                    continue;
                }
                if line != relayed.as_bytes() {
                    return Err(reader
                        .fail(format!("line {index} from ada came wrong"))
                        .bytes(relayed.as_bytes(), &line));
                }
                times.push(sent.elapsed());
                break;
            }
        }
        if index % 64 == 0 {
            let now = resident_bytes(pid).ok_or_else(|| unmeasurable("memory"))?;
            grown = grown.max(now.saturating_sub(before));
            if grown > most_memory {
                return Err(Failure::new(format!(
                    "while slow did not read, the server's memory grew by {} after {} lines \
                     of 4000 bytes",
                    mebibytes(grown),
                    index + 1
                ))
                .hint(
                    "An outbox without a limit grows for as long as its member does not \
                     read. Give each outbox a capacity (`sync_channel(OUTBOX_LINES)`), and \
                     drop the member whose outbox is full.",
                )
                .more_hint(format!("Where: TODO 8 in {ROOM_FILE}, fn send_each.")));
            }
        }
        // Once slow is gone, a few more lines show the room goes on.
        if dropped_at.is_some_and(|at| index >= at + 32) {
            break;
        }
    }
    let (times, summary) = Times(times).summary();
    ctx.measured(format!(
        "{summary}; memory grew by at most {}",
        mebibytes(grown)
    ));
    let Some(at) = dropped_at else {
        return Err(Failure::new(format!(
            "ada sent {MOST_LINES} lines of 4000 bytes (32 MiB); slow read none of them, and \
             was never dropped"
        ))
        .hint(
            "A member whose outbox is full is not reading: drop it (cut its connection), \
             and tell the others `* NAME left (dropped: not reading)`.",
        )
        .more_hint(format!("Where: TODO 8 in {ROOM_FILE}, fn send_each.")));
    };
    ctx.step(format!("slow was dropped during line {at}"));
    let (p99, slowest) = (times.at(0.99), times.at(1.0));
    if p99 > limit || slowest > ceiling {
        return Err(Failure::new(format!(
            "while slow did not read, lines reached bob and cy too late: 99 in 100 took up \
             to {:.0} ms (at most {} ms allowed), the slowest {:.0} ms (at most {} ms)",
            p99.as_secs_f64() * 1e3,
            limit.as_millis(),
            slowest.as_secs_f64() * 1e3,
            ceiling.as_millis()
        ))
        .detail(summary)
        .hint(wait_hint));
    }
    ctx.expect_running(server.id)
}

/// Members in the full room.
const FULL_ROOM: usize = 200;
/// Rounds: in each, a fifth of the room speaks and everyone listens. Every
/// line goes to 199 members, from 40 speakers at once: the load of a busy
/// room.
const ROUNDS: usize = 5;
/// Every second member says two lines, one right after the other, and each
/// listener must hear them in that order. (A writer that sends its outbox
/// in another order fails only where lines wait there, which the fast path
/// makes rare: stage 7's slow reader is where an outbox fills.) The others
/// say one line.
const PAIRED: usize = 2;

/// Members that connect at once. A server's queue of connections it has not
/// accepted yet is short (Rust's `TcpListener` asks for 128 on Linux), and a
/// connection that finds it full tries again a second later.
const CONNECTING: usize = 50;

/// The round in which `member` speaks.
fn round_of(member: usize) -> usize {
    member % ROUNDS
}

/// How many lines `member` says.
fn lines_of(member: usize) -> usize {
    if member.is_multiple_of(PAIRED) {
        2
    } else {
        1
    }
}

fn full_room(ctx: &mut Ctx) -> Check<()> {
    let server = ctx.start_server(&[])?;
    let addr = server.addr;
    let names: Vec<String> = (0..FULL_ROOM).map(|index| format!("m{index:03}")).collect();
    ctx.step(format!(
        "{FULL_ROOM} members connect, {CONNECTING} at a time, then give their names and \
         join, one after another"
    ));
    let mut members: Vec<Conn> = Vec::with_capacity(FULL_ROOM);
    while members.len() < FULL_ROOM {
        let batch = CONNECTING.min(FULL_ROOM - members.len());
        let mut connected = (0..batch)
            .map(|_| ctx.connect(addr))
            .collect::<Check<Vec<Conn>>>()?;
        // The prompt shows the server accepted: the next batch finds room in
        // its queue of connections not yet accepted.
        for conn in &mut connected {
            expect_prompt(conn)?;
        }
        members.extend(connected);
    }
    for (index, conn) in members.iter_mut().enumerate() {
        conn.send(format!("{}\n", names[index]).as_bytes())?;
        let everyone: Vec<&str> = names[..=index].iter().map(String::as_str).collect();
        expect_line(conn, &room_list(&everyone))?;
    }

    ctx.step(format!(
        "{ROUNDS} rounds: in each, a fifth of the members say a line (every second of them \
         two, one right after the other), and all read what the others said"
    ));
    let deadline = Instant::now() + Duration::from_secs_f64(30.0 * ctx.patience().scale());
    let epoch = Instant::now();
    let results: Vec<(Check<Vec<Duration>>, Instant)> = thread::scope(|scope| {
        let running: Vec<_> = members
            .iter_mut()
            .enumerate()
            .map(|(index, conn)| {
                scope.spawn(move || {
                    let result = member_of_full_room(index, conn, epoch, deadline);
                    (result, Instant::now())
                })
            })
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().expect("a member's thread does not panic"))
            .collect()
    });
    // When one member fails, the others soon wait in vain for its lines: the
    // first failure is the one that says what went wrong.
    let mut times = Vec::new();
    let mut failures = Vec::new();
    for (result, ended) in results {
        match result {
            Ok(more) => times.extend(more),
            Err(failure) => failures.push((ended, failure)),
        }
    }
    if let Some((_, failure)) = failures.into_iter().min_by_key(|(ended, _)| *ended) {
        return Err(failure);
    }
    let (times, summary) = Times(times).summary();
    ctx.measured(summary.clone());
    let p99 = times.at(0.99);
    let limit = Duration::from_secs_f64(ctx.patience().scale());
    if p99 > limit {
        return Err(Failure::new(format!(
            "99% of lines should reach each member within {:.1} s; the 99th percentile \
             took {:.0} ms",
            limit.as_secs_f64(),
            p99.as_secs_f64() * 1e3
        ))
        .detail(summary)
        .hint(
            "Delivering a line should cost little: put it in each outbox (no socket \
             writes under the room's lock), and let each member's writer send whatever \
             waits in one write.",
        )
        .more_hint(format!("Where: {ROOM_FILE}, fn deliver and fn write_loop.")));
    }
    ctx.expect_running(server.id)
}

/// One member of the full room. In each round, a fifth of the members (this
/// one, if its round) say their lines stamped with the time, and every
/// member reads until each of that round's lines has come (and the join
/// notices of those who came after it). No member waits on a clock: the room
/// talks as fast as it can deliver, 60 lines from 40 speakers at a time.
/// Returns how long each line took to arrive.
fn member_of_full_room(
    index: usize,
    conn: &mut Conn,
    epoch: Instant,
    deadline: Instant,
) -> Check<Vec<Duration>> {
    let me = format!("m{index:03}");
    // Those who joined after this member were announced to it.
    let joins_due = FULL_ROOM - 1 - index;
    let mut joins = 0;
    let mut next_from = vec![0; FULL_ROOM];
    // Lines heard in each round, and how many are due: those of each speaker
    // but this member.
    let mut heard = [0; ROUNDS];
    let due: [usize; ROUNDS] = std::array::from_fn(|round| {
        let speakers = (0..FULL_ROOM).filter(|&member| round_of(member) == round);
        speakers
            .filter(|&member| member != index)
            .map(lines_of)
            .sum()
    });
    let mut times = Vec::with_capacity(due.iter().sum());
    let order_hint = "Each member's outbox is a queue: lines go out in the order they were \
                      put in, each once. A member whose outbox is too small for a busy room \
                      is dropped although it reads.";
    for round in 0..ROUNDS {
        if round_of(index) == round {
            for number in 0..lines_of(index) {
                let stamp = epoch.elapsed().as_micros();
                conn.send(format!("{me} {number} {stamp}\n").as_bytes())?;
            }
        }
        while heard[round] < due[round] {
            if Instant::now() > deadline {
                return Err(conn.fail(format!(
                    "in round {round}, {me} had not heard from everyone before the deadline"
                )));
            }
            let line = conn.read_line(1024).map_err(|failure| {
                let missing: Vec<String> = (0..FULL_ROOM)
                    .filter(|&sender| sender != index && round_of(sender) == round)
                    .filter(|&sender| next_from[sender] < lines_of(sender))
                    .map(|sender| format!("m{sender:03}"))
                    .take(8)
                    .collect();
                failure.hint(format!(
                    "{me} was waiting for the others' lines of round {round}; still missing \
                     those of {}. {order_hint}",
                    missing.join(", ")
                ))
            })?;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            if text.starts_with("* m") && text.ends_with(" joined") && joins < joins_due {
                joins += 1;
                continue;
            }
            let (sender, number, stamp) = parse_stamped(text).ok_or_else(|| {
                conn.fail(format!("{me} got a line it did not expect: {text:?}"))
                    .hint(order_hint)
            })?;
            if sender == index {
                return Err(conn
                    .fail(format!("{me} got its own line back: {text:?}"))
                    .hint("The sender already knows what it said: skip it."));
            }
            if number != next_from[sender] {
                let what = if number < next_from[sender] {
                    "again (a duplicate)"
                } else {
                    "before the one said first"
                };
                return Err(conn
                    .fail(format!(
                        "{me} got line {number} of m{sender:03} {what}; it expected line {}",
                        next_from[sender]
                    ))
                    .hint(order_hint));
            }
            next_from[sender] += 1;
            heard[round_of(sender)] += 1;
            times.push((epoch + stamp).elapsed());
        }
    }
    Ok(times)
}

/// `[m008] m008 1 123456` → (8, 1, the stamp), if the name in brackets is
/// the one in the text and such a member says such a line.
fn parse_stamped(text: &str) -> Option<(usize, usize, Duration)> {
    let (from, said) = text.strip_prefix('[')?.split_once("] ")?;
    let mut words = said.split(' ');
    let (name, number, stamp) = (words.next()?, words.next()?, words.next()?);
    if name != from || words.next().is_some() {
        return None;
    }
    let sender: usize = name.strip_prefix('m')?.parse().ok()?;
    let number: usize = number.parse().ok()?;
    let stamp = Duration::from_micros(stamp.parse().ok()?);
    (sender < FULL_ROOM && number < lines_of(sender)).then_some((sender, number, stamp))
}

fn the_client(ctx: &mut Ctx) -> Check<()> {
    let name = ctx.rng().word(5);
    let print_hint = format!(
        "Where: TODO 9 in {CLIENT_FILE}, fn print_incoming. A thread copies what the \
         server sends to stdout as it comes, flushing each time, while the main thread \
         waits for the keyboard."
    );

    ctx.step("the test runs a chat server of its own, and starts the client");
    let (listener, _) = local::listener()?;
    let (client, mut server) = start_client(ctx, &listener, &name)?;
    let welcome = format!("* in the room: amy, {name}\n[amy] hello {name}\n");
    ctx.step("the server says `[amy] hello` while nothing is typed");
    if let Err(failure) = server.say(&welcome) {
        return Err(failure
            .hint("The client closed the connection as soon as it had sent its name.")
            .more_hint(print_hint));
    }
    let shown = format!("[amy] hello {name}\n");
    let half_a_second = Instant::now() + Duration::from_secs_f64(0.5 * ctx.patience().scale());
    if !ctx
        .process(client)
        .wait_for_stdout(shown.as_bytes(), half_a_second)
    {
        let stdout = ctx.process(client).stdout().text();
        return Err(Failure::new(
            "a line from the server did not appear on the client's output within 0.5 s, \
             though the user typed nothing",
        )
        .detail(output_block("the client's stdout", &stdout))
        .hint(print_hint));
    }

    ctx.step("the user types `hi there`");
    type_line(ctx, client, "hi there\n")?;
    server.expect_line("hi there\n", "a typed line must go to the server as it is")?;

    ctx.step("the user types /quit; the server says `* bye` and closes");
    type_line(ctx, client, "/quit\n")?;
    server.expect_line("/quit\n", "/quit must reach the server")?;
    // The server may still have lines to deliver after /quit: the client
    // must wait for its close. One that ends at once would print `* bye`
    // only when the race went its way, so the test holds `* bye` back a
    // moment, and an early exit shows on every run.
    let a_moment = Instant::now() + Duration::from_secs_f64(0.25 * ctx.patience().scale());
    if let Some(status) = ctx.process(client).wait_exit(a_moment) {
        return Err(Failure::new(format!(
            "the client exited ({status}) right after sending /quit, before the server \
             closed the connection"
        ))
        .hint(format!(
            "After /quit, keep printing what the server sends until it closes (here `* bye`): \
             lines on their way are lost otherwise. Where: {CLIENT_FILE}, fn run: after \
             sending, wait for the printing thread."
        ))
        .slide("Ending the client"));
    }
    server.say("* bye\n")?;
    drop(server);
    expect_exit(ctx, client, true, "after /quit and the server's close")?;
    let printed = ctx.process(client).stdout().text();
    if !printed.ends_with("* bye\n") {
        return Err(Failure::new(
            "the server said `* bye` before it closed, and the client did not print it",
        )
        .detail(output_block("the client's stdout", &printed))
        .hint(print_hint.clone())
        .slide("Ending the client"));
    }

    ctx.step("a second client; its input ends at once");
    let (client, mut server) = start_client(ctx, &listener, &name)?;
    ctx.process(client).close_stdin();
    server.expect_quit_or_close()?;
    drop(server);
    expect_exit(ctx, client, true, "after the end of its input")?;

    ctx.step("a third client; the server goes away under it");
    let (client, server) = start_client(ctx, &listener, &name)?;
    drop(server);
    expect_exit(ctx, client, false, "after the server closed the connection")?;
    let stderr = ctx.process(client).stderr().text();
    if stderr.trim().is_empty() || stderr.contains("panicked") {
        return Err(Failure::new(
            "when the server goes away, the client must say so in one clear line on stderr",
        )
        .detail(output_block("its stderr", &stderr))
        .hint(format!(
            "Where: {CLIENT_FILE}, the printing thread: when the server closes and the user \
             did not quit, print `error: the server at ADDR closed the connection` and \
             exit with 1."
        )));
    }

    ctx.step("a fourth client, started without --name: the server asks, the user answers");
    let addr = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("the test could not read its address: {error}")))?
        .to_string();
    let client = ctx.start(&["client", "--connect", &addr])?;
    let mut server = FakeServer::accept(ctx, &listener)?;
    server.say(&format!("{PROMPT}\n"))?;
    let asked = format!("{PROMPT}\n");
    let a_second = Instant::now() + Duration::from_secs_f64(ctx.patience().scale());
    if !ctx
        .process(client)
        .wait_for_stdout(asked.as_bytes(), a_second)
    {
        let stdout = ctx.process(client).stdout().text();
        let stderr = ctx.process(client).stderr().text();
        return Err(Failure::new(
            "started without --name, the client did not show the server's question",
        )
        .detail(output_block("the client's stdout", &stdout))
        .detail(output_block("its stderr", &stderr))
        .hint(format!(
            "Without --name, send nothing first: the server asks, the question shows like \
             any other line, and the first line the user types is the answer, as in `nc`. \
             Where: {CLIENT_FILE}, fn run, and `name` in lessons/05-chat/main.rs."
        )));
    }
    type_line(ctx, client, &format!("{name}\n"))?;
    server.expect_line(
        &format!("{name}\n"),
        "without --name, the first line typed is the name",
    )?;
    Ok(())
}

/// Start a client against the test's server, and take its name.
fn start_client(
    ctx: &mut Ctx,
    listener: &TcpListener,
    name: &str,
) -> Check<(course::harness::ctx::ProcessId, FakeServer)> {
    let addr = listener
        .local_addr()
        .map_err(|error| Failure::new(format!("the test could not read its address: {error}")))?
        .to_string();
    let client = ctx.start(&["client", "--connect", &addr, "--name", name])?;
    let mut server = FakeServer::accept(ctx, listener)?;
    server.say(&format!("{PROMPT}\n"))?;
    server.expect_line(
        &format!("{name}\n"),
        "the client's first line must be its name",
    )?;
    Ok((client, server))
}

fn type_line(ctx: &mut Ctx, client: course::harness::ctx::ProcessId, line: &str) -> Check<()> {
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

fn expect_exit(
    ctx: &mut Ctx,
    client: course::harness::ctx::ProcessId,
    success: bool,
    when: &str,
) -> Check<()> {
    let patience = ctx.patience().exit;
    let running = ctx.process(client);
    let Some(status) = running.wait_exit(Instant::now() + patience) else {
        return Err(Failure::new(format!(
            "the client was still running {:.0} s {when}",
            patience.as_secs_f64()
        ))
        .hint(
            "The client ends when the user quits (/quit or the end of input) and when the \
             server closes the connection. Is a thread still waiting for something?",
        )
        .more_hint(format!("Where: {CLIENT_FILE}, fn run.")));
    };
    ctx.step(format!("the client exited ({status})"));
    if status.success() != success {
        let stderr = ctx.process(client).stderr().text();
        let wanted = if success { "0" } else { "non-zero" };
        return Err(Failure::new(format!(
            "the client exited ({status}) {when}; it should exit with {wanted}"
        ))
        .detail(output_block("its stderr", &stderr))
        .hint(
            "Quitting is success (exit 0); losing the server is not (a message on stderr \
             and exit 1).",
        )
        .more_hint(format!("Where: {CLIENT_FILE}, fn run.")));
    }
    Ok(())
}

/// The test's side of one client connection, playing the chat server. Its
/// connection is journaled: a report shows what the client sent.
struct FakeServer {
    conn: Conn,
}

impl FakeServer {
    /// Wait for the client to connect, at most the exit patience.
    fn accept(ctx: &Ctx, listener: &TcpListener) -> Check<FakeServer> {
        let patience = ctx.patience().exit;
        let deadline = Instant::now() + patience;
        match local::accept_conn(listener, deadline, ctx.journal(), patience) {
            Some(conn) => Ok(FakeServer { conn }),
            None => Err(Failure::new(format!(
                "the client did not connect within {:.0} s",
                patience.as_secs_f64()
            ))
            .hint(format!(
                "The client connects to the address given with --connect. Where: \
                 {CLIENT_FILE}, fn connect."
            ))),
        }
    }

    fn say(&mut self, line: &str) -> Check<()> {
        self.conn.send(line.as_bytes())
    }

    fn expect_line(&mut self, wanted: &str, what: &str) -> Check<()> {
        let hint = format!("Where: {CLIENT_FILE}, fn run and fn send_typed_lines.");
        match self.conn.read_line(4096) {
            Ok(line) if line == wanted.as_bytes() => Ok(()),
            Ok(line) => Err(self
                .conn
                .fail(format!("the test's server: {what}"))
                .bytes(wanted.as_bytes(), &line)
                .hint(hint)),
            Err(failure) => {
                Err(failure.more_hint(format!("The test waited for {wanted:?}. {hint}")))
            }
        }
    }

    /// At the end of input the client sends `/quit`, or just closes.
    fn expect_quit_or_close(&mut self) -> Check<()> {
        let hint = format!(
            "Where: {CLIENT_FILE}, fn send_typed_lines: the end of input means the user is \
             done."
        );
        let mut sent = Vec::new();
        while sent.len() < b"/quit\n".len() {
            match self.conn.read_any(64) {
                Ok(Some(bytes)) => sent.extend_from_slice(&bytes),
                // It closed: that ends it too.
                Ok(None) if sent.is_empty() => return Ok(()),
                Ok(None) => break,
                Err(failure) => {
                    return Err(failure.more_hint(format!(
                        "After its input ended, the client neither sent /quit nor closed. {hint}"
                    )))
                }
            }
        }
        if sent.as_slice() == b"/quit\n" {
            return Ok(());
        }
        Err(self
            .conn
            .fail("after its input ended, the client should send /quit or close")
            .bytes(b"/quit\n", &sent)
            .hint(hint))
    }
}

fn binds_where_asked(ctx: &mut Ctx) -> Check<()> {
    let server = start_server_at_chosen_address(ctx, &[])?;
    let names = random_names(ctx, 1);
    join(ctx, server.addr, &names[0], &[&names[0]])?;
    Ok(())
}
