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
    // TODO 2 (slides/04-concurrency.md, "A bounded pool"): loop: lock
    // `connections`, take the next connection (`recv`), release the lock
    // before serving it (or no other worker could take one meanwhile), and
    // `serve` it. When `recv` fails, the queue is closed: return.
}
