//! The file operations [`super::DiskStorage`] needs, behind a trait, so that a test can run
//! the real log code over a file system that loses what was not synced
//! ([`super::SimFs`]) and fails writes on demand.
//!
//! The set is small on purpose: append-only files, whole-file reads, renames, directory
//! listing and the two kinds of sync. Everything else the log does is built from these. The
//! state store's file is the one exception: redb reads and writes it at any offset, through
//! a backend [`Vfs::open_db`] hands out.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How [`Vfs::open_append`] treats the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist; writes go to its end.
    Existing,
    /// The file must not exist yet.
    CreateNew,
    /// Created if missing, emptied if present.
    Truncate,
}

/// A file open for appending.
pub trait VfsFile: Send + fmt::Debug {
    /// Appends `buf` whole, or fails (possibly after part of it reached the file).
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// A second handle to the same open file, so another thread can sync it.
    fn try_clone(&self) -> io::Result<Box<dyn VfsFile>>;
}

/// A file system. Paths are the caller's; a simulated one need not touch the disk at all.
pub trait Vfs: Send + Sync + fmt::Debug {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The whole file; `NotFound` if it does not exist.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The paths of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes `path` if it exists: a file that is already gone is what was wanted.
    fn remove_if_present(&self, path: &Path) -> io::Result<()> {
        match self.remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn open_append(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>>;
    /// A file for redb, read and written at any offset; created empty if missing.
    fn open_db(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>>;
    /// The length of a file.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Copies `from` to `to`, replacing it; the copy is durable only once synced.
    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<u64>;
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

impl OsFs {
    pub fn shared() -> Arc<dyn Vfs> {
        Arc::new(OsFs)
    }
}

#[derive(Debug)]
struct OsFile(File);

impl VfsFile for OsFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn try_clone(&self) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(OsFile(self.0.try_clone()?)))
    }
}

impl Vfs for OsFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        fs::read_dir(dir)?
            .map(|item| item.map(|i| i.path()))
            .collect()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open_append(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Existing => o.append(true),
            OpenMode::CreateNew => o.append(true).create_new(true),
            OpenMode::Truncate => o.write(true).create(true).truncate(true),
        };
        Ok(Box::new(OsFile(o.open(path)?)))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<u64> {
        fs::copy(from, to)
    }

    fn open_db(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let backend = redb::backends::FileBackend::new(file).map_err(io::Error::other)?;
        Ok(Box::new(backend))
    }
}
