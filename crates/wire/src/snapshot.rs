//! Moving a snapshot that does not fit in one datagram.
//!
//! The Raft core hands over a whole [`crate::raft::InstallSnapshot`]; the server encodes that
//! message once and sends the bytes as [`SnapshotChunk`]s, each small enough for one datagram
//! within the payload budget ([`crate::codec::DEFAULT_PAYLOAD_BUDGET`]). The receiver puts
//! them back together in order with a [`SnapshotAssembler`] and acknowledges how far it got,
//! so the sender resends from there after a loss (go-back-N: simple, and loss is rare on a
//! LAN). Which bytes travel is up to the server; this module only splits and joins them.

use crate::raft::{Index, Term};
use serde::{Deserialize, Serialize};

/// Bytes a `SnapshotChunk` datagram needs besides its data: envelope header, tag and the
/// chunk's own fields, rounded up generously. A test checks it against the real encoding.
pub const CHUNK_OVERHEAD: usize = 160;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// With `snapshot_term`, names the transfer: a new snapshot starts a new one.
    pub snapshot_index: Index,
    pub snapshot_term: Term,
    /// Where `data` starts within the whole.
    pub offset: u64,
    pub total_len: u64,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Set on the chunk that ends at `total_len`.
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkAck {
    pub snapshot_index: Index,
    pub snapshot_term: Term,
    /// Every byte before this has arrived; the sender continues (or resends) from here.
    pub next_offset: u64,
    /// The whole snapshot arrived.
    pub done: bool,
}

/// How many data bytes fit in one chunk so that its datagram stays within `payload_budget`.
/// At least one, so a silly budget makes transfers slow rather than impossible.
pub fn max_chunk_data(payload_budget: usize) -> usize {
    payload_budget.saturating_sub(CHUNK_OVERHEAD).max(1)
}

/// The chunk of `bytes` starting at `offset`, at most `max_data` long. An `offset` at or past
/// the end gives the (empty) final chunk, so an ack for the end is answered sensibly.
pub fn chunk_at(
    snapshot_index: Index,
    snapshot_term: Term,
    bytes: &[u8],
    offset: u64,
    max_data: usize,
) -> SnapshotChunk {
    let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
    let end = start.saturating_add(max_data.max(1)).min(bytes.len());
    SnapshotChunk {
        snapshot_index,
        snapshot_term,
        offset: start as u64,
        total_len: bytes.len() as u64,
        data: bytes[start..end].to_vec(),
        done: end == bytes.len(),
    }
}

/// Every chunk of `bytes`, in order. An empty snapshot is one empty, final chunk.
pub fn split(
    snapshot_index: Index,
    snapshot_term: Term,
    bytes: &[u8],
    max_data: usize,
) -> Vec<SnapshotChunk> {
    let mut chunks = Vec::new();
    let mut offset = 0u64;
    loop {
        let chunk = chunk_at(snapshot_index, snapshot_term, bytes, offset, max_data);
        offset += chunk.data.len() as u64;
        let done = chunk.done;
        chunks.push(chunk);
        if done {
            return chunks;
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("snapshot of {total_len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { total_len: u64, limit: u64 },
    #[error("chunk at {offset}+{len} runs past the snapshot's {total_len} bytes")]
    PastEnd {
        offset: u64,
        len: u64,
        total_len: u64,
    },
    #[error("chunk says total_len {got}, the transfer began with {expected}")]
    LengthChanged { expected: u64, got: u64 },
    #[error("chunk's done flag is {done} but it ends at {end} of {total_len}")]
    DoneMismatch {
        done: bool,
        end: u64,
        total_len: u64,
    },
}

/// Reassembles one snapshot transfer at a time, strictly in order.
#[derive(Debug)]
pub struct SnapshotAssembler {
    limit: u64,
    current: Option<Transfer>,
}

#[derive(Debug)]
struct Transfer {
    index: Index,
    term: Term,
    total_len: u64,
    buf: Vec<u8>,
}

/// What to do after offering a chunk.
#[derive(Debug, PartialEq, Eq)]
pub struct Assembled {
    /// Send this back to the sender.
    pub ack: SnapshotChunkAck,
    /// The whole snapshot, once the last chunk arrived.
    pub complete: Option<Vec<u8>>,
}

impl SnapshotAssembler {
    /// `limit` caps the size of a snapshot this node accepts, so a bad `total_len` cannot make
    /// it reserve unbounded memory.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            current: None,
        }
    }

    /// Takes one chunk. Duplicates and chunks after a gap are not errors: the ack tells the
    /// sender where to resume. A chunk at offset 0 of a different snapshot abandons the
    /// current transfer, since a leader only starts over when it has a reason to.
    pub fn offer(&mut self, chunk: SnapshotChunk) -> Result<Assembled, ChunkError> {
        let end = chunk.offset.saturating_add(chunk.data.len() as u64);
        if chunk.total_len > self.limit {
            return Err(ChunkError::TooLarge {
                total_len: chunk.total_len,
                limit: self.limit,
            });
        }
        if end > chunk.total_len {
            return Err(ChunkError::PastEnd {
                offset: chunk.offset,
                len: chunk.data.len() as u64,
                total_len: chunk.total_len,
            });
        }
        if chunk.done != (end == chunk.total_len) {
            return Err(ChunkError::DoneMismatch {
                done: chunk.done,
                end,
                total_len: chunk.total_len,
            });
        }
        let same = self
            .current
            .as_ref()
            .is_some_and(|t| t.index == chunk.snapshot_index && t.term == chunk.snapshot_term);
        if !same {
            if chunk.offset != 0 {
                // A chunk from the middle of a transfer we never saw begin: ask for the start.
                return Ok(Assembled {
                    ack: ack_for(&chunk, 0, false),
                    complete: None,
                });
            }
            self.current = Some(Transfer {
                index: chunk.snapshot_index,
                term: chunk.snapshot_term,
                total_len: chunk.total_len,
                buf: Vec::new(),
            });
        }
        let Some(transfer) = self.current.as_mut() else {
            return Ok(Assembled {
                ack: ack_for(&chunk, 0, false),
                complete: None,
            });
        };
        if transfer.total_len != chunk.total_len {
            return Err(ChunkError::LengthChanged {
                expected: transfer.total_len,
                got: chunk.total_len,
            });
        }
        let have = transfer.buf.len() as u64;
        if chunk.offset == have {
            transfer.buf.extend_from_slice(&chunk.data);
        }
        let have = transfer.buf.len() as u64;
        let done = have == transfer.total_len;
        let ack = ack_for(&chunk, have, done);
        let complete = if done {
            self.current.take().map(|t| t.buf)
        } else {
            None
        };
        Ok(Assembled { ack, complete })
    }
}

fn ack_for(chunk: &SnapshotChunk, next_offset: u64, done: bool) -> SnapshotChunkAck {
    SnapshotChunkAck {
        snapshot_index: chunk.snapshot_index,
        snapshot_term: chunk.snapshot_term,
        next_offset,
        done,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn split_then_assemble_gives_the_same_bytes() {
        for n in [0, 1, 99, 100, 101, 1000] {
            let data = bytes(n);
            let chunks = split(5, 2, &data, 100);
            assert_eq!(chunks.len(), n.div_ceil(100).max(1));
            let mut asm = SnapshotAssembler::new(1 << 20);
            let mut out = None;
            for c in chunks {
                let step = asm.offer(c).unwrap();
                if let Some(done) = step.complete {
                    assert!(step.ack.done);
                    out = Some(done);
                }
            }
            assert_eq!(out.unwrap(), data);
        }
    }

    #[test]
    fn lost_chunk_is_resent_from_the_ack() {
        let data = bytes(350);
        let chunks = split(9, 3, &data, 100);
        let mut asm = SnapshotAssembler::new(1 << 20);
        assert_eq!(asm.offer(chunks[0].clone()).unwrap().ack.next_offset, 100);
        // chunks[1] lost; chunks[2] arrives after the gap and is not taken.
        let step = asm.offer(chunks[2].clone()).unwrap();
        assert_eq!(step.ack.next_offset, 100);
        // A duplicate neither advances nor corrupts.
        assert_eq!(asm.offer(chunks[0].clone()).unwrap().ack.next_offset, 100);
        let resend = chunk_at(9, 3, &data, step.ack.next_offset, 100);
        assert_eq!(resend, chunks[1]);
        asm.offer(resend).unwrap();
        asm.offer(chunks[2].clone()).unwrap();
        let last = asm.offer(chunks[3].clone()).unwrap();
        assert_eq!(last.complete.unwrap(), data);
    }

    #[test]
    fn a_new_snapshot_replaces_an_unfinished_one() {
        let old = bytes(300);
        let new = bytes(150);
        let mut asm = SnapshotAssembler::new(1 << 20);
        asm.offer(split(1, 1, &old, 100)[0].clone()).unwrap();
        let mut result = None;
        for c in split(2, 1, &new, 100) {
            result = asm.offer(c).unwrap().complete.or(result);
        }
        assert_eq!(result.unwrap(), new);
        // The middle of an unknown transfer asks for its start.
        let stray = split(1, 1, &old, 100)[1].clone();
        assert_eq!(asm.offer(stray).unwrap().ack.next_offset, 0);
    }

    #[test]
    fn inconsistent_chunks_are_errors() {
        let mut asm = SnapshotAssembler::new(1000);
        let mut c = chunk_at(1, 1, &bytes(10), 0, 100);
        c.total_len = 2000;
        assert!(matches!(
            asm.offer(c.clone()),
            Err(ChunkError::TooLarge { .. })
        ));
        c.total_len = 5;
        assert!(matches!(
            asm.offer(c.clone()),
            Err(ChunkError::PastEnd { .. })
        ));
        c.total_len = 10;
        c.done = false;
        assert!(matches!(asm.offer(c), Err(ChunkError::DoneMismatch { .. })));
        let first = split(1, 1, &bytes(300), 100)[0].clone();
        asm.offer(first).unwrap();
        let mut other = chunk_at(1, 1, &bytes(400), 100, 100);
        other.total_len = 400;
        assert!(matches!(
            asm.offer(other),
            Err(ChunkError::LengthChanged { .. })
        ));
    }

    #[test]
    fn chunk_at_past_the_end_is_the_empty_final_chunk() {
        let c = chunk_at(1, 1, &bytes(10), u64::MAX, 4);
        assert_eq!(c.offset, 10);
        assert!(c.data.is_empty());
        assert!(c.done);
    }
}
