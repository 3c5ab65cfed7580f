//! WebSocket (RFC 6455), by hand: an HTTP request that turns its connection
//! into a two-way stream of frames. `GET /ws?key=KEY`.
//!
//! ```text
//!  byte 0: FIN RSV1 RSV2 RSV3 opcode(4)   byte 1: MASK length(7)
//!  then: 2 or 8 more bytes of length if length(7) was 126 or 127
//!  then: 4 bytes of mask (client to server only), then the payload
//! ```

use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::commands::{take_line, Next};
use crate::digest::{base64, is_base64_of_16_bytes, sha1};
use crate::limits::spawn_small;
use crate::request::Request;
use crate::response::{self, Reply, Status};
use crate::room::{missed_notice, Membership, Room};
use crate::server::{drain_briefly, query, After, App};

/// The RFC's fixed string, appended to the client's key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest message a member may send, fragments included. A chat line
/// is at most 4 KiB; a frame may announce up to 2^63 bytes, and nothing it
/// announces is allocated before it is checked against this.
const MAX_MESSAGE: u64 = 64 * 1024;

/// A control frame (close, ping, pong) carries at most 125 bytes.
const MAX_CONTROL: u64 = 125;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Close codes (RFC 6455, section 7.4.1).
const NORMAL: u16 = 1000;
const PROTOCOL_ERROR: u16 = 1002;
const UNSUPPORTED: u16 = 1003;
const NOT_UTF8: u16 = 1007;
const TOO_BIG: u16 = 1009;

/// The `Sec-WebSocket-Accept` answer to a client's `Sec-WebSocket-Key`: it
/// proves the server read the key and speaks WebSocket, so that a plain
/// HTTP server can never be mistaken for one.
pub fn accept_key(client_key: &str) -> String {
    base64(&sha1(format!("{client_key}{GUID}").as_bytes()))
}

/// Whether a header holds `word` in its comma-separated list, in any case.
fn lists(request: &Request, header: &str, word: &str) -> bool {
    request.header(header).is_some_and(|value| {
        value
            .split(',')
            .any(|item| item.trim().eq_ignore_ascii_case(word))
    })
}

/// Check the upgrade request; the refusal to send if it is not one.
fn check_handshake(request: &Request) -> Result<String, Reply> {
    if !lists(request, "Upgrade", "websocket") || !lists(request, "Connection", "upgrade") {
        return Err(Reply::text(
            Status(400),
            "! this address speaks WebSocket: send Upgrade: websocket",
        ));
    }
    if request.header("Sec-WebSocket-Version") != Some("13") {
        // The RFC's answer: which version the server speaks.
        return Err(
            Reply::text(Status(426), "! only WebSocket version 13 is spoken here")
                .header("Sec-WebSocket-Version: 13".to_string()),
        );
    }
    match request.header("Sec-WebSocket-Key") {
        Some(key) if is_base64_of_16_bytes(key) => Ok(key.to_string()),
        _ => Err(Reply::text(
            Status(400),
            "! Sec-WebSocket-Key must be 16 random bytes in base64",
        )),
    }
}

/// A frame as it came off the wire, its payload unmasked.
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

/// Why reading frames stopped.
pub enum Stop {
    /// The peer broke the protocol: close with this code and reason.
    Close(u16, &'static str),
    /// The connection broke.
    Io(io::Error),
}

impl From<io::Error> for Stop {
    fn from(error: io::Error) -> Stop {
        Stop::Io(error)
    }
}

/// Read one frame: from a client (`from_client`, masked) or from a server
/// (never masked). `room` is how many payload bytes the message may still
/// take: a frame that announces more is refused before a byte of it is read.
pub fn read_frame(reader: &mut impl Read, room: u64, from_client: bool) -> Result<Frame, Stop> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head)?;
    let fin = head[0] & 0x80 != 0;
    // Extensions (compression) would use these; none was agreed on.
    if head[0] & 0x70 != 0 {
        return Err(Stop::Close(PROTOCOL_ERROR, "reserved bits set"));
    }
    let opcode = head[0] & 0x0F;
    // Masking stops a script from making a browser send bytes that a proxy
    // on the way could read as an HTTP request of its own (cache poisoning).
    if (head[1] & 0x80 != 0) != from_client {
        return Err(Stop::Close(PROTOCOL_ERROR, "client frames must be masked"));
    }
    let length = match head[1] & 0x7F {
        126 => {
            let mut bytes = [0u8; 2];
            reader.read_exact(&mut bytes)?;
            u64::from(u16::from_be_bytes(bytes))
        }
        127 => {
            let mut bytes = [0u8; 8];
            reader.read_exact(&mut bytes)?;
            let length = u64::from_be_bytes(bytes);
            if length >> 63 != 0 {
                return Err(Stop::Close(
                    PROTOCOL_ERROR,
                    "a 64-bit length must be below 2^63",
                ));
            }
            length
        }
        short => u64::from(short),
    };
    if opcode >= CLOSE && (!fin || length > MAX_CONTROL) {
        return Err(Stop::Close(
            PROTOCOL_ERROR,
            "a control frame is whole and at most 125 bytes",
        ));
    }
    // Control frames may come between a message's fragments; they have
    // their own bound, and do not count against the message's room.
    if opcode < CLOSE && length > room {
        return Err(Stop::Close(TOO_BIG, "a message holds at most 64 KiB"));
    }
    let mut mask = [0u8; 4];
    if from_client {
        reader.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; length as usize];
    reader.read_exact(&mut payload)?;
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Frame {
        fin,
        opcode,
        payload,
    })
}

/// One whole frame from the server: never masked, never fragmented, its
/// length in the shortest of the three forms.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 10);
    bytes.push(0x80 | opcode);
    match payload.len() {
        short @ 0..=125 => bytes.push(short as u8),
        medium @ 126..=0xFFFF => {
            bytes.push(126);
            bytes.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            bytes.push(127);
            bytes.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    bytes.extend_from_slice(payload);
    bytes
}

/// A frame as a client sends it: the same, with the mask bit set, 4 bytes of
/// mask after the length, and the payload XORed with them.
pub fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut bytes = frame(opcode, payload);
    let head = bytes.len() - payload.len();
    bytes[1] |= 0x80;
    for (i, byte) in bytes[head..].iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    bytes.splice(head..head, mask);
    bytes
}

/// The connection, written by two threads: the reader (pongs, closes) and
/// the writer (the room's lines). A frame is written whole under the lock,
/// so two frames never interleave.
struct Socket {
    stream: Arc<TcpStream>,
    writing: Mutex<()>,
    /// A close frame went out: nothing may follow it.
    closed: AtomicBool,
}

impl Socket {
    fn send(&self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let _turn = self
            .writing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.closed.load(Ordering::SeqCst) {
            return Err(ErrorKind::NotConnected.into());
        }
        if opcode == CLOSE {
            self.closed.store(true, Ordering::SeqCst);
        }
        (&*self.stream).write_all(&frame(opcode, payload))
    }

    fn close(&self, code: u16, reason: &str) {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        let _ = self.send(CLOSE, &payload);
    }
}

/// Upgrade the connection and serve `member` over it until either side
/// closes. The member leaves the room when its WebSocket ends.
pub fn serve(
    app: &App,
    member: Membership,
    request: &Request,
    stream: &Arc<TcpStream>,
    reader: &mut impl BufRead,
) -> io::Result<After> {
    let key = match check_handshake(request) {
        Ok(key) => key,
        Err(refusal) => {
            response::send(&mut &**stream, &refusal)?;
            return Ok(After::KeepOpen);
        }
    };
    write!(
        &**stream,
        "HTTP/1.1 101 Switching Protocols\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(&key)
    )?;
    let socket = Arc::new(Socket {
        stream: Arc::clone(stream),
        writing: Mutex::new(()),
        closed: AtomicBool::new(false),
    });
    let now = || app.room.lines_after(&member, u64::MAX, None).cursor;
    let start = match query(request, "since").map(str::parse::<u64>) {
        Some(Ok(since)) => since,
        _ => now(),
    };
    app.room.busy(&member, true);
    app.room.attach_stream(&member, stream, start);
    let writer = {
        let (room, socket, member) = (Arc::clone(&app.room), Arc::clone(&socket), member.clone());
        let keepalive = app.keepalive;
        spawn_small(move || follow_room(&room, &socket, &member, start, keepalive))
    };
    let mut member = member;
    let ended = read_messages(&app.room, &mut member, reader, &socket);
    app.room.busy(&member, false);
    app.room.leave(&member);
    // The writer sends what is left for the member (`* bye`), then ends.
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    match ended {
        Ok(Ending::Quit) => socket.close(NORMAL, "bye"),
        Err(Stop::Close(code, reason)) => socket.close(code, reason),
        Ok(Ending::Closed) => {}
        Err(Stop::Io(error)) => eprintln!("{}: websocket: {error}", member.name),
    }
    close_after(&socket, reader);
    Ok(After::Close)
}

/// How a WebSocket ended without a fault.
enum Ending {
    /// The client sent a close frame, and it was answered.
    Closed,
    /// The member said `/quit`.
    Quit,
}

/// Read messages until the close handshake, or until the client breaks the
/// protocol. Lines go to the room as an nc member's would.
fn read_messages(
    room: &Room,
    member: &mut Membership,
    reader: &mut impl Read,
    socket: &Socket,
) -> Result<Ending, Stop> {
    // A text message in fragments, while its last has not come.
    let mut message: Option<Vec<u8>> = None;
    loop {
        let taken = message.as_ref().map_or(0, |started| started.len() as u64);
        let frame = read_frame(reader, MAX_MESSAGE - taken, true)?;
        match (frame.opcode, &mut message) {
            (PING, _) => socket.send(PONG, &frame.payload)?,
            (PONG, _) => {}
            (CLOSE, _) => {
                // Answer with the same code, then the connection closes.
                let code = close_code(&frame.payload)?;
                let _ = socket.send(CLOSE, &code.to_be_bytes());
                return Ok(Ending::Closed);
            }
            (TEXT, None) if frame.fin => {
                if let Next::Quit = take_message(room, member, &frame.payload)? {
                    return Ok(Ending::Quit);
                }
            }
            (TEXT, None) => message = Some(frame.payload),
            (CONTINUATION, Some(started)) => {
                started.extend_from_slice(&frame.payload);
                if frame.fin {
                    let whole = message.take().unwrap_or_default();
                    if let Next::Quit = take_message(room, member, &whole)? {
                        return Ok(Ending::Quit);
                    }
                }
            }
            (BINARY, _) => return Err(Stop::Close(UNSUPPORTED, "this room takes text only")),
            (TEXT, Some(_)) => {
                return Err(Stop::Close(
                    PROTOCOL_ERROR,
                    "a new message inside a fragmented one",
                ))
            }
            (CONTINUATION, None) => {
                return Err(Stop::Close(PROTOCOL_ERROR, "a continuation of nothing"))
            }
            _ => return Err(Stop::Close(PROTOCOL_ERROR, "an unknown opcode")),
        }
    }
}

/// The code to answer a client's close with: its own, or NORMAL if it gave
/// none. RFC 6455 (sections 5.5.1 and 7.4) says a close body is empty, or a
/// code and a UTF-8 reason; codes below 1000, and those meant only for an
/// API (1005, 1006, 1015) or not assigned yet, may not be sent.
fn close_code(payload: &[u8]) -> Result<u16, Stop> {
    let [high, low, reason @ ..] = payload else {
        return match payload {
            [] => Ok(NORMAL),
            _ => Err(Stop::Close(PROTOCOL_ERROR, "a close body of one byte")),
        };
    };
    let code = u16::from_be_bytes([*high, *low]);
    if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
        return Err(Stop::Close(
            PROTOCOL_ERROR,
            "a close code that may not be sent",
        ));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(Stop::Close(NOT_UTF8, "a close reason must be UTF-8"));
    }
    Ok(code)
}

/// A whole text message: one line or more, each as an nc member's line.
fn take_message(room: &Room, member: &mut Membership, payload: &[u8]) -> Result<Next, Stop> {
    if std::str::from_utf8(payload).is_err() {
        return Err(Stop::Close(NOT_UTF8, "a text message must be UTF-8"));
    }
    for line in payload.split(|&byte| byte == b'\n') {
        if let Next::Quit = take_line(room, member, line) {
            return Ok(Next::Quit);
        }
    }
    Ok(Next::Stay)
}

/// The room's lines for `member`, a text frame each; a ping after each
/// `keepalive` of silence, so that proxies see traffic and a vanished
/// client is noticed.
fn follow_room(
    room: &Room,
    socket: &Socket,
    member: &Membership,
    mut cursor: u64,
    keepalive: Duration,
) {
    loop {
        let batch = room.lines_after(member, cursor, Some(Instant::now() + keepalive));
        let mut sent = Ok(());
        if batch.missed > 0 {
            sent = socket.send(TEXT, missed_notice(batch.missed).as_bytes());
        }
        for (_, text) in &batch.lines {
            sent = sent.and_then(|()| socket.send(TEXT, text.as_bytes()));
        }
        if batch.lines.is_empty() && batch.missed == 0 && !batch.gone {
            sent = socket.send(PING, b"");
        }
        if let Err(error) = sent {
            // A client that reads nothing, or vanished: cut the connection,
            // so that the reader ends too and the member leaves, rather than
            // stay in the room deaf. (NotConnected: the close was sent.)
            if error.kind() != ErrorKind::NotConnected {
                let _ = socket.stream.shutdown(Shutdown::Both);
            }
            return;
        }
        if batch.gone {
            return;
        }
        cursor = batch.cursor;
        room.delivered(member, cursor);
    }
}

/// After the close frames: end our side, read what the client still sends
/// for a moment (its own close frame), then let the connection go.
fn close_after(socket: &Socket, reader: &mut impl Read) {
    let _ = socket.stream.shutdown(Shutdown::Write);
    drain_briefly(&socket.stream, reader, MAX_MESSAGE);
    let _ = socket.stream.shutdown(Shutdown::Both);
}
