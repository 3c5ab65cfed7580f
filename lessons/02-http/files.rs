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
    // TODO 5 (slides/02-http.md, "Path traversal"): this naive join lets
    // `/../secret.txt` (and `/%2e%2e/secret.txt`, once decoded) walk out of
    // the root, and follows a symbolic link inside the root wherever it
    // leads. (The trim keeps `//etc/passwd` inside the root: `join` of a
    // path that starts with `/` would replace the root altogether.) Build
    // `below_root` one `/`-separated segment at a time: skip empty segments
    // and `.`, refuse `..` and names holding a backslash or a NUL (return
    // None). Then write the last guard, fn inside_root below.
    let mut below_root = PathBuf::from(path.trim_start_matches('/'));
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
    // TODO 5, the last guard (slides/02-http.md, "Path traversal"): a
    // symbolic link inside the root may lead anywhere on the disk, and this
    // stand-in follows it. `canonicalize` the file (it follows every link)
    // and answer None unless the result `starts_with(root)`; then answer the
    // result, with its `metadata()`. (The same, in fewer system calls: the
    // slide "Path traversal, faster".)
    let file = root.join(below_root);
    let metadata = file.metadata().ok()?;
    Some((file, metadata))
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
    // TODO 3 (slides/02-http.md, "Content-Type"): look at the extension of
    // `path` (ignoring case) and answer the type a client needs: html, css,
    // js, json, txt, png, jpg and jpeg, gif, svg, and
    // `application/octet-stream` for anything else. Text types carry
    // `; charset=utf-8`.
    // Until then, a stand-in: everything is called HTML.
    "text/html; charset=utf-8"
}
