//! Showing bytes to a person: escaped so that `\r\n`, a missing newline or a
//! zero byte are visible, and compared with a caret under the first byte that
//! differs.

/// How many bytes of one piece of data a report shows before it elides.
pub const SHOWN_BYTES: usize = 96;

/// Bytes shown before the first difference, so the reader sees where it is.
const CONTEXT_BEFORE: usize = 24;

/// One byte as a person reads it: printable ASCII as itself, the usual
/// escapes, `\xNN` for everything else.
pub fn escape_byte(byte: u8) -> String {
    match byte {
        b'\n' => "\\n".into(),
        b'\r' => "\\r".into(),
        b'\t' => "\\t".into(),
        b'\0' => "\\0".into(),
        b'\\' => "\\\\".into(),
        b'"' => "\\\"".into(),
        0x20..=0x7e => (byte as char).to_string(),
        _ => format!("\\x{byte:02x}"),
    }
}

/// Bytes as a quoted string, elided past [`SHOWN_BYTES`] with a count of what
/// was left out: `"hello\n"`, `"\x00\x01…" (1048576 bytes)`.
pub fn escape(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let mut text = String::from("\"");
    for &byte in shown {
        text.push_str(&escape_byte(byte));
    }
    if shown.len() < bytes.len() {
        text.push_str(&format!("…\" ({} bytes in all)", bytes.len()));
    } else {
        text.push('"');
    }
    text
}

/// Text for a terminal with every character that could act on it made
/// visible: control characters (ESC, which starts colour and cursor commands
/// and window titles; `\r`, which returns to the start of a line; BEL; DEL;
/// the C1 range) and the invisible characters that reorder or hide text.
/// Newlines stay, as the lines of the text.
pub fn visible(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => shown.push('\n'),
            '\r' => shown.push_str("\\r"),
            '\t' => shown.push_str("\\t"),
            c if c.is_ascii_control() => shown.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() || acts_unseen(c) => {
                shown.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => shown.push(c),
        }
    }
    shown
}

/// Characters that print nothing but change how the text around them is
/// shown: zero-width ones and bidirectional overrides.
fn acts_unseen(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// The index of the first byte where `received` departs from `expected`, or
/// `None` when they are equal. A received value that stops early departs
/// where it stops.
pub fn first_difference(expected: &[u8], received: &[u8]) -> Option<usize> {
    let common = expected.len().min(received.len());
    match (0..common).find(|&i| expected[i] != received[i]) {
        Some(index) => Some(index),
        None if expected.len() == received.len() => None,
        None => Some(common),
    }
}

/// Expected against received, a line each, with a caret under the first byte
/// that differs. Long values are shown as a window around that byte.
///
/// ```text
/// expected: "hello\n"
/// received: "hel"
///               ^ first difference at byte 3: expected "l", received nothing more
/// ```
pub fn compare(expected: &[u8], received: &[u8]) -> String {
    let Some(at) = first_difference(expected, received) else {
        return format!("expected: {}\nreceived: the same bytes", escape(expected));
    };
    let start = at.saturating_sub(CONTEXT_BEFORE);
    let (expected_text, caret_column) = window(expected, start, at);
    let (received_text, _) = window(received, start, at);
    let wanted = match expected.get(at) {
        Some(&byte) => format!("\"{}\"", escape_byte(byte)),
        None => "nothing more".to_string(),
    };
    let got = match received.get(at) {
        Some(&byte) => format!("\"{}\"", escape_byte(byte)),
        None => "nothing more".to_string(),
    };
    let label = "received: ";
    format!(
        "expected: {expected_text}\n{label}{received_text}\n{pad}^ first difference at byte {at}: expected {wanted}, received {got}",
        pad = " ".repeat(label.len() + caret_column),
    )
}

/// `bytes[start..]` escaped and quoted (with `…` where it is cut), and the
/// column at which byte `at` is shown.
fn window(bytes: &[u8], start: usize, at: usize) -> (String, usize) {
    let start = start.min(bytes.len());
    let end = bytes.len().min(start + SHOWN_BYTES);
    let mut text = String::from("\"");
    if start > 0 {
        text.push('…');
    }
    let mut caret_column = None;
    for (index, &byte) in bytes.iter().enumerate().take(end).skip(start) {
        if index == at {
            caret_column = Some(text.chars().count());
        }
        text.push_str(&escape_byte(byte));
    }
    let caret_column = caret_column.unwrap_or(text.chars().count());
    text.push('"');
    if end < bytes.len() {
        text.push_str(&format!("… ({} bytes in all)", bytes.len()));
    }
    (text, caret_column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_hide() {
        assert_eq!(escape(b"a\r\n\0\x7f\"\\"), r#""a\r\n\0\x7f\"\\""#);
    }

    #[test]
    fn text_for_a_terminal_keeps_lines_and_shows_what_would_act_on_it() {
        let hostile = "ok\n\x1b[2J\x1b]0;pwned\x07fake\rPASS\u{202e}\u{9b}";
        assert_eq!(
            visible(hostile),
            r"ok
\x1b[2J\x1b]0;pwned\x07fake\rPASS\u{202e}\u{009b}"
        );
        assert_eq!(visible("plain → text ✓"), "plain → text ✓");
    }

    #[test]
    fn long_values_are_elided_with_their_length() {
        let text = escape(&[b'a'; 200]);
        assert!(text.ends_with("…\" (200 bytes in all)"), "{text}");
    }

    #[test]
    fn caret_points_at_the_first_difference() {
        let shown = compare(b"hello\n", b"help\n");
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], r#"expected: "hello\n""#);
        assert_eq!(lines[1], r#"received: "help\n""#);
        let caret = lines[2].find('^').unwrap();
        assert_eq!(lines[1].chars().nth(caret), Some('p'));
        assert!(lines[2].ends_with(r#"byte 3: expected "l", received "p""#));
    }

    #[test]
    fn caret_counts_escapes_as_they_are_shown() {
        let shown = compare(b"\r\nab", b"\r\nax");
        let lines: Vec<&str> = shown.lines().collect();
        let caret = lines[2].find('^').unwrap();
        assert_eq!(lines[1].chars().nth(caret), Some('x'));
    }

    #[test]
    fn a_short_reply_differs_where_it_stops() {
        assert_eq!(first_difference(b"hello", b"hel"), Some(3));
        assert_eq!(first_difference(b"hel", b"hello"), Some(3));
        assert_eq!(first_difference(b"same", b"same"), None);
        assert!(compare(b"hello", b"hel").contains("received nothing more"));
    }

    #[test]
    fn a_difference_deep_in_a_payload_is_shown_in_a_window() {
        let expected = vec![b'x'; 100_000];
        let mut received = expected.clone();
        received[70_000] = b'y';
        let shown = compare(&expected, &received);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[0].starts_with("expected: \"…"), "{shown}");
        let caret = lines[2].find('^').unwrap();
        assert_eq!(lines[1].chars().nth(caret), Some('y'));
        assert!(lines[2].contains("byte 70000"));
    }
}
