//! How a node is set up: flags, timing and limits.

use crate::storage::DiskOptions;
use myraft_wire::codec::DEFAULT_PAYLOAD_BUDGET;
use myraft_wire::key::ClusterKey;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
/// leader's loop fsyncs between heartbeats, so a disk that stalls one fsync for longer than
/// 250 ms can cost an election; a million puts from 64 clients see none on this project's
/// machines (README, "Failover"). Slower disks want `--election-timeout-ms` raised.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub tick: Duration,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
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

    pub fn advertised(&self, bound: SocketAddr) -> String {
        self.advertise.clone().unwrap_or_else(|| bound.to_string())
    }
}

/// The system's wall clock in µs; 0 if it reads before the epoch.
pub fn system_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
