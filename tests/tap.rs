//! `course tap` between a client and lesson 01's reference server: the
//! client's bytes reach the server, the echo comes back, and the tap prints
//! both directions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A program that is ended when the test ends, passed or failed.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(program: &str, args: &[&str]) -> Running {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the program starts");
        let stdout = child.stdout.take().expect("piped");
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The lines it prints until one contains `wanted`, within a deadline.
    fn until(&self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while !seen.iter().any(|line: &String| line.contains(wanted)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => seen.push(line),
                Err(_) => panic!(
                    "no line with {wanted:?} within 10 s; it printed:\n{}",
                    seen.join("\n")
                ),
            }
        }
        seen
    }

    fn address(&self) -> String {
        let first = self.until("listening on");
        first[0]
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("the first line is {:?}", first[0]))
            .to_string()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tap_prints_both_directions_between_a_client_and_the_echo_server() {
    let server = Running::start(
        env!("CARGO_BIN_EXE_01-echo-solution"),
        &["server", "--bind", "127.0.0.1:0"],
    );
    let server_addr = server.address();
    let tap = Running::start(
        env!("CARGO_BIN_EXE_course"),
        &["tap", "--bind", "127.0.0.1:0", "--to", &server_addr],
    );
    let tap_addr = tap.address();

    let mut client = TcpStream::connect(&tap_addr).expect("the tap accepts");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client.write_all(b"hello, tap\n").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"hello, tap\n", "the echo through the tap");

    let printed = tap.until("closed after").join("\n");
    for wanted in [
        "→ \"hello, tap\\n\" (11 bytes, 11 so far)",
        "← \"hello, tap\\n\" (11 bytes, 11 so far)",
        "11 bytes →, 11 bytes ←",
    ] {
        assert!(printed.contains(wanted), "no {wanted:?} in:\n{printed}");
    }
    assert!(
        printed
            .lines()
            .all(|line| line.starts_with("#1 ") || line.starts_with("relaying")),
        "{printed}"
    );
}
