//! Decoding ahead on worker threads with in-order delivery: the machinery shared by the
//! training loader ([`super::loader`]) and the validation iterator ([`super::val`]).
//!
//! Jobs are keyed by a sample number; workers take them in any order, a panic in a job
//! becomes a [`Error::Worker`] for that key, and [`Ahead::take`] hands results back
//! by key, holding early arrivals until they are asked for.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::Error;

/// The words a pool uses in thread names and error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Names {
    /// Thread name prefix (`{thread}-{i}`).
    pub thread: &'static str,
    /// What a job does, for the panic message (`panic while {job} {key}`).
    pub job: &'static str,
    /// Which workers, for the message when all have exited (`all {pool} workers exited`).
    pub pool: &'static str,
}

type Outcome<T> = (u64, Result<T, Error>);

/// Worker threads running one job function on (key, payload) jobs (see the module doc).
pub(crate) struct Ahead<T> {
    names: Names,
    jobs: Option<Sender<(u64, usize)>>,
    results: Receiver<Outcome<T>>,
    pending: HashMap<u64, Result<T, Error>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waited: Duration,
}

impl<T: Send + 'static> Ahead<T> {
    /// Starts `threads` workers running `work(key, payload)`; returns the pool and the
    /// errors of the threads that could not be started.
    pub(crate) fn start<F>(names: Names, threads: usize, work: F) -> (Self, Vec<std::io::Error>)
    where
        F: Fn(u64, usize) -> Result<T, Error> + Send + Sync + 'static,
    {
        let work = Arc::new(work);
        let stop = Arc::new(AtomicBool::new(false));
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<(u64, usize)>();
        let (res_tx, res_rx) = crossbeam_channel::unbounded::<Outcome<T>>();
        let mut workers = Vec::new();
        let mut failed = Vec::new();
        for i in 0..threads {
            let (work, jobs, results) = (work.clone(), job_rx.clone(), res_tx.clone());
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{i}", names.thread))
                .spawn(move || worker_loop(names, &*work, &jobs, &results, &stop));
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => failed.push(e),
            }
        }
        let pool = Ahead {
            names,
            jobs: Some(job_tx),
            results: res_rx,
            pending: HashMap::new(),
            workers,
            stop,
            waited: Duration::ZERO,
        };
        (pool, failed)
    }

    /// Whether any worker was started.
    pub(crate) fn has_workers(&self) -> bool {
        !self.workers.is_empty()
    }

    /// Queues job `key` with `payload`.
    pub(crate) fn submit(&self, key: u64, payload: usize) {
        if let Some(jobs) = &self.jobs {
            // Cannot fail while the workers hold the receiver; a dead pool shows up as a
            // disconnected result channel in `take`.
            let _ = jobs.send((key, payload));
        }
    }

    /// The result of job `key`, waiting for it when it is not in yet.
    pub(crate) fn take(&mut self, key: u64) -> Result<T, Error> {
        loop {
            if let Some(r) = self.pending.remove(&key) {
                return r;
            }
            let start = Instant::now();
            let got = self.results.recv();
            self.waited += start.elapsed();
            match got {
                Ok((k, r)) => {
                    self.pending.insert(k, r);
                }
                Err(_) => {
                    return Err(Error::Worker {
                        reason: format!("all {} workers exited", self.names.pool),
                    })
                }
            }
        }
    }

    /// Total time `take` has spent waiting for the workers.
    pub(crate) fn waited(&self) -> Duration {
        self.waited
    }
}

/// A worker: runs jobs until the queue closes, the consumer is gone or `stop` is set.
fn worker_loop<T>(
    names: Names,
    work: &dyn Fn(u64, usize) -> Result<T, Error>,
    jobs: &Receiver<(u64, usize)>,
    results: &Sender<Outcome<T>>,
    stop: &AtomicBool,
) {
    while let Ok((key, payload)) = jobs.recv() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| work(key, payload))).unwrap_or_else(
            |_| {
                Err(Error::Worker {
                    reason: format!("panic while {} {key}", names.job),
                })
            },
        );
        if results.send((key, out)).is_err() {
            break;
        }
    }
}

impl<T> Drop for Ahead<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
