//! Lesson 09's datagrams (`lessons/09-game/README.md`), as the stages and
//! `course game-bench` speak them: written here from the README, not taken
//! from the lesson's code, so that they check it rather than agree with it.

pub const PROTOCOL_ID: u32 = 0x4341_5339;
pub const JOIN: u8 = 1;
pub const WELCOME: u8 = 2;
pub const FULL: u8 = 3;
pub const INPUTS: u8 = 4;
pub const SNAPSHOT: u8 = 5;
pub const LEAVE: u8 = 6;
pub const UP: u8 = 1;
pub const DOWN: u8 = 2;
pub const LEFT: u8 = 4;
pub const RIGHT: u8 = 8;
pub const WIDTH: i32 = 60;
pub const HEIGHT: i32 = 20;
/// A position in hundredths of a cell, as snapshots carry it.
pub const CELL: i32 = 100;

/// A datagram of `kind` with `body` after the header; ack fields zero.
pub fn datagram(sequence: u16, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = PROTOCOL_ID.to_be_bytes().to_vec();
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.push(kind);
    out.extend_from_slice(body);
    out
}

/// JOIN with `name`.
pub fn join_datagram(name: &str) -> Vec<u8> {
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    datagram(0, JOIN, &body)
}

/// INPUTS for player `id`: `(number, buttons)` for each input.
pub fn inputs_datagram(sequence: u16, id: u8, token: u64, inputs: &[(u32, u8)]) -> Vec<u8> {
    let mut body = vec![id];
    body.extend_from_slice(&token.to_be_bytes());
    body.push(inputs.len() as u8);
    for (number, buttons) in inputs {
        body.extend_from_slice(&number.to_be_bytes());
        body.push(*buttons);
    }
    datagram(sequence, INPUTS, &body)
}

/// LEAVE for player `id`.
pub fn leave_datagram(id: u8, token: u64) -> Vec<u8> {
    let mut body = vec![id];
    body.extend_from_slice(&token.to_be_bytes());
    datagram(0, LEAVE, &body)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub tick: u32,
    pub applied: u32,
    /// `(id, x, y)`, positions in hundredths of a cell.
    pub players: Vec<(u8, i32, i32)>,
    /// The datagram's length in bytes.
    pub size: usize,
}

impl Snapshot {
    pub fn position(&self, id: u8) -> Option<(i32, i32)> {
        self.players
            .iter()
            .find(|(player, _, _)| *player == id)
            .map(|(_, x, y)| (*x, *y))
    }
}

/// What a datagram from the server says, or why it is not one.
#[derive(Debug)]
pub enum FromServer {
    Welcome { id: u8, token: u64, tick_hz: u8 },
    Full,
    Snapshot(Snapshot),
}

/// What a datagram from a server says, or why it is not one.
pub fn parse(bytes: &[u8]) -> Result<FromServer, String> {
    let number = |at: usize, len: usize| -> Result<u64, String> {
        bytes
            .get(at..at + len)
            .map(|part| part.iter().fold(0u64, |n, byte| n << 8 | u64::from(*byte)))
            .ok_or_else(|| {
                format!(
                    "it ends at byte {}, before the field at byte {at}",
                    bytes.len()
                )
            })
    };
    if number(0, 4)? != u64::from(PROTOCOL_ID) {
        return Err("it does not start with the protocol id \"CAS9\"".into());
    }
    match number(12, 1)? as u8 {
        WELCOME if bytes.len() == 23 => Ok(FromServer::Welcome {
            id: number(13, 1)? as u8,
            token: number(14, 8)?,
            tick_hz: number(22, 1)? as u8,
        }),
        WELCOME => Err(format!(
            "a WELCOME is 23 bytes; this one is {}",
            bytes.len()
        )),
        FULL => Ok(FromServer::Full),
        SNAPSHOT => {
            let count = number(21, 1)? as usize;
            if bytes.len() != 22 + 5 * count {
                return Err(format!(
                    "a SNAPSHOT of {count} players is {} bytes; this one is {}",
                    22 + 5 * count,
                    bytes.len()
                ));
            }
            let players = (0..count)
                .map(|index| {
                    let at = 22 + 5 * index;
                    Ok((
                        number(at, 1)? as u8,
                        number(at + 1, 2)? as i32,
                        number(at + 3, 2)? as i32,
                    ))
                })
                .collect::<Result<_, String>>()?;
            Ok(FromServer::Snapshot(Snapshot {
                tick: number(13, 4)? as u32,
                applied: number(17, 4)? as u32,
                players,
                size: bytes.len(),
            }))
        }
        kind => Err(format!(
            "its kind byte is {kind}, which the server never sends"
        )),
    }
}

/// A datagram of lesson 09 in words, for the journal: `INPUTS id 0 token
/// 0x… [1:right 2:down]`, `WELCOME id 2 token 0x… 20 Hz`. `None` for one
/// that is not well formed (the journal shows its bytes alone).
pub fn describe(bytes: &[u8]) -> Option<String> {
    let number = |at: usize, len: usize| -> Option<u64> {
        let part = bytes.get(at..at + len)?;
        Some(part.iter().fold(0u64, |n, byte| n << 8 | u64::from(*byte)))
    };
    if number(0, 4)? != u64::from(PROTOCOL_ID) {
        return None;
    }
    let sequence = number(4, 2)?;
    let said = match number(12, 1)? as u8 {
        JOIN => {
            let len = number(13, 1)? as usize;
            let name = bytes.get(14..14 + len)?;
            format!("JOIN {:?}", String::from_utf8_lossy(name))
        }
        WELCOME => format!(
            "WELCOME id {} token {:#018x} {} Hz",
            number(13, 1)?,
            number(14, 8)?,
            number(22, 1)?
        ),
        FULL => "FULL".to_string(),
        INPUTS => {
            let count = number(22, 1)? as usize;
            let inputs = (0..count.min(6))
                .map(|index| {
                    let at = 23 + 5 * index;
                    Some(format!(
                        "{}:{}",
                        number(at, 4)?,
                        buttons(number(at + 4, 1)? as u8)
                    ))
                })
                .collect::<Option<Vec<_>>>()?;
            let more = if count > 6 { " …" } else { "" };
            format!(
                "INPUTS id {} token {:#018x} [{}{more}]",
                number(13, 1)?,
                number(14, 8)?,
                inputs.join(" ")
            )
        }
        SNAPSHOT => format!(
            "SNAPSHOT tick {} applied {} players {}",
            number(13, 4)?,
            number(17, 4)?,
            number(21, 1)?
        ),
        LEAVE => format!("LEAVE id {} token {:#018x}", number(13, 1)?, number(14, 8)?),
        _ => return None,
    };
    Some(format!("seq {sequence} {said}"))
}

/// The buttons held, as words: `right+down`, or `none`.
fn buttons(held: u8) -> String {
    let names = [(UP, "up"), (DOWN, "down"), (LEFT, "left"), (RIGHT, "right")];
    let words: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| held & bit != 0)
        .map(|(_, name)| *name)
        .collect();
    if words.is_empty() {
        "none".to_string()
    } else {
        words.join("+")
    }
}
