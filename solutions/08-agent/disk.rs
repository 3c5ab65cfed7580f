//! Notifications on disk, with `--data DIR`: one file per waiting
//! notification, `DIR/<device>/<app>/<id>.note`, holding its expiry (Unix
//! milliseconds), its collapse key (`-` for none) and its text, a line each. A
//! file per notification makes an acknowledgement a delete, and a crash can
//! only ever leave a whole notification or none. `DIR/next.id` holds the
//! first stream id not yet reserved: ids never go back, even after a
//! restart, or an agent would take a new notification for one it has shown.
//! `DIR/server.lock` says which server owns the folder (see `claim`).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::protocol;
use crate::store::Note;

const NEXT_ID_FILE: &str = "next.id";
const LOCK_FILE: &str = "server.lock";

pub struct Disk {
    folder: PathBuf,
    /// Open, and locked, for as long as the server runs (see `claim`).
    _lock: File,
}

impl Disk {
    /// Open `folder` for this server alone, or say in one line why not.
    pub fn open(folder: &Path) -> Result<Disk> {
        fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        let lock = claim(folder)?;
        Ok(Disk {
            folder: folder.to_path_buf(),
            _lock: lock,
        })
    }

    /// Save `note` for `device/app`, and return only once it is on the disk.
    pub fn save(&self, device: &str, app: &str, note: &Note) -> io::Result<()> {
        let device_folder = self.folder.join(device);
        make_folder(&self.folder, &device_folder)?;
        let folder = device_folder.join(app);
        make_folder(&device_folder, &folder)?;
        let collapse = note.collapse.as_deref().unwrap_or("-");
        let contents = format!("{}\n{collapse}\n{}", note.expires, note.text);
        write_durably(&folder, &note_file(note.id), contents.as_bytes())
    }

    /// Delete notifications of `device/app` that are shown or expired, and
    /// return only once they are gone from the disk.
    pub fn remove(&self, device: &str, app: &str, ids: &[u64]) -> io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let folder = self.folder.join(device).join(app);
        for id in ids {
            fs::remove_file(folder.join(note_file(*id)))?;
        }
        // Unsynced, a delete may come back after a power cut; the agent
        // would then be sent a notification it has shown, and skip it by its
        // stream id. Synced, it never comes back.
        sync_folder(&folder)
    }

    /// Record that ids below `end` may be handed out.
    pub fn reserve_ids(&self, end: u64) -> io::Result<()> {
        write_durably(&self.folder, NEXT_ID_FILE, format!("{end}\n").as_bytes())
    }

    /// The first id no notification can have had (1 in a new folder).
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

    /// Every saved notification as (device, app, note), oldest first.
    pub fn load(&self) -> io::Result<Vec<(String, String, Note)>> {
        let mut found = Vec::new();
        for device in subfolders(&self.folder)? {
            for app in subfolders(&self.folder.join(&device))? {
                let folder = self.folder.join(&device).join(&app);
                for file in fs::read_dir(&folder)? {
                    let path = file?.path();
                    match path.extension().and_then(|ending| ending.to_str()) {
                        Some("note") => {
                            if let Some(note) = read_note(&path)? {
                                found.push((device.clone(), app.clone(), note));
                            }
                        }
                        // A save the service never acknowledged.
                        Some("tmp") => fs::remove_file(&path)?,
                        _ => {}
                    }
                }
            }
        }
        found.sort_by_key(|(_, _, note)| note.id);
        Ok(found)
    }
}

/// Lock `folder` for this server, with the pid in the lock file for people
/// to read. Two servers on one folder would hand out the same stream ids
/// and delete each other's files. The system drops the lock when the
/// process ends, however it ends: a SIGKILL leaves no stale lock behind.
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
    let pid = format!("{}\n", std::process::id());
    file.write_all(pid.as_bytes())
        .and_then(|()| file.set_len(pid.len() as u64))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// The folders in `folder` whose names are names of this protocol.
fn subfolders(folder: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(folder)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() && protocol::name(&name).is_ok() {
            names.push(name);
        }
    }
    Ok(names)
}

/// Make `folder` inside `parent`, durably, if it is not there.
fn make_folder(parent: &Path, folder: &Path) -> io::Result<()> {
    match fs::create_dir(folder) {
        Ok(()) => sync_folder(parent),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// The file name of notification `id`: zero-padded, so names sort as ids do.
fn note_file(id: u64) -> String {
    format!("{id:020}.note")
}

/// Write `contents` to `folder/name`, and return only once they are on the
/// disk, whole: a temporary file, fsync, rename, fsync of the folder.
fn write_durably(folder: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let temporary = folder.join(format!("{name}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&temporary, folder.join(name))?;
    sync_folder(folder)
}

/// One saved notification; `None` for a file that is not one of ours.
fn read_note(path: &Path) -> io::Result<Option<Note>> {
    let Some(id) = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .and_then(|stem| stem.parse().ok())
    else {
        return Ok(None);
    };
    let contents = fs::read_to_string(path)?;
    let mut lines = contents.splitn(3, '\n');
    let (Some(expires), Some(collapse), Some(text)) = (lines.next(), lines.next(), lines.next())
    else {
        return Ok(None);
    };
    let Ok(expires) = expires.parse() else {
        return Ok(None);
    };
    Ok(Some(Note {
        id,
        expires,
        collapse: (collapse != "-").then(|| collapse.to_string()),
        text: text.to_string(),
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
