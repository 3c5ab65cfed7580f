//! Lesson 05: the chat. A server that speaks first: it relays every member's
//! lines to everyone else, over connections that stay open. And a client that
//! listens to the network while its user types.
//!
//!     cargo run --bin 05-chat-solution -- server
//!     cargo run --bin 05-chat-solution -- client --name ada   (in a second terminal)
//!     nc 127.0.0.1 7005                                        (the protocol is plain lines)
//!
//! Both roles take the address to use, so they work across two machines as
//! well as on one: `server --bind 0.0.0.0:7005` on one, `client --connect
//! 192.0.2.10:7005 --name ada` on the other.

mod client;
mod lines;
mod room;
mod server;
mod session;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Lesson 05: a chat server and its client")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run the chat room: relay each member's lines to the others.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_address())]
        bind: String,
        /// Seconds a newcomer has to send its whole name line (fractions
        /// too: the tests use 0.3).
        #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
        name_timeout: f64,
    },
    /// Join a chat room: send what you type, show what the others say.
    Client {
        /// The address of the server.
        #[arg(long, default_value_t = default_address())]
        connect: String,
        /// Your name in the room: 1 to 16 letters, digits, `_` or `-`.
        /// Without it, the server asks, and the first line you type answers.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Where the server listens, and the client connects, unless told: port
/// 7005 on this machine. On a machine that students share, each sets
/// COURSE_PORT_BASE (9100, say) and every lesson's port moves with it (to
/// 9105 for this one), out of the others' way.
fn default_address() -> String {
    let base: u16 = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.trim().parse().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(5))
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
        Role::Server { bind, name_timeout } => {
            server::run(&bind, Duration::from_secs_f64(name_timeout))
        }
        Role::Client { connect, name } => client::run(&connect, name.as_deref()),
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
