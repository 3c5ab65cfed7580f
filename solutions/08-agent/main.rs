//! Lesson 08: push involves the OS. One agent per device keeps one outgoing
//! connection to the push service, alive with heartbeats, and carries the
//! notifications of every app on the device over it.
//!
//!     cargo run --bin 08-agent-solution -- server
//!     cargo run --bin 08-agent-solution -- agent --device ada --keepalive 5
//!     cargo run --bin 08-agent-solution -- app --name mail
//!     cargo run --bin 08-agent-solution -- send --to ada/mail "you have mail"
//!
//! The default ports are 7008 (the service) and 7018 (the agent's listener
//! for apps); `COURSE_PORT_BASE=8000` moves them to 8008 and 8018.

mod agent;
mod app;
mod backoff;
mod disk;
mod frame;
mod protocol;
mod send;
mod server;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use backoff::Backoff;

#[derive(Parser)]
#[command(about = "Lesson 08: a push service, the device's agent, its apps, and a sender")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// The push service: agents connect and stay connected; senders hand it
    /// notifications.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_addr(8))]
        bind: String,
        /// Keep waiting notifications in this folder: they survive a crash.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// The device's agent: one connection to the service for every app.
    Agent {
        /// This device's name.
        #[arg(long)]
        device: String,
        /// The push service (or a NAT in front of it).
        #[arg(long, default_value_t = default_addr(8))]
        connect: String,
        /// Where the device's apps register.
        #[arg(long, default_value_t = default_addr(18))]
        local: String,
        /// Seconds between heartbeats; 0 sends none.
        #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
        keepalive: f64,
        /// The longest wait, in seconds, between two attempts to reach the
        /// service.
        #[arg(long, value_name = "SECS", default_value_t = 8.0, value_parser = seconds)]
        backoff_cap: f64,
        /// Reconnect without jitter, to measure what a fleet does without it.
        #[arg(long)]
        no_jitter: bool,
    },
    /// An app on the device: registers with the agent, prints its notifications.
    App {
        /// The app's name.
        #[arg(long)]
        name: String,
        /// The device's agent.
        #[arg(long, default_value_t = default_addr(18))]
        agent: String,
    },
    /// An application server: hands one notification to the service.
    Send {
        /// DEVICE/APP, such as ada/mail.
        #[arg(long)]
        to: String,
        /// The push service.
        #[arg(long, default_value_t = default_addr(8))]
        connect: String,
        /// Seconds the notification may wait for its app (28 days unless given).
        #[arg(long, value_name = "SECS", default_value_t = 28 * 24 * 3600)]
        ttl: u64,
        /// A newer notification with this key replaces a waiting one.
        #[arg(long, value_name = "KEY")]
        collapse: Option<String>,
        /// What the notification says.
        text: String,
    },
}

/// `127.0.0.1:` and the course's port base (COURSE_PORT_BASE, 7000 unless
/// set) plus `offset`.
fn default_addr(offset: u16) -> String {
    let base = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.parse::<u16>().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(offset))
}

fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds from 0 to 86400"
        )),
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().role {
        Role::Server { bind, data } => server::run(&bind, data.as_deref()),
        Role::Agent {
            device,
            connect,
            local,
            keepalive,
            backoff_cap,
            no_jitter,
        } => protocol::name(&device)
            .map_err(anyhow::Error::msg)
            .and_then(|device| {
                let keepalive = Duration::from_secs_f64(keepalive);
                let backoff = Backoff::new(Duration::from_secs_f64(backoff_cap), !no_jitter);
                agent::run(&device, &connect, &local, keepalive, backoff)
            }),
        Role::App { name, agent } => app::run(&name, &agent),
        Role::Send {
            to,
            connect,
            ttl,
            collapse,
            text,
        } => send::run(
            &connect,
            &to,
            Duration::from_secs(ttl),
            collapse.as_deref(),
            &text,
        ),
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
