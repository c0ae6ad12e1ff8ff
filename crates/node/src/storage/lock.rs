//! [`DataDirLock`]: one `myraft-node` per data dir.
//!
//! Two processes appending to one log would interleave records and break it beyond repair,
//! so the server takes this lock before it opens anything else in the dir and keeps it for
//! its whole life. The lock is an advisory `flock` on `DIR/LOCK`: the kernel drops it when
//! the process dies, so a crash never leaves a stale lock behind, and the file's content
//! (the holder's pid) is only there to make the error message useful.

use super::StorageError;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct DataDirLock {
    // Never read: keeping the file open is what keeps the lock.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    pub const FILE_NAME: &'static str = "LOCK";

    /// Locks `dir` (creating it if needed) or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create data dir", e))?;
        let path = dir.join(Self::FILE_NAME);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, "open lock file", e))?;
        // `File::try_lock` is stable since Rust 1.89; the workspace's declared
        // rust-version predates it, but the toolchain this project builds with has it.
        #[allow(clippy::incompatible_msrv)]
        let locked = file.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut content = String::new();
                let holder = file
                    .read_to_string(&mut content)
                    .ok()
                    .and_then(|_| content.trim().parse().ok());
                return Err(StorageError::Locked {
                    dir: dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(StorageError::io(&path, "lock", e)),
        }
        // Best effort: the pid only improves a later error message.
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()));
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
