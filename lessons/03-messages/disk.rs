//! Messages on disk, with `--data DIR`: one file per message, in a folder
//! per user, `DIR/<user>/<id>.msg`, holding the sender's name, a `\n`, and
//! the body. A file per message makes FETCH a delete, and a crash can only
//! ever leave a whole message or none. `DIR/next.id` holds the first id not
//! yet reserved (see `reserve_ids`); no user's folder can take that name,
//! because a name has no `.`. `DIR/server.lock` says which server owns the
//! folder (see `claim`).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::mailbox::Message;
use crate::protocol::check_name;

const NEXT_ID_FILE: &str = "next.id";
const LOCK_FILE: &str = "server.lock";
const PROBE_FILE: &str = "probe.tmp";

pub struct Disk {
    folder: PathBuf,
    /// Open, and locked, for as long as the server runs (see `claim`).
    _lock: File,
}

impl Disk {
    /// Open `folder` for this server alone, or say in one line why not:
    /// every failure here stops the server before it says `listening on`.
    pub fn open(folder: &Path) -> Result<Disk> {
        let name = folder.display();
        fs::create_dir_all(folder).with_context(|| format!("cannot create {name}"))?;
        // Found now, not at the first SEND: a server that cannot save would
        // otherwise listen, and refuse every message it is sent.
        check_writable(folder).with_context(|| format!("cannot write in {name}"))?;
        let lock = claim(folder)?;
        Ok(Disk {
            folder: folder.to_path_buf(),
            _lock: lock,
        })
    }

    /// Save `message` for `to`, and return only once it is on the disk.
    pub fn save(&self, to: &str, message: &Message) -> io::Result<()> {
        let folder = self.folder.join(to);
        match fs::create_dir(&folder) {
            // A new folder is a new entry in DIR: make that durable too.
            Ok(()) => sync_folder(&self.folder)?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        let contents = [message.from.as_bytes(), b"\n", &message.body];
        write_durably(&folder, &message_file(message.id), &contents)
    }

    /// Delete the messages of `user` that have been fetched, and return only
    /// once they are gone from the disk.
    pub fn remove(&self, user: &str, messages: &[Message]) -> io::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let folder = self.folder.join(user);
        for message in messages {
            fs::remove_file(folder.join(message_file(message.id)))?;
        }
        // A delete changes the folder, not a file: unless the folder is
        // synced, a power cut may bring the messages back, to be fetched a
        // second time. One sync covers every file removed above.
        sync_folder(&folder)
    }

    /// Record that ids below `end` may be handed out. Once this returns, a
    /// restarted server starts at `end` at the earliest (`next_id`), even
    /// when every message below it has been fetched and deleted.
    pub fn reserve_ids(&self, end: u64) -> io::Result<()> {
        write_durably(&self.folder, NEXT_ID_FILE, &[format!("{end}\n").as_bytes()])
    }

    /// The first id that no message can have had: the end of the last
    /// reservation, or 1 in a new folder.
    pub fn next_id(&self) -> io::Result<u64> {
        match fs::read_to_string(self.folder.join(NEXT_ID_FILE)) {
            Ok(text) => text.trim().parse().map_err(|_| {
                let what = format!("{NEXT_ID_FILE} does not hold a number");
                io::Error::new(io::ErrorKind::InvalidData, what)
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(1),
            Err(error) => Err(error),
        }
    }

    /// Every saved message with its recipient, oldest first.
    pub fn load(&self) -> io::Result<Vec<(String, Message)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.folder)? {
            let entry = entry?;
            let user = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() || check_name(&user).is_err() {
                continue;
            }
            for file in fs::read_dir(entry.path())? {
                let path = file?.path();
                match path.extension().and_then(|ending| ending.to_str()) {
                    Some("msg") => {
                        if let Some(message) = read_message(&path)? {
                            found.push((user.clone(), message));
                        }
                    }
                    // A save the server never acknowledged.
                    Some("tmp") => fs::remove_file(&path)?,
                    _ => {}
                }
            }
        }
        found.sort_by_key(|(_, message)| message.id);
        Ok(found)
    }
}

/// Lock `folder` for this server, with the pid in the lock file for people
/// to read. Two servers on one folder would each hand out the same ids and
/// overwrite each other's files: each `OK` promises a message that only the
/// server that wrote it knows about. The system drops the lock when the
/// process ends, however it ends: a crash leaves no stale lock behind.
fn claim(folder: &Path) -> Result<File> {
    let path = folder.join(LOCK_FILE);
    // Not truncated on open: until we hold the lock, the pid in it is the
    // owner's.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let owner = match text.lines().next().map(str::parse::<u32>) {
                Some(Ok(pid)) => format!("pid {pid}"),
                _ => "pid unknown".to_string(),
            };
            bail!("{} is in use by another server ({owner})", folder.display());
        }
        Err(TryLockError::Error(error)) => {
            return Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
    // Written over the old pid, then cut to its length: a second server
    // that reads meanwhile never finds the first line cut short.
    let pid = format!("{}\n", std::process::id());
    file.write_all(pid.as_bytes())
        .and_then(|()| file.set_len(pid.len() as u64))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// Create, write and remove a file in `folder`.
fn check_writable(folder: &Path) -> io::Result<()> {
    let probe = folder.join(PROBE_FILE);
    File::create(&probe)?.write_all(b"probe")?;
    fs::remove_file(probe)
}

/// The file name of message `id`: zero-padded, so names sort as ids do.
fn message_file(id: u64) -> String {
    format!("{id:020}.msg")
}

/// Write `contents` to `folder/name`, and return only once they are on the
/// disk, whole.
fn write_durably(folder: &Path, name: &str, contents: &[&[u8]]) -> io::Result<()> {
    // Written under a temporary name first: a crash halfway leaves a `.tmp`
    // file, never half a file under the real name.
    let temporary = folder.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    for part in contents {
        file.write_all(part)?;
    }
    // TODO 4 (slides/03-messages.md, "By memory, by disk, by network"):
    // the bytes are in the kernel's cache, under the temporary name. Make
    // them durable before the server may answer `OK <id>`: sync the file
    // (`sync_all`), rename it to `name` in `folder` (the name `load` and
    // `next_id` read), and sync the folder (`sync_folder`), which holds the
    // new name.
    Ok(())
}

/// One saved message; `None` for a file that is not one of ours.
fn read_message(path: &Path) -> io::Result<Option<Message>> {
    let Some(id) = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
    else {
        return Ok(None);
    };
    let bytes = fs::read(path)?;
    let Some(end) = bytes.iter().position(|&byte| byte == b'\n') else {
        return Ok(None);
    };
    Ok(Some(Message {
        id,
        from: String::from_utf8_lossy(&bytes[..end]).into_owned(),
        body: bytes[end + 1..].to_vec(),
    }))
}

/// Make a folder's entries (new names, renames, deletes) durable.
fn sync_folder(folder: &Path) -> io::Result<()> {
    // On Unix a folder opens like a file, and fsync on it saves its entries.
    // Windows cannot open a folder this way, and keeps names by itself.
    if cfg!(unix) {
        File::open(folder)?.sync_all()?;
    }
    Ok(())
}
