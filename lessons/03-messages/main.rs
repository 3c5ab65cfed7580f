//! Lesson 03: messages. A protocol of our own: a mailbox server where users
//! leave messages for each other, and a client for it. The protocol is
//! written down in lessons/03-messages/README.md.
//!
//! Your work is in protocol.rs (TODO 1 and 2), server.rs (TODO 3), disk.rs
//! (TODO 4) and client.rs (TODO 5); the rest is ready.
//! `cargo test --test 03_messages` tells you what is left.
//!
//!     cargo run --bin 03-messages -- server [--data DIR]
//!     cargo run --bin 03-messages -- client --user alice   (in a second terminal)
//!     python3 lessons/03-messages/client.py --user bob      (a third)
//!
//! Both roles take the address to use, so they work across two machines as
//! well as on one.

// Until the TODOs are written, some imports and variables are unused; the
// solution has no such line.
#![allow(unused_imports, unused_variables, unused_mut)]

mod client;
mod disk;
mod mailbox;
mod protocol;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Lesson 03: a mailbox server with its own protocol, and its client")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Keep messages for users until they fetch them.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_address())]
        bind: String,
        /// Keep messages in this folder, so that a restart loses none.
        #[arg(long)]
        data: Option<PathBuf>,
        /// After refusing a client, read on at most this long before
        /// closing (see refuse_and_close in server.rs).
        #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = seconds)]
        drain: f64,
    },
    /// Send and fetch messages, one command per line of standard input.
    Client {
        /// The address of the server.
        #[arg(long, default_value_t = default_address())]
        connect: String,
        /// Who you are: 1 to 32 of A-Z a-z 0-9 _ -.
        #[arg(long)]
        user: String,
    },
}

/// Where the server listens, and the client connects, unless told: port
/// 7003 on this machine. On a machine that students share, each sets
/// COURSE_PORT_BASE (9100, say) and every lesson's port moves with it (to
/// 9103 for this one), out of the others' way.
fn default_address() -> String {
    let base: u16 = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.trim().parse().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(3))
}

/// A number of seconds above 0 and at most a minute.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 60.0 => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds above 0, at most 60"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        Role::Server { bind, data, drain } => {
            server::run(&bind, data.as_deref(), Duration::from_secs_f64(drain))
        }
        Role::Client { connect, user } => client::run(&connect, &user),
    };
    // A user's mistake is one clear line and a non-zero exit, never a panic.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
