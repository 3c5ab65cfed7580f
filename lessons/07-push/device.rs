//! The device: the client that is also a server. It listens on a socket of
//! its own, tells the push service where that is, and shows what the
//! service pushes to it, each notification once, the moment it comes. Its
//! user types meanwhile; what they send goes out on another thread, so the
//! keyboard never waits for the network.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::send::{connect, read_reply};
use crate::token::{is_token, same_token};
use crate::wire::{check_name, parse_length, printable, read_body, read_line, words};
use crate::wire::{DeadlineReader, Line, MAX_BODY};

/// Push connections handled at once: a flood of connections to the
/// device's port costs it this many threads at most.
const MAX_PUSH_CONNECTIONS: usize = 16;
/// How long a push connection may stay silent before the device closes it.
const PUSH_IDLE: Duration = Duration::from_secs(5);
/// How many ids the device remembers to show each notification once.
const REMEMBERED_IDS: usize = 4096;
/// Messages typed but not yet sent; past it the user is asked to wait.
const TYPED_QUEUE: usize = 16;

pub struct Options {
    pub name: String,
    pub bind: String,
    pub connect: String,
    pub poll: Option<u64>,
    pub token_file: Option<PathBuf>,
}

pub fn run(options: &Options) -> Result<()> {
    check_name(&options.name).map_err(|reason| anyhow!(reason))?;
    let token_file = options
        .token_file
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("07-push-{}.token", options.name)));
    // A token from an earlier run proves this device owns its name.
    let old_token = fs::read_to_string(&token_file)
        .ok()
        .map(|text| text.trim().to_string())
        .filter(|text| is_token(text));
    let shown = Arc::new(Shown::default());
    let token = match options.poll {
        None => {
            // TODO 1 (slides/07-push.md, "The client as server"): the device
            // is a server too. Bind a listener of its own (`bind`, with
            // `options.bind`); print `listening on IP:PORT` with the address
            // it got (`local_addr`: port 0 means the system picks one), and
            // flush; register that address with the service (`register`,
            // below, with `old_token`); then let a thread accept the pushes
            // (`accept_pushes`, with the token and a clone of `shown`). This
            // branch gives the token.
            bail!("TODO 1 in lessons/07-push/device.rs: the device does not listen yet")
        }
        Some(seconds) => {
            let token = register(options, None, old_token.as_deref())?;
            println!("polling {} every {seconds} s", options.connect);
            io::stdout().flush()?;
            let (token_copy, shown) = (token.clone(), Arc::clone(&shown));
            let (addr, name) = (options.connect.clone(), options.name.clone());
            let every = Duration::from_secs(seconds);
            thread::spawn(move || poll_for_ever(&addr, &name, &token_copy, every, &shown));
            token
        }
    };
    fs::write(&token_file, format!("{token}\n"))
        .with_context(|| format!("cannot keep the token in {}", token_file.display()))?;
    let (typed, to_send) = mpsc::sync_channel(TYPED_QUEUE);
    let (addr, name) = (options.connect.clone(), options.name.clone());
    let sender = thread::spawn(move || send_for_ever(&addr, &name, &token, &to_send));
    read_keyboard(&typed)?;
    // The end of input: what was typed still goes out, then we exit.
    drop(typed);
    sender
        .join()
        .map_err(|_| anyhow!("the sending thread stopped unexpectedly"))
}

fn bind(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

/// Tell the service who we are and where we listen (`None`: we poll), and
/// get the token it will present with every push.
fn register(
    options: &Options,
    listening: Option<SocketAddr>,
    token: Option<&str>,
) -> Result<String> {
    let stream = connect(&options.connect)?;
    let callback = match listening {
        None => "-".to_string(),
        // Bound to 0.0.0.0, "any address": the service needs one it can
        // reach, and the address we reach it from is one.
        Some(addr) if addr.ip().is_unspecified() => {
            SocketAddr::new(stream.local_addr()?.ip(), addr.port()).to_string()
        }
        Some(addr) => addr.to_string(),
    };
    // TODO 1, continued (slides/07-push.md, "Registering a callback"):
    // send `REGISTER <name> <callback>`, and ` <token>` after it when this
    // device has one from an earlier run; read the one reply line
    // (`read_reply`). `OK <token>` gives the token (check it with
    // `is_token`); `ERR <reason>` is an error that names the reason.
    bail!("TODO 1 in lessons/07-push/device.rs: the device does not register yet")
}

/// Accept push connections for ever, each on a thread of its own.
fn accept_pushes(listener: &TcpListener, token: &str, shown: &Arc<Shown>) {
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming().flatten() {
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_PUSH_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (token, shown, open) = (token.to_string(), Arc::clone(shown), Arc::clone(&open));
        thread::spawn(move || {
            let _ = take_pushes(&stream, &token, &shown);
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// One push connection: frames until the service closes. A frame without
/// our token is refused, and the connection closed: never shown.
fn take_pushes(stream: &TcpStream, token: &str, shown: &Shown) -> io::Result<()> {
    let mut reader = BufReader::new(DeadlineReader::new(stream));
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + PUSH_IDLE))?;
    let mut writer = stream;
    loop {
        reader
            .get_mut()
            .set_deadline(Some(Instant::now() + PUSH_IDLE))?;
        let line = match read_line(&mut reader)? {
            Line::Complete(line) => line,
            Line::TooLong | Line::Closed => return Ok(()),
        };
        let words = words(&line).unwrap_or_default();
        // TODO 3 (slides/07-push.md, "Who may push"): anyone can connect to
        // this port. A frame's second word must be our token (compare with
        // `same_token`), or answer `ERR <reason>` and return: never shown.
        // Then `PUSH <token> <id> <from> <length>`: read the body
        // (`parse_length`, `read_body`), show `#<id> from <from>: <text>`
        // (`show`, `printable`) only the first time this id comes
        // (`shown.first_time`), and answer `ACK <id>` either way.
        let ack = match words.as_slice() {
            ["LOST", _, count] => {
                show(&format!("! lost {count} notifications while away"));
                "ACK LOST\n".to_string()
            }
            _ => return writer.write_all(b"ERR unknown frame\n"),
        };
        // Shown first, acknowledged second: a crash between the two shows
        // a notification again, never loses one.
        writer.write_all(ack.as_bytes())?;
    }
}

/// Print one line and flush it: the user is not waiting for a newline of
/// their own to see it.
fn show(line: &str) {
    let mut output = io::stdout().lock();
    let _ = writeln!(output, "{line}");
    let _ = output.flush();
}

/// The ids already shown, the newest few thousand: a notification sent
/// again because its acknowledgement was lost is shown once.
#[derive(Default)]
struct Shown {
    ids: Mutex<(HashSet<u64>, VecDeque<u64>)>,
}

impl Shown {
    fn first_time(&self, id: u64) -> bool {
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (set, order) = &mut *ids;
        if !set.insert(id) {
            return false;
        }
        order.push_back(id);
        if order.len() > REMEMBERED_IDS {
            if let Some(oldest) = order.pop_front() {
                set.remove(&oldest);
            }
        }
        true
    }
}

/// The polling device: ask every `every`, whether or not there is news.
fn poll_for_ever(addr: &str, name: &str, token: &str, every: Duration, shown: &Shown) {
    let mut acked = 0;
    loop {
        thread::sleep(every);
        match poll_once(addr, name, token, acked, shown) {
            Ok(newest) => acked = acked.max(newest),
            Err(error) => eprintln!("poll failed: {error:#}"),
        }
    }
}

/// One `POLL`: show what came, and return the newest id (acknowledged by
/// the next poll).
fn poll_once(addr: &str, name: &str, token: &str, acked: u64, shown: &Shown) -> Result<u64> {
    let stream = connect(addr)?;
    (&stream).write_all(format!("POLL {name} {token} {acked}\n").as_bytes())?;
    let mut reader = BufReader::new(DeadlineReader::new(&stream));
    reader
        .get_mut()
        .set_deadline(Some(Instant::now() + PUSH_IDLE))?;
    let header = expect_line(&mut reader)?;
    let (count, lost) = match words(&header).unwrap_or_default().as_slice() {
        ["NOTES", count, lost] => (count.parse::<usize>()?, lost.parse::<u64>()?),
        _ => bail!(
            "the service answered {:?}",
            String::from_utf8_lossy(&header)
        ),
    };
    if lost > 0 {
        show(&format!("! lost {lost} notifications while away"));
    }
    let mut newest = acked;
    for _ in 0..count {
        let line = expect_line(&mut reader)?;
        let words = words(&line).unwrap_or_default();
        let ["NOTE", id, from, length] = words.as_slice() else {
            bail!(
                "the service sent {:?} for a NOTE",
                String::from_utf8_lossy(&line)
            );
        };
        let (id, length) = (
            id.parse::<u64>()?,
            parse_length(length).map_err(|e| anyhow!(e))?,
        );
        let body = read_body(&mut reader, length)?;
        if shown.first_time(id) {
            show(&format!("#{id} from {from}: {}", printable(&body)));
        }
        newest = newest.max(id);
    }
    Ok(newest)
}

fn expect_line(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    match read_line(reader)? {
        Line::Complete(line) => Ok(line),
        _ => bail!("the service closed the connection mid-reply"),
    }
}

/// Read what the user types until the end of input. `to bob: text` goes to
/// the sending thread; the keyboard never waits for the network.
fn read_keyboard(typed: &SyncSender<(String, String)>) -> Result<()> {
    for line in io::stdin().lock().lines() {
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((to, text)) = line
            .strip_prefix("to ")
            .and_then(|rest| rest.split_once(':'))
            .map(|(to, text)| (to.trim().to_string(), text.trim().to_string()))
        else {
            show("! type `to NAME: text` to send a message");
            continue;
        };
        if text.len() > MAX_BODY {
            show(&format!("! a message holds at most {MAX_BODY} bytes"));
            continue;
        }
        match typed.try_send((to, text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => show("! still sending the earlier messages; try again"),
            Err(TrySendError::Disconnected(_)) => bail!("the sending thread stopped"),
        }
    }
    Ok(())
}

/// Send each typed message through the service, as `TELL`.
fn send_for_ever(addr: &str, name: &str, token: &str, to_send: &Receiver<(String, String)>) {
    for (to, text) in to_send {
        match tell(addr, name, token, &to, &text) {
            Ok(id) => show(&format!("sent #{id} to {to}")),
            Err(error) => show(&format!("! not sent to {to}: {error:#}")),
        }
    }
}

fn tell(addr: &str, name: &str, token: &str, to: &str, text: &str) -> Result<String> {
    let stream = connect(addr)?;
    let mut request = format!("TELL {name} {token} {to} {}\n", text.len()).into_bytes();
    request.extend_from_slice(text.as_bytes());
    (&stream).write_all(&request)?;
    let reply = read_reply(&stream)?;
    match reply.strip_prefix("OK ") {
        Some(id) => Ok(id.to_string()),
        None => bail!("{}", reply.strip_prefix("ERR ").unwrap_or(&reply)),
    }
}
