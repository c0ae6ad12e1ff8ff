//! How a node is set up: flags, timing and limits.

use crate::storage::DiskOptions;
use myraft_wire::codec::DEFAULT_PAYLOAD_BUDGET;
use myraft_wire::key::ClusterKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `myraft-node` needs to run.
#[derive(Clone)]
pub struct NodeConfig {
    /// The operator's name for this node; unique in the cluster.
    pub name: String,
    /// Where the UDP socket binds (may be 0.0.0.0).
    pub listen: SocketAddr,
    /// The address peers and the entrance use to reach this node. Defaults to `listen`.
    pub advertise: Option<String>,
    /// Entrance addresses, tried in order.
    pub entrances: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub key: ClusterKey,
    pub timing: Timing,
    /// Largest datagram this node sends, short of snapshots' single entries; keep it under
    /// the path MTU so datagrams do not fragment (see docs/protocol.md).
    pub max_datagram: usize,
    /// How many bytes of log the node keeps below what the state store holds on disk, for
    /// followers that lag a little; a follower further behind gets a snapshot.
    pub log_retain_bytes: u64,
    /// How often the state store syncs a commit to disk; the log is compacted only below
    /// the last synced one.
    pub sync_interval: Duration,
    /// The state store's page cache.
    pub cache_bytes: usize,
    /// Revisions kept by automatic compaction: the leader compacts the store to
    /// `revision - auto_compact_revisions` as writes go on. 0 turns it off.
    pub auto_compact_revisions: u64,
    /// Apply, flush the leader's log and read snapshot exports within the event loop's
    /// turns instead of on threads of their own: for simulated runs, which must replay
    /// from their seed.
    pub single_threaded: bool,
    /// How the Raft log is stored: segment size, and the file system (the real one, or a
    /// simulated one in crash tests).
    pub disk: DiskOptions,
    /// Seeds the node id of a new node and the election timeouts. `None` (the default) draws
    /// from the OS; a fixed seed makes a run on a simulated network replayable.
    pub rng_seed: Option<u64>,
    /// The wall clock in microseconds since the Unix epoch, which message ids start from.
    /// Tests replace it to restart a node as if its clock had been stepped.
    pub wall_clock_us: fn() -> u64,
}

/// `--log-retain-mb`.
pub const DEFAULT_LOG_RETAIN_MB: u64 = 64;
/// `--sync-interval-ms`.
pub const DEFAULT_SYNC_INTERVAL_MS: u64 = 100;
/// `--cache-mb`.
pub const DEFAULT_CACHE_MB: u64 = 64;
/// `--auto-compact-revisions`: enough history for watches and reads at recent revisions, few
/// enough that a store under steady writes stops growing.
pub const DEFAULT_AUTO_COMPACT_REVISIONS: u64 = 1_000_000;

/// Raft timing. The defaults suit a LAN: a heartbeat every 50 ms and an election timeout
/// drawn from 250–500 ms, so a dead leader is replaced within half a second or so. The
/// leader flushes its log beside its loop, so its heartbeats go on while its disk is busy;
/// a million puts from 64 clients see no election on this project's machines (README,
/// "Failover"). Networks that lose or delay heartbeats want `--election-timeout-ms` raised.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// One unit of the core's logical time.
    pub tick: Duration,
    /// The base election timeout in ticks; each timeout is drawn from `[e, 2e)`.
    pub election_ticks: u32,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
}

/// The smallest datagram budget a node accepts: room for an envelope and a few entries.
pub const MIN_DATAGRAM: usize = 512;
/// The longest `sync_interval` a node accepts: the store's synced index gates log
/// compaction, so a longer one lets the log grow for that long.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// A [`NodeConfig`] a node cannot run with; the message names the flag to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The node has no name.
    #[error("--name must not be empty")]
    EmptyName,
    /// The data dir names something that is not a directory.
    #[error(
        "--data-dir {} is not a directory; name a directory (it is created if missing)",
        .0.display()
    )]
    DataDirNotADir(std::path::PathBuf),
    /// The tick is zero, there is no heartbeat, or elections are too quick for heartbeats.
    #[error(
        "--election-timeout-ms must be at least twice --heartbeat-ms (and the heartbeat at \
         least 2 ms); got a tick of {tick:?}, heartbeats every {heartbeat_ticks} ticks and \
         elections after {election_ticks}"
    )]
    Timing {
        /// The tick given.
        tick: Duration,
        /// Heartbeat ticks given.
        heartbeat_ticks: u32,
        /// Election ticks given.
        election_ticks: u32,
    },
    /// The datagram budget is outside what the codec and the log can use.
    #[error("--max-datagram must be between {MIN_DATAGRAM} and {max}; got {got}")]
    MaxDatagram {
        /// The budget given.
        got: usize,
        /// The codec's limit.
        max: usize,
    },
    /// No log is kept for lagging followers.
    #[error("--log-retain-mb must be at least 1")]
    LogRetain,
    /// The store would never sync, or too rarely.
    #[error("--sync-interval-ms must be between 1 and {}", MAX_SYNC_INTERVAL.as_millis())]
    SyncInterval,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(25),
            election_ticks: 10,
            heartbeat_ticks: 2,
        }
    }
}

impl NodeConfig {
    pub fn new(
        name: &str,
        listen: SocketAddr,
        entrances: Vec<SocketAddr>,
        data_dir: PathBuf,
    ) -> Self {
        NodeConfig {
            name: name.to_owned(),
            listen,
            advertise: None,
            entrances,
            data_dir,
            key: ClusterKey::lab_default(),
            timing: Timing::default(),
            max_datagram: DEFAULT_PAYLOAD_BUDGET,
            log_retain_bytes: DEFAULT_LOG_RETAIN_MB << 20,
            sync_interval: Duration::from_millis(DEFAULT_SYNC_INTERVAL_MS),
            cache_bytes: (DEFAULT_CACHE_MB << 20) as usize,
            auto_compact_revisions: DEFAULT_AUTO_COMPACT_REVISIONS,
            single_threaded: false,
            disk: DiskOptions::default(),
            rng_seed: None,
            wall_clock_us: system_clock_us,
        }
    }

    /// Refuses a configuration the node cannot run with. The binary only parses flags; the
    /// server checks here, so tests that start nodes in-process get the same checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::EmptyName);
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(ConfigError::DataDirNotADir(self.data_dir.clone()));
        }
        let t = self.timing;
        if t.tick.is_zero() || t.heartbeat_ticks == 0 || t.election_ticks < 2 * t.heartbeat_ticks {
            return Err(ConfigError::Timing {
                tick: t.tick,
                heartbeat_ticks: t.heartbeat_ticks,
                election_ticks: t.election_ticks,
            });
        }
        let max = myraft_wire::codec::MAX_DATAGRAM;
        if !(MIN_DATAGRAM..=max).contains(&self.max_datagram) {
            return Err(ConfigError::MaxDatagram {
                got: self.max_datagram,
                max,
            });
        }
        if self.log_retain_bytes == 0 {
            return Err(ConfigError::LogRetain);
        }
        if self.sync_interval.is_zero() || self.sync_interval > MAX_SYNC_INTERVAL {
            return Err(ConfigError::SyncInterval);
        }
        Ok(())
    }

    pub fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| bound.to_string())
    }
}

/// The system's wall clock in µs; 0 if it reads before the epoch.
pub fn system_clock_us() -> u64 {
    myraft_wire::util::unix_us()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn config() -> NodeConfig {
        let listen = SocketAddr::from(([127, 0, 0, 1], 7001));
        NodeConfig::new("n1", listen, Vec::new(), PathBuf::from("/nonexistent"))
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn each_rule_refuses_what_a_node_cannot_run_with() {
        let mut c = config();
        c.name = " ".into();
        assert_eq!(c.validate(), Err(ConfigError::EmptyName));

        for (tick_ms, heartbeat_ticks, election_ticks) in [(0, 2, 10), (25, 0, 10), (25, 2, 3)] {
            let mut c = config();
            c.timing = Timing {
                tick: Duration::from_millis(tick_ms),
                heartbeat_ticks,
                election_ticks,
            };
            assert!(
                matches!(c.validate(), Err(ConfigError::Timing { .. })),
                "tick {tick_ms} ms, heartbeat {heartbeat_ticks}, election {election_ticks}"
            );
        }

        for size in [MIN_DATAGRAM - 1, myraft_wire::codec::MAX_DATAGRAM + 1] {
            let mut c = config();
            c.max_datagram = size;
            assert!(matches!(c.validate(), Err(ConfigError::MaxDatagram { .. })));
        }

        let mut c = config();
        c.log_retain_bytes = 0;
        assert_eq!(c.validate(), Err(ConfigError::LogRetain));

        for interval in [Duration::ZERO, MAX_SYNC_INTERVAL + Duration::from_millis(1)] {
            let mut c = config();
            c.sync_interval = interval;
            assert_eq!(c.validate(), Err(ConfigError::SyncInterval));
        }

        let file = tempfile::NamedTempFile::new().unwrap();
        let mut c = config();
        c.data_dir = file.path().to_owned();
        assert!(matches!(c.validate(), Err(ConfigError::DataDirNotADir(_))));
    }
}
