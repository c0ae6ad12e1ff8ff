//! Snapshots to followers, streamed (docs/protocol.md). The state is read from one read
//! transaction of the store ([`Export`]) a block at a time, by a thread of its own (or on the
//! loop in simulated runs), and sent in a window of chunks that advances with the
//! receiver's acknowledgements; when the receiver goes quiet the window is resent from the
//! last acknowledged offset (go-back-N). Only the window is held in memory, never the state.
//!
//! One transfer per follower. A resend of the snapshot by the Raft core, or a newer local
//! state, never restarts a transfer that is progressing; a receiver that answers "from the
//! start" (it restarted, or refused the stream) gets a new one.
//!
//! The receiving side takes the chunks in order and hands their bytes to the applier, which
//! builds the new store file as they come. A stream cut short (its sender lost leadership or
//! died, or this node restarted) leaves a partial store behind: the first chunk of the next
//! transfer is answered with where it ends, and the sender then streams only what follows,
//! if its state has the same rows up to there (`store::stream`).

use super::applier::{ApplyMsg, StreamBytes};
use super::transport::Transport;
use crate::store::Export;
use myraft_wire::envelope::Body;
use myraft_wire::raft::NodeId;
use myraft_wire::snapshot::{
    ack_for, ack_of, max_chunk_data, ChunkReceiver, ResumePoint, SnapshotChunk, SnapshotChunkAck,
    StreamId,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, TryRecvError};

/// Chunks in flight per transfer: the window (about 160 KiB at the default budget), kept
/// under a default socket receive buffer so that the receiver's kernel does not drop them.
const WINDOW: u64 = 128;
/// Chunks sent per transfer per call of `pump`, so that a transfer never crowds out the
/// loop's own traffic for long: the rest follows the next acknowledgement or tick.
const BURST: usize = 32;
/// Acknowledgements of the same offset that mean a chunk was lost: the window is resent
/// from there at once (fast retransmit) instead of after a quiet spell.
const DUPLICATE_ACKS: u32 = 3;
/// Ticks without an acknowledgement before resending from the last acknowledged offset.
const RESEND_AFTER_TICKS: u32 = 4;
/// Ticks without any acknowledgement before giving up; the Raft core asks again later.
const ABANDON_AFTER_TICKS: u32 = 200;
/// A transfer the receiver has not acknowledged at all is given up sooner: the follower is
/// likely stopped, and streaming to it would only hold the log back.
const ABANDON_UNSTARTED_AFTER_TICKS: u32 = 40;
/// A transfer holds the log back only while it shows life: acknowledged within this many
/// ticks (or this young).
const HOLD_WHILE_QUIET_TICKS: u32 = 20;
/// Ticks after a finished transfer during which the core's resends of the snapshot are
/// ignored: the follower is installing it and will answer. A follower still installing
/// says so every [`INSTALLING_ACK_TICKS`], which starts this over.
const QUIET_AFTER_DONE_TICKS: u32 = 100;
/// How often a follower installing a whole stream repeats its final acknowledgement, so
/// that a long install is not taken for a lost one and streamed again.
const INSTALLING_ACK_TICKS: u32 = 10;
/// Bytes an export thread reads ahead of the window.
const BLOCK: usize = 16 * 1024;
const READ_AHEAD_BLOCKS: usize = 8;
/// Longest snapshot stream this node accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 30;
/// Times the first chunk of one stream is answered with a resume offer before it is taken
/// as it is: a sender that ignores offers still gets its snapshot through.
const MAX_OFFERS: u32 = 3;

/// A block of the stream with the export's progress after it.
struct Block {
    bytes: Vec<u8>,
    records: u64,
    produced: u64,
}

enum Source {
    Inline(Box<Export>),
    Thread(Receiver<Result<Block, String>>),
}

enum Next {
    Block(Block),
    NotYet,
    End,
    Failed(String),
}

impl Source {
    fn next(&mut self) -> Next {
        match self {
            Source::Inline(e) => match e.next_block(BLOCK) {
                Ok(Some(bytes)) => Next::Block(Block {
                    bytes,
                    records: e.records_so_far(),
                    produced: e.bytes_so_far(),
                }),
                Ok(None) => Next::End,
                Err(err) => Next::Failed(err.to_string()),
            },
            Source::Thread(rx) => match rx.try_recv() {
                Ok(Ok(b)) => Next::Block(b),
                Ok(Err(e)) => Next::Failed(e),
                Err(TryRecvError::Empty) => Next::NotYet,
                Err(TryRecvError::Disconnected) => Next::End,
            },
        }
    }
}

fn spawn_export(mut export: Export) -> std::io::Result<Receiver<Result<Block, String>>> {
    let (tx, rx) = mpsc::sync_channel(READ_AHEAD_BLOCKS);
    std::thread::Builder::new()
        .name("snapshot-export".into())
        .spawn(move || loop {
            let block = match export.next_block(BLOCK) {
                Ok(Some(bytes)) => Ok(Block {
                    bytes,
                    records: export.records_so_far(),
                    produced: export.bytes_so_far(),
                }),
                Ok(None) => return,
                Err(e) => Err(e.to_string()),
            };
            let failed = block.is_err();
            // The receiver is gone when the transfer ended or was abandoned.
            if tx.send(block).is_err() || failed {
                return;
            }
        })?;
    Ok(rx)
}

struct Outgoing {
    addr: SocketAddr,
    index: u64,
    term: u64,
    /// The stream continues the follower's partial store after this revision (0: whole).
    after_revision: u64,
    resume_considered: bool,
    leader_term: u64,
    source: Source,
    /// The stream from `acked` to `produced`: what may still need resending.
    buf: Vec<u8>,
    acked: u64,
    sent: u64,
    produced: u64,
    source_done: bool,
    all_sent: bool,
    idle: u32,
    ticks: u32,
    records: u64,
    total_records: u64,
    /// Acknowledgements in a row of `acked` that moved nothing.
    duplicates: u32,
    /// Chunks that may be in flight: starts at one (the receiver may answer the first
    /// chunk with a resume offer, and more would be wasted), doubles with each
    /// acknowledgement that moves, up to [`WINDOW`]; back to one after a silence and halved
    /// after a loss, so that bursts of loss cannot keep taking the same chunk every time.
    cwnd: u64,
}

/// How far a transfer has come, for status output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferProgress {
    pub peer: NodeId,
    pub sending: bool,
    pub snapshot_index: u64,
    /// Acknowledged (sending) or received (receiving).
    pub bytes_done: u64,
    /// Estimated from the records read so far and the records the stream holds.
    pub bytes_total_estimate: u64,
    pub elapsed_ticks: u32,
    /// The stream continues a partial store after this revision (0: from the start).
    pub after_revision: u64,
}

impl Outgoing {
    /// Reads the export until it has produced `upto` bytes, or has nothing more yet.
    fn fill(&mut self, upto: u64) -> Result<(), String> {
        while self.produced < upto && !self.source_done {
            match self.source.next() {
                Next::Block(b) => {
                    self.buf.extend_from_slice(&b.bytes);
                    self.produced = b.produced;
                    self.records = b.records;
                }
                Next::NotYet => break,
                Next::End => self.source_done = true,
                Next::Failed(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn stream(&self) -> StreamId {
        StreamId {
            index: self.index,
            term: self.term,
            after_revision: self.after_revision,
        }
    }

    fn total_estimate(&self) -> u64 {
        if self.source_done {
            self.produced
        } else {
            (self.produced.saturating_mul(self.total_records))
                .checked_div(self.records)
                .unwrap_or(0)
        }
    }
}

/// The receiving side of the transfer from one sender.
struct Incoming {
    rx: ChunkReceiver,
    /// Where the sender's chunks come from: where "still installing" goes.
    addr: SocketAddr,
    leader_term: u64,
    total_estimate: u64,
    ticks: u32,
}

/// What this node, as a receiver, holds of a stream not yet whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Partial {
    /// Not known: the applier is asked (a partial store kept on disk, or this node's own
    /// store, may be continued).
    None,
    /// Nothing a stream could continue: the next one is taken whole.
    Nothing,
    /// The bytes of `stream` from `from` go to the applier's import.
    Live { from: NodeId, stream: StreamId },
    /// The applier was asked to stop its import and say where it ends.
    Sealing,
    /// A partial store a stream may continue.
    Sealed(ResumePoint),
}

/// How the first chunk of a transfer not under way is met.
enum Start {
    Take,
    /// Not yet: the applier is to say what a stream could continue (and stop the import
    /// under way, if any); the sender resends meanwhile.
    Seal,
    /// Not yet: the applier is sealing; the sender resends.
    Wait,
    /// Answer with this resume offer instead.
    Offer(ResumePoint),
}

/// An export the loop should ask the applier for, for a follower.
#[derive(Debug, PartialEq, Eq)]
pub struct WantExport {
    pub resume: Option<ResumePoint>,
}

pub struct SnapshotTransfers {
    out: BTreeMap<NodeId, Outgoing>,
    /// Followers an export was asked for, with ticks since.
    requested: BTreeMap<NodeId, (SocketAddr, u32)>,
    /// Followers a transfer recently finished for, with its snapshot index and ticks since.
    finished: BTreeMap<NodeId, (u64, u32)>,
    incoming: BTreeMap<NodeId, Incoming>,
    partial: Partial,
    /// The stream last answered with a resume offer, and how many times.
    offered: Option<(NodeId, StreamId, u32)>,
    max_data: usize,
    inline: bool,
}

impl SnapshotTransfers {
    /// `inline` reads exports on the loop (simulated runs) rather than on threads.
    /// `partial` is where a partial store kept from before a restart ends.
    pub fn new(payload_budget: usize, inline: bool, partial: Option<ResumePoint>) -> Self {
        SnapshotTransfers {
            out: BTreeMap::new(),
            requested: BTreeMap::new(),
            finished: BTreeMap::new(),
            incoming: BTreeMap::new(),
            partial: partial.map_or(Partial::None, Partial::Sealed),
            offered: None,
            max_data: max_chunk_data(payload_budget),
            inline,
        }
    }

    /// The Raft core wants follower `to` to get a snapshot. True if an export should be
    /// asked for: none is under way, asked for, or just finished.
    pub fn want(&mut self, to: NodeId, addr: SocketAddr) -> bool {
        if let Some(o) = self.out.get_mut(&to) {
            o.addr = addr;
            return false;
        }
        if self.finished.contains_key(&to) {
            return false;
        }
        if let Some(r) = self.requested.get_mut(&to) {
            r.0 = addr;
            return false;
        }
        self.requested.insert(to, (addr, 0));
        true
    }

    /// Starts the transfer of `export` to `to`, asked for with [`Self::want`].
    pub fn begin(&mut self, t: &mut Transport, to: NodeId, export: Export, leader_term: u64) {
        let Some((addr, _)) = self.requested.remove(&to) else {
            return;
        };
        let meta = export.meta().clone();
        let total_records = export.total_records();
        let (after_revision, resume_considered) =
            (export.after_revision(), export.resume_considered());
        let source = if self.inline {
            Source::Inline(Box::new(export))
        } else {
            match spawn_export(export) {
                Ok(rx) => Source::Thread(rx),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a snapshot export thread");
                    return;
                }
            }
        };
        tracing::info!(
            index = meta.applied_index,
            keys = meta.kv.live_keys,
            after_revision,
            "streaming a snapshot to {to:x}"
        );
        self.out.insert(
            to,
            Outgoing {
                addr,
                index: meta.applied_index,
                term: meta.applied_term,
                after_revision,
                resume_considered,
                leader_term,
                source,
                buf: Vec::new(),
                acked: 0,
                sent: 0,
                produced: 0,
                source_done: false,
                all_sent: false,
                idle: 0,
                ticks: 0,
                records: 0,
                total_records,
                duplicates: 0,
                cwnd: 1,
            },
        );
        self.pump(t, to);
    }

    /// The lowest log position a transfer under way (or just delivered) stands for: the
    /// follower continues from the log after it, so the log must still hold that.
    pub fn hold_index(&self) -> Option<u64> {
        let sending = self
            .out
            .values()
            .filter(|o| o.idle < HOLD_WHILE_QUIET_TICKS)
            .map(|o| o.index);
        let delivered = self.finished.values().map(|(i, _)| *i);
        sending.chain(delivered).min()
    }

    /// Drops the transfers to followers `wanted` says no longer need a snapshot: once a
    /// follower goes on from the log, a stream to it would only be installed over what it
    /// has and hold the log back meanwhile.
    pub fn keep_wanted(&mut self, wanted: impl Fn(NodeId) -> bool) {
        self.out.retain(|&to, _| {
            let keep = wanted(to);
            if !keep {
                tracing::info!("snapshot transfer to {to:x} dropped: it follows the log again");
            }
            keep
        });
        self.requested.retain(|&to, _| wanted(to));
        self.finished.retain(|&to, _| wanted(to));
    }

    /// This node is no longer leader: its transfers are void.
    pub fn cancel_outgoing(&mut self) {
        self.out.clear();
        self.requested.clear();
        self.finished.clear();
    }

    pub fn progress(&self) -> Vec<TransferProgress> {
        let sending = self.out.iter().map(|(&peer, o)| TransferProgress {
            peer,
            sending: true,
            snapshot_index: o.index,
            bytes_done: o.acked,
            bytes_total_estimate: o.total_estimate(),
            elapsed_ticks: o.ticks,
            after_revision: o.after_revision,
        });
        let receiving = self.incoming.iter().filter_map(|(&peer, i)| {
            let (stream, received, done) = i.rx.position()?;
            (!done).then_some(TransferProgress {
                peer,
                sending: false,
                snapshot_index: stream.index,
                bytes_done: received,
                bytes_total_estimate: i.total_estimate,
                elapsed_ticks: i.ticks,
                after_revision: stream.after_revision,
            })
        });
        sending.chain(receiving).collect()
    }

    /// Sends what the window allows, up to a burst.
    fn pump(&mut self, t: &mut Transport, to: NodeId) {
        let max_data = self.max_data as u64;
        let Some(o) = self.out.get_mut(&to) else {
            return;
        };
        let window = o.cwnd * max_data;
        let mut failed = None;
        for _ in 0..BURST {
            if o.all_sent || o.sent >= o.acked.saturating_add(window) {
                break;
            }
            if let Err(e) = o.fill(o.sent + max_data) {
                failed = Some(e);
                break;
            }
            let avail = o.produced - o.sent;
            if avail < max_data && !o.source_done {
                break;
            }
            let n = avail.min(max_data);
            let start = usize::try_from(o.sent - o.acked).unwrap_or(usize::MAX);
            let end = start + n as usize;
            let done = o.source_done && o.sent + n == o.produced;
            let total_estimate = o.total_estimate();
            let chunk = SnapshotChunk {
                snapshot_index: o.index,
                snapshot_term: o.term,
                leader_term: o.leader_term,
                offset: o.sent,
                data: o.buf[start..end].to_vec(),
                done,
                total_estimate,
                after_revision: o.after_revision,
                resume_considered: o.resume_considered,
            };
            o.sent += n;
            o.all_sent = done;
            t.send(o.addr, Body::SnapshotChunk(chunk));
        }
        if let Some(e) = failed {
            tracing::error!(error = %e, "snapshot export to {to:x} failed; abandoned");
            self.out.remove(&to);
        }
    }

    /// An acknowledgement from `from`; an export to ask for if it wants a new transfer.
    pub fn on_ack(
        &mut self,
        t: &mut Transport,
        from: NodeId,
        ack: SnapshotChunkAck,
    ) -> Option<WantExport> {
        if ack.done && !self.out.contains_key(&from) {
            // The follower is still installing what it was sent: stay quiet a while more.
            if let Some((index, ticks)) = self.finished.get_mut(&from) {
                if *index == ack.snapshot_index {
                    *ticks = 0;
                }
            }
            return None;
        }
        let o = self.out.get_mut(&from)?;
        if ack.stream() != o.stream() {
            return None;
        }
        if ack.done {
            tracing::info!(bytes = o.produced, "snapshot stream to {from:x} delivered");
            let index = o.index;
            self.out.remove(&from);
            self.finished.insert(from, (index, 0));
            return None;
        }
        let restart = match ack.resume {
            // A resume offer: a stream from its point is wanted, unless this is one.
            Some(p) if ack.next_offset == 0 => {
                let sending_it = o.resume_considered && o.after_revision == p.after_revision;
                (!sending_it).then_some(Some(p))
            }
            // The receiver no longer has the start: this stream cannot go on.
            _ if ack.next_offset == 0 && o.acked > 0 => Some(None),
            _ => None,
        };
        if let Some(resume) = restart {
            match &resume {
                Some(p) => tracing::info!(
                    after_revision = p.after_revision,
                    "{from:x} offers to continue a partial snapshot store"
                ),
                None => {
                    tracing::info!(
                        "{from:x} asks for the snapshot from the start; a new one follows"
                    )
                }
            }
            let addr = o.addr;
            self.out.remove(&from);
            self.requested.insert(from, (addr, 0));
            return Some(WantExport { resume });
        }
        if ack.next_offset > o.produced {
            // The receiver may be further on than this transfer has sent: chunks from
            // before a go-back, or an earlier transfer of the same stream (same bytes).
            if let Err(e) = o.fill(ack.next_offset) {
                tracing::error!(error = %e, "snapshot export to {from:x} failed; abandoned");
                self.out.remove(&from);
                return None;
            }
        }
        if ack.next_offset > o.acked && ack.next_offset <= o.produced {
            let drop = usize::try_from(ack.next_offset - o.acked).unwrap_or(usize::MAX);
            o.buf.drain(..drop.min(o.buf.len()));
            o.acked = ack.next_offset;
            o.sent = o.sent.max(o.acked);
            o.idle = 0;
            o.duplicates = 0;
            o.cwnd = (o.cwnd * 2).min(WINDOW);
        } else if ack.next_offset == o.acked && o.sent > o.acked {
            // The receiver got a chunk past a gap. A few of those and the gap is a loss:
            // go back to it now; the acknowledgements of the chunks already in flight after
            // it are duplicates too, so count afresh once resent.
            o.duplicates += 1;
            if o.duplicates == DUPLICATE_ACKS {
                o.sent = o.acked;
                o.all_sent = false;
                o.cwnd = (o.cwnd / 2).max(1);
            } else if o.duplicates > DUPLICATE_ACKS
                && u64::from(o.duplicates) > WINDOW + u64::from(DUPLICATE_ACKS)
            {
                o.duplicates = 0;
            }
        }
        self.pump(t, from);
        None
    }

    /// Once per tick: resends after silence, gives up after long silence, and lets every
    /// transfer send what its window allows (exports may have read ahead since).
    pub fn on_tick(&mut self, t: &mut Transport) {
        let mut active = Vec::new();
        self.out.retain(|to, o| {
            o.idle += 1;
            o.ticks = o.ticks.saturating_add(1);
            let limit = if o.acked == 0 {
                ABANDON_UNSTARTED_AFTER_TICKS
            } else {
                ABANDON_AFTER_TICKS
            };
            if o.idle >= limit {
                tracing::warn!("snapshot transfer to {to:x} abandoned: no acknowledgement");
                return false;
            }
            if o.idle.is_multiple_of(RESEND_AFTER_TICKS) {
                o.sent = o.acked;
                o.all_sent = false;
                o.cwnd = 1;
            }
            active.push(*to);
            true
        });
        self.requested.retain(|_, (_, ticks)| {
            *ticks += 1;
            *ticks < ABANDON_AFTER_TICKS
        });
        self.finished.retain(|_, (_, ticks)| {
            *ticks += 1;
            *ticks < QUIET_AFTER_DONE_TICKS
        });
        let installing = match self.partial {
            Partial::Live { from, stream } => Some((from, stream)),
            _ => None,
        };
        for (from, i) in self.incoming.iter_mut() {
            i.ticks = i.ticks.saturating_add(1);
            let Some((stream, received, true)) = i.rx.position() else {
                continue;
            };
            if installing == Some((*from, stream)) && i.ticks.is_multiple_of(INSTALLING_ACK_TICKS) {
                let ack = ack_of(stream, received, true);
                t.send(i.addr, Body::SnapshotChunkAck(ack));
            }
        }
        for to in active {
            self.pump(t, to);
        }
    }

    /// After each turn: transfers send what their exports produced meanwhile.
    pub fn pump_all(&mut self, t: &mut Transport) {
        let ids: Vec<NodeId> = self.out.keys().copied().collect();
        for to in ids {
            self.pump(t, to);
        }
    }

    /// A chunk from `from`: acknowledged at once; the bytes it adds (or a request to seal
    /// the import under way), for the applier.
    pub fn on_chunk(
        &mut self,
        t: &mut Transport,
        from: NodeId,
        from_addr: SocketAddr,
        chunk: SnapshotChunk,
    ) -> Option<ApplyMsg> {
        let stream = chunk.stream();
        let (leader_term, total_estimate) = (chunk.leader_term, chunk.total_estimate);
        let current = self
            .incoming
            .get(&from)
            .is_some_and(|i| i.rx.is_current(&chunk));
        if !current {
            if chunk.offset != 0 {
                // The middle of a stream not under way: "from the start", with what this
                // node holds to continue from.
                let mut ack = ack_for(&chunk, 0, false);
                if let Partial::Sealed(p) = self.partial {
                    ack.resume = Some(p);
                }
                t.send(from_addr, Body::SnapshotChunkAck(ack));
                return None;
            }
            match self.start(from, &chunk) {
                Start::Take => {}
                Start::Seal => {
                    if let Partial::Live { from: live, .. } = self.partial {
                        if let Some(i) = self.incoming.get_mut(&live) {
                            i.rx.reset();
                        }
                    }
                    self.partial = Partial::Sealing;
                    return Some(ApplyMsg::SealImport);
                }
                Start::Wait => return None,
                Start::Offer(p) => {
                    let mut ack = ack_for(&chunk, 0, false);
                    ack.resume = Some(p);
                    t.send(from_addr, Body::SnapshotChunkAck(ack));
                    return None;
                }
            }
        }
        let inc = self.incoming.entry(from).or_insert_with(|| Incoming {
            rx: ChunkReceiver::new(MAX_SNAPSHOT_BYTES),
            addr: from_addr,
            leader_term: 0,
            total_estimate: 0,
            ticks: 0,
        });
        inc.addr = from_addr;
        match inc.rx.offer(chunk) {
            Ok((accepted, ack)) => {
                t.send(from_addr, Body::SnapshotChunkAck(ack));
                let a = accepted?;
                if a.offset == 0 {
                    inc.ticks = 0;
                    self.partial = Partial::Live { from, stream };
                    self.offered = None;
                }
                inc.leader_term = leader_term;
                inc.total_estimate = total_estimate;
                Some(ApplyMsg::SnapshotBytes(StreamBytes {
                    from,
                    index: stream.index,
                    term: stream.term,
                    after_revision: stream.after_revision,
                    offset: a.offset,
                    data: a.data,
                    done: a.done,
                }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad snapshot chunk from {from:x}; dropped");
                None
            }
        }
    }

    /// How to meet the first chunk of a stream not under way.
    fn start(&mut self, from: NodeId, chunk: &SnapshotChunk) -> Start {
        let stream = chunk.stream();
        let whole = stream.after_revision == 0;
        match self.partial {
            // The sender weighed an offer and sends the whole state: take it.
            _ if whole && chunk.resume_considered => Start::Take,
            Partial::Nothing if whole => Start::Take,
            // It continues a partial store this node does not have: ask for a whole one.
            Partial::Nothing => Start::Offer(ResumePoint {
                after_revision: 0,
                compacted_before: 0,
                row_crc: 0,
            }),
            // The stream under way is whole and being installed: the new one waits for that.
            Partial::Live { from: live, .. } if self.incoming_done(live) => Start::Wait,
            Partial::None | Partial::Live { .. } => Start::Seal,
            Partial::Sealing => Start::Wait,
            Partial::Sealed(p) if stream.after_revision == p.after_revision => Start::Take,
            Partial::Sealed(p) => {
                let n = match self.offered {
                    Some((f, s, n)) if (f, s) == (from, stream) => n + 1,
                    _ => 1,
                };
                self.offered = Some((from, stream, n));
                if n > MAX_OFFERS && whole {
                    Start::Take
                } else {
                    Start::Offer(p)
                }
            }
        }
    }

    /// Whether every byte of the transfer from `from` arrived.
    fn incoming_done(&self, from: NodeId) -> bool {
        self.incoming
            .get(&from)
            .and_then(|i| i.rx.position())
            .is_some_and(|(_, _, done)| done)
    }

    /// The applier sealed its import: a stream may continue it from `point`.
    pub fn on_sealed(&mut self, point: Option<ResumePoint>) {
        if self.partial == Partial::Sealing {
            self.partial = point.map_or(Partial::Nothing, Partial::Sealed);
        }
    }

    /// The stream `(index, term)` from `from` is installed.
    pub fn on_installed(&mut self, from: NodeId, index: u64, term: u64) {
        if let Partial::Live { from: f, stream } = self.partial {
            if f == from && (stream.index, stream.term) == (index, term) {
                self.partial = Partial::None;
            }
        }
    }

    /// The leader term the last chunk from `from` carried.
    pub fn leader_term(&self, from: NodeId) -> u64 {
        self.incoming.get(&from).map_or(0, |i| i.leader_term)
    }

    /// The stream from `from` was refused: its next chunk gets "from the start", and the
    /// applier dropped its import if it was that stream's.
    pub fn reset_incoming(&mut self, from: NodeId) {
        if let Some(i) = self.incoming.get_mut(&from) {
            i.rx.reset();
        }
        if let Partial::Live { from: f, stream } = self.partial {
            if f == from {
                // A stream that continued a partial store and failed is not tried again:
                // the next one is taken whole.
                self.partial = if stream.after_revision > 0 {
                    Partial::Nothing
                } else {
                    Partial::None
                };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::server::transport::tests::{addr, clock_now, transport, Air};
    use crate::state_machine::{ClientCommand, Command, LogCommand};
    use crate::storage::OsFs;
    use crate::store::{Import, Store, StoreConfig, STORE_FILE};
    use myraft_wire::codec;
    use myraft_wire::key::ClusterKey;
    use myraft_wire::raft::{Entry, EntryPayload};

    const LEADER: NodeId = 0xA;
    const FOLLOWER: NodeId = 0xB;

    fn store_with_keys(dir: &std::path::Path, n: u64) -> Store {
        let mut store = Store::open(&OsFs, &dir.join(STORE_FILE), &StoreConfig::default()).unwrap();
        let entries: Vec<Entry> = (1..=n)
            .map(|i| Entry {
                term: 1,
                index: i,
                payload: EntryPayload::Command(
                    LogCommand {
                        entry_time_ms: i,
                        req: ClientCommand {
                            client_id: 9,
                            seq: i,
                            cmd: Command::Put {
                                key: format!("k{i:04}").into_bytes(),
                                value: vec![i as u8; 200],
                            },
                        },
                    }
                    .encode(),
                ),
            })
            .collect();
        store.apply(&entries, true).unwrap();
        store
    }

    /// Takes every datagram sent into `air` and decodes it.
    fn drain(air: &Air) -> Vec<Body> {
        let key = ClusterKey::lab_default();
        let mut out = Vec::new();
        while let Some((bytes, _)) = air.lock().unwrap().pop_front() {
            out.push(codec::decode(&bytes, &key, None).unwrap().body);
        }
        out
    }

    /// A whole transfer through loss: every seventh chunk is dropped, resends follow the
    /// acknowledgements and the ticks, the core's resends never restart it, and the bytes
    /// that arrive build a store that answers as the leader's.
    #[test]
    fn a_transfer_gets_through_loss_without_restarting() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let source = store_with_keys(dirs.0.path(), 300);
        let (air1, air2) = (Air::default(), Air::default());
        let mut t1 = transport(dirs.0.path(), 1, LEADER, clock_now, &air1);
        let mut t2 = transport(dirs.1.path(), 2, FOLLOWER, clock_now, &air2);
        let mut leader = SnapshotTransfers::new(1_400, true, None);
        let mut follower = SnapshotTransfers::new(1_400, true, None);

        assert!(
            leader.want(FOLLOWER, addr(2)),
            "the first request asks for an export"
        );
        assert!(!leader.want(FOLLOWER, addr(2)), "and one export is enough");
        let export = source.reader().unwrap().export().unwrap();
        leader.begin(&mut t1, FOLLOWER, export, 1);
        assert_eq!(leader.hold_index(), Some(300));

        let mut import =
            Import::create(&OsFs, &dirs.1.path().join("incoming.redb"), 1 << 20).unwrap();
        let (mut sent, mut done, mut acked) = (0u64, false, 0u64);
        for _round in 0..10_000 {
            let chunks = drain(&air1);
            if chunks.is_empty() {
                leader.on_tick(&mut t1);
            }
            for body in chunks {
                let Body::SnapshotChunk(c) = body else {
                    panic!("the leader sent {body:?}")
                };
                sent += 1;
                if sent % 7 == 0 {
                    continue;
                }
                match follower.on_chunk(&mut t2, LEADER, addr(1), c) {
                    Some(ApplyMsg::SnapshotBytes(b)) => {
                        import.feed(&b.data).unwrap();
                        done |= b.done;
                    }
                    // An empty follower: nothing to continue.
                    Some(ApplyMsg::SealImport) => follower.on_sealed(None),
                    _ => {}
                }
            }
            for body in drain(&air2) {
                let Body::SnapshotChunkAck(a) = body else {
                    panic!("the follower sent {body:?}")
                };
                assert_eq!(
                    leader.on_ack(&mut t1, FOLLOWER, a),
                    None,
                    "asked to restart"
                );
            }
            // The core resends its snapshot meanwhile: the transfer goes on.
            assert!(!leader.want(FOLLOWER, addr(2)));
            if let Some(p) = leader.progress().first() {
                assert!(p.bytes_done >= acked, "progress went back");
                acked = p.bytes_done;
            }
            if done && leader.progress().is_empty() {
                break;
            }
        }
        assert!(done, "the transfer never finished");
        assert!(leader.progress().is_empty(), "the leader still sends");
        assert_eq!(
            leader.hold_index(),
            Some(300),
            "held while the follower installs"
        );
        assert!(
            !leader.want(FOLLOWER, addr(2)),
            "and not sent again at once"
        );
        let meta = import.finish().unwrap();
        assert_eq!(&meta, source.meta());
    }

    /// A receiver that answers "from the start" mid-transfer gets a new stream.
    #[test]
    fn a_receiver_that_lost_the_start_gets_a_new_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let source = store_with_keys(dir.path(), 50);
        let air = Air::default();
        let mut t = transport(dir.path(), 1, LEADER, clock_now, &air);
        let mut leader = SnapshotTransfers::new(1_400, true, None);
        assert!(leader.want(FOLLOWER, addr(2)));
        leader.begin(
            &mut t,
            FOLLOWER,
            source.reader().unwrap().export().unwrap(),
            1,
        );
        let ack = |next_offset| SnapshotChunkAck {
            snapshot_index: 50,
            snapshot_term: 1,
            next_offset,
            done: false,
            after_revision: 0,
            resume: None,
        };
        let first = max_chunk_data(1_400) as u64;
        assert_eq!(leader.on_ack(&mut t, FOLLOWER, ack(first)), None);
        assert_eq!(
            leader.on_ack(&mut t, FOLLOWER, ack(0)),
            Some(WantExport { resume: None }),
            "a new export from the start is wanted"
        );
        assert!(leader.progress().is_empty());
        assert!(!leader.want(FOLLOWER, addr(2)), "already asked for");
    }

    /// A follower as the node wires it: its transfers, and an applier run inline over its
    /// store in `dir`, started from what `dir` holds (as after a restart).
    struct Follower {
        snaps: SnapshotTransfers,
        core: crate::server::applier::ApplyCore,
        t: Transport,
        air: Air,
        installed: Option<crate::store::Meta>,
        /// Its applier never gets to stream bytes: an install that takes forever.
        stalled: bool,
    }

    fn store_cfg() -> StoreConfig {
        StoreConfig {
            cache_bytes: 1 << 20,
            ..StoreConfig::default()
        }
    }

    impl Follower {
        fn start(dir: &std::path::Path) -> Follower {
            let store = Store::open(&OsFs, &dir.join(STORE_FILE), &store_cfg()).unwrap();
            let partial = Import::resume_point(&OsFs, &store.incoming_path(), 1 << 20).unwrap();
            let core = crate::server::applier::ApplyCore::new(
                store,
                std::sync::Arc::new(OsFs),
                store_cfg(),
                std::time::Duration::from_millis(30),
            );
            let air = Air::default();
            Follower {
                snaps: SnapshotTransfers::new(1_400, true, partial),
                core,
                t: transport(dir, 2, FOLLOWER, clock_now, &air),
                air,
                installed: None,
                stalled: false,
            }
        }

        fn take(&mut self, from: NodeId, chunk: SnapshotChunk) {
            match self.snaps.on_chunk(&mut self.t, from, addr(1), chunk) {
                Some(ApplyMsg::SnapshotBytes(_)) if self.stalled => {}
                Some(msg) => self.apply(msg),
                None => {}
            }
        }

        fn apply(&mut self, msg: ApplyMsg) {
            use crate::server::applier::ApplyEvent;
            let mut out = Vec::new();
            self.core.handle([msg], 0, &mut out);
            for ev in out {
                match ev {
                    ApplyEvent::ImportSealed(p) => self.snaps.on_sealed(p),
                    ApplyEvent::Installed { from, meta, .. } => {
                        self.snaps
                            .on_installed(from, meta.applied_index, meta.applied_term);
                        self.installed = Some(meta);
                    }
                    ApplyEvent::ImportFailed { from, reason } => {
                        panic!("the stream from {from:x} was refused: {reason}")
                    }
                    ApplyEvent::Fatal(e) => panic!("{e}"),
                    _ => {}
                }
            }
        }

        fn received(&self) -> u64 {
            self.snaps
                .progress()
                .iter()
                .filter(|p| !p.sending)
                .map(|p| p.bytes_done)
                .sum()
        }
    }

    struct Leader {
        id: NodeId,
        snaps: SnapshotTransfers,
        store: Store,
        t: Transport,
        air: Air,
        /// Data bytes sent in chunks of streams that continue a partial store, and in all.
        continued_bytes: u64,
        sent_bytes: u64,
    }

    impl Leader {
        fn start(dir: &std::path::Path, id: NodeId, keys: u64) -> Leader {
            let air = Air::default();
            let mut l = Leader {
                id,
                snaps: SnapshotTransfers::new(1_400, true, None),
                store: store_with_keys(dir, keys),
                t: transport(dir, 1, id, clock_now, &air),
                air,
                continued_bytes: 0,
                sent_bytes: 0,
            };
            assert!(l.snaps.want(FOLLOWER, addr(2)));
            let export = l.store.reader().unwrap().export().unwrap();
            l.snaps.begin(&mut l.t, FOLLOWER, export, 1);
            l
        }

        fn on_ack(&mut self, ack: SnapshotChunkAck) {
            if let Some(w) = self.snaps.on_ack(&mut self.t, FOLLOWER, ack) {
                let export = self
                    .store
                    .reader()
                    .unwrap()
                    .export_continuing(w.resume)
                    .unwrap();
                self.snaps.begin(&mut self.t, FOLLOWER, export, 1);
            }
        }
    }

    /// Moves chunks and acknowledgements between `l` and `f` until `stop` holds.
    fn exchange(l: &mut Leader, f: &mut Follower, stop: impl Fn(&Follower) -> bool) {
        for _round in 0..20_000 {
            let chunks = drain(&l.air);
            if chunks.is_empty() {
                l.snaps.on_tick(&mut l.t);
            }
            for body in chunks {
                let Body::SnapshotChunk(c) = body else {
                    panic!("the leader sent {body:?}")
                };
                l.sent_bytes += c.data.len() as u64;
                if c.after_revision > 0 {
                    l.continued_bytes += c.data.len() as u64;
                }
                f.take(l.id, c);
            }
            for body in drain(&f.air) {
                let Body::SnapshotChunkAck(a) = body else {
                    panic!("the follower sent {body:?}")
                };
                l.on_ack(a);
            }
            if stop(f) {
                return;
            }
        }
        panic!(
            "the exchange never ended: leader {:?}, follower {:?}",
            l.snaps.progress(),
            f.snaps.progress()
        );
    }

    fn stream_len(store: &Store) -> u64 {
        let mut e = store.reader().unwrap().export().unwrap();
        let mut n = 0;
        while let Some(b) = e.next_block(1 << 16).unwrap() {
            n += b.len() as u64;
        }
        n
    }

    /// What `dir`'s store streams, once the applier is gone.
    fn stream_of(dir: &std::path::Path) -> Vec<u8> {
        let store = Store::open(&OsFs, &dir.join(STORE_FILE), &store_cfg()).unwrap();
        let mut e = store.reader().unwrap().export().unwrap();
        let mut out = Vec::new();
        while let Some(b) = e.next_block(1 << 16).unwrap() {
            out.extend(b);
        }
        out
    }

    /// The leader dies with its stream half delivered; the next leader, whose state has
    /// gone on, streams only what follows the follower's partial store, and the follower
    /// ends up with that leader's state.
    #[test]
    fn a_new_leader_continues_the_stream_its_predecessor_began() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut f = Follower::start(dirs[2].path());
        let mut l1 = Leader::start(dirs[0].path(), LEADER, 2_000);
        let full = stream_len(&l1.store);
        exchange(&mut l1, &mut f, |f| f.received() > full / 2);
        drop(l1);

        let mut l2 = Leader::start(dirs[1].path(), 0xC, 2_100);
        exchange(&mut l2, &mut f, |f| f.installed.is_some());
        assert_eq!(f.installed.as_ref(), Some(l2.store.meta()));
        assert!(
            l2.continued_bytes > 0 && l2.sent_bytes < full * 6 / 10,
            "the new leader sent {} bytes ({} continuing) of a {full}-byte state",
            l2.sent_bytes,
            l2.continued_bytes
        );
        let want = stream_len(&l2.store);
        drop(f);
        let got = stream_of(dirs[2].path());
        assert_eq!(got.len() as u64, want);
        let mut e = l2.store.reader().unwrap().export().unwrap();
        let mut expected = Vec::new();
        while let Some(b) = e.next_block(1 << 16).unwrap() {
            expected.extend(b);
        }
        assert!(
            got == expected,
            "the follower's store differs from the leader's"
        );
    }

    /// A follower that has every byte but is still installing them says so, and the leader
    /// does not begin the stream again however long that takes; once the follower falls
    /// silent, the leader's next want of a snapshot starts one.
    #[test]
    fn a_long_install_is_not_taken_for_a_lost_stream() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut f = Follower::start(dirs[1].path());
        let mut l = Leader::start(dirs[0].path(), LEADER, 300);
        // Every chunk reaches the follower's loop; its applier never gets to the bytes.
        f.stalled = true;
        exchange(&mut l, &mut f, |f| f.snaps.incoming_done(LEADER));
        assert!(l.snaps.out.is_empty() && l.snaps.finished.contains_key(&FOLLOWER));
        for tick in 0..QUIET_AFTER_DONE_TICKS * 10 {
            f.snaps.on_tick(&mut f.t);
            l.snaps.on_tick(&mut l.t);
            for body in drain(&f.air) {
                let Body::SnapshotChunkAck(a) = body else {
                    panic!("the follower sent {body:?}")
                };
                assert!(a.done, "tick {tick}: {a:?}");
                l.on_ack(a);
            }
            assert!(
                !l.snaps.want(FOLLOWER, addr(2)),
                "tick {tick}: a new stream for a follower still installing"
            );
        }
        for _ in 0..QUIET_AFTER_DONE_TICKS {
            l.snaps.on_tick(&mut l.t);
        }
        assert!(
            l.snaps.want(FOLLOWER, addr(2)),
            "a silent follower is streamed to again"
        );
    }

    /// A follower the core no longer wants a snapshot for (it answered from the log after
    /// one) is not streamed to; a later want starts afresh.
    #[test]
    fn a_follower_back_on_the_log_is_not_streamed_to() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = Leader::start(dir.path(), LEADER, 300);
        l.snaps.keep_wanted(|_| true);
        assert_eq!(
            l.snaps.progress().len(),
            1,
            "the transfer goes on while wanted"
        );
        l.snaps.keep_wanted(|to| to != FOLLOWER);
        assert!(l.snaps.progress().is_empty(), "{:?}", l.snaps.progress());
        drain(&l.air);
        l.snaps.on_tick(&mut l.t);
        assert!(drain(&l.air).is_empty(), "a dropped transfer sends nothing");
        assert!(l.snaps.want(FOLLOWER, addr(2)));
    }

    /// The follower restarts with its stream half received: the leader's next chunks are
    /// answered with where its partial store ends, and only the rest is sent.
    #[test]
    fn a_restarted_follower_continues_its_stream() {
        let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut f = Follower::start(dirs[1].path());
        let mut l = Leader::start(dirs[0].path(), LEADER, 2_000);
        let full = stream_len(&l.store);
        exchange(&mut l, &mut f, |f| f.received() > full / 2);
        let before = l.sent_bytes;
        drop(f);
        let mut f = Follower::start(dirs[1].path());
        assert!(
            matches!(f.snaps.partial, Partial::Sealed(_)),
            "nothing kept over the restart"
        );
        exchange(&mut l, &mut f, |f| f.installed.is_some());
        assert_eq!(f.installed.as_ref(), Some(l.store.meta()));
        // What was in flight when the follower stopped is lost, a window at most; the
        // rest is the stream that continues, about half the state.
        let in_flight = WINDOW * max_chunk_data(1_400) as u64;
        let whole_after = l.sent_bytes - before - l.continued_bytes;
        assert!(
            l.continued_bytes > 0 && l.continued_bytes < full * 6 / 10 && whole_after <= in_flight,
            "after the restart the leader sent {} bytes ({} continuing) of a {full}-byte state",
            l.sent_bytes - before,
            l.continued_bytes
        );
        drop(f);
        assert_eq!(stream_of(dirs[1].path()).len() as u64, full);
    }

    /// The receiver can be further on than the sender's resend point: it has chunks of an
    /// earlier transfer of the same stream, given up while their acknowledgements were
    /// lost. The new transfer goes on from where the receiver is, rather than resending the
    /// chunk before it until it gives up again.
    #[test]
    fn a_receiver_ahead_of_a_new_transfer_of_the_same_stream_is_followed() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut f = Follower::start(dirs.1.path());
        let mut l = Leader::start(dirs.0.path(), LEADER, 2_000);
        let full = stream_len(&l.store);
        exchange(&mut l, &mut f, |f| f.received() > full / 4);
        // More chunks arrive, but none of their acknowledgements.
        for _ in 0..10 {
            for body in drain(&l.air) {
                let Body::SnapshotChunk(c) = body else {
                    panic!("the leader sent {body:?}")
                };
                f.take(l.id, c);
            }
            drain(&f.air);
            l.snaps.on_tick(&mut l.t);
        }
        let acked = l.snaps.progress()[0].bytes_done;
        assert!(f.received() > acked, "the follower is not ahead");
        // The leader hears nothing and gives the transfer up; the core asks again.
        for _ in 0..ABANDON_AFTER_TICKS {
            l.snaps.on_tick(&mut l.t);
        }
        assert!(l.snaps.progress().is_empty(), "not given up");
        drain(&l.air);
        assert!(l.snaps.want(FOLLOWER, addr(2)));
        let export = l.store.reader().unwrap().export().unwrap();
        l.snaps.begin(&mut l.t, FOLLOWER, export, 1);
        exchange(&mut l, &mut f, |f| f.installed.is_some());
        assert_eq!(f.installed.as_ref(), Some(l.store.meta()));
    }

    /// A follower that fell behind (stopped, or cut off, while the log moved past it) is
    /// sent only the rows after its own store's latest, not the whole state.
    #[test]
    fn a_follower_behind_is_sent_only_what_follows_its_own_store() {
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        drop(store_with_keys(dirs.1.path(), 1_500));
        let mut f = Follower::start(dirs.1.path());
        let mut l = Leader::start(dirs.0.path(), LEADER, 2_000);
        let full = stream_len(&l.store);
        exchange(&mut l, &mut f, |f| f.installed.is_some());
        assert_eq!(f.installed.as_ref(), Some(l.store.meta()));
        assert!(
            l.continued_bytes > 0 && l.sent_bytes < full * 4 / 10,
            "the leader sent {} bytes ({} continuing) to a follower a quarter behind a \
             {full}-byte state",
            l.sent_bytes,
            l.continued_bytes
        );
        drop(f);
        assert_eq!(stream_of(dirs.1.path()).len() as u64, full);
    }
}
