//! The game itself: an arena and the players in it. This is the only state
//! that matters, and only the server holds it (it is "authoritative"): a
//! client sends what its player wants to do and is told where everyone is.
//! A client that lied about its position would get nowhere.

use crate::packet::{self, Input, PlayerState, DOWN, LEFT, RIGHT, UP};

/// The arena, in terminal cells: it fits in an 80×24 terminal.
pub const WIDTH: f32 = 60.0;
pub const HEIGHT: f32 = 20.0;
/// How far one input moves a player, in cells.
pub const STEP: f32 = 1.0;

/// One player's place in the arena.
#[derive(Debug, Clone, Copy)]
pub struct Player {
    pub id: u8,
    pub x: f32,
    pub y: f32,
}

impl Player {
    /// A new player, placed by its id so that two players rarely start on
    /// the same cell (and a test can tell where one will start).
    pub fn spawn(id: u8) -> Player {
        let column = (id as usize % 8) as f32;
        let row = (id as usize / 8) as f32;
        Player {
            id,
            x: 4.0 + column * 7.0,
            y: 2.0 + row * 2.0,
        }
    }

    /// Apply one input: move one step for each button held, within the
    /// arena's walls.
    pub fn apply(&mut self, input: Input) {
        let held = |button| input.buttons & button != 0;
        let dx = (held(RIGHT) as i8 - held(LEFT) as i8) as f32;
        let dy = (held(DOWN) as i8 - held(UP) as i8) as f32;
        self.x = (self.x + dx * STEP).clamp(0.0, WIDTH - 1.0);
        self.y = (self.y + dy * STEP).clamp(0.0, HEIGHT - 1.0);
    }

    /// How the player travels in a snapshot.
    pub fn state(&self) -> PlayerState {
        PlayerState {
            id: self.id,
            x: packet::quantize(self.x),
            y: packet::quantize(self.y),
        }
    }
}
