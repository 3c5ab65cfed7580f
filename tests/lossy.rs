//! `course lossy` as a student runs it: it prints its address like every
//! server of the course, relays datagrams both ways, and refuses options
//! that make no sense with one clear line. (The relay's bad luck itself,
//! seeded and reproducible, is tested in `src/net/lossy.rs`.)

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use assert_cmd::Command as Assert;
use predicates::str::contains;

/// The relay, ended when the test ends, passed or not.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_relay(to: SocketAddr) -> (Relay, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_course"))
        .args(["lossy", "--to", &to.to_string(), "--seed", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the course command starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let relay = Relay(child);
    // The first line, read on a thread so that waiting for it has a deadline.
    let (line_tx, line_rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("lossy prints its address within 10 s");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the first line is `listening on ADDR`, not {line:?}"))
        .parse()
        .expect("an address");
    (relay, addr)
}

#[test]
fn relays_both_ways_and_prints_its_address() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let (_relay, addr) = start_relay(server.local_addr().unwrap());

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client.send_to(b"ping", addr).unwrap();
    let mut buffer = [0u8; 16];
    let (len, from) = server
        .recv_from(&mut buffer)
        .expect("the datagram came through");
    assert_eq!(&buffer[..len], b"ping");
    server.send_to(b"pong", from).unwrap();
    let (len, back_from) = client.recv_from(&mut buffer).expect("the answer came back");
    assert_eq!(&buffer[..len], b"pong");
    assert_eq!(back_from, addr, "the answer comes from the relay's address");
}

#[test]
fn a_percent_over_100_is_one_clear_line() {
    Assert::new(env!("CARGO_BIN_EXE_course"))
        .args(["lossy", "--to", "127.0.0.1:9", "--loss", "150"])
        .timeout(Duration::from_secs(10))
        .assert()
        .failure()
        .stderr(contains("--loss is a percent, from 0 to 100"));
}
