//! Snapshots larger than one datagram travel as chunks (docs/protocol.md): the whole Raft
//! `InstallSnapshot` message is encoded once, sent in a window of chunks that advances with
//! the receiver's acknowledgements, and resent from the last acknowledged offset when the
//! receiver goes quiet (go-back-N).

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

    /// Starts (or restarts) sending `msg`, an `InstallSnapshot`, to `to`.
    pub fn start(
        &mut self,
        t: &mut Transport,
        to: NodeId,
        addr: SocketAddr,
        index: u64,
        term: u64,
        msg: &RaftMessage,
    ) {
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
