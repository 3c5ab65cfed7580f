//! A web server in the design of the Rust Book's final project (chapter 21,
//! "Building a Multithreaded Web Server"): the main thread accepts, a fixed
//! pool of 4 threads fed by one channel answers (`pool.rs`), and each
//! connection gets one answer: the request line read with
//! `BufReader::lines`, the page read from disk with `fs::read_to_string`,
//! a status line, `Content-Length` and the body written back, and the
//! connection dropped.
//!
//! It is in `course bench` because it is the server a student who has read
//! the Book would pick: lesson 02's solution is measured beside it at
//! `wrk -c50` (the goal: three times its rate). What differs, and why:
//!
//! - It serves forever; it prints `listening on ADDR` and takes `--bind`
//!   and `--page`, so the bench can start it like a lesson's server.
//! - An error on one connection ends that connection. The Book unwraps, and
//!   a worker that panics is gone for good: a few clients that connect and
//!   leave without a request (wrk does, as it stops) leave no worker. The
//!   bench restarts it each run, but a peer must not die mid-measure.
//! - No line is printed per request (the Book's workers say which of them
//!   got a job): that would measure the terminal, not the server.
//!
//! It sends no `Connection: close`, as the Book's does not: an HTTP/1.1
//! client expects to reuse the connection, finds it closed, and opens
//! another. wrk counts each such close as a read error.
//!
//!     cargo run --release -- --bind 127.0.0.1:0 --page index.html

mod pool;

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use pool::Pool;

/// The Book's pool has four workers.
const WORKERS: usize = 4;

#[derive(Debug, PartialEq)]
struct Options {
    bind: String,
    page: PathBuf,
}

/// `--bind ADDR` (the Book's 127.0.0.1:7878 unless told) and `--page FILE`
/// (its hello.html unless told).
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        bind: "127.0.0.1:7878".to_string(),
        page: PathBuf::from("hello.html"),
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bind" => options.bind = value,
            "--page" => options.page = PathBuf::from(value),
            _ => {
                return Err(format!(
                    "unknown argument {flag}: use --bind ADDR --page FILE"
                ))
            }
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match serve(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(options: &Options) -> io::Result<()> {
    let listener = TcpListener::bind(&options.bind)?;
    println!("listening on {}", listener.local_addr()?);
    let pool = Pool::new(WORKERS);
    let page: Arc<Path> = options.page.clone().into();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let page = Arc::clone(&page);
        pool.execute(move || {
            let _ = answer(stream, &page);
        });
    }
    Ok(())
}

/// One request, one answer; the connection closes when `stream` drops.
fn answer(mut stream: TcpStream, page: &Path) -> io::Result<()> {
    // Only the request line is read; the headers after it are never looked at.
    let Some(request_line) = BufReader::new(&stream).lines().next() else {
        return Ok(());
    };
    let (status_line, body) = match request_line?.as_str() {
        "GET / HTTP/1.1" => ("HTTP/1.1 200 OK", fs::read_to_string(page)?),
        _ => ("HTTP/1.1 404 NOT FOUND", "<p>not found</p>\n".to_string()),
    };
    let response = format!(
        "{status_line}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        parse_args(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn defaults_are_the_books() {
        assert_eq!(
            parse(&[]),
            Ok(Options {
                bind: "127.0.0.1:7878".to_string(),
                page: PathBuf::from("hello.html"),
            })
        );
    }

    #[test]
    fn reads_bind_and_page_in_any_order() {
        let expected = Ok(Options {
            bind: "127.0.0.1:0".to_string(),
            page: PathBuf::from("site/index.html"),
        });
        assert_eq!(
            parse(&["--bind", "127.0.0.1:0", "--page", "site/index.html"]),
            expected
        );
        assert_eq!(
            parse(&["--page", "site/index.html", "--bind", "127.0.0.1:0"]),
            expected
        );
    }

    #[test]
    fn refuses_a_flag_without_a_value_or_an_unknown_one() {
        assert!(parse(&["--bind"])
            .unwrap_err()
            .contains("--bind needs a value"));
        assert!(parse(&["--port", "80"])
            .unwrap_err()
            .contains("unknown argument --port"));
    }
}
