//! Messages on disk, with `--data DIR`: one file per message, in a folder
//! per user, `DIR/<user>/<id>.msg`, holding the sender's name, a `\n`, and
//! the body. A file per message makes FETCH a delete, and a crash can only
//! ever leave a whole message or none.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::mailbox::Message;
use crate::protocol::check_name;

pub struct Disk {
    folder: PathBuf,
}

impl Disk {
    pub fn open(folder: &Path) -> io::Result<Disk> {
        fs::create_dir_all(folder)?;
        Ok(Disk {
            folder: folder.to_path_buf(),
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
        let name = format!("{:020}", message.id);
        // Written under a temporary name first: a crash halfway leaves a
        // `.tmp` file, which `load` removes, never half a message.
        let temporary = folder.join(format!("{name}.tmp"));
        let mut file = File::create(&temporary)?;
        file.write_all(message.from.as_bytes())?;
        file.write_all(b"\n")?;
        file.write_all(&message.body)?;
        // TODO 4 (slides/03-messages.md, "By memory, by disk, by network"):
        // the bytes are in the kernel's cache, under the temporary name. Make
        // the message durable before the server may answer `OK <id>`: sync
        // the file (`sync_all`), rename it to `<name>.msg` in `folder` (the
        // name `load` reads), and sync the folder (`sync_folder`), which
        // holds the new name.
        Ok(())
    }

    /// Delete a message that has been fetched.
    pub fn remove(&self, user: &str, id: u64) -> io::Result<()> {
        fs::remove_file(self.folder.join(user).join(format!("{id:020}.msg")))
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

/// Make a folder's entries (new names, renames) durable.
fn sync_folder(folder: &Path) -> io::Result<()> {
    // On Unix a folder opens like a file, and fsync on it saves its entries.
    // Windows cannot open a folder this way, and keeps names by itself.
    if cfg!(unix) {
        File::open(folder)?.sync_all()?;
    }
    Ok(())
}
