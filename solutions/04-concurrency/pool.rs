//! A fixed set of worker threads, and a bounded queue of requests waiting
//! for one of them.
//!
//! A worker answers one whole request at a time, and never waits for a
//! client: the waiting is done by each connection's own thread
//! (connections.rs), which hands over a request only once all of it has
//! come. So a client that sends a byte a second holds its own small thread,
//! and no worker. The workers are few and fixed, because they do the work
//! that must be bounded: the shared mailbox, the disk. When every worker is
//! busy and the queue is full, `Queue::run` waits: back-pressure, instead of
//! a queue that grows until the server falls over.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

/// One piece of work for a worker: answer one request.
type Job = Box<dyn FnOnce() + Send>;

pub struct Pool {
    queue: Queue,
    workers: Vec<JoinHandle<()>>,
}

/// Where requests wait for a worker. Each connection's thread holds a copy.
#[derive(Clone)]
pub struct Queue(SyncSender<Job>);

impl Pool {
    /// Start `workers` threads, each running one job after another; at most
    /// `waiting` jobs queue for them.
    pub fn start(workers: usize, waiting: usize) -> std::io::Result<Pool> {
        // A channel with a capacity: `send` blocks while it is full.
        let (queue, jobs) = mpsc::sync_channel(waiting);
        let jobs = Arc::new(Mutex::new(jobs));
        let workers = (0..workers)
            .map(|number| {
                let jobs = Arc::clone(&jobs);
                thread::Builder::new()
                    .name(format!("worker-{number}"))
                    .spawn(move || work(&jobs))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Pool {
            queue: Queue(queue),
            workers,
        })
    }

    /// A copy of the queue, for a connection's thread.
    pub fn queue(&self) -> Queue {
        self.queue.clone()
    }

    /// Close the queue, and wait for every worker to finish its job. The
    /// queue closes once every copy is gone: call this after the
    /// connections' threads have ended.
    pub fn finish(self) {
        drop(self.queue);
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

impl Queue {
    /// Have a worker run `work`, and wait for what it returns. `None` if no
    /// worker could: the pool has stopped, or `work` panicked.
    pub fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (done, answer) = mpsc::sync_channel(1);
        let job = move || {
            // A panic ends this job, not the worker: unwinding would end the
            // worker's thread, and the pool would be one worker smaller for
            // good (the Rust Book's pool has that flaw).
            if let Ok(result) = panic::catch_unwind(AssertUnwindSafe(work)) {
                let _ = done.send(result);
            }
        };
        self.0.send(Box::new(job)).ok()?;
        answer.recv().ok()
    }
}

/// One worker: take a job, run it, take the next, until the queue is closed.
fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, and released
        // at the end of this statement, before running it.
        let next = jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .recv();
        match next {
            Ok(job) => job(),
            // The queue is closed and empty: the server is stopping.
            Err(_) => return,
        }
    }
}
