//! The record of one stage: the steps it took and the bytes on the wire, both
//! ways, so that a failure can show the student exactly what happened.
//!
//! Every buffer here has a bound: a stage that moves a mebibyte, or opens a
//! hundred connections, keeps a short record of it, not a copy.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::harness::escape;

/// Steps kept; older ones are counted, not shown.
const MAX_STEPS: usize = 40;
/// Wire events kept per stage; older ones are counted, not shown.
const MAX_EVENTS: usize = 48;
/// Bytes kept of one wire event (the report shows fewer still).
const MAX_EVENT_BYTES: usize = 256;

/// One thing seen on a connection.
#[derive(Debug, Clone)]
pub enum Wire {
    /// The test sent these bytes (`total` of them; the first few are kept).
    Sent { bytes: Vec<u8>, total: usize },
    /// The test received these bytes.
    Received { bytes: Vec<u8>, total: usize },
    /// The test shut down its sending side (half-close).
    ShutDown,
    /// The peer closed: a read returned end of stream.
    Closed,
    /// Something else worth a line: a reset, a deadline.
    Note(String),
}

#[derive(Debug, Default)]
struct Record {
    steps: VecDeque<String>,
    steps_dropped: usize,
    events: VecDeque<(usize, Wire)>,
    events_dropped: usize,
    connections: usize,
}

/// A stage's record, shared by the stage and its connections (which may be
/// read on other threads).
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Record>>);

impl Journal {
    pub fn new() -> Journal {
        Journal::default()
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // A panic elsewhere must not hide the record of what happened.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Add a step, in the words a student would use: "connected to ...".
    pub fn step(&self, text: impl Into<String>) {
        let mut record = self.record();
        if record.steps.len() == MAX_STEPS {
            record.steps.pop_front();
            record.steps_dropped += 1;
        }
        record.steps.push_back(text.into());
    }

    /// A number for a new connection; its wire events carry it.
    pub fn new_connection(&self) -> usize {
        let mut record = self.record();
        record.connections += 1;
        record.connections
    }

    /// Add bytes or an event on connection `id`. Consecutive bytes in the same
    /// direction join one event, as a reader would see them.
    pub fn wire(&self, id: usize, event: Wire) {
        let mut record = self.record();
        if let Some((last_id, last)) = record.events.back_mut() {
            if *last_id == id {
                match (last, &event) {
                    (
                        Wire::Sent { bytes, total },
                        Wire::Sent {
                            bytes: more,
                            total: n,
                        },
                    )
                    | (
                        Wire::Received { bytes, total },
                        Wire::Received {
                            bytes: more,
                            total: n,
                        },
                    ) => {
                        let room = MAX_EVENT_BYTES.saturating_sub(bytes.len());
                        bytes.extend_from_slice(&more[..more.len().min(room)]);
                        *total += n;
                        return;
                    }
                    _ => {}
                }
            }
        }
        if record.events.len() == MAX_EVENTS {
            record.events.pop_front();
            record.events_dropped += 1;
        }
        record.events.push_back((id, event));
    }

    /// The step taken last, if any.
    pub fn last_step(&self) -> Option<String> {
        self.record().steps.back().cloned()
    }

    /// The steps, numbered.
    pub fn steps(&self) -> String {
        let record = self.record();
        let mut text = String::new();
        if record.steps_dropped > 0 {
            let _ = writeln!(text, "  ({} earlier steps not shown)", record.steps_dropped);
        }
        let first = record.steps_dropped + 1;
        for (index, step) in record.steps.iter().enumerate() {
            let _ = writeln!(text, "  {}. {}", first + index, step);
        }
        text
    }

    /// The bytes on the wire, `→` for what the test sent and `←` for what it
    /// received; only connection `only` when given. Empty when nothing moved.
    pub fn wire_text(&self, only: Option<usize>) -> String {
        let record = self.record();
        let many = record.connections > 1 && only.is_none();
        let mut text = String::new();
        // Counted over every connection: said only where all are shown.
        if record.events_dropped > 0 && only.is_none() {
            let _ = writeln!(
                text,
                "  ({} earlier events not shown)",
                record.events_dropped
            );
        }
        for (id, event) in record.events.iter() {
            if only.is_some_and(|wanted| wanted != *id) {
                continue;
            }
            let label = if many {
                format!("  #{id} ")
            } else {
                "  ".to_string()
            };
            let line = match event {
                Wire::Sent { bytes, total } => format!("→ {}", shown(bytes, *total)),
                Wire::Received { bytes, total } => format!("← {}", shown(bytes, *total)),
                Wire::ShutDown => "→ (the test shut down its sending side: end of stream)".into(),
                Wire::Closed => "← (end of stream: the other side closed)".into(),
                Wire::Note(note) => format!("  ({note})"),
            };
            let _ = writeln!(text, "{label}{line}");
        }
        text
    }
}

/// Bytes of an event whose full length was `total`.
fn shown(bytes: &[u8], total: usize) -> String {
    if total <= bytes.len() {
        escape::escape(bytes)
    } else {
        let head = &bytes[..bytes.len().min(escape::SHOWN_BYTES)];
        format!("{} bytes, starting {}…", total, escape::escape(head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_bytes_join_one_line() {
        let journal = Journal::new();
        let id = journal.new_connection();
        for piece in [&b"hel"[..], b"lo\n"] {
            journal.wire(
                id,
                Wire::Received {
                    bytes: piece.to_vec(),
                    total: piece.len(),
                },
            );
        }
        assert_eq!(journal.wire_text(None), "  ← \"hello\\n\"\n");
    }

    #[test]
    fn a_large_transfer_is_counted_not_copied() {
        let journal = Journal::new();
        let id = journal.new_connection();
        for _ in 0..1024 {
            journal.wire(
                id,
                Wire::Sent {
                    bytes: vec![b'a'; 1024],
                    total: 1024,
                },
            );
        }
        let text = journal.wire_text(None);
        assert!(
            text.starts_with("  → 1048576 bytes, starting \"aaa"),
            "{text}"
        );
        assert!(text.len() < 400);
    }

    #[test]
    fn old_steps_are_counted() {
        let journal = Journal::new();
        for n in 0..(MAX_STEPS + 3) {
            journal.step(format!("step {n}"));
        }
        let steps = journal.steps();
        assert!(steps.starts_with("  (3 earlier steps not shown)\n  4. step 3\n"));
    }
}
