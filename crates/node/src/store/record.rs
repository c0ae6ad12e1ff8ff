//! How rows of the state store are laid out in bytes.
//!
//! A revision row is written on every put and delete and read on every get, so it has a
//! fixed little-endian layout rather than MessagePack: one tag byte, the create revision and
//! version, the key's length and the key, then the value (absent for a tombstone).

use super::StoreError;
use crate::state_machine::KeyVersion;

const VALUE: u8 = 0;
const TOMBSTONE: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 4;

/// One row of the revision table: what one write did to one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevRecord {
    pub key: Vec<u8>,
    /// 0 for a tombstone.
    pub create_revision: u64,
    /// 0 for a tombstone.
    pub version: u64,
    /// `None` marks a tombstone.
    pub value: Option<Vec<u8>>,
}

impl RevRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(
            &self.key,
            self.create_revision,
            self.version,
            self.value.as_deref(),
        )
    }

    pub fn decode(bytes: &[u8]) -> Result<RevRecord, StoreError> {
        let r = RevRef::decode(bytes)?;
        Ok(RevRecord {
            key: r.key.to_vec(),
            create_revision: r.create_revision,
            version: r.version,
            value: r.value.map(<[u8]>::to_vec),
        })
    }

    pub fn into_version(self, revision: u64) -> KeyVersion {
        KeyVersion {
            revision,
            create_revision: self.create_revision,
            version: self.version,
            value: self.value,
        }
    }
}

/// A revision row borrowed from the bytes it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevRef<'a> {
    pub key: &'a [u8],
    pub create_revision: u64,
    pub version: u64,
    pub value: Option<&'a [u8]>,
}

impl<'a> RevRef<'a> {
    pub fn decode(bytes: &'a [u8]) -> Result<RevRef<'a>, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(format!("revision row: {why}"));
        if bytes.len() < HEADER {
            return Err(corrupt("shorter than its header"));
        }
        let tag = bytes[0];
        let create_revision = u64_at(bytes, 1);
        let version = u64_at(bytes, 9);
        let key_len = u32::from_le_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]) as usize;
        let rest = &bytes[HEADER..];
        if key_len > rest.len() {
            return Err(corrupt("key runs past the row"));
        }
        let (key, value) = rest.split_at(key_len);
        let value = match tag {
            VALUE => Some(value),
            TOMBSTONE if value.is_empty() && create_revision == 0 && version == 0 => None,
            TOMBSTONE => return Err(corrupt("tombstone with a value or a version")),
            _ => return Err(corrupt("unknown tag")),
        };
        Ok(RevRef {
            key,
            create_revision,
            version,
            value,
        })
    }
}

pub fn encode(key: &[u8], create_revision: u64, version: u64, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + key.len() + value.map_or(0, <[u8]>::len));
    out.push(if value.is_some() { VALUE } else { TOMBSTONE });
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    // Keys are limited far below 4 GiB by the node's request validation.
    out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(key);
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
    out
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_damage_is_refused() {
        let put = RevRecord {
            key: b"k".to_vec(),
            create_revision: 3,
            version: 2,
            value: Some(vec![0, 255]),
        };
        let tomb = RevRecord {
            key: vec![9; 40],
            create_revision: 0,
            version: 0,
            value: None,
        };
        for r in [&put, &tomb] {
            let bytes = r.encode();
            assert_eq!(&RevRecord::decode(&bytes).expect("decodes"), r);
            for len in 0..HEADER {
                assert!(RevRecord::decode(&bytes[..len]).is_err());
            }
        }
        let mut bad = put.encode();
        bad[0] = 7;
        assert!(RevRecord::decode(&bad).is_err());
        let mut long_key = put.encode();
        long_key[17] = 200;
        assert!(RevRecord::decode(&long_key).is_err());
        let mut tomb_with_value = tomb.encode();
        tomb_with_value.push(1);
        assert!(RevRecord::decode(&tomb_with_value).is_err());
    }
}
