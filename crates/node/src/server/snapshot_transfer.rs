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
//! builds the new store file as they come.

use super::applier::{ApplyMsg, StreamBytes};
use super::transport::Transport;
use crate::store::Export;
use myraft_wire::envelope::Body;
use myraft_wire::raft::NodeId;
use myraft_wire::snapshot::{max_chunk_data, ChunkReceiver, SnapshotChunk, SnapshotChunkAck};
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
/// ignored: the follower is installing it and will answer.
const QUIET_AFTER_DONE_TICKS: u32 = 100;
/// Bytes an export thread reads ahead of the window.
const BLOCK: usize = 16 * 1024;
const READ_AHEAD_BLOCKS: usize = 8;
/// Longest snapshot stream this node accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 30;

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
}

impl Outgoing {
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
    leader_term: u64,
    total_estimate: u64,
    ticks: u32,
}

pub struct SnapshotTransfers {
    out: BTreeMap<NodeId, Outgoing>,
    /// Followers an export was asked for, with ticks since.
    requested: BTreeMap<NodeId, (SocketAddr, u32)>,
    /// Followers a transfer recently finished for, with its snapshot index and ticks since.
    finished: BTreeMap<NodeId, (u64, u32)>,
    incoming: BTreeMap<NodeId, Incoming>,
    max_data: usize,
    inline: bool,
}

impl SnapshotTransfers {
    /// `inline` reads exports on the loop (simulated runs) rather than on threads.
    pub fn new(payload_budget: usize, inline: bool) -> Self {
        SnapshotTransfers {
            out: BTreeMap::new(),
            requested: BTreeMap::new(),
            finished: BTreeMap::new(),
            incoming: BTreeMap::new(),
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
            "streaming a snapshot to {to:x}"
        );
        self.out.insert(
            to,
            Outgoing {
                addr,
                index: meta.applied_index,
                term: meta.applied_term,
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
        });
        let receiving = self.incoming.iter().filter_map(|(&peer, i)| {
            let (index, _, received, done) = i.rx.position()?;
            (!done).then_some(TransferProgress {
                peer,
                sending: false,
                snapshot_index: index,
                bytes_done: received,
                bytes_total_estimate: i.total_estimate,
                elapsed_ticks: i.ticks,
            })
        });
        sending.chain(receiving).collect()
    }

    /// Sends what the window allows, up to a burst.
    fn pump(&mut self, t: &mut Transport, to: NodeId) {
        let max_data = self.max_data as u64;
        let window = WINDOW * max_data;
        let Some(o) = self.out.get_mut(&to) else {
            return;
        };
        let mut failed = None;
        for _ in 0..BURST {
            if o.all_sent || o.sent >= o.acked.saturating_add(window) {
                break;
            }
            while o.produced < o.sent + max_data && !o.source_done {
                match o.source.next() {
                    Next::Block(b) => {
                        o.buf.extend_from_slice(&b.bytes);
                        o.produced = b.produced;
                        o.records = b.records;
                    }
                    Next::NotYet => break,
                    Next::End => o.source_done = true,
                    Next::Failed(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if failed.is_some() {
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

    /// An acknowledgement from `from`. True if it asks for a new transfer from the start.
    pub fn on_ack(&mut self, t: &mut Transport, from: NodeId, ack: SnapshotChunkAck) -> bool {
        let Some(o) = self.out.get_mut(&from) else {
            return false;
        };
        if ack.snapshot_index != o.index || ack.snapshot_term != o.term {
            return false;
        }
        if ack.done {
            tracing::info!(bytes = o.produced, "snapshot stream to {from:x} delivered");
            let index = o.index;
            self.out.remove(&from);
            self.finished.insert(from, (index, 0));
            return false;
        }
        if ack.next_offset == 0 && o.acked > 0 {
            // The receiver no longer has the start: this stream cannot go on.
            tracing::info!("{from:x} asks for the snapshot from the start; a new one follows");
            let addr = o.addr;
            self.out.remove(&from);
            self.requested.insert(from, (addr, 0));
            return true;
        }
        if ack.next_offset > o.acked && ack.next_offset <= o.sent {
            let drop = usize::try_from(ack.next_offset - o.acked).unwrap_or(usize::MAX);
            o.buf.drain(..drop.min(o.buf.len()));
            o.acked = ack.next_offset;
            o.idle = 0;
            o.duplicates = 0;
        } else if ack.next_offset == o.acked && o.sent > o.acked {
            // The receiver got a chunk past a gap. A few of those and the gap is a loss:
            // go back to it now; the acknowledgements of the chunks already in flight after
            // it are duplicates too, so count afresh once resent.
            o.duplicates += 1;
            if o.duplicates == DUPLICATE_ACKS {
                o.sent = o.acked;
                o.all_sent = false;
            } else if o.duplicates > DUPLICATE_ACKS
                && u64::from(o.duplicates) > WINDOW + u64::from(DUPLICATE_ACKS)
            {
                o.duplicates = 0;
            }
        }
        self.pump(t, from);
        false
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
        for i in self.incoming.values_mut() {
            i.ticks = i.ticks.saturating_add(1);
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

    /// A chunk from `from`: acknowledged at once; the bytes it adds, for the applier.
    pub fn on_chunk(
        &mut self,
        t: &mut Transport,
        from: NodeId,
        from_addr: SocketAddr,
        chunk: SnapshotChunk,
    ) -> Option<ApplyMsg> {
        let (index, term, leader_term) =
            (chunk.snapshot_index, chunk.snapshot_term, chunk.leader_term);
        let total_estimate = chunk.total_estimate;
        let inc = self.incoming.entry(from).or_insert_with(|| Incoming {
            rx: ChunkReceiver::new(MAX_SNAPSHOT_BYTES),
            leader_term: 0,
            total_estimate: 0,
            ticks: 0,
        });
        match inc.rx.offer(chunk) {
            Ok((accepted, ack)) => {
                t.send(from_addr, Body::SnapshotChunkAck(ack));
                let a = accepted?;
                if a.offset == 0 {
                    inc.ticks = 0;
                }
                inc.leader_term = leader_term;
                inc.total_estimate = total_estimate;
                Some(ApplyMsg::SnapshotBytes(StreamBytes {
                    from,
                    index,
                    term,
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

    /// The leader term the last chunk from `from` carried.
    pub fn leader_term(&self, from: NodeId) -> u64 {
        self.incoming.get(&from).map_or(0, |i| i.leader_term)
    }

    /// The stream from `from` was refused: its next chunk gets "from the start".
    pub fn reset_incoming(&mut self, from: NodeId) {
        if let Some(i) = self.incoming.get_mut(&from) {
            i.rx.reset();
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
        let mut leader = SnapshotTransfers::new(1_400, true);
        let mut follower = SnapshotTransfers::new(1_400, true);

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
                if let Some(ApplyMsg::SnapshotBytes(b)) =
                    follower.on_chunk(&mut t2, LEADER, addr(1), c)
                {
                    import.feed(&b.data).unwrap();
                    done |= b.done;
                }
            }
            for body in drain(&air2) {
                let Body::SnapshotChunkAck(a) = body else {
                    panic!("the follower sent {body:?}")
                };
                assert!(!leader.on_ack(&mut t1, FOLLOWER, a), "asked to restart");
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
        let mut leader = SnapshotTransfers::new(1_400, true);
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
        };
        assert!(!leader.on_ack(&mut t, FOLLOWER, ack(2_000)));
        assert!(
            leader.on_ack(&mut t, FOLLOWER, ack(0)),
            "a new export is wanted"
        );
        assert!(leader.progress().is_empty());
        assert!(!leader.want(FOLLOWER, addr(2)), "already asked for");
    }
}
