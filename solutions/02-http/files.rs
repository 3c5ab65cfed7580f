//! From a request's target to a file inside the root, and the type of a file.

use std::path::{Path, PathBuf};

/// The file that `target` names inside `root`, or `None` when it names
/// nothing this server may send. `root` must be canonical (see server.rs).
pub fn resolve(root: &Path, target: &str) -> Option<PathBuf> {
    // The query (`?page=2`) is for programs; a file server ignores it.
    let path = target.split('?').next().unwrap_or_default();
    // Decode first, check after: checked before decoding, `%2e%2e` would
    // pass as a harmless name and become `..` later.
    let path = percent_decode(path)?;
    let mut file = root.to_path_buf();
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
            name => file.push(name),
        }
    }
    if file.is_dir() {
        file.push("index.html");
    }
    // The last guard: where the path really leads, symbolic links followed.
    // A link inside the root may point anywhere on the disk.
    let real = file.canonicalize().ok()?;
    real.starts_with(root).then_some(real)
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
