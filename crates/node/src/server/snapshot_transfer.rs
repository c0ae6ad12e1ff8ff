//! Snapshots larger than one datagram travel as chunks (docs/protocol.md): the whole Raft
//! `InstallSnapshot` message is encoded once, sent in a window of chunks that advances with
//! the receiver's acknowledgements, and resent from the last acknowledged offset when the
//! receiver goes quiet (go-back-N). A transfer in progress is never restarted by a resend
//! of the same snapshot or by a newer one; a receiver that lost its chunks gets it from the
//! start.

use super::transport::Transport;
use myraft_wire::envelope::Body;
use myraft_wire::raft::{NodeId, RaftMessage};
use myraft_wire::snapshot::{
    chunk_at, max_chunk_data, SnapshotAssembler, SnapshotChunk, SnapshotChunkAck,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Chunks in flight per transfer.
const WINDOW: u64 = 32;
/// Ticks without an acknowledgement before resending from the last acknowledged offset.
const RESEND_AFTER_TICKS: u32 = 4;
/// Ticks without any acknowledgement before giving up; the Raft core sends a new snapshot.
const ABANDON_AFTER_TICKS: u32 = 200;
/// Largest snapshot this node accepts.
pub const MAX_SNAPSHOT_BYTES: u64 = 4 << 30;

struct Outgoing {
    addr: SocketAddr,
    index: u64,
    term: u64,
    blob: Vec<u8>,
    acked: u64,
    sent: u64,
    all_sent: bool,
    idle: u32,
}

pub struct SnapshotTransfers {
    out: BTreeMap<NodeId, Outgoing>,
    incoming: BTreeMap<NodeId, SnapshotAssembler>,
    max_data: usize,
}

impl SnapshotTransfers {
    pub fn new(payload_budget: usize) -> Self {
        SnapshotTransfers {
            out: BTreeMap::new(),
            incoming: BTreeMap::new(),
            max_data: max_chunk_data(payload_budget),
        }
    }

    /// Starts sending `msg`, an `InstallSnapshot`, to `to`, unless a transfer to it is
    /// already under way: the same snapshot again (the core resends while it waits) goes on
    /// where it is, and a newer one waits while the current transfer still progresses —
    /// restarting on every resend or every new snapshot would never finish under load.
    pub fn start(
        &mut self,
        t: &mut Transport,
        to: NodeId,
        addr: SocketAddr,
        index: u64,
        term: u64,
        msg: &RaftMessage,
    ) {
        if let Some(o) = self.out.get_mut(&to) {
            let same = (o.index, o.term) == (index, term);
            if same || o.idle < RESEND_AFTER_TICKS {
                o.addr = addr;
                return;
            }
        }
        let blob = match rmp_serde::to_vec(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a snapshot for n{to}");
                return;
            }
        };
        tracing::info!(
            bytes = blob.len(),
            index,
            "sending a snapshot to {to:x} in chunks"
        );
        self.out.insert(
            to,
            Outgoing {
                addr,
                index,
                term,
                blob,
                acked: 0,
                sent: 0,
                all_sent: false,
                idle: 0,
            },
        );
        self.pump(t, to);
    }

    /// The snapshot index of the transfer to `to` and how far it is acknowledged.
    #[cfg(test)]
    fn position(&self, to: NodeId) -> Option<(u64, u64)> {
        self.out.get(&to).map(|o| (o.index, o.acked))
    }

    fn pump(&mut self, t: &mut Transport, to: NodeId) {
        let window = WINDOW * self.max_data as u64;
        let Some(o) = self.out.get_mut(&to) else {
            return;
        };
        let end = o.blob.len() as u64;
        loop {
            let window_full = o.sent >= o.acked.saturating_add(window) && o.sent < end;
            if o.all_sent || window_full {
                break;
            }
            let chunk = chunk_at(o.index, o.term, &o.blob, o.sent, self.max_data);
            o.sent += chunk.data.len() as u64;
            o.all_sent = chunk.done;
            t.send(o.addr, Body::SnapshotChunk(chunk));
        }
    }

    pub fn on_ack(&mut self, t: &mut Transport, from: NodeId, ack: SnapshotChunkAck) {
        let Some(o) = self.out.get_mut(&from) else {
            return;
        };
        if ack.snapshot_index != o.index || ack.snapshot_term != o.term {
            return;
        }
        if ack.done {
            self.out.remove(&from);
            return;
        }
        if ack.next_offset > o.acked {
            o.acked = ack.next_offset;
            o.idle = 0;
        } else if ack.next_offset == 0 && o.acked > 0 {
            // Only a receiver that never saw this transfer begin (it restarted, or dropped
            // its chunks) asks for offset 0 once data has arrived: start over for it.
            o.acked = 0;
            o.sent = 0;
            o.all_sent = false;
            o.idle = 0;
        }
        self.pump(t, from);
    }

    pub fn on_tick(&mut self, t: &mut Transport) {
        let mut resend = Vec::new();
        self.out.retain(|to, o| {
            o.idle += 1;
            if o.idle >= ABANDON_AFTER_TICKS {
                tracing::warn!("snapshot transfer to {to:x} abandoned: no acknowledgement");
                return false;
            }
            if o.idle.is_multiple_of(RESEND_AFTER_TICKS) {
                o.sent = o.acked;
                o.all_sent = false;
                resend.push(*to);
            }
            true
        });
        for to in resend {
            self.pump(t, to);
        }
    }

    /// A chunk from `from`; returns the whole Raft message once the last chunk is in.
    pub fn on_chunk(
        &mut self,
        t: &mut Transport,
        from: NodeId,
        from_addr: SocketAddr,
        chunk: SnapshotChunk,
    ) -> Option<RaftMessage> {
        let asm = self
            .incoming
            .entry(from)
            .or_insert_with(|| SnapshotAssembler::new(MAX_SNAPSHOT_BYTES));
        match asm.offer(chunk) {
            Ok(a) => {
                t.send(from_addr, Body::SnapshotChunkAck(a.ack));
                let bytes = a.complete?;
                self.incoming.remove(&from);
                match rmp_serde::from_slice::<RaftMessage>(&bytes) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        tracing::warn!(error = %e, "snapshot from {from:x} does not decode; dropped");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad snapshot chunk from {from:x}; dropped");
                None
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use crate::server::transport::tests::{addr, clock_now, transport, Air};
    use myraft_wire::raft::{InstallSnapshot, RaftBody, Snapshot, SnapshotMeta};

    const PEER: NodeId = 2;

    fn install(index: u64) -> RaftMessage {
        RaftMessage {
            from: 1,
            to: PEER,
            term: 1,
            body: RaftBody::InstallSnapshot(InstallSnapshot {
                snapshot: Snapshot {
                    meta: SnapshotMeta {
                        last_index: index,
                        last_term: 1,
                        membership: Default::default(),
                    },
                    data: vec![7; 200_000],
                },
            }),
        }
    }

    fn ack(index: u64, next_offset: u64) -> SnapshotChunkAck {
        SnapshotChunkAck {
            snapshot_index: index,
            snapshot_term: 1,
            next_offset,
            done: false,
        }
    }

    /// A leader whose first window of chunks went out and was acknowledged up to `acked`.
    fn progressing(acked: u64) -> (SnapshotTransfers, Transport, tempfile::TempDir) {
        let air = Air::default();
        let dir = tempfile::tempdir().unwrap();
        let mut t = transport(dir.path(), 1, 1, clock_now, &air);
        let mut snaps = SnapshotTransfers::new(1_400);
        snaps.start(&mut t, PEER, addr(2), 10, 1, &install(10));
        snaps.on_ack(&mut t, PEER, ack(10, acked));
        (snaps, t, dir)
    }

    /// The Raft core resends a snapshot every election timeout while it waits: that must not
    /// throw away a transfer that is getting through.
    #[test]
    fn a_resend_of_the_same_snapshot_keeps_the_transfer_going() {
        let (mut snaps, mut t, _dir) = progressing(20_000);
        snaps.start(&mut t, PEER, addr(2), 10, 1, &install(10));
        assert_eq!(snaps.position(PEER), Some((10, 20_000)));
    }

    /// A newer snapshot taken while a transfer makes progress waits for it to finish: the
    /// follower catches up from the older one, and restarting would never end under load.
    #[test]
    fn a_newer_snapshot_does_not_restart_a_progressing_transfer() {
        let (mut snaps, mut t, _dir) = progressing(20_000);
        snaps.start(&mut t, PEER, addr(2), 11, 1, &install(11));
        assert_eq!(snaps.position(PEER), Some((10, 20_000)));
        // Once the transfer stalls, the newer snapshot takes its place.
        for _ in 0..RESEND_AFTER_TICKS {
            snaps.on_tick(&mut t);
        }
        snaps.start(&mut t, PEER, addr(2), 11, 1, &install(11));
        assert_eq!(snaps.position(PEER), Some((11, 0)));
    }

    /// A receiver that restarted asks for the start again; the sender goes back to it.
    #[test]
    fn a_receiver_that_lost_its_chunks_gets_the_snapshot_from_the_start() {
        let (mut snaps, mut t, _dir) = progressing(20_000);
        snaps.on_ack(&mut t, PEER, ack(10, 0));
        assert_eq!(snaps.position(PEER), Some((10, 0)));
    }
}
