//! The datagrams of the game, as bytes. The layout is in
//! `lessons/09-game/README.md`, so a client can be written in any language.
//!
//! Every datagram starts with the same header: a protocol id (so a stray
//! datagram from another program is recognised and dropped), the sender's
//! sequence number, and what the sender has received from us (the newest
//! sequence number and a bit for each of the 32 before it). Then one byte
//! says which message follows. Numbers are big-endian, as on every wire.
//!
//! UDP gives no framing problems (a datagram arrives whole or not at all) but
//! every other problem: a datagram may be lost, duplicated, reordered, or come
//! from anyone. So `decode` trusts nothing: a short, long or foreign datagram
//! is `None`, never a panic.

/// "CAS9": what the first four bytes of every datagram of this game say.
pub const PROTOCOL_ID: u32 = 0x4341_5339;
/// A datagram that fits in one Ethernet frame on any path of today's
/// Internet, with room for IP and UDP headers and a tunnel or two. Larger
/// datagrams are fragmented by IP, and one lost fragment loses the whole.
pub const MAX_DATAGRAM: usize = 1200;
/// The longest name a player may give.
pub const MAX_NAME: usize = 16;
/// How many inputs one INPUT datagram may carry.
pub const MAX_INPUTS: usize = 32;
/// How many players fit in the arena (and so in one snapshot).
pub const MAX_PLAYERS: usize = 64;
/// Positions travel as whole hundredths of a unit: 0.01 is finer than any
/// terminal cell, and a u16 holds up to 655.35, more than the arena's size.
pub const UNITS_PER_CELL: f32 = 100.0;

/// The buttons an input holds, one bit each.
pub const UP: u8 = 1;
pub const DOWN: u8 = 2;
pub const LEFT: u8 = 4;
pub const RIGHT: u8 = 8;

/// The header every datagram carries (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub sequence: u16,
    pub ack: u16,
    pub ack_bits: u32,
}

/// One input of a player: which buttons, numbered so the server can apply
/// each exactly once, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Input {
    pub number: u32,
    pub buttons: u8,
}

/// Where one player is, quantized (see [`UNITS_PER_CELL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerState {
    pub id: u8,
    pub x: u16,
    pub y: u16,
}

/// The messages of the game. Each follows the 12-byte header (protocol id
/// 4, sequence 2, ack 2, ack bits 4) and its kind byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → server: let me in. Sent again until WELCOME comes.
    Join { name: String },
    /// Server → client: you are `id`; prove it with `token` from now on.
    Welcome { id: u8, token: u64, tick_hz: u8 },
    /// Server → client: the arena is full.
    Full,
    /// Client → server: my inputs not yet acknowledged, oldest first.
    Inputs {
        id: u8,
        token: u64,
        inputs: Vec<Input>,
    },
    /// Server → client, every tick: the world, and the newest of your inputs
    /// it has applied (so you can stop sending the older ones).
    Snapshot {
        tick: u32,
        applied: u32,
        players: Vec<PlayerState>,
    },
    /// Client → server: I am leaving.
    Leave { id: u8, token: u64 },
}

const JOIN: u8 = 1;
const WELCOME: u8 = 2;
const FULL: u8 = 3;
const INPUTS: u8 = 4;
const SNAPSHOT: u8 = 5;
const LEAVE: u8 = 6;

/// The datagram for `message` under `header`.
pub fn encode(header: Header, message: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&PROTOCOL_ID.to_be_bytes());
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.ack.to_be_bytes());
    out.extend_from_slice(&header.ack_bits.to_be_bytes());
    match message {
        Message::Join { name } => {
            out.push(JOIN);
            let name = &name.as_bytes()[..name.len().min(MAX_NAME)];
            out.push(name.len() as u8);
            out.extend_from_slice(name);
        }
        Message::Welcome { id, token, tick_hz } => {
            out.push(WELCOME);
            out.push(*id);
            out.extend_from_slice(&token.to_be_bytes());
            out.push(*tick_hz);
        }
        Message::Full => out.push(FULL),
        Message::Inputs { id, token, inputs } => {
            out.push(INPUTS);
            out.push(*id);
            out.extend_from_slice(&token.to_be_bytes());
            let inputs = &inputs[inputs.len().saturating_sub(MAX_INPUTS)..];
            out.push(inputs.len() as u8);
            for input in inputs {
                out.extend_from_slice(&input.number.to_be_bytes());
                out.push(input.buttons);
            }
        }
        Message::Snapshot {
            tick,
            applied,
            players,
        } => {
            out.push(SNAPSHOT);
            out.extend_from_slice(&tick.to_be_bytes());
            out.extend_from_slice(&applied.to_be_bytes());
            let players = &players[..players.len().min(MAX_PLAYERS)];
            out.push(players.len() as u8);
            for player in players {
                out.push(player.id);
                out.extend_from_slice(&player.x.to_be_bytes());
                out.extend_from_slice(&player.y.to_be_bytes());
            }
        }
        Message::Leave { id, token } => {
            out.push(LEAVE);
            out.push(*id);
            out.extend_from_slice(&token.to_be_bytes());
        }
    }
    out
}

/// The header and message in `datagram`, or `None` for anything that is not
/// a whole, well-formed datagram of this game.
pub fn decode(datagram: &[u8]) -> Option<(Header, Message)> {
    if datagram.len() > MAX_DATAGRAM {
        return None;
    }
    let mut reader = Reader(datagram);
    if reader.u32()? != PROTOCOL_ID {
        return None;
    }
    let header = Header {
        sequence: reader.u16()?,
        ack: reader.u16()?,
        ack_bits: reader.u32()?,
    };
    let message = match reader.u8()? {
        JOIN => {
            let len = reader.u8()? as usize;
            let name = reader.take(len)?;
            if len == 0 || len > MAX_NAME {
                return None;
            }
            Message::Join {
                name: String::from_utf8(name.to_vec()).ok()?,
            }
        }
        WELCOME => Message::Welcome {
            id: reader.u8()?,
            token: reader.u64()?,
            tick_hz: reader.u8()?,
        },
        FULL => Message::Full,
        INPUTS => {
            let (id, token) = (reader.u8()?, reader.u64()?);
            let count = reader.u8()? as usize;
            if count > MAX_INPUTS {
                return None;
            }
            let inputs = (0..count)
                .map(|_| {
                    Some(Input {
                        number: reader.u32()?,
                        buttons: reader.u8()?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Message::Inputs { id, token, inputs }
        }
        SNAPSHOT => {
            let (tick, applied) = (reader.u32()?, reader.u32()?);
            let count = reader.u8()? as usize;
            if count > MAX_PLAYERS {
                return None;
            }
            let players = (0..count)
                .map(|_| {
                    Some(PlayerState {
                        id: reader.u8()?,
                        x: reader.u16()?,
                        y: reader.u16()?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Message::Snapshot {
                tick,
                applied,
                players,
            }
        }
        LEAVE => Message::Leave {
            id: reader.u8()?,
            token: reader.u64()?,
        },
        _ => return None,
    };
    // Bytes after a whole message mean the sender and we disagree on the
    // layout: safer to drop the datagram than to guess.
    reader.0.is_empty().then_some((header, message))
}

/// Reads numbers off the front of a datagram; `None` once it runs short.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (taken, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(taken)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// A position in cells, quantized for the wire.
pub fn quantize(cells: f32) -> u16 {
    (cells * UNITS_PER_CELL).round().clamp(0.0, u16::MAX as f32) as u16
}

/// A position from the wire, in cells.
pub fn dequantize(units: u16) -> f32 {
    units as f32 / UNITS_PER_CELL
}
