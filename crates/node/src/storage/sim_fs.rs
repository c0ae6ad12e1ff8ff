//! [`SimFs`]: a file system in memory that forgets, for crash tests of the real log.
//!
//! It keeps two states of every file and directory: what a reader sees now, and what is
//! durable. A file's data becomes durable with `sync_data`; a creation, rename or removal
//! with `sync_dir` of its directory. [`SimFs::power_cut`] throws away everything that was not
//! durable, except that the unsynced tail of a file may survive in part (a torn write: the
//! disk got some of the pages), as after a real power cut.
//!
//! A [`Fault`] armed with [`SimFs::arm`] fires at the n-th durable step (a write, a sync,
//! a rename, a removal, a creation), counted from when it was armed:
//! - [`Fault::Crash`]: the machine dies during that step. A write may leave a prefix of its
//!   bytes; the step and every later one fail, so nothing the process does afterwards
//!   reaches the disk. The test then stops the process and calls [`SimFs::power_cut`].
//! - [`Fault::NoSpace`] / [`Fault::Io`]: that one step fails with ENOSPC / EIO (a write
//!   after writing a prefix of its bytes, as a short write does) and the machine goes on.
//!
//! Directories exist as soon as they are created: the log creates its directories once,
//! before anything that must be durable, so losing them is not a case worth modelling.

use super::vfs::{OpenMode, Vfs, VfsFile};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What happens at an armed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Crash,
    NoSpace,
    Io,
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// A prefix of `data` when only appends happened since the last sync; after a cut
    /// (`set_len`) it may be longer than `data` until the next sync.
    durable: Vec<u8>,
    /// Pages written at an offset since the last sync (files opened with `open_db`): at a
    /// power cut each of them holds its old bytes or its new ones, as a disk that wrote back
    /// some dirty pages and not others.
    dirty_pages: BTreeSet<u64>,
    paged: bool,
}

/// The unit in which a page-written file reaches the disk.
const PAGE: usize = 4096;

struct State {
    inodes: BTreeMap<u64, Inode>,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    rng: StdRng,
    /// Durable steps since the fault was armed, and the fault with the step it fires at.
    steps: u64,
    armed: Option<(u64, Fault)>,
    /// Only steps whose description holds this count towards the armed fault.
    armed_on: Option<&'static str>,
    crashed: bool,
    /// What fired, for the test's report.
    fired: Vec<String>,
}

/// A simulated file system shared by clones (one per node, kept across its restarts).
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimFs")
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn dead() -> io::Error {
    io::Error::other("the machine lost power")
}

impl SimFs {
    /// An empty file system whose torn writes are drawn from `seed`.
    pub fn new(seed: u64) -> SimFs {
        SimFs {
            state: Arc::new(Mutex::new(State {
                inodes: BTreeMap::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                next_inode: 1,
                rng: StdRng::seed_from_u64(seed),
                steps: 0,
                armed: None,
                armed_on: None,
                crashed: false,
                fired: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fires `fault` at the `step`-th durable step from now (1 = the next one).
    pub fn arm(&self, step: u64, fault: Fault) {
        self.arm_where(None, step, fault);
    }

    /// Fires `fault` at the `step`-th durable step from now whose description contains
    /// `on` (say "rename", or a file's name): for steps too rare to be hit by counting all.
    pub fn arm_on(&self, on: &'static str, step: u64, fault: Fault) {
        self.arm_where(Some(on), step, fault);
    }

    fn arm_where(&self, on: Option<&'static str>, step: u64, fault: Fault) {
        let mut s = self.lock();
        s.steps = 0;
        s.armed = Some((step.max(1), fault));
        s.armed_on = on;
    }

    /// Whether a fault is armed and has not fired yet.
    pub fn is_armed(&self) -> bool {
        self.lock().armed.is_some()
    }

    /// Whether a [`Fault::Crash`] fired: the process must be stopped and the power cut.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Faults that fired so far, described.
    pub fn fired(&self) -> Vec<String> {
        self.lock().fired.clone()
    }

    /// Loses everything not durable; the unsynced tail of an appended file may survive in
    /// part. The machine is then up again, with no fault armed.
    pub fn power_cut(&self) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.names = s.durable_names.clone();
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.inodes.retain(|id, _| live.contains(id));
        for inode in s.inodes.values_mut() {
            if inode.paged {
                cut_pages(inode, &mut s.rng);
                continue;
            }
            let torn = if inode.data.len() > inode.durable.len()
                && inode.data.starts_with(&inode.durable)
            {
                let extra = inode.data.len() - inode.durable.len();
                // Half the time nothing of the tail survives, else a random part of it.
                if s.rng.random_bool(0.5) {
                    s.rng.random_range(0..=extra)
                } else {
                    0
                }
            } else {
                0
            };
            let keep = inode.durable.len() + torn;
            let mut data = std::mem::take(&mut inode.data);
            if torn > 0 {
                data.truncate(keep);
            } else {
                data = inode.durable.clone();
            }
            inode.data = data;
            inode.durable = inode.data.clone();
        }
        s.crashed = false;
        s.armed = None;
    }

    /// Counts a durable step; the fault it triggers, if any. Fails once the machine died.
    fn step(s: &mut State, what: &str) -> io::Result<Option<Fault>> {
        if s.crashed {
            return Err(dead());
        }
        let Some((at, fault)) = s.armed else {
            return Ok(None);
        };
        if s.armed_on.is_some_and(|on| !what.contains(on)) {
            return Ok(None);
        }
        s.steps += 1;
        if s.steps < at {
            return Ok(None);
        }
        s.armed = None;
        s.fired.push(format!("{fault:?} at step {at} ({what})"));
        if fault == Fault::Crash {
            s.crashed = true;
        }
        Ok(Some(fault))
    }

    fn fault_error(fault: Fault) -> io::Error {
        match fault {
            Fault::Crash => dead(),
            Fault::NoSpace => io::Error::from_raw_os_error(28),
            Fault::Io => io::Error::from_raw_os_error(5),
        }
    }

    /// Creates an empty file (a durable step); `paged` for one written at any offset.
    fn create(&self, path: &Path, paged: bool) -> io::Result<u64> {
        if !self.lock().dirs.contains(&parent(path)) {
            return Err(not_found(&parent(path)));
        }
        let mut id = 0;
        self.simple(&format!("create {}", path.display()), |s| {
            id = s.next_inode;
            s.next_inode += 1;
            s.inodes.insert(
                id,
                Inode {
                    paged,
                    ..Inode::default()
                },
            );
            s.names.insert(path.to_path_buf(), id);
            Ok(())
        })?;
        Ok(id)
    }

    /// A simple step: done unless a fault fires.
    fn simple(&self, what: &str, f: impl FnOnce(&mut State) -> io::Result<()>) -> io::Result<()> {
        let mut s = self.lock();
        match Self::step(&mut s, what)? {
            Some(fault) => Err(Self::fault_error(fault)),
            None => f(&mut s),
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Vfs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        if s.crashed {
            return Err(dead());
        }
        for d in dir.ancestors() {
            s.dirs.insert(d.to_path_buf());
        }
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        let id = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes.get(id).map(|i| i.data.clone()).unwrap_or_default())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let s = self.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.simple(&format!("remove {}", path.display()), |s| {
            s.names
                .remove(path)
                .map(|_| ())
                .ok_or_else(|| not_found(path))
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.simple(&format!("rename {}", from.display()), |s| {
            let id = s.names.remove(from).ok_or_else(|| not_found(from))?;
            s.names.insert(to.to_path_buf(), id);
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.simple(&format!("sync dir {}", dir.display()), |s| {
            s.durable_names.retain(|p, _| p.parent() != Some(dir));
            let now: Vec<(PathBuf, u64)> = s
                .names
                .iter()
                .filter(|(p, _)| p.parent() == Some(dir))
                .map(|(p, id)| (p.clone(), *id))
                .collect();
            s.durable_names.extend(now);
            Ok(())
        })
    }

    fn copy_file(&self, from: &Path, to: &Path) -> io::Result<u64> {
        let mut len = 0;
        self.simple(&format!("copy {}", from.display()), |s| {
            let id = *s.names.get(from).ok_or_else(|| not_found(from))?;
            if !s.dirs.contains(&parent(to)) {
                return Err(not_found(&parent(to)));
            }
            let src = s.inodes.get(&id).ok_or_else(|| not_found(from))?;
            let data = src.data.clone();
            len = data.len() as u64;
            // Nothing of the copy is on the disk yet: every page may be lost.
            let pages = (data.len().div_ceil(PAGE)) as u64;
            let inode = Inode {
                data,
                durable: Vec::new(),
                dirty_pages: (0..pages).collect(),
                paged: src.paged,
            };
            let new = s.next_inode;
            s.next_inode += 1;
            s.inodes.insert(new, inode);
            s.names.insert(to.to_path_buf(), new);
            Ok(())
        })?;
        Ok(len)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let s = self.lock();
        let id = s.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(s.inodes.get(id).map_or(0, |i| i.data.len() as u64))
    }

    fn open_db(&self, path: &Path) -> io::Result<Box<dyn redb::StorageBackend>> {
        let existing = self.lock().names.get(path).copied();
        let inode = match existing {
            Some(id) => id,
            None => self.create(path, true)?,
        };
        if let Some(i) = self.lock().inodes.get_mut(&inode) {
            i.paged = true;
        }
        Ok(Box::new(SimDbFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
        }))
    }

    fn open_append(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn VfsFile>> {
        let existing = self.lock().names.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::Existing, Some(id)) => id,
            (OpenMode::Existing, None) => return Err(not_found(path)),
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (OpenMode::Truncate, Some(id)) => {
                self.simple(&format!("truncate {}", path.display()), |s| {
                    if let Some(i) = s.inodes.get_mut(&id) {
                        i.data.clear();
                    }
                    Ok(())
                })?;
                id
            }
            (_, None) => self.create(path, false)?,
        };
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode,
            path: path.to_path_buf(),
        }))
    }
}

/// A power cut on a page-written file: its length and each dirty page are old or new.
fn cut_pages(inode: &mut Inode, rng: &mut StdRng) {
    let new_len = if rng.random_bool(0.5) {
        inode.data.len()
    } else {
        inode.durable.len()
    };
    let mut out = inode.durable.clone();
    out.resize(new_len, 0);
    for &page in &inode.dirty_pages {
        if !rng.random_bool(0.5) {
            continue;
        }
        let start = usize::try_from(page)
            .unwrap_or(usize::MAX)
            .saturating_mul(PAGE);
        let end = start.saturating_add(PAGE).min(new_len);
        for (at, byte) in out.iter_mut().enumerate().take(end).skip(start) {
            *byte = inode.data.get(at).copied().unwrap_or(0);
        }
    }
    inode.data = out;
    inode.durable = inode.data.clone();
    inode.dirty_pages.clear();
}

/// A file of the state store: read and written at any offset (redb's storage backend).
struct SimDbFile {
    fs: SimFs,
    inode: u64,
    path: PathBuf,
}

impl fmt::Debug for SimDbFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimDbFile({})", self.path.display())
    }
}

fn backend_err(e: io::Error) -> io::Error {
    e
}

impl redb::StorageBackend for SimDbFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        let s = self.fs.lock();
        Ok(s.inodes.get(&self.inode).map_or(0, |i| i.data.len() as u64))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let s = self.fs.lock();
        let data = s.inodes.get(&self.inode).map_or(&[][..], |i| &i.data[..]);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(out.len())
            .and_then(|end| data.get(start..end))
        {
            Some(bytes) => {
                out.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(backend_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of {}", self.path.display()),
            ))),
        }
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let inode = self.inode;
        self.fs
            .simple(&format!("resize {}", self.path.display()), |s| {
                if let Some(i) = s.inodes.get_mut(&inode) {
                    let len = usize::try_from(len).unwrap_or(usize::MAX);
                    let old = i.data.len();
                    i.data.resize(len, 0);
                    for page in old.min(len) / PAGE..len.max(old).div_ceil(PAGE) {
                        i.dirty_pages.insert(page as u64);
                    }
                }
                Ok(())
            })
            .map_err(backend_err)
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let inode = self.inode;
        self.fs
            .simple(&format!("sync {}", self.path.display()), |s| {
                if let Some(i) = s.inodes.get_mut(&inode) {
                    i.durable = i.data.clone();
                    i.dirty_pages.clear();
                }
                Ok(())
            })
            .map_err(backend_err)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut guard = self.fs.lock();
        let s = &mut *guard;
        let fault = SimFs::step(
            s,
            &format!(
                "write {} bytes at {offset} of {}",
                data.len(),
                self.path.display()
            ),
        )
        .map_err(backend_err)?;
        let written = match fault {
            None => data.len(),
            Some(Fault::Crash | Fault::NoSpace) => s.rng.random_range(0..=data.len()),
            Some(Fault::Io) => 0,
        };
        if let Some(i) = s.inodes.get_mut(&self.inode) {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(written);
            if i.data.len() < end {
                i.data.resize(end, 0);
            }
            i.data[start..end].copy_from_slice(&data[..written]);
            for page in start / PAGE..end.div_ceil(PAGE) {
                i.dirty_pages.insert(page as u64);
            }
        }
        match fault {
            None => Ok(()),
            Some(f) => Err(backend_err(SimFs::fault_error(f))),
        }
    }
}

struct SimFile {
    fs: SimFs,
    inode: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SimFile({})", self.path.display())
    }
}

impl VfsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut guard = self.fs.lock();
        let s = &mut *guard;
        let fault = SimFs::step(
            s,
            &format!("write {} bytes to {}", buf.len(), self.path.display()),
        )?;
        let written = match fault {
            None => buf.len(),
            // A write cut short by the crash or the full disk leaves a prefix behind.
            Some(Fault::Crash | Fault::NoSpace) => s.rng.random_range(0..=buf.len()),
            Some(Fault::Io) => 0,
        };
        if let Some(i) = s.inodes.get_mut(&self.inode) {
            i.data.extend_from_slice(&buf[..written]);
        }
        match fault {
            None => Ok(()),
            Some(f) => Err(SimFs::fault_error(f)),
        }
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let inode = self.inode;
        self.fs
            .simple(&format!("sync {}", self.path.display()), |s| {
                if let Some(i) = s.inodes.get_mut(&inode) {
                    i.durable = i.data.clone();
                }
                Ok(())
            })
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let inode = self.inode;
        self.fs
            .simple(&format!("cut {}", self.path.display()), |s| {
                if let Some(i) = s.inodes.get_mut(&inode) {
                    i.data.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
                }
                Ok(())
            })
    }

    fn try_clone(&self) -> io::Result<Box<dyn VfsFile>> {
        Ok(Box::new(SimFile {
            fs: self.fs.clone(),
            inode: self.inode,
            path: self.path.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_what_was_synced_survives_a_power_cut() {
        let fs = SimFs::new(1);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let a = dir.join("a");
        let mut f = fs.open_append(&a, OpenMode::CreateNew).unwrap();
        f.write_all(b"synced").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_all(b"-lost").unwrap();
        let mut g = fs.open_append(&dir.join("b"), OpenMode::CreateNew).unwrap();
        g.write_all(b"never named durably").unwrap();
        g.sync_data().unwrap();
        fs.power_cut();
        let data = fs.read(&a).unwrap();
        assert!(data.starts_with(b"synced") && b"synced-lost".starts_with(&data));
        assert_eq!(fs.list(dir).unwrap(), vec![a]);
    }

    #[test]
    fn an_armed_crash_stops_every_later_step() {
        let fs = SimFs::new(2);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut f = fs.open_append(&dir.join("a"), OpenMode::CreateNew).unwrap();
        fs.arm(2, Fault::Crash);
        f.write_all(b"one").unwrap();
        assert!(f.write_all(b"two").is_err());
        assert!(fs.crashed());
        assert!(
            f.sync_data().is_err(),
            "nothing reaches the disk after the crash"
        );
        fs.power_cut();
        assert!(!fs.crashed());
        assert_eq!(fs.list(dir).unwrap(), Vec::<PathBuf>::new(), "never synced");
    }
}
