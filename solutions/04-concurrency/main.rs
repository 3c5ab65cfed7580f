//! Lesson 04: concurrency. The mailbox server of lesson 03, serving a class
//! full of clients at once: a small thread per connection waits for whole
//! requests, and a bounded pool of workers answers them.
//!
//!     cargo run --bin 04-concurrency-solution -- server [--workers N] [--max-connections N] [--idle-timeout SECS] [--grace SECS]
//!     cargo run --bin 04-concurrency-solution -- client --user alice
//!     cargo run -- load 127.0.0.1:7004 --protocol mailbox --clients 100 --requests 100
//!
//! Both roles take the address to use, so they work across two machines as
//! well as on one.

mod client;
mod connections;
mod disk;
mod mailbox;
mod pool;
mod protocol;
mod server;
mod timed_stream;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Lesson 04: the mailbox server, serving many clients at once")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Keep messages for users until they fetch them, for many users at once.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_address())]
        bind: String,
        /// How many requests are answered at once (default: 4 per core).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        workers: Option<u16>,
        /// How many connections are open at once; past this, new clients
        /// wait. Each is an open file: keep it below `ulimit -n`.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=10_000))]
        max_connections: u16,
        /// Close a connection whose next request takes longer than this
        /// many seconds (fractions too: the tests use 0.5 and 0.3).
        #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = seconds)]
        idle_timeout: f64,
        /// On SIGTERM, how many seconds a request in progress may take to
        /// finish, its reply included.
        #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = seconds)]
        grace: f64,
        /// Keep messages in this folder, so that a restart loses none.
        #[arg(long)]
        data: Option<PathBuf>,
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
/// 7004 on this machine. On a machine that students share, each sets
/// COURSE_PORT_BASE (9100, say) and every lesson's port moves with it (to
/// 9104 for this one), out of the others' way.
fn default_address() -> String {
    let base: u16 = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.trim().parse().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(4))
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
            workers,
            max_connections,
            idle_timeout,
            grace,
            data,
        } => server::run(&server::Options {
            bind: &bind,
            workers: workers.map_or_else(default_workers, usize::from),
            max_connections: usize::from(max_connections),
            idle_timeout: Duration::from_secs_f64(idle_timeout),
            grace: Duration::from_secs_f64(grace),
            data: data.as_deref(),
        }),
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

/// Four workers per core: a worker waits for no client, but it may wait for
/// the disk (with `--data`) or for the mailbox's lock.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(4, |cores| cores.get() * 4)
}
