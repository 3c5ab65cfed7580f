//! The bytes of small files, kept in memory, checked on every request.
//!
//! Sending a file from the disk costs four system calls besides the request
//! and the answer: open, fstat, read, close. A site's pages are few and
//! small, and asked for again and again; kept in memory, each costs none of
//! those. What a cache must never do is answer with a file that has changed:
//! so an entry is used only while the file's metadata, which files.rs reads
//! for every request anyway (its `lstat`), still says it is the same file:
//! the same length, the same modification time, and on Unix the same inode
//! (a file replaced by another under its name is a new inode) with the
//! same change time.
//!
//! nginx keeps open files the same way (`open_file_cache`, off by default);
//! a CDN keeps whole responses. Both bound the memory it takes, as here:
//! at most MOST_FILES files of at most LARGEST_FILE bytes, 16 MiB.

use std::collections::HashMap;
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

/// A file larger than this is sent from the disk, in pieces, every time.
pub const LARGEST_FILE: u64 = 64 * 1024;

/// Once this many files are kept, no more are: memory stays bounded. A real
/// cache would evict the one used least recently instead.
const MOST_FILES: usize = 256;

/// How long a file must have stayed unchanged to be kept.
const SETTLED: Duration = Duration::from_secs(1);

/// The one cache of the server, shared by every connection's thread.
pub static FILES: LazyLock<FileCache> = LazyLock::new(FileCache::default);

#[derive(Default)]
pub struct FileCache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
}

struct Entry {
    seen: Identity,
    bytes: Arc<[u8]>,
}

/// What says a file is still the one whose bytes are kept.
#[derive(PartialEq, Eq)]
struct Identity {
    length: u64,
    modified: Option<SystemTime>,
    /// On Unix: the inode, and when the inode last changed (ctime). A
    /// program may set a file's modification time back (`cp -p`, `touch
    /// -r`); no program can set its ctime, which every write moves.
    inode: (u64, i64, i64),
}

impl Identity {
    fn of(metadata: &Metadata) -> Identity {
        Identity {
            length: metadata.len(),
            modified: metadata.modified().ok(),
            inode: inode(metadata),
        }
    }
}

#[cfg(unix)]
fn inode(metadata: &Metadata) -> (u64, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.ino(), metadata.ctime(), metadata.ctime_nsec())
}

#[cfg(not(unix))]
fn inode(_metadata: &Metadata) -> (u64, i64, i64) {
    (0, 0, 0)
}

impl FileCache {
    /// The kept bytes of `path`, if it is still the file they came from.
    pub fn get(&self, path: &Path, now: &Metadata) -> Option<Arc<[u8]>> {
        let mut entries = self.entries();
        let entry = entries.get(path)?;
        if entry.seen == Identity::of(now) {
            return Some(Arc::clone(&entry.bytes));
        }
        // Changed since: the next read of it from the disk takes its place.
        entries.remove(path);
        None
    }

    /// Keep the bytes of `path`, read from the file `read_from` describes,
    /// unless it changed less than SETTLED ago.
    pub fn put(&self, path: &Path, read_from: &Metadata, bytes: Arc<[u8]>) {
        // A file's modification time is stamped from a clock that moves in
        // steps of some milliseconds: two writes close together can leave
        // the same time, and the same length. A file that has not changed
        // for SETTLED cannot be in that case: its next change gets a later
        // time. (git treats its index the same way: "racy git".)
        let settled = read_from
            .modified()
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age >= SETTLED);
        if !settled {
            return;
        }
        let mut entries = self.entries();
        if entries.len() < MOST_FILES || entries.contains_key(path) {
            let seen = Identity::of(read_from);
            entries.insert(path.to_path_buf(), Entry { seen, bytes });
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // A thread that panicked while holding the lock left the map whole:
        // every change to it is one insert or one remove.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
