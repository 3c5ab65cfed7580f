//! What a member's line does, wherever it came from: an nc connection, a
//! `POST /send`, a WebSocket message. Lesson 05's rules, in one place.

use crate::lines::{clean, LINE_LIMIT};
use crate::room::{Membership, Room};

/// The longest name, in characters.
const NAME_LIMIT: usize = 16;

pub enum Next {
    Stay,
    Quit,
}

/// Take one line from `member`, without its line ending: say it, or run it
/// as a command.
pub fn take_line(room: &Room, member: &mut Membership, raw: &[u8]) -> Next {
    // The limit counts the newline, which `raw` has lost.
    if raw.len() >= LINE_LIMIT {
        refuse_long_line(room, member);
        return Next::Stay;
    }
    let line = clean(raw);
    if line.starts_with('/') {
        match command(&line, room, member) {
            Ok(next) => return next,
            Err(reason) => room.notify(member, &format!("! {reason}")),
        }
    } else if !line.is_empty() {
        room.say(member, &line);
    }
    Next::Stay
}

/// Tell `member` its line was too long, and not sent.
pub fn refuse_long_line(room: &Room, member: &Membership) {
    let refusal = format!("! that line is over {LINE_LIMIT} bytes; it was not sent");
    room.notify(member, &refusal);
}

/// Run one command: `/who`, `/msg NAME TEXT`, `/nick NAME`, `/quit`.
fn command(line: &str, room: &Room, member: &mut Membership) -> Result<Next, String> {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "/who" => room.who(member),
        "/msg" => match rest.split_once(' ') {
            Some((to, text)) if !text.trim().is_empty() => room.tell(member, to, text)?,
            _ => return Err("usage: /msg NAME TEXT".to_string()),
        },
        "/nick" => {
            check_name(rest)?;
            room.rename(member, rest)?;
        }
        "/quit" => {
            room.notify(member, "* bye");
            return Ok(Next::Quit);
        }
        _ => {
            return Err(format!(
                "unknown command {verb}; try /who, /msg NAME TEXT, /nick NAME, /quit"
            ))
        }
    }
    Ok(Next::Stay)
}

/// A name is 1 to 16 of `A-Z a-z 0-9 _ -`: easy to type, and nothing in it
/// can pass for a bracket, a space or an escape in someone's screen, or for
/// markup in someone's page.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".to_string());
    }
    if name.chars().count() > NAME_LIMIT {
        return Err(format!("a name has at most {NAME_LIMIT} characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.chars().all(allowed) {
        return Err("a name holds only letters, digits, _ and -".to_string());
    }
    Ok(())
}
