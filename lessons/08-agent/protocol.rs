//! The messages, one per frame (frame.rs): words separated by one space,
//! the first word naming the message. A notification's text is the rest of
//! its frame, spaces and all. Every message that concerns an app carries the
//! app's name, and a notification carries its stream id: that is how one
//! connection carries the notifications of every app on the device.
//! lessons/08-agent/README.md lists them all.

use std::time::Duration;

/// The longest notification text, in bytes.
pub const MAX_TEXT: usize = 1000;
/// The longest device or app name.
pub const MAX_NAME: usize = 32;

/// One message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// agent → service, first: who the device is, how often it will send a
    /// heartbeat (zero: never).
    Hello {
        device: String,
        keepalive: Duration,
    },
    /// service → agent: the device is connected.
    Welcome,
    /// app → agent, and agent → service: an app runs, and the last stream id
    /// the agent handed to it (0 for none). The app sends 0; the agent knows.
    Register {
        app: String,
        last: u64,
    },
    /// agent → service: the app stopped.
    Unregister {
        app: String,
    },
    /// agent → service: a heartbeat. service → agent: its answer, `PONG`.
    Ping,
    Pong,
    /// service → agent → app: a notification, its stream id and its text.
    Push {
        app: String,
        id: u64,
        text: String,
    },
    /// agent → service: every notification for `app` up to `id` is shown.
    Ack {
        app: String,
        id: u64,
    },
    /// sender → service: a notification for `device/app`, kept for at most
    /// `ttl`, replacing a waiting one with the same collapse key.
    Send {
        device: String,
        app: String,
        ttl: Duration,
        collapse: Option<String>,
        text: String,
    },
    /// an answer: accepted (with the notification's stream id, or 0).
    Ok {
        id: u64,
    },
    /// an answer: refused, and why.
    Err {
        reason: String,
    },
}

impl Message {
    /// The frame body for this message.
    pub fn encode(&self) -> String {
        match self {
            Message::Hello { device, keepalive } => {
                format!("HELLO {device} {}", keepalive.as_millis())
            }
            Message::Welcome => "WELCOME".into(),
            Message::Register { app, last } => format!("REGISTER {app} {last}"),
            Message::Unregister { app } => format!("UNREGISTER {app}"),
            Message::Ping => "PING".into(),
            Message::Pong => "PONG".into(),
            Message::Push { app, id, text } => format!("PUSH {app} {id} {text}"),
            Message::Ack { app, id } => format!("ACK {app} {id}"),
            Message::Send {
                device,
                app,
                ttl,
                collapse,
                text,
            } => format!(
                "SEND {device}/{app} {} {} {text}",
                ttl.as_secs(),
                collapse.as_deref().unwrap_or("-")
            ),
            Message::Ok { id } => format!("OK {id}"),
            Message::Err { reason } => format!("ERR {reason}"),
        }
    }

    /// Read a frame body; the error says what is wrong with it.
    pub fn parse(body: &str) -> Result<Message, String> {
        let (kind, rest) = body.split_once(' ').unwrap_or((body, ""));
        let mut words = rest.splitn(4, ' ');
        let mut word = |what: &str| {
            words
                .next()
                .filter(|word| !word.is_empty())
                .ok_or_else(|| format!("{kind} needs {what}"))
        };
        let message = match kind {
            "HELLO" => Message::Hello {
                device: name(word("a device name")?)?,
                keepalive: Duration::from_millis(number(word("a keepalive in ms")?)?),
            },
            "WELCOME" => Message::Welcome,
            "REGISTER" => Message::Register {
                app: name(word("an app name")?)?,
                last: number(word("a stream id")?)?,
            },
            "UNREGISTER" => Message::Unregister {
                app: name(word("an app name")?)?,
            },
            "PING" => Message::Ping,
            "PONG" => Message::Pong,
            "PUSH" => {
                let (app, id) = (word("an app name")?, word("a stream id")?);
                let (app, id) = (name(app)?, number(id)?);
                let text = split_text(rest, 2)?;
                Message::Push { app, id, text }
            }
            "ACK" => Message::Ack {
                app: name(word("an app name")?)?,
                id: number(word("a stream id")?)?,
            },
            "SEND" => {
                let to = word("DEVICE/APP")?;
                let (ttl, collapse) = (word("a ttl in seconds")?, word("a collapse key or -")?);
                let (device, app) = to
                    .split_once('/')
                    .ok_or_else(|| format!("{to:?} is not DEVICE/APP"))?;
                let collapse = match collapse {
                    "-" => None,
                    key => Some(name(key)?),
                };
                Message::Send {
                    device: name(device)?,
                    app: name(app)?,
                    ttl: Duration::from_secs(number(ttl)?),
                    collapse,
                    text: split_text(rest, 3)?,
                }
            }
            "OK" => Message::Ok {
                id: number(word("a stream id")?)?,
            },
            "ERR" => Message::Err {
                reason: rest.to_string(),
            },
            _ => return Err(format!("{kind:?} is not a message of this protocol")),
        };
        Ok(message)
    }
}

/// A device name, an app name or a collapse key: 1 to 32 letters, digits,
/// `.`, `_` or `-`, the first a letter or a digit. Names travel between
/// spaces, and an app prints its name, so no space and no control character
/// may hide in one. With `--data` a device's name is a folder's name: `..`
/// would be the data folder's parent, and `.x` a hidden folder.
pub fn name(word: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let starts_well = word.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !starts_well || word.len() > MAX_NAME || !word.chars().all(allowed) {
        return Err(format!(
            "{word:?} is not a name (1 to {MAX_NAME} of A-Z a-z 0-9 . _ -, \
             the first a letter or a digit)"
        ));
    }
    Ok(word.to_string())
}

/// A notification's text: 1 to 1000 bytes, no control characters (a
/// notification is shown on a screen, and an escape code could rewrite it).
pub fn text(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > MAX_TEXT || text.chars().any(char::is_control) {
        return Err(format!(
            "a text must be 1 to {MAX_TEXT} bytes with no control characters"
        ));
    }
    Ok(text.to_string())
}

fn number(word: &str) -> Result<u64, String> {
    word.parse()
        .map_err(|_| format!("{word:?} is not a whole number"))
}

/// The text after the first `skip` words of `rest`.
fn split_text(rest: &str, skip: usize) -> Result<String, String> {
    let text = rest.splitn(skip + 1, ' ').nth(skip).unwrap_or("");
    self::text(text)
}
