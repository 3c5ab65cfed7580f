//! The test's own UDP sockets, for lessons whose programs speak datagrams.
//!
//! A datagram is a message in itself: unlike TCP's bytes it is never joined
//! to the next one or cut in two. So the journal keeps each datagram as one
//! line, `→` sent and `←` received, escaped, with its length and the other
//! end's address.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::harness::escape;
use crate::harness::failure::{Check, Failure};
use crate::harness::journal::{Journal, Wire};
use crate::harness::local;

/// Bytes of a datagram shown in the journal; the rest is counted.
const SHOWN: usize = 48;
/// The largest datagram a test receives whole.
const MAX_DATAGRAM: usize = 65_507;

/// Reads a lesson's datagram in words for the journal; `None` when it cannot.
pub type Describe = fn(&[u8]) -> Option<String>;

/// A UDP socket of the test's, on `127.0.0.1`, that journals every datagram.
pub struct Udp {
    socket: UdpSocket,
    journal: Journal,
    id: usize,
    /// A name for the socket in the journal: `player 1`.
    label: String,
    /// The lesson's datagrams in words, shown after their bytes.
    describe: Option<Describe>,
}

impl Udp {
    pub fn bind(journal: &Journal, label: &str) -> Check<Udp> {
        let socket = local::udp_socket()?;
        Ok(Udp {
            socket,
            journal: journal.clone(),
            id: journal.new_connection(),
            label: label.to_string(),
            describe: None,
        })
    }

    /// Show each datagram in the journal in words as well, as `describe`
    /// reads it (`None`: bytes alone, for a datagram it cannot read).
    pub fn described_by(mut self, describe: Describe) -> Udp {
        self.describe = Some(describe);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Send one datagram to `to`.
    pub fn send_to(&self, datagram: &[u8], to: SocketAddr) -> Check<()> {
        self.note('→', datagram, to);
        self.socket
            .send_to(datagram, to)
            .map(|_| ())
            .map_err(|error| {
                Failure::new(format!(
                    "the test could not send a datagram to {to}: {error}"
                ))
            })
    }

    /// The next datagram that arrives before `deadline`, and who sent it;
    /// `None` when none came. Quiet: a stage that reads many datagrams
    /// journals only those it talks about (see [`Udp::journal_received`]).
    pub fn receive_before(&self, deadline: Instant) -> Check<Option<(Vec<u8>, SocketAddr)>> {
        let mut buffer = vec![0u8; MAX_DATAGRAM];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = self
                .socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.socket.recv_from(&mut buffer) {
                Ok((len, from)) => return Ok(Some((buffer[..len].to_vec(), from))),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                // An earlier datagram of ours found no one listening (ICMP
                // port unreachable, reported here on some systems).
                Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
                Err(error) => {
                    return Err(Failure::new(format!(
                        "receiving a datagram failed: {error}"
                    )))
                }
            }
        }
    }

    /// Put a datagram that arrived in the journal.
    pub fn journal_received(&self, datagram: &[u8], from: SocketAddr) {
        self.note('←', datagram, from);
    }

    fn note(&self, arrow: char, datagram: &[u8], peer: SocketAddr) {
        let shown = &datagram[..datagram.len().min(SHOWN)];
        let more = if datagram.len() > SHOWN { "…" } else { "" };
        let words = self
            .describe
            .and_then(|describe| describe(datagram))
            .map(|words| format!(" = {words}"))
            .unwrap_or_default();
        self.journal.wire(
            self.id,
            Wire::Note(format!(
                "{} {arrow} {peer}: {} bytes {}{more}{words}",
                self.label,
                datagram.len(),
                escape::escape(shown)
            )),
        );
    }
}
