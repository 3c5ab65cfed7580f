//! Sequence numbers and acknowledgements over UDP.
//!
//! Each side numbers the datagrams it sends, and in every datagram says what
//! it has received: the newest number (`ack`) and, one bit each, which of the
//! 32 before it (`ack_bits`). One datagram acknowledges 33, so a lost
//! acknowledgement is repaired by the next one, without ever resending
//! anything. TCP does this too, hidden in the kernel, and then insists on
//! resending what was lost, in order; a game would rather have the next
//! snapshot than an old one late.
//!
//! A u16 wraps after 65,536 datagrams (55 minutes at 20 a second), so "newer"
//! is decided on the circle: `a` is newer than `b` when it is less than half
//! the circle ahead of it.

use crate::packet::Header;

/// Whether sequence number `a` is newer than `b`, across the wrap.
pub fn is_newer(a: u16, b: u16) -> bool {
    a != b && a.wrapping_sub(b) < 0x8000
}

/// What one side has received of the other's datagrams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Received {
    /// The newest sequence number received, once one has been.
    newest: Option<u16>,
    /// Bit `n` set: `newest - 1 - n` was received too.
    bits: u32,
}

impl Received {
    /// Note that datagram `sequence` arrived. Returns false for a duplicate,
    /// or one too old to tell (more than 32 behind the newest): either way
    /// the caller must not act on it twice.
    pub fn record(&mut self, sequence: u16) -> bool {
        let Some(newest) = self.newest else {
            self.newest = Some(sequence);
            return true;
        };
        if is_newer(sequence, newest) {
            let shift = sequence.wrapping_sub(newest) as u32;
            // The old newest becomes bit `shift - 1`; anything pushed past
            // bit 31 is forgotten.
            self.bits = if shift > 32 {
                0
            } else {
                (self.bits.checked_shl(shift).unwrap_or(0)) | (1 << (shift - 1))
            };
            self.newest = Some(sequence);
            return true;
        }
        let behind = newest.wrapping_sub(sequence) as u32;
        if behind == 0 || behind > 32 || self.bits & (1 << (behind - 1)) != 0 {
            return false;
        }
        self.bits |= 1 << (behind - 1);
        true
    }

    /// The `(ack, ack_bits)` to put in the next datagram's header.
    pub fn ack(&self) -> (u16, u32) {
        (self.newest.unwrap_or(0), self.bits)
    }
}

/// Of the 33 datagrams the other side's latest `ack_bits` covers (its `ack`
/// and the 32 before), the share it received: once more than 33 have been
/// sent, an estimate of how many arrive on the way there.
pub fn delivered_share(ack_bits: u32) -> f32 {
    (1 + ack_bits.count_ones()) as f32 / 33.0
}

/// One side's numbering of its datagrams, and what it has received of the
/// other side's: together, the header of its next datagram.
#[derive(Debug, Default)]
pub struct Link {
    next_sequence: u16,
    pub received: Received,
}

impl Link {
    /// The header for the next datagram we send.
    pub fn next_header(&mut self) -> Header {
        let (ack, ack_bits) = self.received.ack();
        let sequence = self.next_sequence;
        self.next_sequence = sequence.wrapping_add(1);
        Header {
            sequence,
            ack,
            ack_bits,
        }
    }
}
