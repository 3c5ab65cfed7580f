//! Lesson 02: http. A web server written with nothing but `std::net`, and a
//! client that fetches one URL from it.
//!
//!     cargo run --bin 02-http-solution -- server
//!     curl -i http://127.0.0.1:7002/           (in a second terminal)
//!     cargo run --bin 02-http-solution -- client http://127.0.0.1:7002/
//!
//! Or open http://127.0.0.1:7002/ in a browser. `server --bind 0.0.0.0:7002`
//! lets other machines in; `--root DIR` serves another folder.

mod cache;
mod client;
mod date;
mod files;
mod request;
mod response;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The small site shipped with the lesson. The path is fixed when the program
/// is compiled, so the server finds the site from any working directory.
const SHIPPED_SITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/lessons/02-http/site");

#[derive(Parser)]
#[command(about = "Lesson 02: an HTTP/1.1 server and client, by hand")]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Serve the files of a folder over HTTP/1.1.
    Server {
        /// The address to listen on; port 0 asks the system for a free port.
        #[arg(long, default_value_t = default_address())]
        bind: String,
        /// The folder to serve; nothing outside it is ever sent.
        #[arg(long, default_value = SHIPPED_SITE)]
        root: PathBuf,
    },
    /// GET one URL and print the status line, the headers and the body.
    Client {
        /// What to fetch, such as http://127.0.0.1:7002/index.html
        url: String,
    },
}

/// Where the server listens, and the client connects, unless told: port
/// 7002 on this machine. On a machine that students share, each sets
/// COURSE_PORT_BASE (9100, say) and every lesson's port moves with it (to
/// 9102 for this one), out of the others' way.
fn default_address() -> String {
    let base: u16 = std::env::var("COURSE_PORT_BASE")
        .ok()
        .and_then(|base| base.trim().parse().ok())
        .unwrap_or(7000);
    format!("127.0.0.1:{}", base.saturating_add(2))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.role {
        Role::Server { bind, root } => server::run(&bind, &root),
        Role::Client { url } => client::run(&url),
    };
    // A user's mistake (a port in use, a server that is not there, a URL
    // that is not one) is one clear line and a non-zero exit.
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
