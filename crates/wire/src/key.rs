//! The cluster secret that authenticates every datagram.
//!
//! A key file holds 32 random bytes as 64 hex digits on one line; blank lines and lines
//! starting with `#` are ignored so the file can say what it is. A cluster started without
//! `--key-file` uses [`ClusterKey::lab_default`], a key printed in this source file: it keeps
//! a key-less lab cluster working and still stops datagrams that were corrupted or meant for
//! another protocol, but it is no secret and stops no attacker. Give a real cluster a key.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The well-known key of clusters that have no key file. Public on purpose; see the module
/// documentation.
const LAB_DEFAULT: [u8; ClusterKey::LEN] = *b"myraft-default-cluster-key-v1!!!";

/// A cluster secret. Its `Debug` output shows only a fingerprint, so keys do not leak into
/// logs.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; ClusterKey::LEN]);

/// A key read from a file, with anything about the file the operator should hear of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedKey {
    /// The key the file holds.
    pub key: ClusterKey,
    /// The file is usable but unsafe, e.g. readable by other users. The caller logs it.
    pub warning: Option<KeyWarning>,
}

/// Something wrong with a key file that still lets the key load.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyWarning {
    /// Users other than the owner may read the file (Unix only).
    #[error(
        "key file {path} has mode {mode:04o}, so other users can read the cluster secret; \
         run `chmod 600 {path}`"
    )]
    LoosePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits (`st_mode & 0o777`).
        mode: u32,
    },
}

/// Why a key could not be read, parsed or written. The messages say what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// [`ClusterKey::from_file`]: there is no such file.
    #[error(
        "key file {path} does not exist; create one with `myraft keygen {path}`, or leave out \
         --key-file to use the lab default key"
    )]
    Missing {
        /// The path asked for.
        path: PathBuf,
    },
    /// [`ClusterKey::to_file`]: the file exists already and was left as it was.
    #[error(
        "key file {path} already exists; refusing to overwrite a cluster key (nodes holding it \
         would be locked out). Remove it first if you really mean to replace it"
    )]
    AlreadyExists {
        /// The path asked for.
        path: PathBuf,
    },
    /// Any other failure of the file system.
    #[error("cannot {action} key file {path}: {source}")]
    Io {
        /// What failed: `create`, `write` or `read`.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file is not UTF-8 text: a binary file, or the wrong file.
    #[error(
        "key file {path} is not text; expected one line of 64 hex digits, as `myraft keygen` \
         writes"
    )]
    NotText {
        /// The key file.
        path: PathBuf,
    },
    /// The file holds nothing but comments and blank lines.
    #[error("key file {path} holds no key; expected one line of 64 hex digits")]
    Empty {
        /// The key file.
        path: PathBuf,
    },
    /// The text is not hex digits, or a file holds more than one key line.
    #[error("key {origin} is not valid hex ({detail}); expected 64 hex digits (32 bytes)")]
    BadHex {
        /// Where the text came from, as the message shows it: `text`, or `in file PATH`.
        origin: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The hex is fine but does not decode to [`ClusterKey::LEN`] bytes.
    #[error("key {origin} has {got} bytes, expected 32 (64 hex digits)")]
    BadLength {
        /// Where the text came from, as in `BadHex`.
        origin: String,
        /// How many bytes it decoded to.
        got: usize,
    },
}

impl ClusterKey {
    /// Key length in bytes; HMAC-SHA256 gains nothing from a longer one.
    pub const LEN: usize = 32;

    /// A fresh random key from the thread-local CSPRNG (seeded by the operating system).
    pub fn generate() -> Self {
        let mut bytes = [0u8; Self::LEN];
        rand::fill(&mut bytes[..]);
        Self(bytes)
    }

    /// A key of exactly these bytes.
    pub const fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        Self(bytes)
    }

    /// What every process and the console say when they run with
    /// [`ClusterKey::lab_default`].
    pub const UNAUTHENTICATED: &'static str = "no --key-file: the cluster is unauthenticated \
        (the lab key is public, so anyone on the network can read, write or stop it); create a \
        key with `myraft keygen FILE` and pass --key-file FILE to every node, the entrance and \
        the tools";

    /// The well-known key of clusters started without a key file. Not a secret.
    pub const fn lab_default() -> Self {
        Self(LAB_DEFAULT)
    }

    /// Whether this is [`ClusterKey::lab_default`]: it protects nothing, so servers that run
    /// with it warn.
    pub fn is_lab_default(&self) -> bool {
        self.0 == LAB_DEFAULT
    }

    /// The secret itself, for the codec's HMAC. Never show it.
    pub fn as_bytes(&self) -> &[u8; Self::LEN] {
        &self.0
    }

    /// A short, non-secret name for the key, so operators can check that two machines hold
    /// the same key without showing it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"myraft key fingerprint")
            .chain_update(self.0)
            .finalize();
        hex::encode(&digest[..6])
    }

    /// The secret as 64 lowercase hex digits, as a key file holds it. Never log it; show
    /// [`ClusterKey::fingerprint`] instead.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits of either case; whitespace around them is ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        Self::parse_hex(text.trim(), "text")
    }

    fn parse_hex(text: &str, origin: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text).map_err(|e| KeyError::BadHex {
            origin: origin.to_owned(),
            detail: e.to_string(),
        })?;
        let got = bytes.len();
        let array: [u8; Self::LEN] = bytes.try_into().map_err(|_| KeyError::BadLength {
            origin: origin.to_owned(),
            got,
        })?;
        Ok(Self(array))
    }

    /// Writes the key as hex to a new file that only its owner may read (mode 0600 on Unix).
    /// Refuses to replace an existing file: overwriting a cluster key by accident would lock
    /// every node that holds the old one out of the cluster.
    pub fn to_file(&self, path: &Path) -> Result<(), KeyError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                KeyError::AlreadyExists {
                    path: path.to_owned(),
                }
            } else {
                io_error("create", path, source)
            }
        })?;
        let text = format!(
            "# MyRaft cluster key (fingerprint {}). Keep it secret; every node and client of \
             the cluster needs the same file.\n{}\n",
            self.fingerprint(),
            self.to_hex()
        );
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| io_error("write", path, source))
    }

    /// Reads a key written by [`ClusterKey::to_file`] (or any file holding 64 hex digits).
    /// A file that others may read still loads, with a warning for the caller to show.
    pub fn from_file(path: &Path) -> Result<LoadedKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                KeyError::Missing {
                    path: path.to_owned(),
                }
            } else if source.kind() == io::ErrorKind::InvalidData {
                KeyError::NotText {
                    path: path.to_owned(),
                }
            } else {
                io_error("read", path, source)
            }
        })?;
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        let line = lines.next().ok_or_else(|| KeyError::Empty {
            path: path.to_owned(),
        })?;
        let origin = format!("in file {}", path.display());
        if lines.next().is_some() {
            return Err(KeyError::BadHex {
                origin,
                detail: "more than one key line".to_owned(),
            });
        }
        let key = Self::parse_hex(line, &origin)?;
        Ok(LoadedKey {
            key,
            warning: permission_warning(path),
        })
    }

    /// The key of a `--key-file` flag: read from `path`, or the public lab key without one.
    /// A warning about the file (say, readable by other users) is printed on stderr as
    /// `PROGRAM: warning: ...`, where a daemon's journal and an operator's terminal both
    /// show it; the key still loads.
    pub fn load(path: Option<&Path>, program: &str) -> Result<ClusterKey, KeyError> {
        let Some(path) = path else {
            return Ok(ClusterKey::lab_default());
        };
        let loaded = ClusterKey::from_file(path)?;
        if let Some(warning) = loaded.warning {
            eprintln!("{program}: warning: {warning}");
        }
        Ok(loaded.key)
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(fingerprint {})", self.fingerprint())
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> KeyError {
    KeyError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(unix)]
fn permission_warning(path: &Path) -> Option<KeyWarning> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| KeyWarning::LoosePermissions {
        path: path.to_owned(),
        mode,
    })
}

#[cfg(not(unix))]
fn permission_warning(_path: &Path) -> Option<KeyWarning> {
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "myraft-wire-key-{tag}-{}-{}",
                std::process::id(),
                ClusterKey::generate().fingerprint()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn generated_keys_differ_and_are_not_the_default() {
        let a = ClusterKey::generate();
        let b = ClusterKey::generate();
        assert_ne!(a, b);
        assert!(!a.is_lab_default());
        assert!(ClusterKey::lab_default().is_lab_default());
    }

    #[test]
    fn hex_round_trip() {
        let key = ClusterKey::generate();
        assert_eq!(ClusterKey::from_hex(&key.to_hex()).unwrap(), key);
        assert_eq!(
            ClusterKey::from_hex(&key.to_hex().to_uppercase()).unwrap(),
            key
        );
    }

    #[test]
    fn bad_hex_and_bad_length_are_errors() {
        assert!(matches!(
            ClusterKey::from_hex("zz"),
            Err(KeyError::BadHex { .. })
        ));
        assert!(matches!(
            ClusterKey::from_hex("abc"),
            Err(KeyError::BadHex { .. })
        ));
        assert!(matches!(
            ClusterKey::from_hex("abcd"),
            Err(KeyError::BadLength { got: 2, .. })
        ));
        // Multi-byte UTF-8 must not split a character or panic.
        assert!(ClusterKey::from_hex("éé").is_err());
    }

    #[test]
    fn a_binary_file_or_a_directory_is_a_clear_error() {
        let dir = TempDir::new("binary");
        let path = dir.0.join("bin.key");
        std::fs::write(&path, [0xff, 0xfe, 0x00, 0x80]).unwrap();
        let err = ClusterKey::from_file(&path).err().unwrap();
        assert!(matches!(err, KeyError::NotText { .. }), "{err}");
        assert!(err.to_string().contains("myraft keygen"), "{err}");
        let err = ClusterKey::from_file(&dir.0).err().unwrap().to_string();
        assert!(err.contains("cannot read key file"), "{err}");
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = ClusterKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.to_hex()));
        assert!(shown.contains(&key.fingerprint()));
    }

    #[test]
    fn file_round_trip_with_owner_only_mode() {
        let dir = TempDir::new("roundtrip");
        let path = dir.0.join("cluster.key");
        let key = ClusterKey::generate();
        key.to_file(&path).unwrap();
        let loaded = ClusterKey::from_file(&path).unwrap();
        assert_eq!(loaded.key, key);
        assert_eq!(loaded.warning, None);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn to_file_refuses_to_overwrite() {
        let dir = TempDir::new("overwrite");
        let path = dir.0.join("cluster.key");
        ClusterKey::generate().to_file(&path).unwrap();
        assert!(matches!(
            ClusterKey::generate().to_file(&path),
            Err(KeyError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn missing_empty_and_garbled_files_are_clear_errors() {
        let dir = TempDir::new("errors");
        let missing = dir.0.join("nope.key");
        let err = ClusterKey::from_file(&missing).unwrap_err();
        assert!(matches!(err, KeyError::Missing { .. }));
        assert!(err.to_string().contains("myraft keygen"));

        let empty = dir.0.join("empty.key");
        std::fs::write(&empty, "# only a comment\n\n").unwrap();
        assert!(matches!(
            ClusterKey::from_file(&empty),
            Err(KeyError::Empty { .. })
        ));

        let short = dir.0.join("short.key");
        std::fs::write(&short, "abcdef\n").unwrap();
        assert!(matches!(
            ClusterKey::from_file(&short),
            Err(KeyError::BadLength { got: 3, .. })
        ));

        let two = dir.0.join("two.key");
        let hex = ClusterKey::generate().to_hex();
        std::fs::write(&two, format!("{hex}\n{hex}\n")).unwrap();
        assert!(matches!(
            ClusterKey::from_file(&two),
            Err(KeyError::BadHex { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_file_loads_with_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("loose");
        let path = dir.0.join("cluster.key");
        let key = ClusterKey::generate();
        std::fs::write(&path, format!("{}\n", key.to_hex())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = ClusterKey::from_file(&path).unwrap();
        assert_eq!(loaded.key, key);
        let warning = loaded.warning.unwrap();
        assert!(warning.to_string().contains("chmod 600"));
    }
}
