//! The push service: devices connect to it and stay connected; application
//! servers connect to hand it notifications. A connection's first frame
//! says which it is: `HELLO` (an agent) or `SEND` (a sender).

use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::disk::Disk;
use crate::frame::{read_frame, read_frame_within, write_frame_within, FrameError};
use crate::protocol::Message;
use crate::store::Service;

/// Connections served at once; each costs a descriptor and two threads.
const MAX_CONNECTIONS: usize = 1000;
/// How long a new connection has to say who it is, and a sender to send
/// its next notification: the whole frame, however it trickles in.
const FIRST_FRAME: Duration = Duration::from_secs(10);
/// How long a frame may take to write to a peer that reads it: to a
/// sender, or to an agent without heartbeats.
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// Bind `addr`, say where we listen, and serve every connection at once.
pub fn run(addr: &str, data: Option<&Path>) -> Result<()> {
    let disk = match data {
        // Claimed before `listening on`: a second server on the folder
        // exits with one line, `DIR is in use by another server (pid N)`.
        Some(folder) => Some(Disk::open(folder)?),
        None => None,
    };
    let service = Service::open(disk).context("cannot read the saved notifications")?;
    let listener = bind_listener(addr)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    accept_loop(&listener, Arc::new(service));
    Ok(())
}

fn bind_listener(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

fn accept_loop(listener: &TcpListener, service: Arc<Service>) {
    let open = Arc::new(AtomicUsize::new(0));
    for connection in listener.incoming() {
        let Ok(stream) = connection else {
            continue;
        };
        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = reply(
                &stream,
                Message::Err {
                    reason: "the service is full; try again later".into(),
                },
            );
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (service, still_open) = (Arc::clone(&service), Arc::clone(&open));
        let spawned = thread::Builder::new().spawn(move || {
            if let Err(error) = serve(&stream, &service) {
                let peer = stream.peer_addr().map(|peer| peer.to_string());
                println!("{}: {error}", peer.unwrap_or_default());
            }
            let _ = stream.shutdown(Shutdown::Both);
            still_open.fetch_sub(1, Ordering::SeqCst);
        });
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn reply(stream: &TcpStream, message: Message) -> io::Result<()> {
    write_frame_within(stream, &message.encode(), WRITE_WAIT)
}

/// Serve one connection to its end; its trouble is its own.
fn serve(stream: &TcpStream, service: &Service) -> Result<(), String> {
    let first = read_frame_within(stream, FIRST_FRAME)
        .map_err(|error| refuse(stream, &error.to_string()))?;
    match Message::parse(&first) {
        Ok(Message::Hello { device, keepalive }) => {
            serve_agent(stream, service, &device, keepalive)
        }
        Ok(send @ Message::Send { .. }) => serve_sender(stream, service, send),
        Ok(_) => Err(refuse(stream, "a connection starts with HELLO or SEND")),
        Err(reason) => Err(refuse(stream, &reason)),
    }
}

/// Tell the peer why it is cut off, and give the reason for the log.
fn refuse(stream: &TcpStream, reason: &str) -> String {
    let _ = reply(
        stream,
        Message::Err {
            reason: reason.to_string(),
        },
    );
    reason.to_string()
}

/// A sender: each `SEND` is answered `OK <id>` once the notification is
/// safe, or `ERR` and why.
fn serve_sender(stream: &TcpStream, service: &Service, first: Message) -> Result<(), String> {
    let mut message = first;
    loop {
        let Message::Send {
            device,
            app,
            ttl,
            collapse,
            text,
        } = message
        else {
            return Err(refuse(stream, "a sender sends only SEND"));
        };
        let answer = match service.accept(&device, &app, ttl, collapse, text) {
            Ok(id) => Message::Ok { id },
            Err(reason) => Message::Err { reason },
        };
        reply(stream, answer).map_err(|error| error.to_string())?;
        message = match read_frame_within(stream, FIRST_FRAME) {
            Ok(body) => Message::parse(&body).map_err(|reason| refuse(stream, &reason))?,
            Err(FrameError::Closed) => return Ok(()),
            Err(error) => return Err(refuse(stream, &error.to_string())),
        };
    }
}

/// An agent: notifications go out as they come, while this thread reads
/// heartbeats, registrations and acknowledgements.
fn serve_agent(
    stream: &TcpStream,
    service: &Service,
    device: &str,
    keepalive: Duration,
) -> Result<(), String> {
    let deadline = two_heartbeats(keepalive);
    stream
        .set_read_timeout(deadline)
        .map_err(|error| error.to_string())?;
    let writer = Writer {
        stream: Mutex::new(stream.try_clone().map_err(|error| error.to_string())?),
        wait: deadline.unwrap_or(WRITE_WAIT),
    };
    let connection = service.connect(device);
    println!("{device}: connected (connection {connection})");
    writer
        .send(Message::Welcome)
        .map_err(|error| error.to_string())?;
    let ended = thread::scope(|scope| {
        scope.spawn(|| {
            push_loop(service, device, connection, &writer);
            // Unblocks the read below when a newer connection replaced this
            // one, or a write failed.
            let _ = stream.shutdown(Shutdown::Both);
        });
        let ended = read_loop(stream, service, device, connection, &writer, deadline);
        service.disconnect(device, connection);
        let _ = stream.shutdown(Shutdown::Both);
        ended
    });
    println!(
        "{device}: connection {connection} closed: {}",
        ended.err().unwrap_or_else(|| "the agent left".into())
    );
    Ok(())
}

/// How long an agent's connection may stay silent, or a write wait: two
/// heartbeats. Without heartbeats, no limit on silence.
fn two_heartbeats(keepalive: Duration) -> Option<Duration> {
    // Two heartbeats missed and the connection is dead, whatever TCP says:
    // a NAT that forgot it drops every segment without a word.
    (!keepalive.is_zero()).then(|| keepalive * 2)
}

/// What writes to an agent: one frame at a time (through a lock: a PONG or
/// an ERR must not land in the middle of a PUSH), each whole within `wait`.
struct Writer {
    stream: Mutex<TcpStream>,
    wait: Duration,
}

impl Writer {
    fn send(&self, message: Message) -> io::Result<()> {
        let stream = self
            .stream
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        write_frame_within(&stream, &message.encode(), self.wait)
    }
}

/// Send every notification for a registered app, as it comes, until the
/// connection is no longer the device's or a write fails.
fn push_loop(service: &Service, device: &str, connection: u64, writer: &Writer) {
    while let Some(batch) = service.next_to_send(device, connection) {
        for (app, note) in batch {
            let push = Message::Push {
                app,
                id: note.id,
                text: note.text,
            };
            if writer.send(push).is_err() {
                // Not read for two heartbeats (or WRITE_WAIT): only this
                // connection goes. What was not acknowledged still waits.
                return;
            }
        }
    }
}

fn read_loop(
    stream: &TcpStream,
    service: &Service,
    device: &str,
    connection: u64,
    writer: &Writer,
    deadline: Option<Duration>,
) -> Result<(), String> {
    // Through the writer: an ERR must not land in the middle of a PUSH
    // that the writer thread is sending.
    let refuse = |reason: &str| {
        let reason = reason.to_string();
        let _ = writer.send(Message::Err {
            reason: reason.clone(),
        });
        reason
    };
    loop {
        // Two heartbeats for a whole frame: a byte now and then does not
        // keep a connection that says nothing.
        let frame = match deadline {
            Some(deadline) => read_frame_within(stream, deadline),
            None => read_frame(&mut &*stream),
        };
        let body = match frame {
            Ok(body) => body,
            Err(FrameError::Closed) => return Ok(()),
            Err(FrameError::Silent) => {
                let waited = deadline.unwrap_or_default().as_secs_f64();
                return Err(format!(
                    "no heartbeat for {waited:.1} s (two missed): the connection is dead"
                ));
            }
            Err(error) => return Err(refuse(&error.to_string())),
        };
        match Message::parse(&body) {
            Ok(Message::Ping) => writer
                .send(Message::Pong)
                .map_err(|error| error.to_string())?,
            Ok(Message::Register { app, last }) => service.register(device, connection, &app, last),
            Ok(Message::Unregister { app }) => service.unregister(device, connection, &app),
            Ok(Message::Ack { app, id }) => service.ack(device, &app, id),
            Ok(_) => return Err(refuse("an agent sends PING, REGISTER, UNREGISTER or ACK")),
            Err(reason) => return Err(refuse(&reason)),
        }
    }
}
