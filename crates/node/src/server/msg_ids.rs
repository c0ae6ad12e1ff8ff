//! Message ids that move forward across restarts, whatever the wall clock does.
//!
//! Peers' replay windows ([`myraft_wire::replay`]) remember the highest id they have seen
//! from each sender for as long as they run, so a node that restarts below its old ids is
//! dropped as a replay by every peer. Starting at the wall clock alone fails when the clock
//! was stepped back (NTP after a drift) by more than the downtime. So ids start at the wall
//! clock or above everything reserved before, whichever is higher, and the node reserves
//! them in blocks, recorded in the data dir before any id of a block is used: a restart
//! starts above the end of the last reservation without a write per datagram.
//!
//! The file `DIR/msg-ids` holds one line, a decimal u64: every id this node used or may use
//! without writing the file again is below it. It is replaced atomically (write
//! `msg-ids.tmp`, fsync, rename, fsync the dir), so a crash leaves the old line or the new.

use super::ServerError;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "msg-ids";

/// Ids reserved per write: 2^32 µs is over an hour of the clock, and a node sends far fewer
/// datagrams than one a µs, so restarts write once and running nodes almost never.
pub const BLOCK: u64 = 1 << 32;

pub struct MsgIds {
    next: u64,
    /// Exclusive: what the file says.
    reserved_end: u64,
    block: u64,
    dir: PathBuf,
    /// Why ids ran out; once set, no id is handed out again in this process.
    failed: Option<String>,
}

impl MsgIds {
    /// Reserves the first block, above both `clock_us` and every reservation before.
    pub fn open(dir: &Path, clock_us: u64) -> Result<MsgIds, ServerError> {
        Self::open_with_block(dir, clock_us, BLOCK)
    }

    pub(super) fn open_with_block(
        dir: &Path,
        clock_us: u64,
        block: u64,
    ) -> Result<MsgIds, ServerError> {
        let first = load(dir)?.map_or(clock_us, |end| end.max(clock_us));
        let mut ids = MsgIds {
            next: first,
            reserved_end: first,
            block: block.max(1),
            dir: dir.to_owned(),
            failed: None,
        };
        ids.reserve().map_err(ServerError::Recovery)?;
        Ok(ids)
    }

    /// The next id, or `None` if a block was used up and the next could not be reserved:
    /// sending nothing is better than sending ids a restart could reuse.
    pub fn next(&mut self) -> Option<u64> {
        if self.failed.is_some() {
            return None;
        }
        if self.next >= self.reserved_end {
            if let Err(e) = self.reserve() {
                tracing::error!("{e}");
                self.failed = Some(e);
                return None;
            }
        }
        let id = self.next;
        self.next += 1;
        Some(id)
    }

    /// Why [`MsgIds::next`] hands out no more ids, if it does not.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn reserve(&mut self) -> Result<(), String> {
        let path = self.dir.join(FILE_NAME);
        let end = self.next.checked_add(self.block).ok_or_else(|| {
            format!(
                "message ids are used up ({} in {}); remove the data dir and let the node rejoin as a new one",
                self.next,
                path.display()
            )
        })?;
        store(&self.dir, end).map_err(|e| {
            format!(
                "cannot reserve message ids in {}: {e}; the node stops sending rather than risk reusing ids",
                path.display()
            )
        })?;
        self.reserved_end = end;
        Ok(())
    }
}

fn load(dir: &Path) -> Result<Option<u64>, ServerError> {
    let path = dir.join(FILE_NAME);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ServerError::io("read", &path, e)),
    };
    text.trim().parse().map(Some).map_err(|e| {
        ServerError::Recovery(format!(
            "message id file {} is damaged ({e}); if this host's clock has not been set back \
             since the node last ran, delete the file and start again",
            path.display()
        ))
    })
}

fn store(dir: &Path, end: u64) -> io::Result<()> {
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(format!("{end}\n").as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(FILE_NAME))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn stored(dir: &Path) -> String {
        fs::read_to_string(dir.join(FILE_NAME)).unwrap()
    }

    #[test]
    fn ids_start_at_the_clock_and_the_reservation_is_stored_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = MsgIds::open_with_block(dir.path(), 1000, 10).unwrap();
        assert_eq!(stored(dir.path()), "1010\n");
        assert_eq!((ids.next(), ids.next()), (Some(1000), Some(1001)));
    }

    #[test]
    fn a_restart_starts_above_the_last_reservation_when_the_clock_is_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = MsgIds::open_with_block(dir.path(), 1000, 10).unwrap();
        let used: Vec<_> = (0..25).map(|_| ids.next().unwrap()).collect();
        assert_eq!(used, (1000..1025).collect::<Vec<_>>());
        assert_eq!(
            stored(dir.path()),
            "1030\n",
            "reserved before use, block by block"
        );
        drop(ids);

        let mut ids = MsgIds::open_with_block(dir.path(), 400, 10).unwrap();
        assert_eq!(ids.next(), Some(1030));
        drop(ids);
        // A clock ahead of every reservation wins, as plain clock-based ids did.
        let mut ids = MsgIds::open_with_block(dir.path(), 5000, 10).unwrap();
        assert_eq!(ids.next(), Some(5000));
    }

    #[test]
    fn a_reservation_that_cannot_be_stored_stops_the_ids() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let mut ids = MsgIds::open_with_block(&data, 1000, 2).unwrap();
        assert_eq!((ids.next(), ids.next()), (Some(1000), Some(1001)));
        fs::remove_dir_all(&data).unwrap();
        assert_eq!(ids.next(), None);
        assert!(ids
            .failure()
            .unwrap()
            .contains("cannot reserve message ids"));
        // Nor later, when the disk might answer again: the id it refused is not handed out.
        fs::create_dir(&data).unwrap();
        assert_eq!(ids.next(), None);
    }

    #[test]
    fn a_damaged_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "12x\n").unwrap();
        let err = MsgIds::open(dir.path(), 1000).err().unwrap().to_string();
        assert!(
            err.contains("is damaged") && err.contains(FILE_NAME),
            "{err}"
        );
    }

    #[test]
    fn ids_that_would_overflow_are_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), format!("{}\n", u64::MAX - 5)).unwrap();
        let err = MsgIds::open(dir.path(), 1000).err().unwrap().to_string();
        assert!(err.contains("used up"), "{err}");
    }
}
