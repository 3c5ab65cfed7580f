//! One connection, from its first byte to its last: ask for a name, join the
//! room, then read the member's lines and commands until it leaves.

use std::io::{self, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lines::{clean, read_line, DeadlineReader, Incoming, LINE_LIMIT};
use crate::room::{Membership, Room, RUN_LIMIT};

/// The longest name, in characters.
const NAME_LIMIT: usize = 16;

/// Serve one connection. It has `name_wait` to send its whole name line:
/// until then it holds a thread and a socket, and one that never names itself
/// must not keep them for ever.
pub fn serve(stream: TcpStream, room: &Room, name_wait: Duration) -> io::Result<()> {
    // Chat lines are small and should leave at once, not wait for more to
    // fill a packet (Nagle's algorithm); each writer already gathers what is
    // waiting into one write.
    stream.set_nodelay(true)?;
    // One socket, shared by this reader, the member's writer and its entry
    // in the room: one file descriptor per member, not one each.
    let stream = Arc::new(stream);
    // Room for a whole run: lines can be said together only once they are
    // here (fn more_said_waiting).
    let mut reader = BufReader::with_capacity(RUN_LIMIT, DeadlineReader::new(&stream));
    (&*stream).write_all(b"* what is your name?\n")?;
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + name_wait))?;
    let first_line = read_line(&mut reader);
    reader.get_mut().set_deadline(None)?;
    let joined = match first_line {
        Ok(Incoming::Line(line)) => {
            let name = String::from_utf8_lossy(&line);
            check_name(&name).and_then(|()| room.join(&name, &stream))
        }
        Ok(Incoming::TooLong) => Err(format!("a name has at most {NAME_LIMIT} characters")),
        Ok(Incoming::Closed) => return Ok(()),
        // Out of time (`WouldBlock` from a timeout on Unix, `TimedOut` on
        // Windows and from the deadline itself).
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(format!("no name came within {} s", name_wait.as_secs_f64()))
        }
        Err(error) => return Err(error),
    };
    let mut member = match joined {
        Ok(member) => member,
        Err(reason) => {
            // Not a member: nothing else writes to this socket, so write here.
            return (&*stream).write_all(format!("! {reason}\n").as_bytes());
        }
    };
    let talked = converse(&mut reader, room, &mut member);
    // However the conversation ended, cleanly or by a reset, the room hears.
    room.leave(&member);
    // The writer sends what is left for this member, then lets go of the
    // socket; until it has, the connection still holds a descriptor.
    member.wait_for_writer();
    talked
}

/// Read the member's lines until it quits or its connection ends.
fn converse(
    reader: &mut BufReader<DeadlineReader>,
    room: &Room,
    member: &mut Membership,
) -> io::Result<()> {
    // Lines said in a row that came in together go to the room together: one
    // write per member rather than one per line, so a room that fell behind
    // a fast talker catches up. Kept only while the next line is here already.
    let mut said: Vec<String> = Vec::new();
    loop {
        // Not cleaned yet: a command's words are checked as they came
        // (see fn command), and only text that others will read is cleaned.
        let line = match read_line(reader)? {
            Incoming::Line(line) => String::from_utf8_lossy(&line).into_owned(),
            Incoming::TooLong => {
                let refusal = format!("! that line is over {LINE_LIMIT} bytes; it was not sent");
                room.notify(member, &refusal);
                continue;
            }
            Incoming::Closed => return Ok(()),
        };
        if line.starts_with('/') {
            match command(&line, room, member) {
                Ok(Next::Quit) => return Ok(()),
                Ok(Next::Stay) => {}
                Err(reason) => room.notify(member, &format!("! {reason}")),
            }
        } else {
            let text = clean(line.as_bytes());
            if !text.is_empty() {
                said.push(text);
            }
            if !said.is_empty() && !more_said_waiting(reader, &said) {
                room.say(member, &said);
                said.clear();
            }
        }
    }
}

/// Whether the next line has come whole already, is said to the room (not a
/// command, which must not pass lines said before it) and fits with `said`
/// in one run of RUN_LIMIT bytes, so that the outbox bound holds. If so,
/// reading it cannot wait, fail, or find it too long.
fn more_said_waiting(reader: &BufReader<DeadlineReader>, said: &[String]) -> bool {
    let waiting = reader.buffer();
    let Some(end) = waiting.iter().position(|&byte| byte == b'\n') else {
        return false;
    };
    // Each line goes out as `[NAME] TEXT` and a newline.
    let together: usize = said.iter().map(|text| text.len() + NAME_LIMIT + 4).sum();
    waiting[0] != b'/' && together + end < RUN_LIMIT
}

enum Next {
    Stay,
    Quit,
}

/// Run one command: `/who`, `/msg NAME TEXT`, `/nick NAME`, `/quit`. A
/// name here meets the same rule as at joining, checked on the bytes as
/// they came: cleaned first, `ESC[2Jmallory` would pass as `mallory`, a
/// name that joining refuses.
fn command(line: &str, room: &Room, member: &mut Membership) -> Result<Next, String> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "/who" => room.who(member),
        "/msg" => {
            let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let text = clean(text.as_bytes());
            if text.trim().is_empty() {
                return Err("usage: /msg NAME TEXT".to_string());
            }
            check_name(to)?;
            room.tell(member, to, &text)?;
        }
        "/nick" => {
            check_name(rest)?;
            room.rename(member, rest)?;
        }
        "/quit" => {
            room.notify(member, "* bye");
            return Ok(Next::Quit);
        }
        _ => {
            // Cleaned: the member's own words come back to its terminal.
            let verb = clean(verb.as_bytes());
            return Err(format!(
                "unknown command {verb}; try /who, /msg NAME TEXT, /nick NAME, /quit"
            ));
        }
    }
    Ok(Next::Stay)
}

/// A name is 1 to 16 of `A-Z a-z 0-9 _ -`: easy to type, and nothing in it
/// can pass for a bracket, a space or an escape in someone's screen.
fn check_name(name: &str) -> Result<(), String> {
    // TODO 4 (slides/05-chat.md, "Names"): refuse, with the reason, a name
    // that is empty (`a name cannot be empty`), longer than NAME_LIMIT
    // characters (`a name has at most 16 characters`), or that holds anything
    // but ASCII letters, digits, `_` and `-` (`a name holds only letters,
    // digits, _ and -`).
    Ok(())
}
