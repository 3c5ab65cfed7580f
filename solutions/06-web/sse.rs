//! Server-Sent Events: `GET /events?key=KEY`. One response that never ends:
//! the server writes an event each time the room says something, and the
//! browser's `EventSource` hands each to the page.
//!
//! ```text
//! retry: 2000            how long the browser waits before it reconnects
//!
//! id: 42                 the line's id: sent back as Last-Event-ID on a reconnect
//! data: [ada] hello
//!
//! : keepalive            a comment, every --keepalive seconds of silence
//! ```

use std::io::{self, BufWriter, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use crate::request::Request;
use crate::response::{self, Reply, Status};
use crate::room::{missed_notice, Membership};
use crate::server::{query, App};

/// How long, in milliseconds, a browser waits before it reconnects a broken
/// stream. It then sends `Last-Event-ID`, and misses nothing.
const RETRY_MS: u64 = 2000;

/// Stream the room to `member` until the connection breaks or the member
/// leaves. It starts after `Last-Event-ID` (a browser reconnecting), or
/// `?since=ID`, or now.
pub fn serve(
    app: &App,
    member: &Membership,
    request: &Request,
    stream: &Arc<TcpStream>,
) -> io::Result<()> {
    let resume_from = request
        .header("Last-Event-ID")
        .or_else(|| query(request, "since"))
        .map(str::parse::<u64>);
    let mut cursor = match resume_from {
        Some(Ok(id)) => id,
        Some(Err(_)) => {
            let reply = Reply::text(Status(400), "! Last-Event-ID is the id of a line");
            return response::send(&mut &**stream, &reply);
        }
        None => app.room.lines_after(member, u64::MAX, None).cursor,
    };
    let mut out = BufWriter::new(&**stream);
    // No Content-Length: the body ends when the connection does. And a
    // word to nginx, which would otherwise hold the stream in its buffers.
    out.write_all(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/event-stream\r\n\
          Cache-Control: no-store\r\n\
          X-Accel-Buffering: no\r\n\
          Connection: close\r\n\
          \r\n",
    )?;
    write!(out, "retry: {RETRY_MS}\n\n")?;
    out.flush()?;
    app.room.busy(member, true);
    app.room.attach_stream(member, stream, cursor);
    let streamed = follow(app, member, &mut out, &mut cursor);
    app.room.detach_stream(member, stream);
    app.room.busy(member, false);
    streamed
}

/// Write each line for `member` as an event, and a comment after each
/// `keepalive` of silence, until the member leaves or a write fails.
fn follow(
    app: &App,
    member: &Membership,
    out: &mut impl Write,
    cursor: &mut u64,
) -> io::Result<()> {
    loop {
        let until = Instant::now() + app.keepalive;
        let batch = app.room.lines_after(member, *cursor, Some(until));
        if batch.missed > 0 {
            let last_missed = *cursor + batch.missed;
            write!(
                out,
                "id: {last_missed}\ndata: {}\n\n",
                missed_notice(batch.missed)
            )?;
        }
        for (id, text) in &batch.lines {
            write!(out, "id: {id}\ndata: {text}\n\n")?;
        }
        if batch.lines.is_empty() && batch.missed == 0 && !batch.gone {
            // Silence is when a proxy or a NAT decides the connection is
            // dead; a comment every so often keeps it alive, and finds out
            // whether the browser is still there.
            out.write_all(b": keepalive\n\n")?;
        }
        out.flush()?;
        *cursor = batch.cursor;
        app.room.delivered(member, *cursor);
        if batch.gone {
            return Ok(());
        }
    }
}
