//! Short and long polling: `GET /messages?key=KEY&since=ID[&wait=SECS]`.
//!
//! Short polling asks "anything after ID?" and hears "no" most of the time.
//! Long polling asks the same, and the server holds the answer until there
//! is something to say, or `wait` seconds pass (RFC 6202 calls 30 s safe
//! behind most proxies). Either way the answer is plain text, a line per
//! line of the room, `ID TEXT`, and the header `Room-Cursor` says where the
//! next poll starts.

use std::time::{Duration, Instant};

use crate::request::Request;
use crate::response::{Reply, Status};
use crate::room::{missed_notice, Batch, Membership, Room};
use crate::server::query;

/// What `wait` means when given without a number.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The longest a poll may be held: past a minute or two, some proxy or NAT
/// on the way has closed the connection anyway.
const MOST_WAIT: Duration = Duration::from_secs(120);

pub fn messages(room: &Room, member: &Membership, request: &Request) -> Reply {
    let Ok(since) = query(request, "since").unwrap_or("0").parse::<u64>() else {
        return Reply::text(Status(400), "! since is the id of a line: a number");
    };
    let wait = match query(request, "wait") {
        None => None,
        Some("") => Some(DEFAULT_WAIT),
        // Fractions too (`wait=0.5`); `try_from` refuses a negative one.
        Some(secs) => match secs.parse().map(Duration::try_from_secs_f64) {
            Ok(Ok(wait)) => Some(wait.min(MOST_WAIT)),
            _ => return Reply::text(Status(400), "! wait is a number of seconds"),
        },
    };
    // While the poll is held, the member is here, though it says nothing.
    room.busy(member, true);
    // TODO 3 (slides/06-web.md, "Long polling"): with `wait`, hold the poll:
    // give `lines_after` the deadline `Instant::now() + wait`, and it waits
    // on the room's Condvar until a line for this member comes, or then.
    let _ = wait;
    let batch = room.lines_after(member, since, None);
    room.busy(member, false);
    Reply::new(Status(200), "text/plain; charset=utf-8", body(&batch))
        .header(format!("Room-Cursor: {}", batch.cursor))
}

/// `ID TEXT` a line. Lines that went out of the log before this member read
/// them are never skipped in silence: a line says how many.
fn body(batch: &Batch) -> String {
    // TODO 2 (slides/06-web.md, "Short polling"): a line `ID TEXT` for each
    // of `batch.lines`, oldest first. If `batch.missed` is more than 0, first
    // a line `ID ! you missed N lines` (`missed_notice`), its ID the last
    // missed one: `batch.missed_id()`.
    let _ = (batch, missed_notice);
    String::new()
}
