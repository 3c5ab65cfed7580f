//! Lesson 07: push. The client as server: the device opens a listening
//! socket of its own and tells the push service where it can be reached;
//! the service connects to it when there is news. The protocol is written
//! down in lessons/07-push/README.md.
//!
//! Your work is in device.rs (TODO 1 and 3), delivery.rs (TODO 2) and
//! service.rs (TODO 4); the rest is ready. `cargo test --test 07_push`
//! tells you what is left.
//!
//!     cargo run --bin 07-push -- server [--data DIR]
//!     cargo run --bin 07-push -- device --name ada      (a second terminal)
//!     cargo run --bin 07-push -- send --to ada hello    (a third)
//!
//! Every role takes the address to use, so service, devices and senders
//! may run on different machines.

// Until the TODOs are written, some imports, variables and functions are
// unused; the solution has no such line.
#![allow(unused_imports, unused_variables, unused_mut, dead_code)]

mod delivery;
mod device;
mod disk;
mod send;
mod server;
mod service;
mod token;
mod wire;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The lesson's port: 7007, or `COURSE_PORT_BASE` + 7 where the course's
/// ports are moved (several classes on one machine).
fn default_addr() -> String {
    let base = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|text| text.parse::<u16>().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(7))
}

#[derive(Parser)]
#[command(about = "Lesson 07: a push service, the device that listens for it, and a sender")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// The push service: keep each device's notifications and deliver them
    /// to the device's own listening socket.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_addr())]
        bind: String,
        /// Keep notifications and devices in this folder, so that a restart
        /// loses none.
        #[arg(long)]
        data: Option<PathBuf>,
        /// A key that senders must present (repeat for several). Without
        /// any, the one key `demo-key` is accepted.
        #[arg(long = "api-key", value_name = "KEY")]
        api_keys: Vec<String>,
        /// Seconds a device has to accept the connection and acknowledge
        /// each frame; past it, it is unreachable (fractions too).
        #[arg(long, value_name = "SECS", default_value_t = 1.0, value_parser = seconds)]
        answer_time: f64,
    },
    /// The phone: listen on a socket of its own, register it, show every
    /// notification once, and send `to NAME: text` lines typed by its user.
    Device {
        /// Who this device is: 1 to 32 of A-Z a-z 0-9 _ -.
        #[arg(long)]
        name: String,
        /// Where this device listens for the service; port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        /// The address of the push service.
        #[arg(long, default_value_t = default_addr())]
        connect: String,
        /// Ask the service every SECS seconds instead of listening.
        #[arg(long, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..))]
        poll: Option<u64>,
        /// Where the device keeps the token that proves it owns its name
        /// (default: a file named after it in the system's temporary folder).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// An application server with news: one notification for one device.
    Send {
        /// The device to notify.
        #[arg(long)]
        to: String,
        /// Seconds the notification may wait for its device; 0: now or never.
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
        /// A newer notification with the same key replaces a waiting one.
        #[arg(long, value_name = "KEY")]
        collapse: Option<String>,
        /// The sender's API key.
        #[arg(long, default_value = "demo-key")]
        key: String,
        /// The address of the push service.
        #[arg(long, default_value_t = default_addr())]
        connect: String,
        /// The notification's text.
        text: String,
    },
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
            data,
            api_keys,
            answer_time,
        } => {
            let answer_time = Duration::from_secs_f64(answer_time);
            server::run(&bind, data.as_deref(), api_keys, answer_time)
        }
        Role::Device {
            name,
            bind,
            connect,
            poll,
            token_file,
        } => device::run(&device::Options {
            name,
            bind,
            connect,
            poll,
            token_file,
        }),
        Role::Send {
            to,
            ttl,
            collapse,
            key,
            connect,
            text,
        } => send::run(&connect, &key, &to, ttl, collapse.as_deref(), &text),
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
