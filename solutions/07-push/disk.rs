//! Devices and notifications on disk, with `--data DIR`, in lesson 03's
//! way: a folder per device, `DIR/<name>/`, holding `device` (its token,
//! its callback and how many notifications it lost) and a file per
//! notification, `<id>.note` (a header line, then the body). Every file is
//! written under a temporary name, synced and renamed, so a crash leaves a
//! whole file or none. `DIR/next.id` holds the first id not yet reserved;
//! `DIR/server.lock` says which server owns the folder (see `claim`).

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::service::{Notification, SavedDevice};
use crate::wire::check_name;

const NEXT_ID_FILE: &str = "next.id";
const LOCK_FILE: &str = "server.lock";
const DEVICE_FILE: &str = "device";

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

    /// Save what the service knows of device `name`, and return only once
    /// it is on the disk.
    pub fn save_device(&self, name: &str, device: &SavedDevice) -> io::Result<()> {
        let folder = self.device_folder(name)?;
        let callback = device
            .callback
            .map_or("-".to_string(), |addr| addr.to_string());
        let text = format!("{}\n{callback}\n{}\n", device.token, device.lost);
        write_durably(&folder, DEVICE_FILE, &[text.as_bytes()])
    }

    /// Save a notification for `to`, and return only once it is on the disk.
    pub fn save(&self, to: &str, note: &Notification) -> io::Result<()> {
        let folder = self.device_folder(to)?;
        let expires = note.expires.map_or("-".to_string(), |at| at.to_string());
        let collapse = note.collapse.as_deref().unwrap_or("-");
        let header = format!("{} {expires} {collapse}\n", note.from);
        write_durably(
            &folder,
            &note_file(note.id),
            &[header.as_bytes(), &note.body],
        )
    }

    /// Delete notifications of `name` (delivered, expired, replaced or
    /// dropped), and return only once they are gone from the disk.
    pub fn remove(&self, name: &str, ids: &[u64]) -> io::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let folder = self.folder.join(name);
        for id in ids {
            match fs::remove_file(folder.join(note_file(*id))) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        // A delete changes the folder: unless it is synced, a power cut may
        // bring a delivered notification back, to be shown a second time.
        sync_folder(&folder)
    }

    /// Record that ids below `end` may be handed out (lesson 03's
    /// reservation: ids never repeat, even across restarts).
    pub fn reserve_ids(&self, end: u64) -> io::Result<()> {
        write_durably(&self.folder, NEXT_ID_FILE, &[format!("{end}\n").as_bytes()])
    }

    /// The first id that no notification can have had.
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

    /// Every saved device, with its notifications oldest first.
    pub fn load(&self) -> io::Result<Vec<(String, SavedDevice, Vec<Notification>)>> {
        let mut found = Vec::new();
        for entry in fs::read_dir(&self.folder)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() || check_name(&name).is_err() {
                continue;
            }
            let Some(device) = read_device(&entry.path().join(DEVICE_FILE))? else {
                continue;
            };
            let mut notes = Vec::new();
            for file in fs::read_dir(entry.path())? {
                let path = file?.path();
                match path.extension().and_then(|ending| ending.to_str()) {
                    Some("note") => notes.extend(read_note(&path)?),
                    // A save the server never acknowledged.
                    Some("tmp") => fs::remove_file(&path)?,
                    _ => {}
                }
            }
            notes.sort_by_key(|note: &Notification| note.id);
            found.push((name, device, notes));
        }
        Ok(found)
    }

    /// `DIR/<name>`, made (and its name made durable) if it is new.
    fn device_folder(&self, name: &str) -> io::Result<PathBuf> {
        let folder = self.folder.join(name);
        match fs::create_dir(&folder) {
            Ok(()) => sync_folder(&self.folder)?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
        Ok(folder)
    }
}

/// Lock `folder` for this server, with the pid in the lock file for people
/// to read. Two servers on one folder would hand out the same ids and
/// delete each other's files. The system drops the lock when the process
/// ends, however it ends: a SIGKILL leaves no stale lock behind.
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

/// The file name of notification `id`: zero-padded, so names sort as ids do.
fn note_file(id: u64) -> String {
    format!("{id:020}.note")
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
    // `write` only hands the bytes to the kernel's cache, which a power
    // cut loses. `sync_all` (fsync) returns once the device has them.
    file.sync_all()?;
    fs::rename(&temporary, folder.join(name))?;
    // The new name lives in the folder: fsync the folder, or a power cut
    // may keep the bytes and lose the name.
    sync_folder(folder)
}

/// A saved device; `None` for a file that is not one of ours.
fn read_device(path: &Path) -> io::Result<Option<SavedDevice>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut lines = text.lines();
    let (Some(token), Some(callback), Some(lost)) = (lines.next(), lines.next(), lines.next())
    else {
        return Ok(None);
    };
    Ok(Some(SavedDevice {
        token: token.to_string(),
        callback: callback.parse().ok(),
        lost: lost.parse().unwrap_or(0),
    }))
}

/// One saved notification; `None` for a file that is not one of ours.
fn read_note(path: &Path) -> io::Result<Option<Notification>> {
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
    let header = String::from_utf8_lossy(&bytes[..end]);
    let fields: Vec<&str> = header.split(' ').collect();
    let [from, expires, collapse] = fields[..] else {
        return Ok(None);
    };
    Ok(Some(Notification {
        id,
        from: from.to_string(),
        body: bytes[end + 1..].to_vec(),
        expires: expires.parse().ok(),
        collapse: (collapse != "-").then(|| collapse.to_string()),
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
