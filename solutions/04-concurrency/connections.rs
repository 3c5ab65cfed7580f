//! A thread for each connection, with a small stack and a cap on how many:
//! the connection's thread waits for its client, so that no worker does.
//!
//! A thread blocked in `read` costs no processor time: the system wakes it
//! when bytes arrive. It costs memory: the stack pages it touched and its
//! buffers (about 21 KiB an idle connection, measured on Linux), and the
//! system's own bookkeeping. So the count is what must be
//! bounded: at `max` connections, `start` waits, the accept loop with it,
//! and new clients wait in the system's listen queue. Each connection is an
//! open file too, and a process may open only so many (`ulimit -n`).

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;

/// The stack reserved for a connection's thread. A new thread reserves
/// 2 MiB by default; serving one connection needs far less (every stage
/// passes with 32 KiB), and only the pages it touches take memory. Too
/// small a stack would crash the whole server, so this is four times that.
const STACK: usize = 128 * 1024;

pub struct Connections {
    open: Arc<Open>,
    max: usize,
}

/// How many connections are open, and a way to wait for that to change.
struct Open {
    count: Mutex<usize>,
    changed: Condvar,
}

/// One connection's place under the cap, given back when its thread ends,
/// even by a panic.
struct Place(Arc<Open>);

impl Connections {
    pub fn new(max: usize) -> Connections {
        Connections {
            open: Arc::new(Open {
                count: Mutex::new(0),
                changed: Condvar::new(),
            }),
            max,
        }
    }

    /// Wait until fewer than `max` connections are open, then run `serve`
    /// on a thread of its own.
    pub fn start(&self, serve: impl FnOnce() + Send + 'static) -> io::Result<()> {
        *self.open.wait_until(|count| count < self.max) += 1;
        let place = Place(Arc::clone(&self.open));
        // If the thread cannot start, the closure is dropped, `place` with
        // it, and the place is given back.
        thread::Builder::new().stack_size(STACK).spawn(move || {
            let _place = place;
            serve();
        })?;
        Ok(())
    }

    /// Wait until every connection's thread has ended.
    pub fn wait_until_all_closed(&self) {
        drop(self.open.wait_until(|count| count == 0));
    }
}

impl Open {
    /// Wait until `holds` is true of the count, and keep it locked.
    fn wait_until(&self, holds: impl Fn(usize) -> bool) -> MutexGuard<'_, usize> {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        self.changed
            .wait_while(count, |count| !holds(*count))
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        *self.0.count.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        self.0.changed.notify_all();
    }
}
