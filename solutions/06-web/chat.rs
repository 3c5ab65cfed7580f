//! The chat port: lesson 05's protocol over plain TCP, so that `nc` members
//! share the room with browsers. A member's connection gets a reader (this
//! session) and a writer that follows the room's log.

use std::io::{self, BufReader, BufWriter, ErrorKind, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commands::{check_name, refuse_long_line, take_line, Next};
use crate::limits::spawn_small;
use crate::lines::{read_line, DeadlineReader, Incoming};
use crate::room::{Membership, Room};

/// How long a write to an nc member may wait for its socket to take a byte;
/// past it, the member is cut off (lesson 05's WRITE_WAIT).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Too many members already: say so, and close.
pub fn turn_away(stream: TcpStream) {
    let _ = (&stream).write_all(b"! the server is full; try again later\n");
}

/// One nc connection: a name, then lines until it leaves.
pub fn serve(stream: TcpStream, room: &Arc<Room>, name_wait: Duration) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(WRITE_WAIT))?;
    let stream = Arc::new(stream);
    let mut reader = BufReader::new(DeadlineReader::new(&stream));
    (&*stream).write_all(b"* what is your name?\n")?;
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + name_wait))?;
    let first_line = read_line(&mut reader);
    reader.get_mut().set_deadline(None)?;
    let joined = match first_line {
        Ok(Incoming::Line(line)) => {
            let name = String::from_utf8_lossy(&line);
            check_name(&name).and_then(|()| room.join(&name, false))
        }
        Ok(Incoming::TooLong) => Err("a name has at most 16 characters".to_string()),
        Ok(Incoming::Closed) => return Ok(()),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err(format!("no name came within {} s", name_wait.as_secs()))
        }
        Err(error) => return Err(error),
    };
    let welcome = match joined {
        Ok(welcome) => welcome,
        Err(reason) => return (&*stream).write_all(format!("! {reason}\n").as_bytes()),
    };
    let mut member = welcome.member;
    room.attach_stream(&member, &stream, welcome.since);
    let writer = {
        let (room, stream, member) = (Arc::clone(room), Arc::clone(&stream), member.clone());
        spawn_small(move || follow_room(&room, &stream, &member, welcome.since))
    };
    let Some(writer) = writer else {
        room.leave(&member);
        return Err(io::Error::other("the system is out of threads"));
    };
    let talked = converse(&mut reader, room, &mut member);
    room.leave(&member);
    // The writer sends what is left for this member (`* bye`), then ends.
    let _ = writer.join();
    talked
}

fn converse(
    reader: &mut BufReader<DeadlineReader>,
    room: &Room,
    member: &mut Membership,
) -> io::Result<()> {
    loop {
        match read_line(reader)? {
            Incoming::Line(line) => {
                if let Next::Quit = take_line(room, member, &line) {
                    return Ok(());
                }
            }
            Incoming::TooLong => refuse_long_line(room, member),
            Incoming::Closed => return Ok(()),
        }
    }
}

/// The member's writer: write each line of the log meant for it, as it
/// comes, until the member has left and every line owed is written.
fn follow_room(room: &Room, stream: &TcpStream, member: &Membership, mut cursor: u64) {
    let mut socket = BufWriter::new(stream);
    loop {
        let batch = room.lines_after(member, cursor, Some(Instant::now() + WRITE_WAIT));
        let written = batch
            .lines
            .iter()
            .try_for_each(|(_, text)| writeln!(socket, "{text}"))
            .and_then(|()| socket.flush());
        if written.is_err() || batch.missed > 0 {
            // Broken, or too slow: cut the connection, so that the reader
            // ends too and the member leaves rather than stay in it deaf.
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        cursor = batch.cursor;
        room.delivered(member, cursor);
        if batch.gone {
            let _ = stream.shutdown(Shutdown::Write);
            return;
        }
    }
}
