//! Lesson 06: the web. Lesson 05's chat room in a browser, four ways: short
//! polling, long polling, Server-Sent Events and WebSocket, all on one HTTP/1.1
//! server written by hand, with lesson 05's TCP port beside it for `nc`.
//!
//! Your work is in server.rs (TODO 1), polling.rs (TODO 2 and 3), sse.rs
//! (TODO 4), websocket.rs (TODO 5, 6 and 7) and client.rs (TODO 8); the other
//! files are ready. README.md describes every address and format.
//! `cargo test --test 06_web` tells you what is left.
//!
//!     cargo run --bin 06-web -- server
//!     open http://127.0.0.1:7006/?via=sse                    (or poll, long, ws)
//!     nc 127.0.0.1 7016                                      (lesson 05's protocol)
//!     cargo run --bin 06-web -- client --via ws --name ada

// Until the TODOs are written, some imports and variables are unused; the
// solution has no such line.
#![allow(unused_imports, unused_variables, dead_code)]

mod chat;
mod client;
mod commands;
mod digest;
mod limits;
mod lines;
mod polling;
mod request;
mod response;
mod room;
mod server;
mod sse;
mod websocket;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(about = "Lesson 06: the chat room on the web, four ways")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Serve the room over HTTP (for browsers) and over TCP (for nc).
    Server {
        /// The HTTP address; port 0 asks the system for a free port.
        /// [default: 127.0.0.1:7006, or COURSE_PORT_BASE + 6]
        #[arg(long)]
        bind: Option<String>,
        /// The chat port for nc members (lesson 05's protocol).
        /// [default: 127.0.0.1:7016, or COURSE_PORT_BASE + 16]
        #[arg(long)]
        chat_bind: Option<String>,
        /// Seconds of silence before an event stream or a WebSocket gets a
        /// keepalive (a comment, a ping); fractions too.
        #[arg(long, value_name = "SECS", default_value_t = 15.0, value_parser = seconds)]
        keepalive: f64,
        /// Seconds a web member may go unheard before it leaves the room;
        /// fractions too.
        #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
        idle: f64,
        /// Seconds an nc newcomer has to send its whole name line.
        #[arg(long, value_name = "SECS", default_value_t = 30,
              value_parser = clap::value_parser!(u64).range(1..))]
        name_timeout: u64,
        /// Connections held at once on each port; past it, 503.
        #[arg(long, value_name = "N", default_value_t = 600,
              value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_connections: u64,
    },
    /// Join the room from a terminal, the way a browser would.
    Client {
        /// The HTTP address of the server.
        /// [default: 127.0.0.1:7006, or COURSE_PORT_BASE + 6]
        #[arg(long)]
        connect: Option<String>,
        /// Which way to hear the room.
        #[arg(long, value_enum)]
        via: Via,
        /// Your name in the room: 1 to 16 letters, digits, `_` or `-`.
        #[arg(long)]
        name: String,
        /// With --via poll, seconds between two asks; fractions too.
        #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = seconds)]
        poll_every: f64,
    },
}

/// The four ways a browser hears the room.
#[derive(Clone, Copy, ValueEnum)]
pub enum Via {
    /// Ask every second.
    Poll,
    /// Ask, and the server answers when there is something to say.
    Long,
    /// One response that never ends: Server-Sent Events.
    Sse,
    /// A two-way stream of frames.
    Ws,
}

/// `127.0.0.1:PORT`, the port counted from `COURSE_PORT_BASE` (7000 unless
/// set), so that several copies of the course can run on one machine.
fn default_address(offset: u16) -> String {
    let base = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.parse::<u16>().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(offset))
}

/// A number of seconds above 0 and at most a day.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 86400.0 => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds above 0, at most 86400"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        Role::Server {
            bind,
            chat_bind,
            keepalive,
            idle,
            name_timeout,
            max_connections,
        } => server::run(server::Options {
            bind: bind.unwrap_or_else(|| default_address(6)),
            chat_bind: chat_bind.unwrap_or_else(|| default_address(16)),
            keepalive: Duration::from_secs_f64(keepalive),
            idle: Duration::from_secs_f64(idle),
            name_wait: Duration::from_secs(name_timeout),
            max_connections: max_connections as usize,
        }),
        Role::Client {
            connect,
            via,
            name,
            poll_every,
        } => client::run(
            &connect.unwrap_or_else(|| default_address(6)),
            via,
            &name,
            Duration::from_secs_f64(poll_every),
        ),
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
