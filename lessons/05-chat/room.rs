//! The room: who is in it, and the hub that carries every line to them.
//!
//! ```text
//!   session threads            the room               writer threads
//!   (one per member)     (a lock around members)      (one per member)
//!   ada  --say-->  write_now ---------------------------------> bob's socket
//!                  write_now, full: try_send --> [outbox of cy] --> cy's socket
//! ```
//!
//! Delivering a line never waits for a member who does not read. It writes
//! the line to each socket at once if the socket takes it without waiting
//! (the fast path, nearly always); what a socket does not take goes to the
//! member's outbox, and the member's writer thread sends it. Each outbox
//! holds at most [`OUTBOX_LINES`] lines; a member whose outbox is full is
//! dropped. In a big room, the sends of one line are shared among the
//! machine's cores ([`SENDS_PER_THREAD`]).

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The most bytes of lines said together that go to the room as one run:
/// one write to each member, and one entry in an outbox. A member who talks
/// faster than the room can carry line by line (a paste, a bot) gets
/// through in runs. With runs of 4 KiB, three lines of 1 KiB a run, a room
/// of 200 fell a second behind a member saying 1000 such lines a second;
/// with 16 KiB it keeps up. See slides/05-chat.md,
/// "Lines that came together leave together".
pub const RUN_LIMIT: usize = 16 * 1024;

/// How many lines may wait for one member (a run of lines said together
/// counts as one). A member this far behind has stopped reading (or reads far
/// slower than the room talks), and waiting for it would cost memory without
/// end: it is dropped. A line is at most 4 KiB and a run RUN_LIMIT, so one
/// member holds at most 4 MiB here while lines come one at a time, and
/// 16 MiB at worst. Fewer would leave little room for a member who reads
/// but joined early: stage 8's full room sends each such member up to 199
/// join notices before it reads any.
pub const OUTBOX_LINES: usize = 1024;

/// How long a write to a member may wait for the member's socket to take a
/// byte. Without it, a member that stops reading and then quits leaves its
/// writer blocked for ever, holding a thread and the socket; past it, the
/// writer gives up and cuts the connection.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// A line on its way to members, newline included. One `Arc` for every
/// outbox: a line said to 200 members is kept in memory once. Bytes, not
/// `str`: what is left of a line a socket took in part may start in the
/// middle of a character.
type Outgoing = Arc<[u8]>;

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
    /// Lines put in the outbox that the writer has not finished sending.
    /// While it is above 0, a new line must queue behind them: written at
    /// once, it would overtake them, or mix its bytes into a line half sent.
    backlog: Arc<AtomicUsize>,
    /// Written to at once on the fast path; cut when the member is dropped.
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
        let backlog = Arc::new(AtomicUsize::new(0));
        let (for_writer, writer_backlog) = (Arc::clone(stream), Arc::clone(&backlog));
        let writer = thread::Builder::new()
            .spawn(move || write_loop(&for_writer, queued, &writer_backlog))
            .map_err(cannot)?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let stream = Arc::clone(stream);
        let member = Member {
            id,
            outbox,
            backlog,
            stream,
        };
        members.insert(name.to_string(), member);
        // TODO 1 (slides/05-chat.md, "Joining the room"): still under this
        // lock, deliver `* in the room: ` and every name (fn names) to the
        // newcomer alone, then `* NAME joined` to everyone else. `deliver`
        // takes the line, newline included, and which members get it.
        Ok(Membership {
            name: name.to_string(),
            id,
            writer,
        })
    }

    /// Relay `texts`, said in a row, to every member but their sender, as
    /// one piece: one write per member for all of them.
    pub fn say(&self, from: &Membership, texts: &[String]) {
        // TODO 2 (slides/05-chat.md, "A broadcast hub"): lock the members and
        // deliver `[NAME] TEXT` and a newline for each text, all in one
        // String, to every member but the sender.
    }

    /// Send `text` to the one member called `to`.
    pub fn tell(&self, from: &Membership, to: &str, text: &str) -> Result<(), String> {
        // TODO 5 (slides/05-chat.md, "Commands"): if no member is called `to`,
        // return the error `no one here is called NAME`; otherwise deliver
        // `[SENDER -> you] TEXT` to that member alone.
        Err("TODO 5 in lessons/05-chat/room.rs: /msg is not written yet".to_string())
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
        // TODO 3 (slides/05-chat.md, "Leaving, cleanly or not"): take the
        // member out with `take_own`, and if it was still there, deliver
        // `* NAME left` to everyone left. (`take_own` finds nothing when the
        // member was dropped for not reading: that was announced already.)
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

/// Send `line` to every member that `wanted` names: at once where the
/// socket takes it, through the outbox where not. Never waits: a member
/// whose outbox is full is dropped, and that is announced.
fn deliver(members: &mut Members, line: String, wanted: impl Fn(&str) -> bool) {
    let line: Outgoing = line.into_bytes().into();
    let recipients: Vec<(&String, &Member)> =
        members.iter().filter(|(name, _)| wanted(name)).collect();
    let too_slow = send_on_every_core(&recipients, &line);
    for name in too_slow {
        drop_member(members, &name);
    }
}

/// Recipients that make a second thread worth starting. One send costs
/// some microseconds, most of them waking the reader; starting and ending
/// a thread costs some tens. See slides/05-chat.md, "One line, two cores".
const SENDS_PER_THREAD: usize = 64;

/// Share the sends of one line among up to one thread a core; the names
/// of those too slow to keep. The threads take the recipients one at a
/// time from a shared count, not a fixed part each: a thread the system
/// stops for a while (another program wanted the core, or the host of a
/// virtual machine took it back) leaves the recipients it has not taken to
/// the others, and the line is late for one member rather than for half
/// the room. Every send is done before this returns, still under the room
/// lock: each member gets its lines in the order said.
fn send_on_every_core(recipients: &[(&String, &Member)], line: &Outgoing) -> Vec<String> {
    let threads = cores().min(recipients.len() / SENDS_PER_THREAD).max(1);
    let next = AtomicUsize::new(0);
    // Scoped threads may borrow the members, which this lock holds: the
    // scope ends only once every thread started in it has.
    thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads)
            .map(|_| {
                thread::Builder::new().spawn_scoped(scope, || send_each(recipients, line, &next))
            })
            .collect();
        // With no helper to be had (the system's limit on threads), this
        // thread takes every recipient itself: slower, but the line goes out.
        let mut too_slow = send_each(recipients, line, &next);
        for helper in helpers.into_iter().flatten() {
            // A helper that panicked (a bug) sent what it sent; this
            // thread took the rest.
            too_slow.extend(helper.join().unwrap_or_default());
        }
        too_slow
    })
}

/// The cores this server may use, asked once: the answer takes system calls.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| thread::available_parallelism().map_or(1, usize::from))
}

/// Send `line` to the recipients no other thread has taken, one after
/// another, each taken with `next`; the names of those whose outbox is full.
fn send_each(
    recipients: &[(&String, &Member)],
    line: &Outgoing,
    next: &AtomicUsize,
) -> Vec<String> {
    let mut too_slow = Vec::new();
    // `fetch_add` gives each index to one thread only: no member hears
    // the line twice, nor from two threads at once. `Relaxed` is enough:
    // the count is all the threads pass through it; the members they read
    // were there before the threads began.
    while let Some(&(name, member)) = recipients.get(next.fetch_add(1, Ordering::Relaxed)) {
        let Some(rest) = member.write_now(line) else {
            continue;
        };
        // Counted before it is queued, so the writer never counts it off
        // before it was counted on. Should the outbox refuse it, the count
        // stays: that member is dropped or leaving, and is written no more.
        member.backlog.fetch_add(1, Ordering::SeqCst);
        // TODO 8 (slides/05-chat.md, "The slow reader"): `send` waits while
        // this member's outbox is full, and the whole room waits with it,
        // lock held. Use `try_send`: on `TrySendError::Full`, push the name
        // to `too_slow` (fn deliver drops them); on `Disconnected`, the
        // member's writer has stopped, and its session will leave.
        let _ = member.outbox.send(rest);
    }
    too_slow
}

impl Member {
    /// The fast path: write `line` to the socket now, if no line waits in
    /// the outbox before it. `None` when it all went out; otherwise what is
    /// left of it, for the outbox. The caller holds the room lock, so no
    /// other line is being delivered to this member meanwhile.
    fn write_now(&self, line: &Outgoing) -> Option<Outgoing> {
        if self.backlog.load(Ordering::SeqCst) > 0 {
            return Some(Arc::clone(line));
        }
        match send_without_waiting(&self.stream, line) {
            sent if sent == line.len() => None,
            0 => Some(Arc::clone(line)),
            // The socket's buffer filled in the middle of the line: the
            // writer sends the rest, and everything after it, in order.
            sent => Some(line[sent..].into()),
        }
    }
}

/// Write what the socket takes of `bytes` without waiting; how much it took.
/// One system call, like the writer's `write`, but with MSG_DONTWAIT: a
/// full socket buffer answers at once (EAGAIN) rather than wait for the
/// member to read. Only this call is non-blocking; the socket stays as it
/// is for the session's reads and the writer's writes.
#[cfg(unix)]
fn send_without_waiting(stream: &TcpStream, bytes: &[u8]) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: `send` reads `bytes.len()` bytes from `bytes`, a live slice,
    // and keeps no pointer to them after it returns.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT,
        )
    };
    // -1 is an error: a full buffer, or a broken connection (EPIPE, not a
    // signal that would end the server: Rust programs ignore SIGPIPE). Both
    // leave the whole line to the writer, which meets a real error itself.
    usize::try_from(sent).unwrap_or(0)
}

/// Outside Unix, every line goes through the outbox and its writer.
#[cfg(not(unix))]
fn send_without_waiting(_stream: &TcpStream, _bytes: &[u8]) -> usize {
    0
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
/// closes (the member left) or a write fails. It sleeps in `recv` while the
/// fast path keeps up, and works only when the socket fell behind.
fn write_loop(stream: &TcpStream, queued: Receiver<Outgoing>, backlog: &AtomicUsize) {
    if send_queued(stream, queued, backlog).is_err() {
        // Broken, or it took nothing for WRITE_WAIT: cut the connection, so
        // that the session's read ends too and the member leaves the room
        // rather than stay in it deaf.
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn send_queued(
    stream: &TcpStream,
    queued: Receiver<Outgoing>,
    backlog: &AtomicUsize,
) -> io::Result<()> {
    // `&TcpStream` writes too: the writer shares the member's one socket.
    let mut socket = BufWriter::new(stream);
    while let Ok(line) = queued.recv() {
        socket.write_all(&line)?;
        let mut lines = 1;
        // Whatever else is waiting goes out in the same write.
        while let Ok(line) = queued.try_recv() {
            socket.write_all(&line)?;
            lines += 1;
        }
        socket.flush()?;
        // Only now, every byte written, may the fast path write again.
        backlog.fetch_sub(lines, Ordering::SeqCst);
    }
    Ok(())
}
