//! Moving a snapshot that does not fit in one datagram.
//!
//! A snapshot is a stream of bytes of a length the sender learns only at its end (it is read
//! from a store as it goes). The sender cuts it into [`SnapshotChunk`]s, each small enough
//! for one datagram within the payload budget ([`crate::codec::DEFAULT_PAYLOAD_BUDGET`]);
//! the receiver takes them strictly in order with a [`ChunkReceiver`] and acknowledges how
//! far it got, so the sender resends from there after a loss (go-back-N: simple, and loss is
//! rare on a LAN). What the bytes mean is up to the server; this module only moves them.
//!
//! A receiver that kept part of an earlier stream (its sender died, or it restarted itself)
//! may ask for a stream that continues it: it answers the first chunk of a new transfer with
//! a [`ResumePoint`], and the sender, if the point holds for its state, sends a stream of
//! what comes after it (`after_revision`); otherwise a whole one, marked as having weighed
//! the offer (`resume_considered`), which the receiver then takes.

use crate::raft::{Index, Term};
use serde::{Deserialize, Serialize};

/// Bytes a `SnapshotChunk` datagram needs besides its data: envelope header, tag and the
/// chunk's own fields, rounded up generously. A test checks it against the real encoding.
pub const CHUNK_OVERHEAD: usize = 160;

/// One piece of a snapshot stream, from a leader to a follower; answered with a
/// [`SnapshotChunkAck`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// With `snapshot_term`, names the transfer: the log position the snapshot ends at.
    pub snapshot_index: Index,
    /// The term of the entry at `snapshot_index`.
    pub snapshot_term: Term,
    /// The sender's term as leader: the finished snapshot is taken as its message.
    pub leader_term: Term,
    /// Where `data` starts within the stream.
    pub offset: u64,
    /// The stream's bytes from `offset` on, at most [`max_chunk_data`] of the payload
    /// budget; empty only in a final chunk.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Set on the chunk that ends the stream.
    pub done: bool,
    /// The sender's estimate of the stream's length, for progress reports only; 0 if it
    /// has none yet.
    pub total_estimate: u64,
    /// The stream holds only what comes after this revision: it continues a partial store
    /// the receiver offered ([`ResumePoint`]). 0 for a whole stream.
    #[serde(default)]
    pub after_revision: u64,
    /// The sender weighed the receiver's resume offer: a whole stream marked so is to be
    /// taken, not answered with the offer again.
    #[serde(default)]
    pub resume_considered: bool,
}

impl SnapshotChunk {
    /// What names a transfer: the log position and where the stream starts. Two streams of
    /// one name hold the same bytes (they are read from equal states).
    pub fn stream(&self) -> StreamId {
        StreamId {
            index: self.snapshot_index,
            term: self.snapshot_term,
            after_revision: self.after_revision,
        }
    }
}

/// The name of one transfer's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamId {
    /// The log index the snapshot ends at.
    pub index: Index,
    /// The term of the entry at `index`.
    pub term: Term,
    /// 0 for a whole stream; otherwise the revision it continues after.
    pub after_revision: u64,
}

/// How far a partial store from an earlier stream goes: every revision row through
/// `after_revision` of a state compacted below `compacted_before`. A sender whose state has
/// the same rows there can send only what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    /// The last revision row the partial store holds; 0 asks for a whole stream.
    pub after_revision: u64,
    /// The compaction point of the state the partial store was streamed from.
    pub compacted_before: u64,
    /// CRC-32 of the row at `after_revision`: a cheap check that both sides mean one row.
    pub row_crc: u32,
}

/// The receiver's answer to every chunk: how much of the stream has arrived, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunkAck {
    /// The `snapshot_index` of the chunk answered.
    pub snapshot_index: Index,
    /// The `snapshot_term` of the chunk answered.
    pub snapshot_term: Term,
    /// Every byte before this has arrived; the sender continues (or resends) from here. 0
    /// for a transfer the receiver does not know: the sender starts a new one.
    pub next_offset: u64,
    /// The whole stream arrived.
    pub done: bool,
    /// The `after_revision` of the chunk acknowledged: with the log position, which stream.
    #[serde(default)]
    pub after_revision: u64,
    /// With `next_offset` 0: the receiver holds part of an earlier stream and asks for one
    /// that continues it (or, with `after_revision` 0 in the point, for a whole one).
    #[serde(default)]
    pub resume: Option<ResumePoint>,
}

impl SnapshotChunkAck {
    /// The stream acknowledged; a sender ignores acks of any stream but the one it sends.
    pub fn stream(&self) -> StreamId {
        StreamId {
            index: self.snapshot_index,
            term: self.snapshot_term,
            after_revision: self.after_revision,
        }
    }
}

/// How many data bytes fit in one chunk so that its datagram stays within `payload_budget`.
/// At least one, so a silly budget makes transfers slow rather than impossible.
pub fn max_chunk_data(payload_budget: usize) -> usize {
    payload_budget.saturating_sub(CHUNK_OVERHEAD).max(1)
}

/// The chunk of `bytes` (a whole stream) starting at `offset`, at most `max_data` long. An
/// `offset` at or past the end gives the (empty) final chunk.
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
        leader_term: snapshot_term,
        offset: start as u64,
        data: bytes[start..end].to_vec(),
        done: end == bytes.len(),
        total_estimate: bytes.len() as u64,
        after_revision: 0,
        resume_considered: false,
    }
}

/// Every chunk of `bytes`, in order. An empty stream is one empty, final chunk.
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

/// Why [`ChunkReceiver::offer`] refused a chunk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The stream grew past the receiver's limit. The transfer is forgotten, so its next
    /// chunk is answered "from the start".
    #[error("snapshot stream passes the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes, given to [`ChunkReceiver::new`].
        limit: u64,
    },
}

/// The bytes a chunk added to the stream, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Where `data` starts in the stream: always where the bytes accepted before ended.
    pub offset: u64,
    /// The new bytes.
    pub data: Vec<u8>,
    /// The stream ends with these bytes.
    pub done: bool,
}

/// Takes the chunks of one transfer at a time, strictly in order.
#[derive(Debug)]
pub struct ChunkReceiver {
    limit: u64,
    current: Option<Transfer>,
}

#[derive(Debug)]
struct Transfer {
    stream: StreamId,
    next_offset: u64,
    done: bool,
}

impl ChunkReceiver {
    /// `limit` caps the length of a stream this node accepts.
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            current: None,
        }
    }

    /// The transfer under way: its stream, the bytes received so far, and whether they are
    /// all of it.
    pub fn position(&self) -> Option<(StreamId, u64, bool)> {
        self.current
            .as_ref()
            .map(|t| (t.stream, t.next_offset, t.done))
    }

    /// Whether `chunk` belongs to the transfer under way.
    pub fn is_current(&self, chunk: &SnapshotChunk) -> bool {
        self.current
            .as_ref()
            .is_some_and(|t| t.stream == chunk.stream())
    }

    /// Forgets the transfer under way: its next chunk is answered with "from the start".
    pub fn reset(&mut self) {
        self.current = None;
    }

    /// Offers a chunk: the bytes it adds, if it is the next one, and the ack to send back.
    /// A chunk of another transfer starts that one if it is its first, and is otherwise
    /// answered with `next_offset` 0, so that the sender starts over.
    pub fn offer(
        &mut self,
        chunk: SnapshotChunk,
    ) -> Result<(Option<Accepted>, SnapshotChunkAck), ChunkError> {
        if !self.is_current(&chunk) {
            if chunk.offset != 0 {
                return Ok((None, ack_for(&chunk, 0, false)));
            }
            self.current = Some(Transfer {
                stream: chunk.stream(),
                next_offset: 0,
                done: false,
            });
        }
        let Some(t) = self.current.as_mut() else {
            return Ok((None, ack_for(&chunk, 0, false)));
        };
        if t.done || chunk.offset != t.next_offset {
            // A duplicate, or one after a loss: say where we are (go-back-N).
            return Ok((None, ack_for(&chunk, t.next_offset, t.done)));
        }
        let end = t.next_offset.saturating_add(chunk.data.len() as u64);
        if end > self.limit {
            self.current = None;
            return Err(ChunkError::TooLarge { limit: self.limit });
        }
        t.next_offset = end;
        t.done = chunk.done;
        let ack = ack_for(&chunk, end, chunk.done);
        Ok((
            Some(Accepted {
                offset: chunk.offset,
                data: chunk.data,
                done: chunk.done,
            }),
            ack,
        ))
    }
}

/// The acknowledgement of `chunk` saying every byte before `next_offset` arrived.
pub fn ack_for(chunk: &SnapshotChunk, next_offset: u64, done: bool) -> SnapshotChunkAck {
    ack_of(chunk.stream(), next_offset, done)
}

/// An acknowledgement of `stream` through `next_offset`, without a resume offer.
pub fn ack_of(stream: StreamId, next_offset: u64, done: bool) -> SnapshotChunkAck {
    SnapshotChunkAck {
        snapshot_index: stream.index,
        snapshot_term: stream.term,
        next_offset,
        done,
        after_revision: stream.after_revision,
        resume: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Offers `chunk`; the bytes it added, appended to `out`, and the ack.
    fn offer(rx: &mut ChunkReceiver, chunk: &SnapshotChunk, out: &mut Vec<u8>) -> SnapshotChunkAck {
        let (accepted, ack) = rx.offer(chunk.clone()).unwrap();
        if let Some(a) = accepted {
            assert_eq!(a.offset as usize, out.len());
            out.extend(a.data);
        }
        ack
    }

    #[test]
    fn split_then_receive_gives_the_same_bytes() {
        for n in [0, 1, 99, 100, 101, 1000] {
            let data = bytes(n);
            let chunks = split(5, 2, &data, 100);
            assert_eq!(chunks.len(), n.div_ceil(100).max(1));
            let mut rx = ChunkReceiver::new(1 << 20);
            let mut out = Vec::new();
            let mut last = None;
            for c in &chunks {
                last = Some(offer(&mut rx, c, &mut out));
            }
            assert!(last.unwrap().done);
            assert_eq!(out, data);
        }
    }

    #[test]
    fn lost_chunk_is_resent_from_the_ack() {
        let data = bytes(350);
        let chunks = split(9, 3, &data, 100);
        let mut rx = ChunkReceiver::new(1 << 20);
        let mut out = Vec::new();
        assert_eq!(offer(&mut rx, &chunks[0], &mut out).next_offset, 100);
        // chunks[1] lost; chunks[2] arrives after the gap and is not taken.
        let ack = offer(&mut rx, &chunks[2], &mut out);
        assert_eq!(ack.next_offset, 100);
        // A duplicate neither advances nor corrupts.
        assert_eq!(offer(&mut rx, &chunks[0], &mut out).next_offset, 100);
        let resend = chunk_at(9, 3, &data, ack.next_offset, 100);
        assert_eq!(resend, chunks[1]);
        for c in [&resend, &chunks[2], &chunks[3]] {
            offer(&mut rx, c, &mut out);
        }
        assert_eq!(out, data);
        // The last chunk again: still done.
        assert!(offer(&mut rx, &chunks[3], &mut out).done);
    }

    #[test]
    fn a_new_transfer_replaces_an_unfinished_one() {
        let old = bytes(300);
        let new = bytes(150);
        let mut rx = ChunkReceiver::new(1 << 20);
        let mut ignored = Vec::new();
        offer(&mut rx, &split(1, 1, &old, 100)[0], &mut ignored);
        let mut out = Vec::new();
        for c in split(2, 1, &new, 100) {
            offer(&mut rx, &c, &mut out);
        }
        assert_eq!(out, new);
        // The middle of an unknown transfer asks for its start.
        let stray = split(1, 1, &old, 100)[1].clone();
        assert_eq!(offer(&mut rx, &stray, &mut ignored).next_offset, 0);
        // So does the middle of one that was reset.
        let mut rx = ChunkReceiver::new(1 << 20);
        let mut ignored = Vec::new();
        offer(&mut rx, &split(1, 1, &old, 100)[0], &mut ignored);
        rx.reset();
        let second = split(1, 1, &old, 100)[1].clone();
        assert_eq!(offer(&mut rx, &second, &mut ignored).next_offset, 0);
    }

    #[test]
    fn a_stream_past_the_limit_is_refused() {
        let mut rx = ChunkReceiver::new(150);
        let chunks = split(1, 1, &bytes(300), 100);
        rx.offer(chunks[0].clone()).unwrap();
        assert!(matches!(
            rx.offer(chunks[1].clone()),
            Err(ChunkError::TooLarge { limit: 150 })
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
