//! The mailbox protocol of lessons 03 and 04, as their stages speak it.

use crate::harness::conn::Conn;
use crate::harness::failure::Check;

/// The longest request or reply line, its `\n` included.
pub const MAX_LINE: usize = 1024;

/// Read `OK <id>\n`, the answer to a SEND, and return the id.
pub fn expect_id(conn: &mut Conn) -> Check<u64> {
    let line = conn.read_line(MAX_LINE)?;
    let id = std::str::from_utf8(&line)
        .ok()
        .and_then(|text| text.strip_prefix("OK "))
        .and_then(|text| text.strip_suffix('\n'))
        .and_then(|id| id.parse().ok());
    id.ok_or_else(|| {
        conn.fail("SEND should be answered `OK <id>`, a number that names the message")
            .bytes(b"OK <id>\n", &line)
    })
}

/// Log in as `user` and ask COUNT of a new, empty mailbox server: `OK`,
/// then `OK 0`. Proof that a mailbox server, and a fresh one, answered.
pub fn expect_fresh_mailbox(conn: &mut Conn, user: &str) -> Check<()> {
    conn.send(format!("USER {user}\nCOUNT\n").as_bytes())?;
    conn.expect(b"OK\nOK 0\n")
}
