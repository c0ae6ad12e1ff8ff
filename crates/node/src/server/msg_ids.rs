//! Message ids that move forward across restarts, whatever the wall clock does.
//!
//! Ids carry the epoch they were minted in ([`myraft_wire::replay`]): peers refuse them
//! when they are stale, and remember the highest id seen from each sender, so a node that
//! restarts below its old ids is dropped as a replay by every peer. Ids from the wall clock
//! alone would do that when the clock was stepped back (NTP after a drift) by more than the
//! downtime. So the node reserves ids ahead of its clock, [`BLOCK_MS`] of epochs at a time,
//! recorded in the data dir before any id of a block is used, and a restart starts above
//! the end of the last reservation: one write every few seconds, none per datagram.
//!
//! The file `DIR/msg-ids` holds one line, a decimal u64: every id this node used or may use
//! without writing the file again is below it. It is replaced atomically (write
//! `msg-ids.tmp`, fsync, rename, fsync the dir), so a crash leaves the old line or the new.

use super::ServerError;
use myraft_wire::replay::{first_id, next_id, MAX_AHEAD_MS};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "msg-ids";

/// How far ahead of the clock a reservation reaches, in ms of epochs. A node restarted
/// right after reserving starts this far ahead of its clock, so this must stay well below
/// the [`MAX_AHEAD_MS`] that peers accept; the node writes the file this often.
pub const BLOCK_MS: u64 = 10_000;
const _: () = assert!(BLOCK_MS * 2 <= MAX_AHEAD_MS);

pub struct MsgIds {
    /// The last id handed out, or the one below the first to hand out.
    last: u64,
    /// Exclusive: what the file says.
    reserved_end: u64,
    block_ms: u64,
    dir: PathBuf,
    /// Why ids ran out; once set, no id is handed out again in this process.
    failed: Option<String>,
}

impl MsgIds {
    /// Reserves the first block, at the clock (`now_ms`) or above every reservation
    /// before, whichever is higher.
    pub fn open(dir: &Path, now_ms: u64) -> Result<MsgIds, ServerError> {
        Self::open_with_block(dir, now_ms, BLOCK_MS)
    }

    pub(super) fn open_with_block(
        dir: &Path,
        now_ms: u64,
        block_ms: u64,
    ) -> Result<MsgIds, ServerError> {
        let floor = load(dir)?.map_or(first_id(now_ms), |end| end.max(first_id(now_ms)));
        if floor == u64::MAX {
            return Err(ServerError::Recovery(format!(
                "message ids are used up ({floor} in {}); remove the data dir and let the node \
                 rejoin as a new one",
                dir.join(FILE_NAME).display()
            )));
        }
        let mut ids = MsgIds {
            // The first id handed out is `floor`: the one after this in its epoch.
            last: floor.saturating_sub(1),
            reserved_end: floor,
            block_ms: block_ms.max(1),
            dir: dir.to_owned(),
            failed: None,
        };
        ids.reserve(floor, now_ms).map_err(ServerError::Recovery)?;
        Ok(ids)
    }

    /// The next id at clock `now_ms`, or `None` if it lies beyond the reservation and the
    /// next could not be reserved: sending nothing is better than sending ids a restart
    /// could reuse.
    pub fn next(&mut self, now_ms: u64) -> Option<u64> {
        if self.failed.is_some() {
            return None;
        }
        let id = next_id(Some(self.last), now_ms);
        if id == u64::MAX {
            let e = "message ids are used up; remove the data dir and let the node rejoin as a \
                     new one"
                .to_owned();
            tracing::error!("{e}");
            self.failed = Some(e);
            return None;
        }
        if id >= self.reserved_end {
            if let Err(e) = self.reserve(id, now_ms) {
                tracing::error!("{e}");
                self.failed = Some(e);
                return None;
            }
        }
        self.last = id;
        Some(id)
    }

    /// Why [`MsgIds::next`] hands out no more ids, if it does not.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Reserves every id below the first of the epoch `block_ms` after the clock, and at
    /// least `id`.
    fn reserve(&mut self, id: u64, now_ms: u64) -> Result<(), String> {
        let path = self.dir.join(FILE_NAME);
        let end = first_id(now_ms.saturating_add(self.block_ms)).max(id.saturating_add(1));
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

    const T: u64 = 1_800_000_000_000;

    fn end_after(ms: u64) -> String {
        format!("{}\n", first_id(ms))
    }

    #[test]
    fn ids_start_at_the_clock_and_the_reservation_is_stored_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = MsgIds::open_with_block(dir.path(), T, 10).unwrap();
        assert_eq!(stored(dir.path()), end_after(T + 10));
        assert_eq!(
            (ids.next(T), ids.next(T + 1)),
            (Some(first_id(T)), Some(first_id(T) + 1))
        );
    }

    #[test]
    fn a_restart_starts_above_the_last_reservation_when_the_clock_is_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut ids = MsgIds::open_with_block(dir.path(), T, 10).unwrap();
        assert_eq!(ids.next(T), Some(first_id(T)));
        // A new epoch beyond the reservation is reserved before it is used.
        assert_eq!(ids.next(T + 100), Some(first_id(T + 100)));
        assert_eq!(stored(dir.path()), end_after(T + 110));
        drop(ids);

        let mut ids = MsgIds::open_with_block(dir.path(), T - 60_000, 10).unwrap();
        assert_eq!(ids.next(T - 60_000), Some(first_id(T + 110)));
        assert_eq!(ids.next(T - 59_000), Some(first_id(T + 110) + 1));
        drop(ids);
        // A clock ahead of every reservation wins, as plain clock-based ids did.
        let mut ids = MsgIds::open_with_block(dir.path(), T + 5000, 10).unwrap();
        assert_eq!(ids.next(T + 5000), Some(first_id(T + 5000)));
    }

    #[test]
    fn a_reservation_that_cannot_be_stored_stops_the_ids() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let mut ids = MsgIds::open_with_block(&data, T, 2).unwrap();
        assert_eq!(
            (ids.next(T), ids.next(T)),
            (Some(first_id(T)), Some(first_id(T) + 1))
        );
        fs::remove_dir_all(&data).unwrap();
        assert_eq!(ids.next(T + 100), None);
        assert!(ids
            .failure()
            .unwrap()
            .contains("cannot reserve message ids"));
        // Nor later, when the disk might answer again: the id it refused is not handed out.
        fs::create_dir(&data).unwrap();
        assert_eq!(ids.next(T + 100), None);
        assert_eq!(ids.next(T), None);
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
        fs::write(dir.path().join(FILE_NAME), format!("{}\n", u64::MAX)).unwrap();
        let err = MsgIds::open(dir.path(), T).err().unwrap().to_string();
        assert!(err.contains("used up"), "{err}");

        fs::write(dir.path().join(FILE_NAME), format!("{}\n", u64::MAX - 2)).unwrap();
        let mut ids = MsgIds::open(dir.path(), T).unwrap();
        assert_eq!(ids.next(T), Some(u64::MAX - 2));
        assert_eq!(ids.next(T), Some(u64::MAX - 1));
        assert_eq!(ids.next(T), None);
        assert!(ids.failure().unwrap().contains("used up"));
    }
}
