//! Drawing the past, smoothly.
//!
//! Snapshots come 20 times a second, late by a varying amount, some lost,
//! some out of order. Drawn as they come, the other players would jump a cell
//! at a time and stutter. So the client draws the world as it was a little
//! while ago (`delay`, 100 ms by default, as the Source engine does): at that
//! moment it usually already holds the snapshot before and the one after,
//! and draws the players between the two. The price is that what you see is
//! 100 ms old; the gain is motion that looks continuous.
//!
//! When the snapshot after has not come (a gap in the stream), it holds the
//! last position rather than guess, and it never draws an earlier moment
//! than it already drew: time on the screen goes forward only.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::packet::{self, PlayerState};

/// How many snapshots to keep: 2 s at 20 a second is far more than the
/// delay needs, and a bound on what a flood of snapshots can cost.
const KEPT: usize = 40;

/// A player as drawn, in cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    pub id: u8,
    pub x: f32,
    pub y: f32,
}

pub struct Timeline {
    /// Snapshots by tick, oldest first, no tick twice.
    snapshots: VecDeque<(u32, Vec<PlayerState>)>,
    tick_seconds: f64,
    delay: f64,
    started: Instant,
    /// The server's time minus ours, as well as we know it: the largest seen
    /// (the snapshot that was delayed least says the most).
    lead: Option<f64>,
    /// The server time last drawn.
    drawn_at: f64,
}

impl Timeline {
    pub fn new(tick_hz: u8, delay: Duration) -> Timeline {
        Timeline {
            snapshots: VecDeque::new(),
            tick_seconds: 1.0 / f64::from(tick_hz.max(1)),
            delay: delay.as_secs_f64(),
            started: Instant::now(),
            lead: None,
            drawn_at: f64::MIN,
        }
    }

    /// Keep a snapshot that arrived `at`. One older than what is already
    /// drawn can never be shown, and a duplicate adds nothing.
    pub fn add(&mut self, tick: u32, players: Vec<PlayerState>, at: Instant) {
        let server_time = f64::from(tick) * self.tick_seconds;
        let lead = server_time - self.local_seconds(at);
        self.lead = Some(self.lead.map_or(lead, |known| known.max(lead)));
        if server_time < self.drawn_at {
            return;
        }
        let place = self.snapshots.partition_point(|(kept, _)| *kept < tick);
        if self
            .snapshots
            .get(place)
            .is_some_and(|(kept, _)| *kept == tick)
        {
            return;
        }
        self.snapshots.insert(place, (tick, players));
        if self.snapshots.len() > KEPT {
            self.snapshots.pop_front();
        }
    }

    /// The server time to draw at `now`, and the players at that time.
    pub fn frame(&mut self, now: Instant) -> Option<(f64, Vec<Drawn>)> {
        // TODO 6 (slides/09-game.md, "Drawing the past"): draw the server
        // time `delay` before now (now, plus `self.lead`, minus the delay),
        // never earlier than `self.drawn_at`; place each player between the
        // snapshots before and after that time (fn between), or hold the
        // newest over a gap. Until then: the newest snapshot, as it is.
        let (tick, newest) = self.snapshots.back()?;
        let at = f64::from(*tick) * self.tick_seconds;
        Some((at, between(newest, &[], 0.0)))
    }

    fn local_seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }
}

/// Each player of `from`, `share` of the way to where `to` has them (a
/// player missing from `to` stays where `from` has them).
fn between(from: &[PlayerState], to: &[PlayerState], share: f32) -> Vec<Drawn> {
    from.iter()
        .map(|start| {
            let (x0, y0) = (packet::dequantize(start.x), packet::dequantize(start.y));
            match to.iter().find(|end| end.id == start.id) {
                Some(end) => Drawn {
                    id: start.id,
                    x: x0 + (packet::dequantize(end.x) - x0) * share,
                    y: y0 + (packet::dequantize(end.y) - y0) * share,
                },
                None => Drawn {
                    id: start.id,
                    x: x0,
                    y: y0,
                },
            }
        })
        .collect()
}
