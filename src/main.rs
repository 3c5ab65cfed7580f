use std::process::ExitCode;

use clap::Parser;

/// The course tool.
#[derive(Parser)]
enum Command {
    /// Many clients at once against a server: throughput, latency, errors.
    Load(course::load::LoadArgs),
}

fn main() -> ExitCode {
    let result = match Command::parse() {
        Command::Load(args) => course::load::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
