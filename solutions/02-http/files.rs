//! From a request's target to a file inside the root, and the type of a file.

use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};

/// The file that `target` names inside `root`, and what it is (its
/// metadata), or `None` when it names nothing this server may send. `root`
/// must be canonical (see server.rs).
pub fn resolve(root: &Path, target: &str) -> Option<(PathBuf, Metadata)> {
    // The query (`?page=2`) is for programs; a file server ignores it.
    let path = target.split('?').next().unwrap_or_default();
    // Decode first, check after: checked before decoding, `%2e%2e` would
    // pass as a harmless name and become `..` later.
    let path = percent_decode(path)?;
    let mut below_root = PathBuf::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            // Up one folder: out of the root, when at its top. Refused,
            // whatever it was written as (`..`, `%2e%2e`, `.%2E`).
            ".." => return None,
            // A backslash separates folders on Windows; a NUL ends a path
            // for the operating system. Neither belongs in a name here.
            name if name.contains(['\\', '\0']) => return None,
            // One plain name. `push` of a segment that started with `/`
            // would replace the whole path: splitting on `/` rules it out.
            name => below_root.push(name),
        }
    }
    // A folder stands for its index.html. The root is a folder (server.rs
    // checked), so `/` needs no look at the disk to know it.
    if below_root.as_os_str().is_empty() {
        below_root.push("index.html");
    }
    let (mut file, mut metadata) = inside_root(root, &below_root)?;
    if metadata.is_dir() {
        below_root.push("index.html");
        (file, metadata) = inside_root(root, &below_root)?;
    }
    Some((file, metadata))
}

/// The last guard: where `below_root`, taken from `root`, really leads, and
/// what it is there, when that is inside `root`. A symbolic link inside the
/// root may point anywhere on the disk.
fn inside_root(root: &Path, below_root: &Path) -> Option<(PathBuf, Metadata)> {
    // `canonicalize` would answer, but it asks the system about every name
    // of the whole path from `/` to see whether it is a link: a system call
    // each, on every request. Yet the root is canonical already, and the
    // names below it hold no `..`: the path leads where it says unless one
    // of those names is a link. So: one `symlink_metadata` (lstat: what a
    // name is, a link not followed) for each name below the root, and
    // `canonicalize` only when one is a link. The last one says what the
    // file is, too.
    let mut file = root.to_path_buf();
    let mut metadata = None;
    for name in below_root {
        file.push(name);
        let here = fs::symlink_metadata(&file).ok()?;
        if here.is_symlink() {
            let real = root.join(below_root).canonicalize().ok()?;
            if !real.starts_with(root) {
                return None;
            }
            let metadata = real.metadata().ok()?;
            return Some((real, metadata));
        }
        metadata = Some(here);
    }
    Some((file, metadata?))
}

/// `%2e` → `.`: a URL carries some bytes as `%` and two hex digits.
/// `None` for a broken escape, or bytes that do not make UTF-8 text.
fn percent_decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let [high, low, ..] = *after else {
                return None;
            };
            bytes.push(hex_value(high)? * 16 + hex_value(low)?);
            rest = &after[2..];
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

fn hex_value(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

/// The media type a client needs to use a file, from its extension.
pub fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        // "Just bytes": a browser offers to save it rather than guess.
        _ => "application/octet-stream",
    }
}
