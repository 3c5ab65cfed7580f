//! The room: who is in it, and the hub that carries every line to them.
//!
//! ```text
//!   session threads            the room               writer threads
//!   (one per member)     (a lock around members)      (one per member)
//!   ada  --say-->  try_send --> [outbox of bob ] --> write --> bob's socket
//!                  try_send --> [outbox of cy  ] --> write --> cy's socket
//! ```
//!
//! Delivering a line only puts it in outboxes: it never writes to a socket,
//! so it never waits for a member who does not read. Each outbox holds at
//! most [`OUTBOX_LINES`] lines; a member whose outbox is full is dropped.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How many lines may wait for one member. A member this far behind has
/// stopped reading (or reads far slower than the room talks), and waiting for
/// it would cost memory without end: it is dropped. Lines are at most 4 KiB,
/// so one member holds at most 4 MiB here.
pub const OUTBOX_LINES: usize = 1024;

/// How long a write to a member may wait for the member's socket to take a
/// byte. Without it, a member that stops reading and then quits leaves its
/// writer blocked for ever, holding a thread and the socket; past it, the
/// writer gives up and cuts the connection.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// A line on its way to members, newline included. One `Arc` for every
/// outbox: a line said to 200 members is kept in memory once.
type Outgoing = Arc<str>;

/// Members by name; a `BTreeMap` keeps them sorted for `/who`.
type Members = BTreeMap<String, Member>;

pub struct Room {
    members: Mutex<Members>,
    next_id: AtomicU64,
}

struct Member {
    /// Which connection holds this name (a name may be taken again later).
    id: u64,
    outbox: SyncSender<Outgoing>,
    /// Kept to cut the connection of a member who is dropped.
    stream: Arc<TcpStream>,
}

/// What a session knows about its place in the room.
pub struct Membership {
    pub name: String,
    id: u64,
    writer: JoinHandle<()>,
}

impl Membership {
    /// Wait until the member's writer has ended: its outbox closed (the
    /// member left) and was emptied, or its socket failed.
    pub fn wait_for_writer(self) {
        // A writer that panicked has ended too; there is nothing to undo.
        let _ = self.writer.join();
    }
}

impl Room {
    pub fn new() -> Room {
        Room {
            members: Mutex::new(Members::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        // A panic in another session must not close the room to everyone.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Let `name` in, with a writer thread for `stream`; the newcomer hears
    /// who is here, and everyone else hears who came.
    pub fn join(&self, name: &str, stream: &Arc<TcpStream>) -> Result<Membership, String> {
        let mut members = self.members();
        if members.contains_key(name) {
            return Err(format!("the name {name} is taken"));
        }
        let cannot = |error: io::Error| format!("the server cannot take you in: {error}");
        stream.set_write_timeout(Some(WRITE_WAIT)).map_err(cannot)?;
        let (outbox, queued) = mpsc::sync_channel(OUTBOX_LINES);
        let for_writer = Arc::clone(stream);
        let writer = thread::Builder::new()
            .spawn(move || write_loop(&for_writer, queued))
            .map_err(cannot)?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let stream = Arc::clone(stream);
        members.insert(name.to_string(), Member { id, outbox, stream });
        // All under one lock: nothing said meanwhile can reach the newcomer
        // before the list, nor be missed by it.
        let everyone = names(&members);
        deliver(&mut members, format!("* in the room: {everyone}\n"), |to| {
            to == name
        });
        deliver(&mut members, format!("* {name} joined\n"), |to| to != name);
        Ok(Membership {
            name: name.to_string(),
            id,
            writer,
        })
    }

    /// Relay `text` to every member but its sender.
    pub fn say(&self, from: &Membership, text: &str) {
        let mut members = self.members();
        let line = format!("[{}] {text}\n", from.name);
        deliver(&mut members, line, |to| to != from.name);
    }

    /// Send `text` to the one member called `to`.
    pub fn tell(&self, from: &Membership, to: &str, text: &str) -> Result<(), String> {
        let mut members = self.members();
        if !members.contains_key(to) {
            return Err(format!("no one here is called {to}"));
        }
        let line = format!("[{} -> you] {text}\n", from.name);
        deliver(&mut members, line, |name| name == to);
        Ok(())
    }

    /// Send a line of the server's own to `member` alone: a list, an error.
    pub fn notify(&self, member: &Membership, line: &str) {
        let mut members = self.members();
        deliver(&mut members, format!("{line}\n"), |to| to == member.name);
    }

    /// The names in the room, as `/who` and a newcomer see them.
    pub fn who(&self, member: &Membership) {
        let mut members = self.members();
        let everyone = names(&members);
        deliver(&mut members, format!("* in the room: {everyone}\n"), |to| {
            to == member.name
        });
    }

    /// Give `member` the name `new`, and tell everyone, the member too.
    pub fn rename(&self, member: &mut Membership, new: &str) -> Result<(), String> {
        let mut members = self.members();
        if members.contains_key(new) {
            return Err(format!("the name {new} is taken"));
        }
        let Some(moved) = take_own(&mut members, member) else {
            return Err("you are no longer in the room".to_string());
        };
        members.insert(new.to_string(), moved);
        let line = format!("* {} is now {new}\n", member.name);
        member.name = new.to_string();
        deliver(&mut members, line, |_| true);
        Ok(())
    }

    /// Take `member` out of the room and tell the others. Its outbox closes:
    /// the writer sends what is left in it, then ends.
    pub fn leave(&self, member: &Membership) {
        let mut members = self.members();
        // Gone already if it was dropped for not reading; that was announced.
        if take_own(&mut members, member).is_some() {
            deliver(&mut members, format!("* {} left\n", member.name), |_| true);
        }
    }
}

/// Remove `member`'s entry, only if its name still belongs to that session.
fn take_own(members: &mut Members, member: &Membership) -> Option<Member> {
    match members.get(&member.name) {
        Some(entry) if entry.id == member.id => members.remove(&member.name),
        _ => None,
    }
}

fn names(members: &Members) -> String {
    members.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// Put `line` in the outbox of every member that `wanted` names. Never
/// waits: a member whose outbox is full is dropped, and that is announced.
fn deliver(members: &mut Members, line: String, wanted: impl Fn(&str) -> bool) {
    let line: Outgoing = line.into();
    let mut too_slow: Vec<String> = Vec::new();
    for (name, member) in members.iter() {
        if !wanted(name) {
            continue;
        }
        match member.outbox.try_send(Arc::clone(&line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => too_slow.push(name.clone()),
            // Its writer stopped and cut the connection; its session will
            // see that, leave, and be announced.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
    for name in too_slow {
        drop_member(members, &name);
    }
}

/// Drop a member that does not read: cut its connection, which also frees a
/// writer stuck in `write`, and tell the others.
fn drop_member(members: &mut Members, name: &str) {
    if let Some(member) = members.remove(name) {
        let _ = member.stream.shutdown(Shutdown::Both);
        let line = format!("* {name} left (dropped: not reading)\n");
        deliver(members, line, |_| true);
    }
}

/// A member's writer: empty its outbox into its socket until the outbox
/// closes (the member left) or a write fails.
fn write_loop(stream: &TcpStream, queued: Receiver<Outgoing>) {
    if send_queued(stream, queued).is_err() {
        // Broken, or it took nothing for WRITE_WAIT: cut the connection, so
        // that the session's read ends too and the member leaves the room
        // rather than stay in it deaf.
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn send_queued(stream: &TcpStream, queued: Receiver<Outgoing>) -> io::Result<()> {
    // `&TcpStream` writes too: the writer shares the member's one socket.
    let mut socket = BufWriter::new(stream);
    while let Ok(line) = queued.recv() {
        socket.write_all(line.as_bytes())?;
        // Whatever else is waiting goes out in the same write.
        while let Ok(line) = queued.try_recv() {
            socket.write_all(line.as_bytes())?;
        }
        socket.flush()?;
    }
    Ok(())
}
