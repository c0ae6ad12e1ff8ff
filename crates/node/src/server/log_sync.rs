//! A leader's log flushes, run beside its event loop.
//!
//! A leader's AppendEntries promise nothing, so the loop may write its entries, send them
//! and go on while the disk flushes them: the fdatasync runs here, and the loop hears of it
//! as an event and tells the core ([`crate::raft::Raft::persisted`]). Meanwhile the loop
//! takes its followers' acknowledgements and new requests instead of blocking in the
//! flush; with a 3-member cluster a write commits on the first follower's acknowledgement
//! and is applied once the leader's own flush is done too.
//!
//! Anything else that must be durable before it is sent (a vote, a follower's
//! acknowledgement) is synced on the loop, after the flushes in flight here have finished
//! ([`LogSyncer::finish`]): a failed flush must stop the node before anything else claims
//! the same pages.

use crate::storage::{PendingSync, SyncDone};
use myraft_wire::raft::{Index, Term};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::Notify;

/// A flush to run, and the core's report once it is done.
pub(super) struct Job {
    pub sync: PendingSync,
    pub term: Term,
    pub index: Index,
}

/// A flush done: for the storage's bookkeeping and the core's report.
pub(super) struct Synced {
    pub done: SyncDone,
    pub term: Term,
    pub index: Index,
    /// Jobs this flush covered: a later flush of the same log covers earlier writes.
    jobs: usize,
}

enum Mode {
    Thread {
        tx: Option<mpsc::Sender<Job>>,
        handle: Option<std::thread::JoinHandle<()>>,
    },
    /// On the loop's own thread, one turn after the job was submitted, so that a simulated
    /// run sees the loop go on between a write and its flush, and replays from its seed.
    Inline { queued: Vec<Job>, due: Vec<Job> },
}

pub(super) struct LogSyncer {
    mode: Mode,
    done_rx: mpsc::Receiver<Synced>,
    /// Flushes run on the loop's thread, reported after those of the sync thread.
    local: Vec<Synced>,
    /// Woken when a flush is done.
    pub wake: Arc<Notify>,
    /// Jobs submitted and not yet taken back done.
    in_flight: usize,
}

impl LogSyncer {
    /// Flushes on a thread of its own.
    pub fn spawn() -> std::io::Result<LogSyncer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (done_tx, done_rx) = mpsc::channel();
        let wake = Arc::new(Notify::new());
        let thread_wake = Arc::clone(&wake);
        let handle = std::thread::Builder::new()
            .name("log-sync".into())
            .spawn(move || sync_thread(rx, done_tx, thread_wake))?;
        Ok(LogSyncer {
            mode: Mode::Thread {
                tx: Some(tx),
                handle: Some(handle),
            },
            done_rx,
            local: Vec::new(),
            wake,
            in_flight: 0,
        })
    }

    /// Flushes within the loop's turns ([`LogSyncer::turn`]).
    pub fn inline() -> LogSyncer {
        LogSyncer {
            mode: Mode::Inline {
                queued: Vec::new(),
                due: Vec::new(),
            },
            done_rx: mpsc::channel().1,
            local: Vec::new(),
            wake: Arc::new(Notify::new()),
            in_flight: 0,
        }
    }

    pub fn submit(&mut self, job: Job) {
        self.in_flight += 1;
        match &mut self.mode {
            Mode::Thread { tx, .. } => {
                let Some(tx) = tx else { return };
                if let Err(mpsc::SendError(job)) = tx.send(job) {
                    // The thread ends only when its sender is dropped, or by a panic: run
                    // the flush here rather than leave the core waiting for it forever.
                    tracing::error!("the log-sync thread is gone; flushing on the loop");
                    self.local.push(run_now(job));
                    self.wake.notify_one();
                }
            }
            Mode::Inline { queued, .. } => queued.push(job),
        }
    }

    /// Whether a flush has been submitted and not yet taken back.
    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// The flushes done so far, oldest first.
    pub fn take_done(&mut self) -> Vec<Synced> {
        let mut out = Vec::new();
        while let Ok(s) = self.done_rx.try_recv() {
            out.push(s);
        }
        out.append(&mut self.local);
        self.in_flight -= out.iter().map(|s| s.jobs).sum::<usize>();
        out
    }

    /// Waits for every flush submitted so far and returns them, oldest first.
    pub fn finish(&mut self) -> Vec<Synced> {
        if let Mode::Inline { queued, due } = &mut self.mode {
            let mut jobs = std::mem::take(due);
            jobs.append(queued);
            self.local.extend(jobs.into_iter().map(run_now));
            return self.take_done();
        }
        let mut out = self.take_done();
        while self.in_flight > 0 {
            let Ok(s) = self.done_rx.recv() else {
                tracing::error!("the log-sync thread stopped with flushes in flight");
                self.in_flight = 0;
                break;
            };
            self.in_flight -= s.jobs;
            out.push(s);
        }
        out
    }

    /// Once per turn of the loop: inline, the jobs of the turn before are flushed now.
    pub fn turn(&mut self) {
        let Mode::Inline { queued, due } = &mut self.mode else {
            return;
        };
        let ran = !due.is_empty();
        self.local
            .extend(std::mem::take(due).into_iter().map(run_now));
        std::mem::swap(queued, due);
        if ran {
            self.wake.notify_one();
        }
    }
}

impl Drop for LogSyncer {
    fn drop(&mut self) {
        if let Mode::Thread { tx, handle } = &mut self.mode {
            tx.take();
            if let Some(h) = handle.take() {
                if h.join().is_err() {
                    tracing::error!("the log-sync thread panicked");
                }
            }
        }
    }
}

fn run_now(job: Job) -> Synced {
    Synced {
        done: job.sync.run(),
        term: job.term,
        index: job.index,
        jobs: 1,
    }
}

fn sync_thread(rx: mpsc::Receiver<Job>, done_tx: mpsc::Sender<Synced>, wake: Arc<Notify>) {
    while let Ok(mut job) = rx.recv() {
        // Jobs that queued up behind the disk are covered by one flush of the newest: the
        // log's earlier writes are in the same file, or in a segment synced as it closed.
        let mut jobs = 1;
        while let Ok(next) = rx.try_recv() {
            job = next;
            jobs += 1;
        }
        let mut synced = run_now(job);
        synced.jobs = jobs;
        if done_tx.send(synced).is_err() {
            return;
        }
        wake.notify_one();
    }
}
