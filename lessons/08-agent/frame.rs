//! Frames: how one message is told from the next on a connection that
//! carries many. Each frame is a 4-byte length, big-endian, then that many
//! bytes. A length prefix lets the reader know how much to expect before it
//! reads, so it can refuse a frame that is too long without reading it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The longest frame body accepted. A peer that announces more is not
/// speaking this protocol (or is attacking): its connection is closed
/// before a byte of the body is read, so it cannot make us allocate.
pub const MAX_FRAME: usize = 4096;

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between two frames: a clean end.
    Closed,
    /// No byte came before the socket's read deadline.
    Silent,
    /// The length prefix announced more than [`MAX_FRAME`], or zero.
    BadLength(u32),
    /// The body is not UTF-8 text.
    NotText,
    /// Anything else the socket reported (a reset, a close mid-frame).
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "the connection was closed"),
            FrameError::Silent => write!(f, "nothing came before the deadline"),
            FrameError::BadLength(length) => {
                write!(
                    f,
                    "a frame of {length} bytes (the limit is 1 to {MAX_FRAME})"
                )
            }
            FrameError::NotText => write!(f, "a frame that is not UTF-8 text"),
            FrameError::Io(error) => write!(f, "{error}"),
        }
    }
}

/// Read one frame's body. The read deadline set on the socket bounds the
/// wait for its first byte and for each read after; [`read_frame_within`]
/// bounds the whole frame.
pub fn read_frame(reader: &mut impl Read) -> Result<String, FrameError> {
    let mut prefix = [0u8; 4];
    read_all(reader, &mut prefix)?;
    let length = u32::from_be_bytes(prefix);
    // TODO 10 (slides/08-agent.md, "Hostile peers"): refuse a length over
    // MAX_FRAME too, before allocating a byte for it.
    if length == 0 {
        return Err(FrameError::BadLength(length));
    }
    let mut body = vec![0u8; length as usize];
    match read_all(reader, &mut body) {
        // A close inside a frame is not a clean end.
        Err(FrameError::Closed) => {
            return Err(FrameError::Io(ErrorKind::UnexpectedEof.into()));
        }
        other => other?,
    }
    String::from_utf8(body).map_err(|_| FrameError::NotText)
}

/// Read one frame from `stream`, all of it within `time`. A socket's read
/// deadline bounds each read alone: a peer that sends one byte just before
/// each deadline makes a frame last for ever, and holds a place in the
/// service meanwhile (a slowloris). Here each read waits only for what is
/// left of `time`. It costs a system call per read, so it is for a server
/// that must not be held, not for the agent's own reads.
pub fn read_frame_within(stream: &TcpStream, time: Duration) -> Result<String, FrameError> {
    read_frame(&mut ReadBy {
        stream,
        deadline: Instant::now() + time,
    })
}

/// A socket whose reads must all be done by `deadline`.
struct ReadBy<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for ReadBy<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buffer)
    }
}

/// Write `body` as one frame to `stream`, all of it within `time`. A
/// socket's write deadline bounds each write alone, and a peer that never
/// reads still takes a few hundred bytes now and then (its system answers
/// the probes of a full window), each of which starts the wait again: a
/// peer that reads nothing could hold the writer for seconds more. Here
/// each write waits only for what is left of `time`.
pub fn write_frame_within(stream: &TcpStream, body: &str, time: Duration) -> io::Result<()> {
    write_frame(
        &mut WriteBy {
            stream,
            deadline: Instant::now() + time,
        },
        body,
    )
}

/// A socket whose writes must all be done by `deadline`.
struct WriteBy<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Write for WriteBy<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ErrorKind::TimedOut.into());
        }
        self.stream.set_write_timeout(Some(left))?;
        (&mut &*self.stream).write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fill `buffer`; `Closed` if the stream ends before its first byte.
fn read_all(reader: &mut impl Read, buffer: &mut [u8]) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Io(ErrorKind::UnexpectedEof.into())),
            Ok(count) => filled += count,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(FrameError::Silent)
            }
            Err(error) => return Err(FrameError::Io(error)),
        }
    }
    Ok(())
}

/// Write `body` as one frame, prefix and body in a single write so that a
/// frame never goes out in two segments for want of a second call.
pub fn write_frame(writer: &mut impl Write, body: &str) -> io::Result<()> {
    assert!(body.len() <= MAX_FRAME, "a frame body over the limit");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body.as_bytes());
    writer.write_all(&frame)?;
    writer.flush()
}
