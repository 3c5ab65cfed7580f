//! The room: who is in it, and the numbered log of every line said in it.
//!
//! ```text
//!   nc members, web members            the room                 readers
//!   say, /msg, /who  --append-->  [ 41 | 42 | 43 | 44 ]  <-- short poll: what is after 42?
//!                                  the last 1000 lines    <-- long poll: wait for what is after 44
//!                                  each with its id       <-- SSE, WebSocket, nc: follow the end
//! ```
//!
//! Lesson 05 put each line in every member's outbox. A browser cannot be
//! called, so here it is the other way round: a line goes into one log, and
//! each member reads the log from its own cursor, whenever it asks. A member
//! whose cursor falls out of the log has missed lines, and is told so.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many lines the room keeps for members catching up. Lines are at most
/// 4 KiB, so the log holds at most 4 MiB, however many members read it.
pub const HISTORY: usize = 1000;

/// Who may read a line of the log.
#[derive(Clone, Copy)]
enum Audience {
    Everyone,
    /// Everyone but its sender, who knows what it said.
    AllBut(u64),
    /// One member: a `/msg`, a list, an error.
    Only(u64),
}

struct Entry {
    id: u64,
    text: Arc<str>,
    audience: Audience,
}

impl Entry {
    fn is_for(&self, member: u64) -> bool {
        match self.audience {
            Audience::Everyone => true,
            Audience::AllBut(sender) => sender != member,
            Audience::Only(reader) => reader == member,
        }
    }
}

/// A member, as the room knows it.
struct Member {
    id: u64,
    /// A web member's secret: whoever shows it speaks as this member.
    key: Option<String>,
    /// A web member is gone once it has not been heard from for the idle
    /// time, and no request of its is waiting. An nc member leaves when its
    /// connection ends.
    web: bool,
    last_seen: Instant,
    /// Requests of this member being served now (a held poll, a stream).
    busy: u32,
    /// The connection that streams the room to this member (SSE, WebSocket,
    /// nc): a stream that falls a whole log behind has stopped reading, and
    /// is cut.
    stream: Option<Streaming>,
    /// The id of the last line for this member that went out of the log: a
    /// cursor before it has missed lines (those for others do not count).
    last_forgotten: u64,
}

/// A connection that streams the room to a member.
struct Streaming {
    socket: Arc<TcpStream>,
    /// The id of the last line written to it.
    delivered: u64,
    /// The id of the first line said after it began. A line from before,
    /// gone from the log before the stream wrote it, is one it missed (and
    /// is told so), not a sign that it stopped reading: a browser that comes
    /// back with an old Last-Event-ID begins a whole log behind.
    began: u64,
}

/// Members by name; a `BTreeMap` keeps them sorted for `/who`.
type Members = BTreeMap<String, Member>;

struct State {
    log: VecDeque<Entry>,
    /// The id the next line gets; the first line is 1, so 0 means "before
    /// everything".
    next_line: u64,
    next_member: u64,
    members: Members,
}

pub struct Room {
    state: Mutex<State>,
    /// Rung each time a line is added or a member leaves: every waiting
    /// reader wakes and looks at the log again.
    changed: Condvar,
    /// Where web members' keys come from.
    keys: RandomState,
}

/// A member, as a connection or a request knows it.
#[derive(Clone)]
pub struct Membership {
    pub id: u64,
    pub name: String,
}

/// What a new web member is given: its key, and the cursor to read from.
pub struct Welcome {
    pub member: Membership,
    pub key: String,
    pub since: u64,
}

/// What a read of the log gives one member.
pub struct Batch {
    /// Lines for this member, with their ids, oldest first.
    pub lines: Vec<(u64, Arc<str>)>,
    /// Where the next read starts: the last id looked at, whether or not it
    /// was for this member.
    pub cursor: u64,
    /// How many lines went out of the log after the cursor, when one of
    /// them at least was for this member.
    pub missed: u64,
    /// The member is no longer in the room.
    pub gone: bool,
}

impl Batch {
    /// The id to give `! you missed N lines`: just before the first line
    /// given, so that a reader resuming from it misses nothing more.
    pub fn missed_id(&self) -> u64 {
        self.lines.first().map_or(self.cursor, |(id, _)| id - 1)
    }
}

impl Room {
    pub fn new() -> Room {
        Room {
            state: Mutex::new(State {
                log: VecDeque::with_capacity(HISTORY),
                next_line: 1,
                next_member: 1,
                members: Members::new(),
            }),
            changed: Condvar::new(),
            keys: RandomState::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in one request must not close the room to everyone.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Let `name` in; the newcomer hears who is here, everyone else hears
    /// who came. A web member gets a key to show with each request.
    pub fn join(&self, name: &str, web: bool) -> Result<Welcome, String> {
        let mut state = self.state();
        if state.members.contains_key(name) {
            return Err(format!("the name {name} is taken"));
        }
        let id = state.next_member;
        state.next_member += 1;
        let key = web.then(|| self.new_key(id));
        let member = Member {
            id,
            key: key.clone(),
            web,
            last_seen: Instant::now(),
            busy: 0,
            stream: None,
            last_forgotten: 0,
        };
        state.members.insert(name.to_string(), member);
        let since = state.next_line - 1;
        let everyone = names(&state.members);
        state.append(format!("* in the room: {everyone}"), Audience::Only(id));
        state.append(format!("* {name} joined"), Audience::AllBut(id));
        self.changed.notify_all();
        Ok(Welcome {
            member: Membership {
                id,
                name: name.to_string(),
            },
            key: key.unwrap_or_default(),
            since,
        })
    }

    /// 128 bits no one can guess: `RandomState` is seeded by the system's
    /// random source. A real service would use a vetted random generator.
    fn new_key(&self, id: u64) -> String {
        let half = |salt: u64| {
            let mut hasher = self.keys.build_hasher();
            hasher.write_u64(id);
            hasher.write_u64(salt);
            hasher.write_u128(Instant::now().elapsed().as_nanos());
            hasher.finish()
        };
        format!("{:016x}{:016x}", half(1), half(2))
    }

    /// The member whose key this is, now seen again.
    pub fn member_by_key(&self, key: &str) -> Option<Membership> {
        let mut state = self.state();
        let (name, member) = state
            .members
            .iter_mut()
            .find(|(_, member)| member.key.as_deref() == Some(key))?;
        member.last_seen = Instant::now();
        Some(Membership {
            id: member.id,
            name: name.clone(),
        })
    }

    /// Relay `text` to every member but its sender.
    pub fn say(&self, from: &Membership, text: &str) {
        let line = format!("[{}] {text}", from.name);
        self.append(line, Audience::AllBut(from.id));
    }

    /// Send `text` to the one member called `to`.
    pub fn tell(&self, from: &Membership, to: &str, text: &str) -> Result<(), String> {
        let mut state = self.state();
        let Some(recipient) = state.members.get(to).map(|member| member.id) else {
            return Err(format!("no one here is called {to}"));
        };
        let line = format!("[{} -> you] {text}", from.name);
        state.append(line, Audience::Only(recipient));
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Send a line of the server's own to `member` alone: a list, an error.
    pub fn notify(&self, member: &Membership, line: &str) {
        self.append(line.to_string(), Audience::Only(member.id));
    }

    /// The names in the room, as `/who` and a newcomer see them.
    pub fn who(&self, member: &Membership) {
        let mut state = self.state();
        let everyone = names(&state.members);
        state.append(
            format!("* in the room: {everyone}"),
            Audience::Only(member.id),
        );
        drop(state);
        self.changed.notify_all();
    }

    /// Give `member` the name `new`, and tell everyone, the member too.
    pub fn rename(&self, member: &mut Membership, new: &str) -> Result<(), String> {
        let mut state = self.state();
        if state.members.contains_key(new) {
            return Err(format!("the name {new} is taken"));
        }
        let Some(moved) = state.take_own(member) else {
            return Err("you are no longer in the room".to_string());
        };
        state.members.insert(new.to_string(), moved);
        let line = format!("* {} is now {new}", member.name);
        member.name = new.to_string();
        state.append(line, Audience::Everyone);
        drop(state);
        self.changed.notify_all();
        Ok(())
    }

    /// Take `member` out of the room and tell the others.
    pub fn leave(&self, member: &Membership) {
        let mut state = self.state();
        // Gone already if it was dropped; that was announced.
        if state.take_own(member).is_some() {
            state.append(format!("* {} left", member.name), Audience::Everyone);
        }
        drop(state);
        self.changed.notify_all();
    }

    /// Take out every web member not heard from for `idle`, with no request
    /// waiting: a closed tab sends no goodbye.
    pub fn leave_idle(&self, idle: Duration) {
        let mut state = self.state();
        let gone: Vec<String> = state
            .members
            .iter()
            .filter(|(_, m)| m.web && m.busy == 0 && m.last_seen.elapsed() >= idle)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &gone {
            state.members.remove(name);
            state.append(format!("* {name} left"), Audience::Everyone);
        }
        drop(state);
        if !gone.is_empty() {
            self.changed.notify_all();
        }
    }

    fn append(&self, line: String, audience: Audience) {
        self.state().append(line, audience);
        self.changed.notify_all();
    }

    /// A request of `member`'s starts (`true`) or ends (`false`): while one
    /// is served, the member is present even if it says nothing.
    pub fn busy(&self, member: &Membership, starts: bool) {
        let mut state = self.state();
        if let Some(entry) = state.members.get_mut(&member.name) {
            if entry.id == member.id {
                entry.busy = if starts {
                    entry.busy + 1
                } else {
                    entry.busy.saturating_sub(1)
                };
                entry.last_seen = Instant::now();
            }
        }
    }

    /// `stream` now carries the room to `member`, from `cursor` on. A stream
    /// it had before is cut: a reconnecting browser replaces its old one.
    pub fn attach_stream(&self, member: &Membership, stream: &Arc<TcpStream>, cursor: u64) {
        let mut state = self.state();
        // Lines that went before the stream began are not its to deliver.
        let oldest = state.log.front().map_or(state.next_line, |entry| entry.id);
        let streaming = Streaming {
            socket: Arc::clone(stream),
            delivered: cursor.max(oldest - 1),
            began: state.next_line,
        };
        if let Some(entry) = state.members.get_mut(&member.name) {
            if entry.id == member.id {
                if let Some(old) = entry.stream.replace(streaming) {
                    if !Arc::ptr_eq(&old.socket, stream) {
                        let _ = old.socket.shutdown(Shutdown::Both);
                    }
                }
            }
        }
    }

    /// `stream` no longer carries the room to `member`.
    pub fn detach_stream(&self, member: &Membership, stream: &Arc<TcpStream>) {
        let mut state = self.state();
        if let Some(entry) = state.members.get_mut(&member.name) {
            let attached = entry.stream.as_ref();
            let ours = attached.is_some_and(|streaming| Arc::ptr_eq(&streaming.socket, stream));
            if entry.id == member.id && ours {
                entry.stream = None;
            }
        }
    }

    /// The lines after `since` for `member`. With `until`, wait for at least
    /// one (or the member's leaving) until then. A streamed member also
    /// reports here how far its stream has got.
    pub fn lines_after(&self, member: &Membership, since: u64, until: Option<Instant>) -> Batch {
        let mut state = self.state();
        let mut since = since;
        loop {
            let batch = state.read(member, since);
            if !batch.lines.is_empty() || batch.missed > 0 || batch.gone {
                return batch;
            }
            // Every line up to the cursor was for someone else: the next
            // look starts after them.
            since = batch.cursor;
            let Some(until) = until else {
                return batch;
            };
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return batch;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// A stream has written every line up to `cursor` to `member`.
    pub fn delivered(&self, member: &Membership, cursor: u64) {
        let mut state = self.state();
        if let Some(entry) = state.members.get_mut(&member.name) {
            if let (true, Some(streaming)) = (entry.id == member.id, entry.stream.as_mut()) {
                streaming.delivered = cursor;
            }
        }
    }
}

impl State {
    /// Add a line to the log; the oldest goes once the log is full. A
    /// stream that began before that line was said, and had not written it
    /// yet, is a whole log behind: it is cut, and its member dropped, as
    /// lesson 05 drops a member whose outbox is full.
    fn append(&mut self, text: String, audience: Audience) {
        let id = self.next_line;
        self.next_line += 1;
        self.log.push_back(Entry {
            id,
            text: text.into(),
            audience,
        });
        if self.log.len() <= HISTORY {
            return;
        }
        let Some(forgotten) = self.log.pop_front() else {
            return;
        };
        for member in self.members.values_mut() {
            if forgotten.is_for(member.id) {
                member.last_forgotten = forgotten.id;
            }
        }
        let too_slow: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| {
                let behind = member.stream.as_ref().is_some_and(|streaming| {
                    streaming.began <= forgotten.id && streaming.delivered < forgotten.id
                });
                behind && forgotten.is_for(member.id)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in too_slow {
            if let Some(member) = self.members.remove(&name) {
                if let Some(streaming) = member.stream {
                    let _ = streaming.socket.shutdown(Shutdown::Both);
                }
                self.append(
                    format!("* {name} left (dropped: not reading)"),
                    Audience::Everyone,
                );
            }
        }
    }

    /// Remove `member`'s entry, only if its name still belongs to it.
    fn take_own(&mut self, member: &Membership) -> Option<Member> {
        match self.members.get(&member.name) {
            Some(entry) if entry.id == member.id => self.members.remove(&member.name),
            _ => None,
        }
    }

    fn read(&self, member: &Membership, since: u64) -> Batch {
        // A cursor from the future (a restarted server, a typo) reads from now.
        let since = since.min(self.next_line - 1);
        let oldest = self.log.front().map_or(self.next_line, |entry| entry.id);
        let entry = self
            .members
            .get(&member.name)
            .filter(|entry| entry.id == member.id);
        let gone = entry.is_none();
        let missed_one = entry.is_some_and(|entry| entry.last_forgotten > since);
        let lines = self
            .log
            .iter()
            .skip_while(|entry| entry.id <= since)
            .filter(|entry| entry.is_for(member.id))
            .map(|entry| (entry.id, Arc::clone(&entry.text)))
            .collect();
        Batch {
            lines,
            cursor: self.next_line - 1,
            missed: if missed_one {
                oldest.saturating_sub(since + 1)
            } else {
                0
            },
            gone,
        }
    }
}

/// What a member is told when lines went out of the log before it read them.
pub fn missed_notice(count: u64) -> String {
    format!("! you missed {count} lines")
}

fn names(members: &Members) -> String {
    members.keys().cloned().collect::<Vec<_>>().join(", ")
}
