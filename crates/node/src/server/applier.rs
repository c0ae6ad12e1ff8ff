//! Apply beside the Raft loop (DESIGN.md): committed entries go over a bounded queue to the
//! state store, and what applying them releases comes back as events. The loop never waits
//! on the store: a slow disk slows commits, not heartbeats or votes.
//!
//! [`ApplyCore`] is the work itself, with no thread and no clock of its own: it takes
//! messages and the time, and returns events. [`Applier`] runs it on a thread of its own
//! (the node as deployed) or inline at the end of each turn of the loop (simulated runs,
//! which must replay from their seed).
//!
//! What it does with each message:
//! - committed entries are applied a batch per write transaction; a batch is synced when
//!   `sync_interval` has passed since the last synced one, which is how far the loop may
//!   compact the Raft log;
//! - a linearizable read waits here until its ReadIndex is applied, then is served from a
//!   read transaction;
//! - snapshot stream bytes from the leader build a new store file, which replaces the store
//!   when the stream is whole and checks out;
//! - an export request opens a read transaction for a snapshot to a follower.

use crate::state_machine::KvError;
use crate::storage::Vfs;
use crate::store::{Applied, Export, Import, ImportError, Meta, Store, StoreConfig, StoreError};
use myraft_wire::api::{
    ClientError, ClientOp, ClientResponse, GetResult, HistoryResult, KeyVersion,
};
use myraft_wire::raft::{Entry, NodeId};
use myraft_wire::snapshot::ResumePoint;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Messages queued for the applier at most; beyond that the loop holds them itself.
const QUEUE: usize = 256;
/// Largest run of stream bytes joined into one message for the applier (in the loop's
/// overflow, and again from the queue into one import write).
const MAX_JOINED_BYTES: usize = 8 << 20;

/// How long the thread may hold entries nobody waits for. A write transaction has a fixed
/// cost (redb copies the pages it touches and commits its allocator state), which under
/// load a follower would otherwise pay per Ready of the leader's; holding a few ms turns
/// many small transactions into one. A follower's stale reads see the held entries, which
/// any read applies first; nothing waits on them otherwise.
const HOLD_FOR: Duration = Duration::from_millis(5);

/// Entries held at most before they are applied anyway.
const HOLD_MAX_ENTRIES: usize = 4096;

pub enum ApplyMsg {
    Entries(Vec<Entry>),
    /// Entries nobody waits for (a follower's): the thread may hold them for
    /// [`HOLD_FOR`] to apply more per write transaction; any other message applies them.
    EntriesMayWait(Vec<Entry>),
    /// Serve `op` once `index` is applied (0: at once, a stale read).
    Read {
        ctx: u64,
        index: u64,
        op: ClientOp,
    },
    /// Bytes of a snapshot stream, in order.
    SnapshotBytes(StreamBytes),
    /// Open a read transaction to stream to follower `to`, continuing its partial store at
    /// `resume` if the state allows.
    Export {
        to: NodeId,
        resume: Option<ResumePoint>,
    },
    /// Stop the import under way and keep it for a stream that continues it.
    SealImport,
    Shutdown,
}

/// Bytes of the snapshot stream `(index, term)` from `from`; offset 0 begins it. A stream
/// with `after_revision` continues the partial store kept from an earlier one.
#[derive(Debug)]
pub struct StreamBytes {
    pub from: NodeId,
    pub index: u64,
    pub term: u64,
    pub after_revision: u64,
    pub offset: u64,
    pub data: Vec<u8>,
    pub done: bool,
}

impl StreamBytes {
    fn stream(&self) -> (NodeId, u64, u64, u64) {
        (self.from, self.index, self.term, self.after_revision)
    }

    /// Whether `next` carries on right where these bytes end, in the same stream.
    fn continued_by(&self, next: &StreamBytes) -> bool {
        let end = self.offset + self.data.len() as u64;
        !self.done && self.stream() == next.stream() && end == next.offset
    }
}

/// Where the store stands, for status output and for the loop's decisions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreState {
    pub applied_index: u64,
    pub clock_ms: u64,
    pub revision: u64,
    pub compacted_before: u64,
    pub live_keys: u64,
    /// The store holds everything up to here on disk: the log may be compacted through it.
    pub synced_index: u64,
    pub store_bytes: u64,
}

pub enum ApplyEvent {
    Applied {
        entries: Vec<Applied>,
        state: StoreState,
    },
    Synced(StoreState),
    Read {
        ctx: u64,
        result: Result<ClientResponse, ClientError>,
    },
    /// A snapshot stream from `from` is in place: the store is now `meta`.
    Installed {
        from: NodeId,
        meta: Meta,
        replaced: bool,
        state: StoreState,
    },
    /// The stream from `from` was refused; it must start again from its beginning.
    ImportFailed {
        from: NodeId,
        reason: String,
    },
    /// The import under way stopped (`SealImport`); a stream may continue it from here.
    ImportSealed(Option<ResumePoint>),
    Export {
        to: NodeId,
        export: Export,
    },
    /// The store failed: the node must stop, and a restart recovers from what is on disk.
    Fatal(String),
}

struct Incoming {
    stream: (NodeId, u64, u64, u64),
    next_offset: u64,
    import: Import,
    /// For the log line of the install: how long the import took.
    started: std::time::Instant,
}

/// The applier's work, without a thread.
pub struct ApplyCore {
    store: Store,
    vfs: Arc<dyn Vfs>,
    cfg: StoreConfig,
    incoming_path: PathBuf,
    sync_interval_ms: u64,
    last_sync_ms: u64,
    unsynced: bool,
    synced_index: u64,
    reads: BTreeMap<u64, Vec<(u64, ClientOp)>>,
    incoming: Option<Incoming>,
    failed: bool,
}

impl ApplyCore {
    pub fn new(store: Store, vfs: Arc<dyn Vfs>, cfg: StoreConfig, sync_interval: Duration) -> Self {
        let incoming_path = store.incoming_path();
        let synced_index = store.meta().applied_index;
        ApplyCore {
            store,
            vfs,
            cfg,
            incoming_path,
            sync_interval_ms: u64::try_from(sync_interval.as_millis()).unwrap_or(u64::MAX),
            last_sync_ms: 0,
            unsynced: false,
            synced_index,
            reads: BTreeMap::new(),
            incoming: None,
            failed: false,
        }
    }

    pub fn state(&self) -> StoreState {
        let m = self.store.meta();
        StoreState {
            applied_index: m.applied_index,
            clock_ms: m.clock_ms,
            revision: m.kv.revision,
            compacted_before: m.kv.compacted_before,
            live_keys: m.kv.live_keys,
            synced_index: self.synced_index,
            store_bytes: self.vfs.file_len(self.store.path()).unwrap_or(0),
        }
    }

    /// Handles `msgs` in order at time `now_ms`; returns false after `Shutdown`.
    pub fn handle(
        &mut self,
        msgs: impl IntoIterator<Item = ApplyMsg>,
        now_ms: u64,
        out: &mut Vec<ApplyEvent>,
    ) -> bool {
        let mut batch: Vec<Entry> = Vec::new();
        let mut running = true;
        for msg in coalesce(msgs) {
            if self.failed {
                break;
            }
            match msg {
                ApplyMsg::Entries(mut entries) | ApplyMsg::EntriesMayWait(mut entries) => {
                    batch.append(&mut entries);
                    continue;
                }
                other => {
                    self.flush(&mut batch, now_ms, out);
                    match other {
                        ApplyMsg::Entries(_) | ApplyMsg::EntriesMayWait(_) => {}
                        ApplyMsg::Read { ctx, index, op } => {
                            self.reads.entry(index).or_default().push((ctx, op));
                        }
                        ApplyMsg::SnapshotBytes(b) => self.on_snapshot_bytes(b, now_ms, out),
                        ApplyMsg::Export { to, resume } => {
                            match self
                                .store
                                .reader()
                                .and_then(|r| r.export_continuing(resume))
                            {
                                Ok(export) => out.push(ApplyEvent::Export { to, export }),
                                Err(e) => self.fail(e, out),
                            }
                        }
                        ApplyMsg::SealImport => self.seal_import(out),
                        ApplyMsg::Shutdown => {
                            running = false;
                        }
                    }
                }
            }
        }
        self.flush(&mut batch, now_ms, out);
        if !running && !self.failed {
            self.sync(now_ms, out);
        }
        self.serve_reads(out);
        running
    }

    /// Syncs the store if the interval has passed since the last synced commit.
    pub fn on_timer(&mut self, now_ms: u64, out: &mut Vec<ApplyEvent>) {
        if self.unsynced && !self.failed && self.sync_due(now_ms) {
            self.sync(now_ms, out);
        }
    }

    /// How long until a sync is due, if one is waiting.
    pub fn next_sync_in(&self, now_ms: u64) -> Option<Duration> {
        self.unsynced.then(|| {
            Duration::from_millis(
                self.last_sync_ms
                    .saturating_add(self.sync_interval_ms)
                    .saturating_sub(now_ms),
            )
        })
    }

    fn sync_due(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_sync_ms) >= self.sync_interval_ms
    }

    fn sync(&mut self, now_ms: u64, out: &mut Vec<ApplyEvent>) {
        match self.store.apply(&[], true) {
            Ok(_) => {
                self.mark_synced(now_ms);
                out.push(ApplyEvent::Synced(self.state()));
            }
            Err(e) => self.fail(e, out),
        }
    }

    fn mark_synced(&mut self, now_ms: u64) {
        self.last_sync_ms = now_ms;
        self.unsynced = false;
        self.synced_index = self.store.meta().applied_index;
    }

    fn fail(&mut self, e: StoreError, out: &mut Vec<ApplyEvent>) {
        tracing::error!(error = %e, "the state store failed");
        self.failed = true;
        out.push(ApplyEvent::Fatal(e.to_string()));
    }

    fn flush(&mut self, batch: &mut Vec<Entry>, now_ms: u64, out: &mut Vec<ApplyEvent>) {
        if batch.is_empty() || self.failed {
            return;
        }
        let durable = self.sync_due(now_ms);
        match self.store.apply(batch, durable) {
            Ok(entries) => {
                if durable {
                    self.mark_synced(now_ms);
                } else {
                    self.unsynced = true;
                }
                out.push(ApplyEvent::Applied {
                    entries,
                    state: self.state(),
                });
            }
            Err(e) => self.fail(e, out),
        }
        batch.clear();
    }

    fn serve_reads(&mut self, out: &mut Vec<ApplyEvent>) {
        let applied = self.store.meta().applied_index;
        if self.failed
            || self
                .reads
                .first_key_value()
                .is_none_or(|(&i, _)| i > applied)
        {
            return;
        }
        let later = self.reads.split_off(&(applied + 1));
        let ready = std::mem::replace(&mut self.reads, later);
        let reader = match self.store.reader() {
            Ok(r) => r,
            Err(e) => return self.fail(e, out),
        };
        for (ctx, op) in ready.into_values().flatten() {
            match serve_read(&reader, &op) {
                Ok(result) => out.push(ApplyEvent::Read { ctx, result }),
                Err(e) => return self.fail(e, out),
            }
        }
    }

    /// Stops the import under way, if any, and says where a stream could continue: that
    /// import, one kept from before a restart, or else this node's own store (a follower
    /// that fell behind needs only what came after it).
    fn seal_import(&mut self, out: &mut Vec<ApplyEvent>) {
        let kept = match self.incoming.take() {
            Some(inc) => inc.import.seal(),
            None => Import::resume_point(&*self.vfs, &self.incoming_path, self.cfg.cache_bytes),
        };
        // Whichever goes further: a few rows of a stream cut short are worth less than a
        // store that was up to date a moment ago.
        let point = kept.and_then(|kept| {
            let own = self.store.resume_point()?;
            Ok(match (kept, own) {
                (Some(k), Some(o)) if o.after_revision > k.after_revision => Some(o),
                (Some(k), _) => Some(k),
                (None, o) => o,
            })
        });
        match point {
            Ok(p) => out.push(ApplyEvent::ImportSealed(p)),
            Err(e) => {
                // The partial store is only a head start: without it the stream comes whole.
                tracing::warn!(error = %e, "cannot keep the partial snapshot store");
                self.discard_incoming();
                out.push(ApplyEvent::ImportSealed(None));
            }
        }
    }

    /// The import a stream after `after_revision` continues: the partial store kept from an
    /// earlier stream if it ends there, else a copy of this node's store if that does.
    fn continue_import(&mut self, after_revision: u64) -> Result<Import, ImportError> {
        let cache = self.cfg.cache_bytes;
        let kept = Import::resume_point(&*self.vfs, &self.incoming_path, cache)?;
        if kept.is_none_or(|p| p.after_revision < after_revision)
            && self.store.meta().kv.revision >= after_revision
        {
            let started = std::time::Instant::now();
            self.store.copy_to(&*self.vfs, &self.incoming_path)?;
            tracing::info!(
                after_revision,
                revision = self.store.meta().kv.revision,
                ms = started.elapsed().as_millis() as u64,
                "copied the store to continue it with a snapshot stream"
            );
        }
        Import::resume(&*self.vfs, &self.incoming_path, cache, after_revision)
    }

    /// Drops the import under way and its file, which a stream must not continue.
    fn discard_incoming(&mut self) {
        self.incoming = None;
        if let Err(e) = self.vfs.remove_if_present(&self.incoming_path) {
            tracing::warn!(
                error = %e,
                path = %self.incoming_path.display(),
                "cannot remove a refused snapshot store; the next stream replaces it"
            );
        }
    }

    fn on_snapshot_bytes(&mut self, b: StreamBytes, now_ms: u64, out: &mut Vec<ApplyEvent>) {
        let stream = b.stream();
        let StreamBytes {
            from,
            index,
            term,
            after_revision,
            offset,
            data,
            done,
        } = b;
        if offset == 0 {
            self.incoming = None;
            let import = if after_revision == 0 {
                Import::create(&*self.vfs, &self.incoming_path, self.cfg.cache_bytes)
                    .map_err(ImportError::Store)
            } else {
                self.continue_import(after_revision)
            };
            match import {
                Ok(import) => {
                    if after_revision > 0 {
                        tracing::info!(
                            after_revision,
                            "continuing a partial store with a snapshot stream from {from:x}"
                        );
                    }
                    self.incoming = Some(Incoming {
                        stream,
                        next_offset: 0,
                        import,
                        started: std::time::Instant::now(),
                    })
                }
                Err(ImportError::Stream(reason)) => {
                    self.discard_incoming();
                    return out.push(ApplyEvent::ImportFailed { from, reason });
                }
                Err(ImportError::Store(e)) => return self.fail(e, out),
            }
        }
        let Some(inc) = self.incoming.as_mut() else {
            return out.push(ApplyEvent::ImportFailed {
                from,
                reason: "no stream under way".into(),
            });
        };
        if inc.stream.0 != from {
            // Another sender's stream (one that lost its leadership, say) leaves this one be.
            return out.push(ApplyEvent::ImportFailed {
                from,
                reason: "another stream is under way".into(),
            });
        }
        if (inc.stream, inc.next_offset) != (stream, offset) {
            self.discard_incoming();
            return out.push(ApplyEvent::ImportFailed {
                from,
                reason: "bytes out of order".into(),
            });
        }
        inc.next_offset += data.len() as u64;
        let fed = inc.import.feed(&data);
        let mut import_ms = 0;
        let result = match (fed, done) {
            (Err(e), _) => Err(e),
            (Ok(()), false) => return,
            (Ok(()), true) => match self.incoming.take() {
                Some(inc) => {
                    import_ms = inc.started.elapsed().as_millis() as u64;
                    inc.import.finish()
                }
                None => return,
            },
        };
        let meta = match result {
            Ok(meta) => meta,
            Err(ImportError::Stream(reason)) => {
                tracing::warn!(%reason, "snapshot stream from {from:x} refused; asking again");
                self.discard_incoming();
                return out.push(ApplyEvent::ImportFailed { from, reason });
            }
            Err(ImportError::Store(e)) => return self.fail(e, out),
        };
        if (meta.applied_index, meta.applied_term) != (index, term) {
            self.discard_incoming();
            return out.push(ApplyEvent::ImportFailed {
                from,
                reason: format!(
                    "stream announced as ({index}, {term}) holds ({}, {})",
                    meta.applied_index, meta.applied_term
                ),
            });
        }
        let incoming = self.incoming_path.clone();
        let swap_started = std::time::Instant::now();
        match self.store.replace_with(&*self.vfs, &incoming, &self.cfg) {
            Ok(replaced) => {
                if replaced {
                    tracing::info!(
                        index,
                        keys = meta.kv.live_keys,
                        import_ms,
                        swap_ms = swap_started.elapsed().as_millis() as u64,
                        "installed a snapshot streamed from the leader"
                    );
                    self.mark_synced(now_ms);
                }
                out.push(ApplyEvent::Installed {
                    from,
                    meta,
                    replaced,
                    state: self.state(),
                });
            }
            Err(e) => self.fail(e, out),
        }
    }
}

/// Joins runs of snapshot stream bytes that continue each other, so that a run is written
/// in one transaction rather than one per datagram.
fn coalesce(msgs: impl IntoIterator<Item = ApplyMsg>) -> Vec<ApplyMsg> {
    let mut out: Vec<ApplyMsg> = Vec::new();
    for msg in msgs {
        if let Some(msg) = join(out.last_mut(), msg) {
            out.push(msg);
        }
    }
    out
}

/// Appends `msg` to `last` if both are stream bytes, `msg` continuing `last` and `last`
/// not yet [`MAX_JOINED_BYTES`] long; else gives `msg` back.
fn join(last: Option<&mut ApplyMsg>, msg: ApplyMsg) -> Option<ApplyMsg> {
    if let (Some(ApplyMsg::SnapshotBytes(prev)), ApplyMsg::SnapshotBytes(next)) = (last, &msg) {
        if prev.continued_by(next) && prev.data.len() < MAX_JOINED_BYTES {
            prev.data.extend_from_slice(&next.data);
            prev.done = next.done;
            return None;
        }
    }
    Some(msg)
}

/// Answers a read from one read transaction.
fn serve_read(
    r: &crate::store::Reader,
    op: &ClientOp,
) -> Result<Result<ClientResponse, ClientError>, StoreError> {
    Ok(match op {
        ClientOp::Get { key, rev, .. } => match r.get(key, *rev)? {
            Ok(Some(kv)) => Ok(ClientResponse::Get(GetResult {
                found: true,
                value: Some(kv.value),
                revision: kv.mod_revision,
                create_revision: kv.create_revision,
                version: kv.version,
            })),
            Ok(None) => Ok(ClientResponse::Get(GetResult {
                found: false,
                value: None,
                revision: r.meta().kv.revision,
                create_revision: 0,
                version: 0,
            })),
            Err(e) => Err(map_kv(e)),
        },
        ClientOp::History { key } => {
            let h = r.history(key)?;
            Ok(ClientResponse::History(HistoryResult {
                versions: h
                    .versions
                    .into_iter()
                    .map(|v| KeyVersion {
                        revision: v.revision,
                        deleted: v.value.is_none(),
                        value: v.value,
                    })
                    .collect(),
                compacted_before: h.compacted_before,
            }))
        }
        _ => Err(ClientError::BadRequest {
            reason: "not a read".into(),
        }),
    })
}

pub fn map_kv(e: KvError) -> ClientError {
    match e {
        KvError::Compacted { compacted_before } => ClientError::Compacted { compacted_before },
        KvError::FutureRevision { requested, current } => ClientError::BadRequest {
            reason: format!(
                "revision {requested} is in the future; the current revision is {current}"
            ),
        },
    }
}

/// The applier as the loop sees it: a queue in, events out.
pub enum Applier {
    Thread {
        tx: SyncSender<ApplyMsg>,
        /// Messages the full queue could not take yet, oldest first.
        overflow: VecDeque<ApplyMsg>,
        handle: Option<std::thread::JoinHandle<()>>,
    },
    Inline {
        core: Box<ApplyCore>,
        queue: Vec<ApplyMsg>,
        events: UnboundedSender<ApplyEvent>,
        epoch: tokio::time::Instant,
    },
}

impl Applier {
    /// Runs `core` on a thread of its own; events arrive on `events`.
    pub fn spawn(core: ApplyCore, events: UnboundedSender<ApplyEvent>) -> std::io::Result<Applier> {
        Self::spawn_holding(core, events, HOLD_FOR)
    }

    /// [`Applier::spawn`] with entries that may wait held for `hold`.
    fn spawn_holding(
        core: ApplyCore,
        events: UnboundedSender<ApplyEvent>,
        hold: Duration,
    ) -> std::io::Result<Applier> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("apply".into())
            .spawn(move || apply_thread(core, rx, events, hold))?;
        Ok(Applier::Thread {
            tx,
            overflow: VecDeque::new(),
            handle: Some(handle),
        })
    }

    /// Runs `core` within the loop's turns, in the loop's (possibly simulated) time.
    pub fn inline(core: ApplyCore, events: UnboundedSender<ApplyEvent>) -> Applier {
        Applier::Inline {
            core: Box::new(core),
            queue: Vec::new(),
            events,
            epoch: tokio::time::Instant::now(),
        }
    }

    /// Queues `msg`; never blocks.
    pub fn send(&mut self, msg: ApplyMsg) {
        match self {
            Applier::Thread { overflow, .. } => {
                // Stream bytes waiting join the run before them: the thread takes them in
                // one message however many datagrams brought them, and does not wait for
                // the loop's next turn to move a datagram's worth.
                if let Some(msg) = join(overflow.back_mut(), msg) {
                    overflow.push_back(msg);
                }
                self.flush();
            }
            Applier::Inline { queue, .. } => queue.push(msg),
        }
    }

    /// Moves what the queue can take now from the overflow into it.
    fn flush(&mut self) {
        let Applier::Thread { tx, overflow, .. } = self else {
            return;
        };
        while let Some(msg) = overflow.pop_front() {
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => {
                    overflow.push_front(msg);
                    return;
                }
                Err(TrySendError::Disconnected(_)) => {
                    overflow.clear();
                    return;
                }
            }
        }
    }

    /// Once per turn of the loop: the thread's queue takes what it can; inline, the queued
    /// work is done now and its events posted.
    pub fn turn(&mut self) {
        self.flush();
        if let Applier::Inline {
            core,
            queue,
            events,
            epoch,
        } = self
        {
            if queue.is_empty() {
                return;
            }
            let now = ms_since(*epoch);
            let mut out = Vec::new();
            core.handle(std::mem::take(queue), now, &mut out);
            for ev in out {
                let _ = events.send(ev);
            }
        }
    }

    /// On each tick: inline, a sync that has come due.
    pub fn tick(&mut self) {
        if let Applier::Inline {
            core,
            events,
            epoch,
            ..
        } = self
        {
            let mut out = Vec::new();
            core.on_timer(ms_since(*epoch), &mut out);
            for ev in out {
                let _ = events.send(ev);
            }
        }
    }

    /// Applies what is queued, syncs the store and stops the applier.
    pub fn shutdown(&mut self) {
        self.send(ApplyMsg::Shutdown);
        match self {
            Applier::Thread {
                tx,
                overflow,
                handle,
            } => {
                // The loop is done: waiting for the queue is all that is left to do.
                while let Some(msg) = overflow.pop_front() {
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
                if let Some(h) = handle.take() {
                    if h.join().is_err() {
                        tracing::error!("the apply thread panicked");
                    }
                }
            }
            Applier::Inline { .. } => self.turn(),
        }
    }
}

fn ms_since(epoch: tokio::time::Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn apply_thread(
    mut core: ApplyCore,
    rx: mpsc::Receiver<ApplyMsg>,
    events: UnboundedSender<ApplyEvent>,
    hold: Duration,
) {
    let epoch = Instant::now();
    let now = || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut held: Vec<ApplyMsg> = Vec::new();
    let mut held_until: Option<Instant> = None;
    loop {
        let mut wait = core
            .next_sync_in(now())
            .unwrap_or(Duration::from_secs(3600));
        if let Some(until) = held_until {
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        let first = match rx.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let mut out = Vec::new();
                core.handle(std::mem::take(&mut held), now(), &mut out);
                for ev in out {
                    let _ = events.send(ev);
                }
                return;
            }
        };
        let mut out = Vec::new();
        let running = match first {
            None if held_until.is_some_and(|until| Instant::now() >= until) => {
                held_until = None;
                core.handle(std::mem::take(&mut held), now(), &mut out)
            }
            None => {
                core.on_timer(now(), &mut out);
                true
            }
            Some(m) => {
                // Everything already queued joins this batch: one write transaction for all.
                held.push(m);
                while held.len() < QUEUE {
                    match rx.try_recv() {
                        Ok(m) => held.push(m),
                        Err(_) => break,
                    }
                }
                let may_wait = held
                    .iter()
                    .map(entries_if_they_may_wait)
                    .sum::<Option<usize>>()
                    .is_some_and(|n| n < HOLD_MAX_ENTRIES);
                if may_wait {
                    held_until.get_or_insert_with(|| Instant::now() + hold);
                    continue;
                }
                held_until = None;
                core.handle(std::mem::take(&mut held), now(), &mut out)
            }
        };
        for ev in out {
            if events.send(ev).is_err() {
                return;
            }
        }
        if !running {
            return;
        }
    }
}

/// How many entries `msg` holds if it may wait; `None` for anything that may not.
fn entries_if_they_may_wait(msg: &ApplyMsg) -> Option<usize> {
    match msg {
        ApplyMsg::EntriesMayWait(entries) => Some(entries.len()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::storage::OsFs;
    use crate::store::STORE_FILE;
    use myraft_wire::raft::EntryPayload;

    /// A snapshot stream arriving while the queue is full waits as one run, not a message
    /// per datagram: the thread takes it whole the next time it has room, instead of a
    /// queue's worth of datagrams per turn of the loop.
    #[test]
    fn stream_bytes_waiting_for_the_queue_join_into_one_run() {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let mut applier = Applier::Thread {
            tx,
            overflow: VecDeque::new(),
            handle: None,
        };
        for _ in 0..QUEUE {
            applier.send(ApplyMsg::SealImport);
        }
        let piece = 1_000;
        let n = 3_000u64;
        let bytes = |i: u64, other_stream: bool| {
            ApplyMsg::SnapshotBytes(StreamBytes {
                from: 7,
                index: 10,
                term: 2,
                after_revision: u64::from(other_stream),
                offset: i * piece as u64,
                data: vec![(i % 251) as u8; piece],
                done: false,
            })
        };
        for i in 0..n {
            applier.send(bytes(i, false));
        }
        // Another stream's bytes begin a run of their own.
        applier.send(bytes(0, true));
        let Applier::Thread { overflow, .. } = &applier else {
            unreachable!()
        };
        let runs = 1 + (n as usize * piece).div_ceil(MAX_JOINED_BYTES + piece);
        assert_eq!(overflow.len(), runs, "runs waiting");
        // The thread drains its queue; the next turn hands over every run at once.
        while rx.try_recv().is_ok() {}
        applier.turn();
        let mut data = Vec::new();
        let mut others = 0;
        while let Ok(msg) = rx.try_recv() {
            match msg {
                ApplyMsg::SnapshotBytes(b) if b.after_revision == 0 => {
                    assert_eq!(b.offset, data.len() as u64, "runs in order");
                    data.extend(b.data);
                }
                ApplyMsg::SnapshotBytes(_) => others += 1,
                _ => panic!("unexpected message"),
            }
        }
        assert_eq!(others, 1);
        let want: Vec<u8> = (0..n).flat_map(|i| vec![(i % 251) as u8; piece]).collect();
        assert!(data == want, "the stream's bytes, whole and in order");
    }

    /// The loop hands over far more than the queue holds (the rest waits in the overflow,
    /// not in the loop); the thread applies all of it, in order, and syncs before it stops.
    #[test]
    fn what_overflows_the_queue_is_applied_in_order() {
        let (_dir, mut applier, mut rx) = thread_applier(Duration::from_millis(5), HOLD_FOR);
        let n = (QUEUE as u64) * 8;
        for index in 1..=n {
            applier.send(ApplyMsg::Entries(vec![Entry {
                term: 1,
                index,
                payload: EntryPayload::Noop,
            }]));
        }
        applier.shutdown();
        let mut applied = Vec::new();
        let mut synced = 0;
        while let Ok(ev) = rx.try_recv() {
            match ev {
                ApplyEvent::Applied { entries, .. } => {
                    applied.extend(entries.iter().map(|a| a.index));
                }
                ApplyEvent::Synced(s) => synced = s.synced_index,
                ApplyEvent::Fatal(e) => panic!("{e}"),
                _ => {}
            }
        }
        assert_eq!(applied, (1..=n).collect::<Vec<_>>());
        assert_eq!(synced, n, "shutdown syncs what was applied");
    }

    /// An applier thread on a new store, syncing every `sync_interval`.
    fn thread_applier(
        sync_interval: Duration,
        hold: Duration,
    ) -> (tempfile::TempDir, Applier, Events) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&OsFs, &dir.path().join(STORE_FILE), &StoreConfig::default()).unwrap();
        let core = ApplyCore::new(store, Arc::new(OsFs), StoreConfig::default(), sync_interval);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let applier = Applier::spawn_holding(core, tx, hold).unwrap();
        (dir, applier, rx)
    }

    type Events = tokio::sync::mpsc::UnboundedReceiver<ApplyEvent>;

    /// The next event from the thread; a bound far above any wait, so a thread that never
    /// answers fails the test instead of hanging it.
    fn next_event(rx: &mut Events) -> ApplyEvent {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), rx.recv()).await })
            .expect("the applier thread answers")
            .expect("the applier thread is running")
    }

    fn noop(index: u64) -> Vec<Entry> {
        vec![Entry {
            term: 1,
            index,
            payload: EntryPayload::Noop,
        }]
    }

    /// A follower's entries may be held, but not past a read: the read is served on the
    /// state that includes them, however long the hold.
    #[test]
    fn a_read_applies_the_entries_held_before_it() {
        let (_dir, mut applier, mut rx) =
            thread_applier(Duration::from_secs(3600), Duration::from_secs(3600));
        applier.send(ApplyMsg::EntriesMayWait(noop(1)));
        applier.send(ApplyMsg::Read {
            ctx: 7,
            index: 1,
            op: ClientOp::Get {
                key: b"k".to_vec(),
                rev: None,
                consistency: myraft_wire::api::Consistency::Stale,
            },
        });
        match next_event(&mut rx) {
            ApplyEvent::Applied { entries, .. } => {
                assert_eq!(entries.iter().map(|a| a.index).collect::<Vec<_>>(), [1]);
            }
            _ => panic!("expected the held entry applied first"),
        }
        match next_event(&mut rx) {
            ApplyEvent::Read { ctx: 7, result } => assert!(result.is_ok(), "{result:?}"),
            _ => panic!("expected the read"),
        }
        applier.shutdown();
    }

    /// Held entries are applied once the hold is over, with nothing else arriving.
    #[test]
    fn held_entries_are_applied_when_the_hold_ends() {
        let (_dir, mut applier, mut rx) =
            thread_applier(Duration::from_secs(3600), Duration::from_millis(1));
        applier.send(ApplyMsg::EntriesMayWait(noop(1)));
        applier.send(ApplyMsg::EntriesMayWait(noop(2)));
        let mut applied = Vec::new();
        while applied.len() < 2 {
            match next_event(&mut rx) {
                ApplyEvent::Applied { entries, .. } => {
                    applied.extend(entries.iter().map(|a| a.index));
                }
                ApplyEvent::Fatal(e) => panic!("{e}"),
                _ => {}
            }
        }
        assert_eq!(applied, [1, 2]);
        applier.shutdown();
    }

    fn bytes(offset: u64, len: usize, done: bool) -> ApplyMsg {
        ApplyMsg::SnapshotBytes(StreamBytes {
            from: 1,
            index: 10,
            term: 2,
            after_revision: 0,
            offset,
            data: vec![7; len],
            done,
        })
    }

    fn shape(msgs: &[ApplyMsg]) -> Vec<(u64, usize, bool)> {
        msgs.iter()
            .map(|m| match m {
                ApplyMsg::SnapshotBytes(b) => (b.offset, b.data.len(), b.done),
                _ => (u64::MAX, 0, false),
            })
            .collect()
    }

    /// Runs of stream bytes that continue each other become one write; anything between
    /// them, a gap, or the end of a stream keeps them apart.
    #[test]
    fn contiguous_stream_bytes_are_joined() {
        let msgs = vec![
            bytes(0, 10, false),
            bytes(10, 5, false),
            bytes(15, 5, true),
            bytes(0, 3, false),
            ApplyMsg::Entries(Vec::new()),
            bytes(3, 3, false),
            bytes(9, 3, false),
        ];
        assert_eq!(
            shape(&coalesce(msgs)),
            vec![
                (0, 20, true),
                (0, 3, false),
                (u64::MAX, 0, false),
                (3, 3, false),
                (9, 3, false)
            ]
        );
    }
}
