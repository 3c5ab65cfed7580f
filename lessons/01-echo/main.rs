//! Lesson 01: echo. A server that sends back every byte it receives, and a
//! client that types lines at it.
//!
//! Your work is in server.rs (TODO 1 and 2) and client.rs (TODO 3 and 4);
//! this file is ready. `cargo test --test 01_echo` tells you what is left.
//! TODO 5, in zero_copy.rs and server.rs, is for after every stage passes:
//! no stage asks for it.
//!
//!     cargo run --bin 01-echo -- server
//!     cargo run --bin 01-echo -- client      (in a second terminal)
//!
//! Both roles take the address to use, so they work across two machines as
//! well as on one: `server --bind 0.0.0.0:7001` on one, `client --connect
//! 192.0.2.10:7001` on the other.

// Until the TODOs are written, some imports and variables are unused; the
// solution has no such line.
#![allow(unused_imports, unused_variables, unused_mut, dead_code)]

mod client;
mod server;
mod zero_copy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Lesson 01: a TCP echo server and its client")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Listen for connections and send every byte back.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_address())]
        bind: String,
    },
    /// Send each line of standard input to a server and print what comes back.
    Client {
        /// The address of the server.
        #[arg(long, default_value_t = default_address())]
        connect: String,
    },
}

/// Where the server listens, and the client connects, unless told: port
/// 7001 on this machine. On a machine that students share, each sets
/// COURSE_PORT_BASE (9100, say) and every lesson's port moves with it (to
/// 9101 for this one), out of the others' way.
fn default_address() -> String {
    let base: u16 = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.trim().parse().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(1))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        Role::Server { bind } => server::run(&bind),
        Role::Client { connect } => client::run(&connect),
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
