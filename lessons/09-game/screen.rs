//! The terminal side of the client: keys in, the arena out. Or, with
//! `--headless`, words in and one line per frame out, for tests and for
//! programs that watch the game.
//!
//! A terminal normally hands a program whole lines, after Enter, and shows
//! what is typed. A game wants each key the moment it is pressed, unseen, so
//! the client asks `stty` (the system's own tool) to switch that off, and
//! puts it back when it ends. std has no call for it; a real game would use
//! a crate such as crossterm, which also works on Windows.

use std::io::{self, BufRead, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;

use crate::interpolation::Drawn;
use crate::packet::{DOWN, LEFT, RIGHT, UP};
use crate::world::{HEIGHT, WIDTH};

/// Keys read but not yet taken by the game.
const KEYS_QUEUED: usize = 64;

/// What the player did.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    Move(u8),
    Quit,
}

/// Read keys on a thread of their own (a read blocks until a key comes) and
/// hand them over a channel. The channel ends when input ends.
pub fn read_keys(headless: bool) -> Receiver<Key> {
    // Bounded: a pasted novel waits in the terminal, not in our memory; the
    // game takes what is queued every frame.
    let (keys, received) = mpsc::sync_channel(KEYS_QUEUED);
    thread::spawn(move || {
        let result = if headless {
            words_to_keys(&keys)
        } else {
            bytes_to_keys(&keys)
        };
        if result.is_err() {
            let _ = keys.send(Key::Quit);
        }
    });
    received
}

/// Headless: each of `w a s d` in a line is one press; `q` quits.
fn words_to_keys(keys: &mpsc::SyncSender<Key>) -> io::Result<()> {
    for line in io::stdin().lock().lines() {
        for byte in line?.bytes() {
            let key = match byte {
                b'q' => Key::Quit,
                other => match direction(other) {
                    Some(buttons) => Key::Move(buttons),
                    None => continue,
                },
            };
            if keys.send(key).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A terminal: WASD, the arrow keys (`ESC [ A` to `ESC [ D`), `q` or
/// Ctrl-C to quit.
fn bytes_to_keys(keys: &mpsc::SyncSender<Key>) -> io::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut byte = [0u8; 1];
    let mut escape = 0;
    while stdin.read(&mut byte)? == 1 {
        let key = match (escape, byte[0]) {
            (_, 0x1b) => {
                escape = 1;
                continue;
            }
            (1, b'[') => {
                escape = 2;
                continue;
            }
            (2, arrow) => {
                escape = 0;
                match arrow {
                    b'A' => Key::Move(UP),
                    b'B' => Key::Move(DOWN),
                    b'C' => Key::Move(RIGHT),
                    b'D' => Key::Move(LEFT),
                    _ => continue,
                }
            }
            (_, b'q' | 3) => Key::Quit,
            (_, other) => {
                escape = 0;
                match direction(other.to_ascii_lowercase()) {
                    Some(buttons) => Key::Move(buttons),
                    None => continue,
                }
            }
        };
        if keys.send(key).is_err() {
            break;
        }
    }
    Ok(())
}

fn direction(key: u8) -> Option<u8> {
    match key {
        b'w' => Some(UP),
        b's' => Some(DOWN),
        b'a' => Some(LEFT),
        b'd' => Some(RIGHT),
        _ => None,
    }
}

pub struct Screen {
    headless: bool,
    me: u8,
    /// The terminal's settings before we changed them, to put back.
    saved_tty: Option<String>,
    finished: bool,
}

impl Screen {
    pub fn new(headless: bool, me: u8) -> Screen {
        let saved_tty = if headless { None } else { raw_terminal() };
        if !headless {
            // Clear the screen and hide the cursor while we draw.
            print!("\x1b[2J\x1b[?25l");
        }
        Screen {
            headless,
            me,
            saved_tty,
            finished: false,
        }
    }

    pub fn welcome(&self, id: u8, tick_hz: u8) {
        if self.headless {
            println!("joined as player {id} ({tick_hz} snapshots a second)");
        }
    }

    /// One frame: the players as they were at server time `at` (seconds).
    pub fn draw(&mut self, at: f64, players: &[Drawn], delivered: f32) {
        let mut out = String::new();
        if self.headless {
            out.push_str(&format!("frame {:.0}", at * 1000.0));
            for player in players {
                out.push_str(&format!(" {}:{:.2},{:.2}", player.id, player.x, player.y));
            }
            out.push('\n');
        } else {
            out.push_str(&self.arena(players, delivered));
        }
        let mut stdout = io::stdout().lock();
        let _ = stdout
            .write_all(out.as_bytes())
            .and_then(|()| stdout.flush());
    }

    fn arena(&self, players: &[Drawn], delivered: f32) -> String {
        let (width, height) = (WIDTH as usize, HEIGHT as usize);
        let mut rows = vec![vec![b' '; width]; height];
        for player in players {
            let (x, y) = (player.x.round() as usize, player.y.round() as usize);
            if let Some(cell) = rows.get_mut(y).and_then(|row| row.get_mut(x)) {
                *cell = if player.id == self.me {
                    b'@'
                } else {
                    mark(player.id)
                };
            }
        }
        let border = format!("+{}+\r\n", "-".repeat(width));
        let mut out = format!("\x1b[H{border}");
        for row in rows {
            out.push('|');
            out.push_str(&String::from_utf8_lossy(&row));
            out.push_str("|\r\n");
        }
        out.push_str(&border);
        out.push_str(&format!(
            "you are @ · {} players · {:.0}% of your datagrams arrive · WASD or arrows, q quits\x1b[K\r\n",
            players.len(),
            delivered * 100.0
        ));
        out
    }

    pub fn goodbye(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        if !self.headless {
            print!("\x1b[?25h\r\n");
            let _ = io::stdout().flush();
        }
        if let Some(saved) = self.saved_tty.take() {
            let _ = stty(&[&saved]);
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.goodbye();
    }
}

/// Another player's mark: a letter or digit from their id.
fn mark(id: u8) -> u8 {
    const MARKS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789#$%&";
    MARKS[id as usize % MARKS.len()]
}

/// Keys one at a time, unseen, and Ctrl-C as a key (so the terminal is put
/// back on the way out). The old settings, or `None` where `stty` is not
/// there (Windows) or stdin is not a terminal: keys then come after Enter.
fn raw_terminal() -> Option<String> {
    let saved = stty(&["-g"])?;
    stty(&["-icanon", "-echo", "-isig", "min", "1"])?;
    Some(saved.trim().to_string())
}

fn stty(args: &[&str]) -> Option<String> {
    let output = Command::new("stty")
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}
