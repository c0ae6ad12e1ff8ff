//! Small pieces every MyRaft process needs, kept in the one crate all of them depend on: the
//! data-dir lock, the wall clock in milliseconds, jittered intervals, and (with the
//! `logging` feature) the log file of the daemons and the console.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The dir or its lock file could not be created, opened or locked.
    #[error("cannot {op} {}: {source}; {}", path.display(), io_advice(source))]
    Io {
        /// What was being done.
        op: &'static str,
        /// To which file or dir.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the dir.
    #[error(
        "data dir {} is in use by another {program}{}; stop that process or choose another \
         --data-dir",
        dir.display(),
        holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    Locked {
        /// The dir.
        dir: PathBuf,
        /// The kind of process that uses such a dir, for the message.
        program: &'static str,
        /// The holder's pid, as it wrote it into the lock file.
        holder: Option<u32>,
    },
}

/// One process per data dir, held for as long as the value lives.
///
/// Two processes writing one data dir would interleave their records and break it beyond
/// repair, so a daemon takes this lock before it opens anything else there. The lock is an
/// advisory `flock` on a file in the dir: the kernel drops it when the process dies, so a
/// crash never leaves a stale lock behind, and the file's content (the holder's pid) is only
/// there to make the error message useful.
#[derive(Debug)]
pub struct DataDirLock {
    // Never read: keeping the file open is what keeps the lock.
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Locks `dir` (creating it if needed) through its file `file_name`, or says who holds
    /// it; `program` names the kind of process in that message.
    pub fn acquire(
        dir: &Path,
        file_name: &str,
        program: &'static str,
    ) -> Result<DataDirLock, LockError> {
        let io = |op, path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create data dir", dir))?;
        let path = dir.join(file_name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut content = String::new();
                let holder = file
                    .read_to_string(&mut content)
                    .ok()
                    .and_then(|_| content.trim().parse().ok());
                return Err(LockError::Locked {
                    dir: dir.to_path_buf(),
                    program,
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
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

    /// The dir this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is set before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Microseconds since the Unix epoch (0 if the clock is set before it). Message ids start
/// here, so that a restarted process's ids are above any it sent before.
pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A random duration in `[low × d, high × d]`, so that many processes waiting out the same
/// interval (clients told "not now", entrances probing) do not fall into lockstep.
pub fn jittered(d: Duration, low: f64, high: f64) -> Duration {
    d.mul_f64(rand::random_range(low..=high))
}

/// An error and its causes on one line, each said once. MyRaft's errors name their cause in
/// their own message, so that a log line showing only the outer one is complete; printing
/// the whole chain as well (anyhow's `{:#}`) would say the cause twice.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// What an operator should do about a failed file operation in a data dir, by its kind: a
/// full or read-only file system and a permission problem each have their own remedy.
pub fn io_advice(e: &io::Error) -> &'static str {
    io_remedy(e).unwrap_or("check the disk and the data dir's permissions")
}

/// The remedy for a file system that is full, read-only or forbidden to this user; `None`
/// for any other failure, whose advice depends on who reports it.
pub fn io_remedy(e: &io::Error) -> Option<&'static str> {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Some(
            "the file system is full: free space on it (or move the data dir to a larger one), \
             then start the process again; what was written before is kept",
        ),
        io::ErrorKind::ReadOnlyFilesystem => Some(
            "the file system is read-only: remount it read-write or choose a data dir on a \
             writable one",
        ),
        io::ErrorKind::PermissionDenied => Some(
            "this user may not write there: fix the data dir's owner or permissions, or choose \
             another",
        ),
        _ => None,
    }
}

/// Sends the `tracing` log of this process to `path` (appended, created with its dir if
/// missing), at the level `RUST_LOG` asks for, `info` by default. Plain text: the file is
/// read with `less` and `grep`, not a terminal.
///
/// A log line that cannot be written (the disk is full) is dropped, not retried and not
/// fatal: the process says so on stderr once, with the reason, and again with the number
/// lost once lines can be written again. `program` prefixes those notices; `None` keeps
/// them off stderr (the console's terminal is its screen) and leaves the count to
/// [`lost_log_lines`].
#[cfg(feature = "logging")]
pub fn log_to_file(path: &Path, program: Option<&'static str>) -> io::Result<()> {
    use tracing_subscriber::EnvFilter;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = LogFile {
        file,
        path: path.to_owned(),
        program,
        lost: 0,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(writer))
        .init();
    Ok(())
}

/// Log lines [`log_to_file`] could not write, in this process so far.
pub fn lost_log_lines() -> u64 {
    LOST_LOG_LINES.load(std::sync::atomic::Ordering::Relaxed)
}

static LOST_LOG_LINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The log file behind [`log_to_file`]: drops lines it cannot write, and says so.
#[cfg(any(test, feature = "logging"))]
struct LogFile<W> {
    file: W,
    path: PathBuf,
    program: Option<&'static str>,
    /// Lines dropped since the last one written.
    lost: u64,
}

#[cfg(any(test, feature = "logging"))]
impl<W: Write> Write for LogFile<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.file.write_all(buf) {
            Ok(()) => {
                if let (Some(program), true) = (self.program, self.lost > 0) {
                    eprintln!(
                        "{program}: the log {} is written again; {} lines were lost",
                        self.path.display(),
                        self.lost
                    );
                }
                self.lost = 0;
            }
            Err(e) => {
                if let (Some(program), 0) = (self.program, self.lost) {
                    eprintln!(
                        "{program}: warning: cannot write the log {}: {e}; log lines are \
                         dropped until it can be written again",
                        self.path.display(),
                    );
                }
                self.lost += 1;
                LOST_LOG_LINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing is buffered here; a failed flush of the file is a failed write, reported
        // with the next line.
        let _ = self.file.flush();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_dir_names_the_holder() {
        let dir = std::env::temp_dir().join(format!("myraft-lock-{}", std::process::id()));
        let held = DataDirLock::acquire(&dir, "LOCK", "myraft-node").unwrap();
        let err = DataDirLock::acquire(&dir, "LOCK", "myraft-node").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Locked { .. }), "{text}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        drop(held);
        DataDirLock::acquire(&dir, "LOCK", "myraft-node").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A writer that fails while `full` is set, as a file on a full disk does.
    struct Disk {
        full: bool,
        written: Vec<u8>,
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.full {
                return Err(io::ErrorKind::StorageFull.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_lines_that_cannot_be_written_are_counted_and_dropped_not_fatal() {
        let mut log = LogFile {
            file: Disk {
                full: false,
                written: Vec::new(),
            },
            path: PathBuf::from("node.log"),
            program: Some("test"),
            lost: 0,
        };
        log.write_all(b"a\n").unwrap();
        log.file.full = true;
        log.write_all(b"b\n").unwrap();
        log.write_all(b"c\n").unwrap();
        assert_eq!(log.lost, 2);
        log.file.full = false;
        log.write_all(b"d\n").unwrap();
        assert_eq!(log.lost, 0);
        assert_eq!(log.file.written, b"a\nd\n");
    }

    #[test]
    fn io_advice_names_the_remedy_for_a_full_or_read_only_disk() {
        assert!(io_advice(&io::ErrorKind::StorageFull.into()).contains("free space"));
        assert!(io_advice(&io::ErrorKind::ReadOnlyFilesystem.into()).contains("read-only"));
        assert!(io_advice(&io::ErrorKind::PermissionDenied.into()).contains("permissions"));
        assert!(io_advice(&io::ErrorKind::Other.into()).contains("check the disk"));
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot open f: {0}; check the disk")]
        struct Named(#[source] io::Error);
        #[derive(Debug, thiserror::Error)]
        #[error("starting failed")]
        struct Outer(#[source] Named);
        let e = Outer(Named(io::Error::other("disk on fire")));
        assert_eq!(
            describe(&e),
            "starting failed: cannot open f: disk on fire; check the disk"
        );
    }

    #[test]
    fn jitter_stays_in_its_bounds() {
        let d = Duration::from_millis(100);
        for _ in 0..100 {
            let j = jittered(d, 0.5, 1.0);
            assert!(j >= d / 2 && j <= d, "{j:?}");
        }
    }
}
