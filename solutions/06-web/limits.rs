//! What a held connection costs, and the bound on how many are held.
//!
//! A long poll or an event stream holds its connection for seconds or hours
//! while nothing happens. Here each holds a thread, and a thread that only
//! waits needs little stack: 128 KiB, not the 2 MiB Rust gives by default,
//! so 500 waiting members reserve 64 MiB of address space, not 1 GiB. Real
//! servers (nginx, Node, Tokio) hold each waiting connection in a few
//! hundred bytes instead, with one thread watching them all (`epoll`).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// The stack of each connection's thread. Enough for what a request does
/// (parse a head, format a line); a deep recursion would not fit.
const STACK: usize = 128 * 1024;

/// Run `work` on a new thread with a small stack; `None` when the system
/// has no thread to give (the connection is then dropped).
pub fn spawn_small<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<JoinHandle<T>> {
    match thread::Builder::new().stack_size(STACK).spawn(work) {
        Ok(handle) => Some(handle),
        Err(error) => {
            eprintln!("cannot start a thread: {error}");
            None
        }
    }
}

/// At most `most` connections at once. Each costs a socket (a file
/// descriptor) and a thread; past the bound, a newcomer is told to come
/// back later rather than exhausting the machine.
#[derive(Clone)]
pub struct Limit {
    open: Arc<AtomicUsize>,
    most: usize,
}

/// One place within the limit, given back when dropped.
pub struct Permit {
    open: Arc<AtomicUsize>,
}

impl Limit {
    pub fn new(most: usize) -> Limit {
        Limit {
            open: Arc::default(),
            most,
        }
    }

    /// A place, if one is free.
    pub fn enter(&self) -> Option<Permit> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.most {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Permit {
            open: Arc::clone(&self.open),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Take connections for ever, each on a small thread of its own running
/// `serve`, at most `limit` at once; past it, `turn_away` answers.
pub fn accept_loop<F>(listener: &TcpListener, limit: &Limit, turn_away: fn(TcpStream), serve: F)
where
    F: Fn(TcpStream) -> io::Result<()> + Clone + Send + 'static,
{
    for connection in listener.incoming() {
        let stream = match connection {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("accept failed: {error}");
                continue;
            }
        };
        let Some(permit) = limit.enter() else {
            turn_away(stream);
            continue;
        };
        let serve = serve.clone();
        spawn_small(move || {
            let _permit = permit;
            if let Err(error) = serve(stream) {
                eprintln!("connection: {error}");
            }
        });
    }
}
