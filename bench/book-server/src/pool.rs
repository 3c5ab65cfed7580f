//! A fixed pool of threads, in the design of the Rust Book's chapter 21:
//! one channel carries boxed closures, and every worker pulls from the
//! same receiving end, shared behind `Arc<Mutex<...>>`.
//!
//! What it keeps from that design, because it is what the bench measures:
//! the channel has no bound (a flood of connections queues without limit),
//! and every job passes through one lock, taken by whichever idle worker
//! gets it first.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    jobs: Sender<Job>,
}

impl Pool {
    /// Start `size` workers, all waiting on one channel.
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "a pool needs at least one worker");
        let (jobs, waiting) = mpsc::channel::<Job>();
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..size {
            let waiting = Arc::clone(&waiting);
            thread::spawn(move || work(&waiting));
        }
        Pool { jobs }
    }

    /// Queue `job` for the next idle worker.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) {
        // The workers end only when the channel closes, which is when the
        // pool is dropped: while it lives, a send cannot fail.
        let _ = self.jobs.send(Box::new(job));
    }
}

/// One worker: take the next job, run it, and again.
fn work(waiting: &Mutex<Receiver<Job>>) {
    loop {
        // The guard is a temporary of this statement: the lock is released
        // before the job runs, so the other workers may take the next one.
        // (`while let Ok(job) = waiting.lock().unwrap().recv()` would hold
        // it for the whole job and serve one request at a time.)
        let next = waiting.lock().unwrap().recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}
