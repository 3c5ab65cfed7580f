//! What a stage says when it fails: what went wrong, the bytes expected against
//! the bytes received, a hint in plain words and the slide to read.
//!
//! A check builds a [`Failure`] with what it knows; the stage runner
//! (`src/harness/runner.rs`, with `ctx.rs`) adds the stage, the steps so far, the bytes on the wire and
//! the seed, and lays it all out (`src/report.rs`).

use std::io;
use std::net::SocketAddr;

use crate::harness::escape;

/// The result of a check: `Ok` or the reason a student's program failed it.
pub type Check<T> = Result<T, Failure>;

/// Why a stage failed, as far as the check that noticed it knows. Boxed, so
/// that a `Check` stays small on the path where nothing fails.
#[derive(Debug, Clone, Default)]
pub struct Failure(Box<Parts>);

/// What a [`Failure`] holds.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// One sentence: what the program did that it should not have.
    pub what: String,
    /// The bytes the check wanted, shown against `received` with a caret.
    pub expected: Option<Vec<u8>>,
    /// The bytes that came instead.
    pub received: Option<Vec<u8>>,
    /// Text shown as it is, such as the end of a program's stderr.
    pub details: Vec<String>,
    /// What to try, in plain words.
    pub hint: Option<String>,
    /// A slide more precise than the stage's own.
    pub slide: Option<String>,
    /// Only this connection's bytes are shown (a stage may open many).
    pub connection: Option<usize>,
    /// The bytes on the wire that show it, taken when it happened (see
    /// `Ctx::soft`); otherwise the report reads them from the journal.
    pub wire: Option<String>,
    /// A sentence added to the hint only where the report shows a program's
    /// stderr: "its stderr, above, says why" must not point at nothing.
    pub stderr_note: Option<String>,
    /// Set when the stage could not be checked because an outside client is
    /// missing: the stage is skipped, not failed (see [`MissingTool`]).
    pub missing_tool: Option<MissingTool>,
}

/// An outside client a stage needs (curl, a browser, python3) that is not
/// installed, and the command that installs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingTool {
    pub tool: String,
    pub install: String,
}

impl MissingTool {
    /// `not checked: needs chromium; install it: sudo apt-get install chromium`.
    pub fn reason(&self) -> String {
        format!(
            "not checked: needs {}; install it: {}",
            self.tool, self.install
        )
    }
}

impl std::ops::Deref for Failure {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}

impl std::ops::DerefMut for Failure {
    fn deref_mut(&mut self) -> &mut Parts {
        &mut self.0
    }
}

impl Failure {
    pub fn new(what: impl Into<String>) -> Failure {
        Failure(Box::new(Parts {
            what: what.into(),
            ..Parts::default()
        }))
    }

    /// Expected against received, shown with a caret at the first difference.
    pub fn bytes(mut self, expected: &[u8], received: &[u8]) -> Failure {
        self.expected = Some(expected.to_vec());
        self.received = Some(received.to_vec());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// A hint only where the check that failed gave none.
    pub fn or_hint(mut self, hint: impl Into<String>) -> Failure {
        if self.hint.is_none() {
            self.hint = Some(hint.into());
        }
        self
    }

    /// Add a paragraph to the hint: where in the student's code to look.
    pub fn more_hint(mut self, more: impl Into<String>) -> Failure {
        let more = more.into();
        self.hint = Some(match self.hint.take() {
            Some(hint) => format!("{hint}\n\n{more}"),
            None => more,
        });
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Failure {
        self.details.push(detail.into());
        self
    }

    /// A sentence for the hint, kept only where the report shows stderr.
    pub fn stderr_note(mut self, note: impl Into<String>) -> Failure {
        self.stderr_note = Some(note.into());
        self
    }

    /// The failure of a stage whose outside client `tool` is not installed:
    /// the runner reports the stage as skipped, or as failed where
    /// `COURSE_REQUIRE_CLIENTS=1` asks that every client be there.
    pub fn missing_tool(tool: &str, install: &str) -> Failure {
        let mut failure = Failure::new(format!(
            "this stage needs `{tool}`, and it is not installed on this machine"
        ))
        .hint(format!("Install it, then run the stage again: {install}."));
        failure.missing_tool = Some(MissingTool {
            tool: tool.to_string(),
            install: install.to_string(),
        });
        failure
    }

    /// A failure that the test's own bytes on the wire do not show (a
    /// program's output does, as a detail): the report leaves the wire
    /// out, where it would show the stage's other, unrelated traffic.
    pub fn without_wire(mut self) -> Failure {
        self.wire = Some(String::new());
        self
    }

    pub fn slide(mut self, slide: impl Into<String>) -> Failure {
        self.slide = Some(slide.into());
        self
    }

    /// The expected/received block, if the check gave one.
    pub fn comparison(&self) -> Option<String> {
        match (&self.expected, &self.received) {
            (Some(expected), Some(received)) => Some(escape::compare(expected, received)),
            _ => None,
        }
    }
}

/// How an error from the operating system reads to a student, with what to
/// check next. `peer` is the address the test was talking to.
pub fn explain_io(error: &io::Error, peer: SocketAddr) -> (String, String) {
    use io::ErrorKind::*;
    match error.kind() {
        ConnectionRefused => (
            format!("the connection to {peer} was refused: nothing is listening there"),
            "Is your server listening on the address it printed? It must bind, print \
             `listening on IP:PORT` with the real port, and keep running."
                .into(),
        ),
        ConnectionReset | ConnectionAborted => (
            format!("{peer} reset the connection (the program closed it abruptly, or crashed)"),
            "A reset comes when a program closes a socket with bytes it never read, or \
             when it exits. Did your server stop, or drop the connection too early?"
                .into(),
        ),
        BrokenPipe => (
            format!("{peer} closed the connection while the test was still sending"),
            "Your server closed this connection before it read everything. Keep reading \
             until `read` returns 0: that is how the other side says it is done."
                .into(),
        ),
        WouldBlock | TimedOut => (
            format!("{peer} sent nothing more before the deadline"),
            "The connection stayed open but your server stopped answering. Is it stuck \
             in a `read` that waits for more than the client sent, or waiting on another \
             connection?"
                .into(),
        ),
        UnexpectedEof => (
            format!("{peer} closed the connection before sending everything"),
            "Your server closed the connection (read returned 0 on this side) before it \
             wrote everything it owed. Write it all (`write_all`) before you close."
                .into(),
        ),
        _ => (
            format!("talking to {peer} failed: {error}"),
            "This error comes from the operating system; the steps above show where it \
             happened."
                .into(),
        ),
    }
}

/// A failure for an operating-system error met while talking to `peer`.
pub fn from_io(error: &io::Error, peer: SocketAddr, doing: &str) -> Failure {
    let (what, hint) = explain_io(error, peer);
    Failure::new(format!("while {doing}: {what}")).hint(hint)
}
