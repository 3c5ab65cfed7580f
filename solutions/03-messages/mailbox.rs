//! The messages waiting for each user, in memory, and on disk too when the
//! server runs with `--data`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::Path;

use anyhow::{Context, Result};

use crate::disk::Disk;

/// At most this many bytes of bodies wait in the whole server, and at most
/// this many messages: a full server refuses a SEND rather than grow.
const MAX_STORED_BYTES: usize = 64 << 20;
const MAX_STORED_MESSAGES: usize = 100_000;
/// With `--data`, ids are reserved on disk this many at a time: one more
/// fsync per thousand SENDs, not per SEND. A restart skips what was left of
/// the block, so ids jump, but they never repeat.
const ID_BLOCK: u64 = 1000;

/// One message, as FETCH sends it.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: u64,
    pub from: String,
    pub body: Vec<u8>,
}

/// Why a message was not taken.
pub enum Undelivered {
    /// The server holds as much as it may.
    Full,
    /// Writing it to disk failed; no `OK` may be sent for it.
    Disk(io::Error),
}

pub struct Mailbox {
    /// Each user's messages, oldest first.
    waiting: HashMap<String, VecDeque<Message>>,
    next_id: u64,
    /// With `--data`, ids below this are recorded on disk as handed out.
    reserved_ids: u64,
    stored_bytes: usize,
    stored_messages: usize,
    /// Where messages are kept across restarts, with `--data`.
    disk: Option<Disk>,
}

impl Mailbox {
    /// An empty mailbox in memory, or, with a folder, the one saved there.
    pub fn open(folder: Option<&Path>) -> Result<Mailbox> {
        let mut mailbox = Mailbox {
            waiting: HashMap::new(),
            next_id: 1,
            reserved_ids: 1,
            stored_bytes: 0,
            stored_messages: 0,
            disk: None,
        };
        if let Some(folder) = folder {
            let disk = Disk::open(folder)?;
            // Ids go on after every id ever reserved, not after the highest
            // message left: the newest messages may have been fetched and
            // deleted, and an id is never reused, even after a restart.
            let unreadable = || format!("cannot read the messages in {}", folder.display());
            mailbox.next_id = disk.next_id().with_context(unreadable)?;
            for (to, message) in disk.load().with_context(unreadable)? {
                // Saved messages are below the reservation; this matters
                // only for a folder without `next.id`, or one edited by hand.
                mailbox.next_id = mailbox.next_id.max(message.id + 1);
                mailbox.keep(&to, message);
            }
            mailbox.reserved_ids = mailbox.next_id;
            mailbox.disk = Some(disk);
        }
        Ok(mailbox)
    }

    /// Take a message for `to` and give it an id. With `--data`, it is on
    /// disk when this returns: only then may the server answer `OK <id>`.
    pub fn deliver(&mut self, from: &str, to: &str, body: Vec<u8>) -> Result<u64, Undelivered> {
        if self.stored_messages >= MAX_STORED_MESSAGES
            || self.stored_bytes + body.len() > MAX_STORED_BYTES
        {
            return Err(Undelivered::Full);
        }
        let message = Message {
            id: self.next_id,
            from: from.to_string(),
            body,
        };
        if let Some(disk) = &self.disk {
            if message.id >= self.reserved_ids {
                // On disk before the id goes out in an `OK`: a restart after
                // a SIGKILL right then still starts past it.
                let end = message.id + ID_BLOCK;
                disk.reserve_ids(end).map_err(Undelivered::Disk)?;
                self.reserved_ids = end;
            }
            disk.save(to, &message).map_err(Undelivered::Disk)?;
        }
        self.next_id += 1;
        let id = message.id;
        self.keep(to, message);
        Ok(id)
    }

    /// How many messages wait for `user`.
    pub fn count(&self, user: &str) -> usize {
        self.waiting.get(user).map_or(0, VecDeque::len)
    }

    /// Every message waiting for `user`, oldest first; they are removed.
    pub fn take_all(&mut self, user: &str) -> Vec<Message> {
        let messages: Vec<Message> = self.waiting.remove(user).unwrap_or_default().into();
        for message in &messages {
            self.stored_messages -= 1;
            self.stored_bytes -= message.body.len();
        }
        if let Some(disk) = &self.disk {
            // The messages are on their way to the reader; a file left
            // behind would deliver one a second time after a restart.
            if let Err(error) = disk.remove(user, &messages) {
                eprintln!("could not remove the messages {user} fetched: {error}");
            }
        }
        messages
    }

    fn keep(&mut self, to: &str, message: Message) {
        self.stored_messages += 1;
        self.stored_bytes += message.body.len();
        self.waiting
            .entry(to.to_string())
            .or_default()
            .push_back(message);
    }
}
