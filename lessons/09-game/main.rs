//! Lesson 09: an online game over UDP. Only information travels: inputs up,
//! the state of the world down, 20 times a second. The client does the rest:
//! it draws, and it smooths what the network made jerky.
//!
//! Your work is in server.rs (TODO 1 to 5) and interpolation.rs (TODO 6); the
//! other files are ready. README.md describes the datagrams byte by byte.
//! `cargo test --test 09_game` tells you what is left.
//!
//!     cargo run --bin 09-game -- server
//!     cargo run --bin 09-game -- client --name ada             (in a second terminal)
//!     cargo run -- lossy --to 127.0.0.1:7009 --loss 20          (a bad network between them)
//!
//! Both roles take the address to use, so they work across two machines as
//! well as on one: `server --bind 0.0.0.0:7009` on one, `client --connect
//! 192.0.2.10:7009` on the other.

// Until the TODOs are written, some imports and variables are unused; the
// solution has no such line.
#![allow(
    unused_imports,
    unused_variables,
    unused_mut,
    dead_code,
    clippy::needless_return
)]

mod client;
mod interpolation;
mod packet;
mod screen;
mod sequence;
mod server;
mod world;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Lesson 09: a game over UDP, its server and its client")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run the game: hold the world, tick, send snapshots.
    Server {
        /// The UDP address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_addr())]
        bind: String,
        /// Snapshots a second.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u8).range(1..=100))]
        tick_hz: u8,
        /// Milliseconds of silence after which a player has left.
        #[arg(long, value_name = "MS", default_value_t = 3000,
              value_parser = clap::value_parser!(u64).range(1..))]
        timeout_ms: u64,
    },
    /// Play: send your keys, draw everyone.
    Client {
        /// The address of the server.
        #[arg(long, default_value_t = default_addr())]
        connect: String,
        /// Your name: 1 to 16 letters, digits, `_` or `-`.
        #[arg(long, default_value = "player")]
        name: String,
        /// Print one line per frame instead of drawing; keys as words on stdin.
        #[arg(long)]
        headless: bool,
        /// Milliseconds in the past to draw, to interpolate between snapshots.
        #[arg(long, value_name = "MS", default_value_t = 100)]
        delay: u64,
    },
}

/// `127.0.0.1:7009`, or lesson 09's port above `COURSE_PORT_BASE` when it
/// is set, so that users of one shared machine can each have their own.
fn default_addr() -> String {
    let base = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.trim().parse::<u16>().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(9))
}

fn main() -> ExitCode {
    let result = match Cli::parse().role {
        Role::Server {
            bind,
            tick_hz,
            timeout_ms,
        } => server::run(&bind, tick_hz, Duration::from_millis(timeout_ms)),
        Role::Client {
            connect,
            name,
            headless,
            delay,
        } => client::run(&client::Options {
            connect,
            name,
            headless,
            delay: Duration::from_millis(delay),
        }),
    };
    // A user's mistake (a port in use, a server that is not there) is one
    // clear line and a non-zero exit, never a panic with a backtrace.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
