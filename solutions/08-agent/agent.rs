//! The device's push agent (what Play Services is for FCM, apsd for APNs):
//! one outgoing connection to the service for the whole device, kept alive
//! with heartbeats, and a local listener where the device's apps register.
//! A notification comes down the one connection with its app's name and
//! stream id, and goes to that app.

use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::backoff::Backoff;
use crate::frame::{read_frame, write_frame, write_frame_within, FrameError};
use crate::protocol::Message;

/// Apps registered at once: each holds a socket and a thread.
const MAX_APPS: usize = 64;
/// Connections on the apps' port at once, registered or not yet: a program
/// that opens thousands gets the rest refused, not a thread each.
const MAX_APP_CONNECTIONS: usize = 2 * MAX_APPS;
/// How long to wait for a connection, the service's WELCOME, or an app's
/// first frame.
const HANDSHAKE: Duration = Duration::from_secs(5);
/// How long a write may wait for the service to read.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// How long a frame may take to write to an app. An app on the phone reads
/// at once; one whose socket is full has stopped. Waiting for it would hold
/// the reader of the one connection, every other app's notifications with
/// it, and past two heartbeats the service would cut the device. So it is
/// dropped, and what it missed waits at the service until it registers.
const APP_WRITE_WAIT: Duration = Duration::from_millis(20);
/// What the system may hold for one app, written and not yet read: 64
/// notifications of the largest size. Left to itself, Linux lets a loopback
/// socket's send buffer grow to 4 MiB: 64 apps could hold 256 MiB of a
/// phone's memory, and an app that stopped reading would be seen to stop
/// only some 4000 notifications later.
const APP_BUFFER: usize = 64 * 1024;

pub struct Agent {
    device: String,
    service: String,
    keepalive: Duration,
    /// Each registered app's connection, and a number to tell a
    /// registration from a later one under the same name.
    apps: Mutex<BTreeMap<String, (u64, TcpStream)>>,
    /// For each app, the last stream id handed to it: what the agent
    /// acknowledges, and how it knows a notification sent again.
    shown: Mutex<BTreeMap<String, u64>>,
    /// The connection to the service, while there is one.
    uplink: Mutex<Option<TcpStream>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn run(
    device: &str,
    service: &str,
    local: &str,
    keepalive: Duration,
    backoff: Backoff,
) -> Result<()> {
    let listener = TcpListener::bind(local).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {local} is already in use"),
        _ => anyhow!("cannot listen on {local}: {error}"),
    })?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    let agent = Arc::new(Agent {
        device: device.to_string(),
        service: service.to_string(),
        keepalive,
        apps: Mutex::new(BTreeMap::new()),
        shown: Mutex::new(BTreeMap::new()),
        uplink: Mutex::new(None),
    });
    let for_apps = Arc::clone(&agent);
    thread::spawn(move || accept_apps(&listener, &for_apps));
    stay_connected(&agent, backoff)
}

/// Connect, and connect again whenever the connection ends, for ever.
fn stay_connected(agent: &Agent, mut backoff: Backoff) -> ! {
    loop {
        let started = Instant::now();
        match agent.session() {
            Ok(why) => {
                say(format!("connection to {} lost: {why}", agent.service));
                // A connection that held proved the way to the service: the
                // next wait starts from the first. One that ended at once
                // counts as a failure: the service took it and then closed
                // it, or another agent with this device's name took its
                // place. Were the backoff reset after those too, two agents
                // with one name would push each other out twice a second,
                // for ever; this way they soon wait the longest wait.
                if started.elapsed() >= held_long_enough(agent.keepalive) {
                    backoff.reset();
                }
            }
            Err(why) => say(format!(
                "cannot reach the service at {}: {why}",
                agent.service
            )),
        }
        let delay = backoff.next_delay();
        say(format!("reconnecting in {:.2} s", delay.as_secs_f64()));
        thread::sleep(delay);
    }
}

/// How long a connection must last to count as one that worked: two
/// heartbeats (a connection still up then has heard the service answer
/// one, or the deadline in `session` would have cut it), and never less
/// than a second.
fn held_long_enough(keepalive: Duration) -> Duration {
    (keepalive * 2).max(Duration::from_secs(1))
}

fn say(line: String) {
    println!("{line}");
    let _ = io::stdout().flush();
}

impl Agent {
    /// One connection to the service, from connect to its end: `Err` if it
    /// never got as far as `WELCOME`, otherwise why it ended.
    fn session(&self) -> Result<String, String> {
        let addr = self
            .service
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or("not an address")?;
        let stream =
            TcpStream::connect_timeout(&addr, HANDSHAKE).map_err(|error| error.to_string())?;
        let setup = stream
            .set_read_timeout(Some(HANDSHAKE))
            .and_then(|()| stream.set_write_timeout(Some(WRITE_WAIT)))
            .and_then(|()| stream.set_nodelay(true));
        setup.map_err(|error| error.to_string())?;
        self.hello(&stream).map_err(|error| error.to_string())?;
        match read_frame(&mut &stream).map(|body| Message::parse(&body)) {
            Ok(Ok(Message::Welcome)) => {}
            Ok(Ok(Message::Err { reason })) => return Err(format!("refused: {reason}")),
            Ok(_) => return Err("the service did not answer WELCOME".into()),
            Err(error) => return Err(error.to_string()),
        }
        say(format!("connected to {} as {}", self.service, self.device));
        // Two heartbeats without a word from the service, and the
        // connection is dead: its PONGs are what this deadline waits for.
        let deadline = (!self.keepalive.is_zero()).then(|| self.keepalive * 2);
        stream
            .set_read_timeout(deadline)
            .map_err(|error| error.to_string())?;
        let (stop, stopped) = mpsc::channel::<()>();
        let ended = thread::scope(|scope| {
            if !self.keepalive.is_zero() {
                let stream = &stream;
                scope.spawn(move || self.heartbeats(stream, &stopped));
            }
            let ended = self.read_loop(&stream, deadline);
            *lock(&self.uplink) = None;
            let _ = stream.shutdown(Shutdown::Both);
            drop(stop);
            ended
        });
        Ok(ended)
    }

    /// Say who the device is and which apps run on it, and from now on
    /// send through this connection.
    fn hello(&self, stream: &TcpStream) -> io::Result<()> {
        let hello = Message::Hello {
            device: self.device.clone(),
            keepalive: self.keepalive,
        };
        write_frame(&mut &*stream, &hello.encode())?;
        // Under the apps' lock: an app that registers meanwhile is sent
        // either here or by its own registration, never by neither.
        let apps = lock(&self.apps);
        let shown = lock(&self.shown);
        for app in apps.keys() {
            let last = shown.get(app).copied().unwrap_or(0);
            let register = Message::Register {
                app: app.clone(),
                last,
            };
            write_frame(&mut &*stream, &register.encode())?;
        }
        *lock(&self.uplink) = Some(stream.try_clone()?);
        Ok(())
    }

    /// A `PING` every keepalive interval until the session stops.
    fn heartbeats(&self, stream: &TcpStream, stopped: &mpsc::Receiver<()>) {
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(self.keepalive) {
            if !self.to_service(&Message::Ping) {
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    /// Send to the service if connected; false if the write failed.
    fn to_service(&self, message: &Message) -> bool {
        match lock(&self.uplink).as_mut() {
            Some(stream) => write_frame(stream, &message.encode()).is_ok(),
            None => true,
        }
    }

    fn read_loop(&self, stream: &TcpStream, deadline: Option<Duration>) -> String {
        loop {
            let body = match read_frame(&mut &*stream) {
                Ok(body) => body,
                Err(FrameError::Silent) => {
                    let waited = deadline.unwrap_or_default().as_secs_f64();
                    return format!(
                        "no answer for {waited:.1} s (two heartbeats): the connection is dead"
                    );
                }
                Err(FrameError::Closed) => return "the service closed the connection".into(),
                Err(error) => return error.to_string(),
            };
            match Message::parse(&body) {
                Ok(Message::Push { app, id, text }) => self.deliver(&app, id, &text),
                Ok(Message::Pong) => {}
                Ok(Message::Err { reason }) => return format!("the service said: {reason}"),
                Ok(other) => return format!("unexpected {:?}", other.encode()),
                Err(reason) => return format!("a frame that makes no sense: {reason}"),
            }
        }
    }

    /// Hand a notification to its app, once, and acknowledge its position.
    fn deliver(&self, app: &str, id: u64, text: &str) {
        let mut apps = lock(&self.apps);
        let Some((_, app_stream)) = apps.get_mut(app) else {
            // Not running (it stopped a moment ago): the service sends it
            // again when the app registers.
            return;
        };
        let mut shown = lock(&self.shown);
        let last = shown.entry(app.to_string()).or_insert(0);
        // After a reconnect the service sends again what it has not seen
        // acknowledged; what this app was handed already is skipped.
        if id > *last {
            let push = Message::Push {
                app: app.to_string(),
                id,
                text: text.to_string(),
            };
            if write_frame_within(app_stream, &push.encode(), APP_WRITE_WAIT).is_err() {
                // Cut: a frame half written would garble what follows.
                let _ = app_stream.shutdown(Shutdown::Both);
                apps.remove(app);
                self.to_service(&Message::Unregister {
                    app: app.to_string(),
                });
                say(format!("app {app} dropped: it does not read"));
                return;
            }
            *last = id;
        }
        let ack = Message::Ack {
            app: app.to_string(),
            id: *last,
        };
        self.to_service(&ack);
    }
}

fn accept_apps(listener: &TcpListener, agent: &Arc<Agent>) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut numbers = 0u64;
    for stream in listener.incoming().flatten() {
        if open.load(Ordering::SeqCst) >= MAX_APP_CONNECTIONS {
            refuse(
                &stream,
                "too many connections to the agent; try again later",
            );
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        numbers += 1;
        let (agent, number, still_open) = (Arc::clone(agent), numbers, Arc::clone(&open));
        let spawned = thread::Builder::new().spawn(move || {
            serve_app(&stream, &agent, number);
            still_open.fetch_sub(1, Ordering::SeqCst);
        });
        // Out of threads: this connection is dropped, the next ones tried.
        if spawned.is_err() {
            open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Keep the system from holding more than `bytes` written to `stream` and
/// not yet taken by its reader (`SO_SNDBUF`, which std does not set). Should
/// it fail, the system's own bound still holds.
#[cfg(unix)]
fn bound_send_buffer(stream: &TcpStream, bytes: usize) {
    use std::os::fd::AsRawFd;
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `setsockopt` reads one `c_int` from `&size`, which lives
    // through the call, and keeps no pointer to it.
    let _ = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Elsewhere, the system's own bound.
#[cfg(not(unix))]
fn bound_send_buffer(_stream: &TcpStream, _bytes: usize) {}

/// One app, from its `REGISTER` to its end.
fn serve_app(stream: &TcpStream, agent: &Agent, number: u64) {
    let _ = stream.set_read_timeout(Some(HANDSHAKE));
    let _ = stream.set_write_timeout(Some(APP_WRITE_WAIT));
    bound_send_buffer(stream, APP_BUFFER);
    let app = match read_frame(&mut &*stream).map(|body| Message::parse(&body)) {
        Ok(Ok(Message::Register { app, .. })) => app,
        Ok(Ok(_)) => return refuse(stream, "an app starts with REGISTER NAME 0"),
        Ok(Err(reason)) => return refuse(stream, &reason),
        Err(error) => return refuse(stream, &error.to_string()),
    };
    {
        let mut apps = lock(&agent.apps);
        if apps.contains_key(&app) {
            return refuse(
                stream,
                &format!("an app called {app} is registered already"),
            );
        }
        if apps.len() >= MAX_APPS {
            return refuse(stream, &format!("{MAX_APPS} apps are registered already"));
        }
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        if write_frame(&mut &*stream, &Message::Ok { id: 0 }.encode()).is_err() {
            return;
        }
        apps.insert(app.clone(), (number, clone));
        let last = lock(&agent.shown).get(&app).copied().unwrap_or(0);
        agent.to_service(&Message::Register {
            app: app.clone(),
            last,
        });
    }
    say(format!("app {app} registered"));
    // An app says nothing more; its end (a close or a reset) unregisters it.
    let _ = stream.set_read_timeout(None);
    while read_frame(&mut &*stream).is_ok() {}
    let mut apps = lock(&agent.apps);
    if apps
        .get(&app)
        .is_some_and(|(registered, _)| *registered == number)
    {
        apps.remove(&app);
        agent.to_service(&Message::Unregister { app: app.clone() });
        say(format!("app {app} left"));
    }
}

fn refuse(stream: &TcpStream, reason: &str) {
    let _ = write_frame(
        &mut &*stream,
        &Message::Err {
            reason: reason.to_string(),
        }
        .encode(),
    );
    let _ = stream.shutdown(Shutdown::Both);
}
