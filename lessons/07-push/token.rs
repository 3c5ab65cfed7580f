//! Tokens: 128 random bits, written as 32 hex digits. The service gives one
//! to each device when it registers; with it the service proves to the
//! device that a push is genuine, and the device proves it owns its name.

use std::fs::File;
use std::io::{self, Read};

/// A new token from the system's source of random bytes. Guessable numbers
/// (a counter, the time, a seeded generator) would let anyone who can reach
/// a device's port forge pushes to it.
pub fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|error| io::Error::new(error.kind(), format!("no random bytes: {error}")))?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

/// Whether `presented` is `expected`, in a time that does not depend on
/// where they first differ: a comparison that stops at the first wrong
/// digit tells a patient attacker, by its speed, how many were right.
pub fn same_token(presented: &str, expected: &str) -> bool {
    presented.len() == expected.len()
        && presented
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// Whether `text` looks like a token: 32 hex digits.
pub fn is_token(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}
