//! A fixed set of worker threads, and a bounded queue of connections waiting
//! for one of them.
//!
//! A thread per client is simple, and each thread costs memory (its stack)
//! and scheduling: ten thousand clients would be ten thousand threads. A pool
//! keeps the count fixed. When every worker is busy and the queue is full,
//! the accept loop's `pool.queue.send` waits, so it stops accepting, and new
//! clients wait in the system's listen queue: back-pressure, instead of a
//! server that grows until it falls over.

use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

pub struct Pool {
    /// Where connections wait for a worker. `send` waits while it is full,
    /// and fails only once every worker has gone.
    pub queue: SyncSender<TcpStream>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Start `workers` threads, each running `serve` on one connection after
    /// another; at most `waiting` connections queue for them.
    pub fn start<F>(workers: usize, waiting: usize, serve: F) -> std::io::Result<Pool>
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        // A channel with a capacity: `send` blocks while it is full.
        let (queue, connections) = mpsc::sync_channel(waiting);
        let connections = Arc::new(Mutex::new(connections));
        let serve = Arc::new(serve);
        let workers = (0..workers)
            .map(|number| {
                let connections = Arc::clone(&connections);
                let serve = Arc::clone(&serve);
                thread::Builder::new()
                    .name(format!("worker-{number}"))
                    .spawn(move || work(&connections, &*serve))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pool { queue, workers })
    }

    /// Close the queue, and wait for every worker to finish its connection.
    pub fn finish(self) {
        drop(self.queue);
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// One worker: take a connection, serve it, take the next, until the queue
/// is closed.
fn work(connections: &Mutex<Receiver<TcpStream>>, serve: &dyn Fn(TcpStream)) {
    loop {
        // The lock is held only while waiting for the next connection, and
        // released at the end of this statement, before serving it.
        let next = connections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        match next {
            Ok(stream) => serve(stream),
            // The queue is closed and empty: the server is stopping.
            Err(_) => return,
        }
    }
}
