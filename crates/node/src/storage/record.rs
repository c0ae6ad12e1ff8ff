//! Write-ahead log records and their framing.
//!
//! A frame is `[len: u32 LE][crc32: u32 LE][payload: len bytes]`, the CRC (crc32fast,
//! IEEE) taken over the payload, the payload a MessagePack [`Record`]. A frame with
//! `len == 0` is never written, so a zero-filled tail (a file the filesystem extended but
//! never filled) never reads as a record.

use myraft_wire::raft::{Entry, HardState, Index, Term};
use serde::{Deserialize, Serialize};

pub(crate) const HEADER_LEN: usize = 8;

/// Larger payloads are taken for a damaged length field rather than read.
pub(crate) const MAX_RECORD_LEN: usize = 1 << 30;

/// One change to the log's state. Replaying a log's records in order through
/// [`super::log::MemLog`] rebuilds the state the writer had.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) enum Record {
    /// Written first in every segment: the state as it stood when the segment was opened,
    /// so the segment still makes sense after older segments are deleted.
    Checkpoint(Checkpoint),
    /// One entry; an index at or below the last one drops the suffix from there first.
    Entry(Entry),
    TruncateSuffix {
        from: Index,
    },
    HardState(HardState),
    /// Entries through `index` are compacted (or, if the log disagrees with the snapshot at
    /// `index`, all entries are dropped).
    SetBase {
        index: Index,
        term: Term,
    },
}

/// Same variants in the same order as [`Record`], borrowing, so that appending an entry
/// does not clone it just to encode it.
#[derive(Debug, Serialize)]
pub(crate) enum RecordRef<'a> {
    Checkpoint(&'a Checkpoint),
    Entry(&'a Entry),
    TruncateSuffix { from: Index },
    HardState(&'a HardState),
    SetBase { index: Index, term: Term },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub base_index: Index,
    pub base_term: Term,
    pub last_index: Index,
    pub last_term: Term,
    pub hard_state: HardState,
}

/// Appends one framed record to `buf`.
pub(crate) fn encode_into(buf: &mut Vec<u8>, record: &RecordRef<'_>) -> Result<(), String> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    rmp_serde::encode::write(buf, record).map_err(|e| format!("cannot encode record: {e}"))?;
    let payload = &buf[start + HEADER_LEN..];
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| (l as usize) <= MAX_RECORD_LEN)
        .ok_or_else(|| format!("record of {} bytes is too large", payload.len()))?;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Why the bytes at some offset are not a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Fewer bytes left than the frame says it has: what a crash mid-write leaves.
    Short {
        needed: usize,
        available: usize,
    },
    ZeroLength,
    TooLong(usize),
    Checksum {
        stored: u32,
        computed: u32,
    },
    Decode(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short { needed, available } => {
                write!(f, "record needs {needed} bytes but only {available} remain")
            }
            FrameError::ZeroLength => write!(f, "record length is zero"),
            FrameError::TooLong(len) => write!(f, "record length {len} is implausible"),
            FrameError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            FrameError::Decode(e) => write!(f, "checksum matches but record does not decode: {e}"),
        }
    }
}

/// Reads the frame at the start of `bytes`: the record and the frame's total length.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Record, usize), FrameError> {
    let (payload, len) = decode_frame(bytes)?;
    let record = rmp_serde::from_slice(payload).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok((record, len))
}

/// Checks the frame at the start of `bytes`: its payload and the frame's total length.
pub(crate) fn decode_frame(bytes: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let Some(header) = bytes.get(..HEADER_LEN) else {
        return Err(FrameError::Short {
            needed: HEADER_LEN,
            available: bytes.len(),
        });
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Err(FrameError::ZeroLength);
    }
    if len > MAX_RECORD_LEN {
        return Err(FrameError::TooLong(len));
    }
    let Some(payload) = bytes.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err(FrameError::Short {
            needed: HEADER_LEN + len,
            available: bytes.len(),
        });
    };
    let computed = crc32fast::hash(payload);
    if computed != stored {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok((payload, HEADER_LEN + len))
}

/// Is there a whole, valid record anywhere after `from`?
pub(crate) fn valid_record_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(HEADER_LEN - 1)).find(|&at| decode(&bytes[at..]).is_ok())
}

/// Where a valid record follows the bad frame at `at`, if one does: that tells damage in the
/// middle of the log from a torn tail, which only a crash during the last write leaves.
///
/// A torn record whose header survived claims an extent that reaches to or past the end of
/// the file, and the bytes it holds are its own, however much they look like frames: a value
/// may well contain an encoded frame. But a flipped bit in a length field claims the same,
/// and then the records after it are real; they are told apart by where they end: real
/// records run back to back to exactly the end of the file, a frame embedded in a torn
/// value is followed by the rest of that value (a cut exactly at the end of an embedded
/// frame still refuses to open: safe, if unhelpful).
pub(crate) fn record_after_damage(bytes: &[u8], at: usize) -> Option<usize> {
    let claimed_end = claimed_len(&bytes[at..]).map(|len| at + HEADER_LEN + len);
    if claimed_end.is_some_and(|end| end >= bytes.len()) {
        return (at + 1..bytes.len().saturating_sub(HEADER_LEN - 1))
            .find(|&from| frames_reach_the_end(bytes, from));
    }
    valid_record_after(bytes, at + 1)
}

/// The payload length a frame's header claims, if the header is whole and plausible.
fn claimed_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..HEADER_LEN)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    (len != 0 && len <= MAX_RECORD_LEN).then_some(len)
}

/// Whether valid frames follow each other from `from` to exactly the end of `bytes`.
fn frames_reach_the_end(bytes: &[u8], mut from: usize) -> bool {
    if from >= bytes.len() {
        return false;
    }
    while from < bytes.len() {
        match decode(&bytes[from..]) {
            Ok((_, len)) => from += len,
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use myraft_wire::raft::EntryPayload;

    #[test]
    fn storage_record_round_trips_and_rejects_damage() {
        let entry = Entry {
            term: 3,
            index: 7,
            payload: EntryPayload::Command(b"hello".to_vec()),
        };
        let mut buf = Vec::new();
        encode_into(&mut buf, &RecordRef::Entry(&entry)).unwrap();
        encode_into(&mut buf, &RecordRef::TruncateSuffix { from: 4 }).unwrap();
        let (rec, n) = decode(&buf).unwrap();
        assert_eq!(rec, Record::Entry(entry));
        let (rec, m) = decode(&buf[n..]).unwrap();
        assert_eq!(rec, Record::TruncateSuffix { from: 4 });
        assert_eq!(n + m, buf.len());

        let mut bad = buf.clone();
        bad[HEADER_LEN + 1] ^= 0x10;
        assert!(matches!(decode(&bad), Err(FrameError::Checksum { .. })));
        assert_eq!(valid_record_after(&bad, 1), Some(n));
        assert!(matches!(
            decode(&buf[..n - 1]),
            Err(FrameError::Short { .. })
        ));
        assert_eq!(decode(&[0; 16]), Err(FrameError::ZeroLength));
    }

    #[test]
    fn storage_record_with_a_damaged_length_claiming_the_rest_is_followed_by_its_successors() {
        let mut buf = Vec::new();
        for from in 1..4 {
            encode_into(&mut buf, &RecordRef::TruncateSuffix { from }).unwrap();
        }
        let (_, n) = decode(&buf).unwrap();
        buf[2] ^= 0x01;
        assert!(matches!(decode(&buf), Err(FrameError::Short { .. })));
        assert_eq!(record_after_damage(&buf, 0), Some(n));
        // The same claim with nothing whole after it is a torn tail.
        buf.truncate(n + 3);
        assert_eq!(record_after_damage(&buf, 0), None);
    }
}
