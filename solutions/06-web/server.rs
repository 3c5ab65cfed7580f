//! The server: one HTTP/1.1 port for browsers, one chat port for `nc`, one
//! room for both. Each HTTP connection reads requests and answers them in
//! order, as in lesson 02, until one of them turns it into a stream.

use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use crate::chat;
use crate::commands::{check_name, take_line, Next};
use crate::limits::{accept_loop, Limit};
use crate::lines::DeadlineReader;
use crate::request::{self, ReadError, Request};
use crate::response::{self, Reply, Status};
use crate::room::{Membership, Room};
use crate::{polling, sse, websocket};

/// How long a client has to send a request's whole head, from when the
/// server starts to wait for it (lesson 02's slowloris deadline). A
/// connection that says nothing for this long between requests is closed:
/// a browser opens a new one when it needs it.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);

/// How long one write may wait for a client that reads nothing.
pub const WRITE_WAIT: Duration = Duration::from_secs(10);

/// The largest request body: a `POST /send` of a few lines. Each line is at
/// most 4 KiB; more than 16 at once is not typing.
const MAX_BODY: usize = 64 * 1024;

/// What `Retry-After` tells a client turned away: come back in a moment.
const RETRY_AFTER_SECS: u64 = 2;

/// The page, with its script: the whole client of three of the four ways.
const PAGE: &str = include_str!("page.html");

/// What the server was asked to do.
pub struct Options {
    pub bind: String,
    pub chat_bind: String,
    pub keepalive: Duration,
    pub idle: Duration,
    pub name_wait: Duration,
    pub max_connections: usize,
}

/// What every request may need.
pub struct App {
    pub room: Arc<Room>,
    pub keepalive: Duration,
}

/// Bind both ports, say where, and serve until stopped.
pub fn run(options: Options) -> Result<()> {
    let web = bind_listener(&options.bind)?;
    let chat_port = bind_listener(&options.chat_bind)?;
    // The HTTP address first: it is what the contract's first line names.
    println!("listening on {}", web.local_addr()?);
    println!("chat on {}", chat_port.local_addr()?);
    io::stdout().flush()?;
    let room = Arc::new(Room::new());
    {
        let (room, idle) = (Arc::clone(&room), options.idle);
        // A web member says no goodbye when its tab closes: it is gone when
        // it has not been heard from for `idle`. Looked for once a second, or
        // four times an `idle` if that is shorter: at most a quarter late.
        let every = (idle / 4).min(Duration::from_secs(1));
        thread::spawn(move || loop {
            thread::sleep(every);
            room.leave_idle(idle);
        });
    }
    {
        let room = Arc::clone(&room);
        let limit = Limit::new(options.max_connections);
        let name_wait = options.name_wait;
        thread::spawn(move || {
            accept_loop(&chat_port, &limit, chat::turn_away, move |stream| {
                chat::serve(stream, &room, name_wait)
            })
        });
    }
    let app = Arc::new(App {
        room,
        keepalive: options.keepalive,
    });
    let limit = Limit::new(options.max_connections);
    accept_loop(&web, &limit, turn_away, move |stream| {
        serve_connection(stream, &app)
    });
    Ok(())
}

fn bind_listener(addr: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).map_err(|error| match error.kind() {
        ErrorKind::AddrInUse => anyhow!("address {addr} is already in use"),
        ErrorKind::AddrNotAvailable => anyhow!("address {addr} is not an address of this machine"),
        ErrorKind::PermissionDenied => {
            anyhow!("not allowed to listen on {addr} (ports below 1024 need privileges)")
        }
        _ => anyhow!("cannot listen on {addr}: {error}"),
    })
}

/// Too many connections already: 503, and when to try again.
fn turn_away(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let mut reply = Reply::text(Status(503), "! the server is full; try again later")
        .header(format!("Retry-After: {RETRY_AFTER_SECS}"));
    reply.close = true;
    let _ = response::send(&mut stream, &reply);
    let _ = stream.shutdown(Shutdown::Write);
}

/// What became of a connection after one request.
pub enum After {
    /// Ready for the next request.
    KeepOpen,
    /// Done: the answer said so, or the connection became a stream.
    Close,
}

/// Read requests from one connection and answer each, in order.
fn serve_connection(stream: TcpStream, app: &App) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_WAIT))?;
    stream.set_nodelay(true)?;
    // One socket, shared by the reader, the answers and, for a stream, the
    // room, which may cut it.
    let stream = Arc::new(stream);
    let mut reader = BufReader::new(DeadlineReader::new(&stream));
    loop {
        reader
            .get_mut()
            .set_deadline(Some(Instant::now() + HEAD_DEADLINE))?;
        let request = match request::read_request(&mut reader) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            // A client that went quiet or vanished between requests: browsers
            // do it all the time, so it is no news for the log.
            Err(ReadError::Gone(error)) if is_quiet_end(&error) => return Ok(()),
            Err(ReadError::Gone(error)) => return Err(error),
            Err(ReadError::Rejected(status, why)) => {
                let mut reply = Reply::text(status, &format!("! {why}"));
                reply.close = true;
                response::send(&mut &*stream, &reply)?;
                return Ok(());
            }
        };
        let body = match read_body(&mut reader, &request)? {
            Ok(body) => body,
            Err(reply) => {
                response::send(&mut &*stream, &reply)?;
                close_after_answer(&stream);
                return Ok(());
            }
        };
        reader.get_mut().set_deadline(None)?;
        let keep_open = request.version == "HTTP/1.1" && !asks_to_close(&request);
        match answer(app, &request, &body, &stream, &mut reader, keep_open)? {
            After::KeepOpen if keep_open => {}
            _ => return Ok(()),
        }
    }
}

/// The request's body, if it has one: exactly `Content-Length` bytes.
/// `Err` holds the refusal to send when the body cannot be read.
fn read_body(reader: &mut impl Read, request: &Request) -> io::Result<Result<Vec<u8>, Reply>> {
    let refuse = |status: u16, why: &str| {
        let mut reply = Reply::text(Status(status), &format!("! {why}"));
        reply.close = true;
        Ok(Err(reply))
    };
    if request.header("Transfer-Encoding").is_some() {
        return refuse(
            400,
            "send a Content-Length; chunked bodies are not read here",
        );
    }
    if !request.has_body() {
        return Ok(Ok(Vec::new()));
    }
    let Some(length) = request.header("Content-Length") else {
        return Ok(Ok(Vec::new()));
    };
    let Ok(length) = length.parse::<usize>() else {
        return refuse(400, "the Content-Length is not a number");
    };
    if length > MAX_BODY {
        return refuse(413, "a body holds at most 64 KiB");
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Ok(body))
}

/// Close after an answer to a request whose body was not read: end our
/// side, throw away what still comes for a moment, then close, so the
/// client reads the answer rather than a reset (lesson 02).
fn close_after_answer(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    drain_briefly(stream, &mut &*stream, 64 * 1024);
}

/// Read from `reader` (over `stream`) and throw away what the client still
/// sends, `most` bytes at most, for a second in all. Each read waits only
/// for what is left of the second: with a timeout of its own for each read,
/// a client sending a byte just before each timeout would hold the thread
/// for as long as it liked, or, with the clock checked between reads, a
/// read begun at the end of the second would take another.
pub fn drain_briefly(stream: &TcpStream, reader: &mut impl Read, most: u64) {
    let until = Instant::now() + Duration::from_secs(1);
    let mut buffer = [0; 4096];
    let mut left = most;
    while left > 0 {
        let wait = until.saturating_duration_since(Instant::now());
        // std refuses a zero timeout (the system would read it as none).
        if wait.is_zero() || stream.set_read_timeout(Some(wait)).is_err() {
            return;
        }
        let room = buffer.len().min(left as usize);
        match reader.read(&mut buffer[..room]) {
            Ok(0) | Err(_) => return,
            Ok(read) => left -= read as u64,
        }
    }
}

fn is_quiet_end(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::ConnectionReset
    )
}

/// Whether the client said `Connection: close`.
fn asks_to_close(request: &Request) -> bool {
    request.header("Connection").is_some_and(|options| {
        options
            .split(',')
            .any(|option| option.trim().eq_ignore_ascii_case("close"))
    })
}

/// The value of `name` in the target's query: `/messages?since=4&wait=30`.
/// `Some("")` for a name with no value.
pub fn query<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    let (_, query) = request.target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

/// Answer one request; the ways that stream take the connection over.
fn answer(
    app: &App,
    request: &Request,
    body: &[u8],
    stream: &Arc<TcpStream>,
    reader: &mut BufReader<DeadlineReader>,
    keep_open: bool,
) -> io::Result<After> {
    let path = request.target.split('?').next().unwrap_or_default();
    let method = request.method.as_str();
    let reply = match (method, path) {
        ("GET", "/") => Reply::new(Status(200), "text/html; charset=utf-8", PAGE),
        ("POST", "/join") => join(app, body),
        ("POST", "/send") => match member(app, request) {
            Ok(member) => send(app, member, body),
            Err(refusal) => refusal,
        },
        ("GET", "/messages") => match member(app, request) {
            Ok(member) => polling::messages(&app.room, &member, request),
            Err(refusal) => refusal,
        },
        ("GET", "/events") => match member(app, request) {
            Ok(member) => return sse::serve(app, &member, request, stream).map(|()| After::Close),
            Err(refusal) => refusal,
        },
        ("GET", "/ws") => match member(app, request) {
            Ok(member) => return websocket::serve(app, member, request, stream, reader),
            Err(refusal) => refusal,
        },
        (_, "/" | "/join" | "/send" | "/messages" | "/events" | "/ws") => {
            Reply::text(Status(405), "! not with that method").header(format!(
                "Allow: {}",
                if matches!(path, "/join" | "/send") {
                    "POST"
                } else {
                    "GET"
                }
            ))
        }
        _ => Reply::text(Status(404), "! no such page"),
    };
    let mut reply = reply;
    reply.close = !keep_open;
    response::send(&mut &**stream, &reply)?;
    Ok(After::KeepOpen)
}

/// The member whose `key` the request shows, or the answer to give.
fn member(app: &App, request: &Request) -> Result<Membership, Reply> {
    let key = query(request, "key").unwrap_or_default();
    app.room.member_by_key(key).ok_or_else(|| {
        Reply::text(
            Status(410),
            "! you are not in the room (or no longer): POST /join again",
        )
    })
}

/// `POST /join` with a name as the body: the key and the cursor to start
/// reading from, `KEY SINCE`.
fn join(app: &App, body: &[u8]) -> Reply {
    let name = String::from_utf8_lossy(body);
    let name = name.trim_end_matches(['\r', '\n']);
    match check_name(name).and_then(|()| app.room.join(name, true)) {
        Ok(welcome) => Reply::text(Status(200), &format!("{} {}", welcome.key, welcome.since)),
        Err(reason) => Reply::text(Status(409), &format!("! {reason}")),
    }
}

/// `POST /send?key=KEY` with one line or more as the body.
fn send(app: &App, mut member: Membership, body: &[u8]) -> Reply {
    for line in body.split(|&byte| byte == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Next::Quit = take_line(&app.room, &mut member, line) {
            app.room.leave(&member);
            break;
        }
    }
    Reply::new(Status(200), "text/plain; charset=utf-8", "")
}
