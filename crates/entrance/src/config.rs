//! What one entrance process is told at start-up.

use myraft_wire::ClusterKey;
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::start`] needs. The binary fills it from its flags; tests build it
/// with [`Config::new`] and shorten the timings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind, `host:port`; port 0 picks a free one (see [`crate::Entrance::local_addr`]).
    pub listen: String,
    /// Holds the persistent state, the lock file and (in the binary) the log.
    pub data_dir: PathBuf,
    pub key: ClusterKey,
    /// Approve every join at once instead of waiting for an operator.
    pub auto_approve: bool,
    /// Mean time between two probes of every member; each round is jittered by ±20 %.
    pub probe_interval: Duration,
    /// A member that has not answered for this long is `down`.
    pub down_after: Duration,
    /// Take a member out of the configuration once it has been down this long, if the
    /// leader does not hear it either and the voters the leader hears remain a quorum of the
    /// configuration without it. `None` (the default) never removes anyone.
    pub auto_remove_after: Option<Duration>,
    /// How long to wait for a node's reply to one request the entrance sends on its own
    /// (add member, remove, stop) before it retries or gives up.
    pub request_timeout: Duration,
    /// How long a forwarded client request waits for the leader's reply before the entrance
    /// forgets where to relay it.
    pub relay_timeout: Duration,
}

/// A [`Config`] the entrance cannot run with; the message names the flag to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Probes would never stop coming.
    #[error("--probe-interval-ms must be at least 1")]
    ProbeInterval,
    /// Healthy members would be called down between two probes.
    #[error(
        "--down-after-ms ({down_after:?}) must exceed --probe-interval-ms ({probe_interval:?}), \
         or healthy nodes would be reported down between two probes"
    )]
    DownAfter {
        /// The silence that makes a member down.
        down_after: Duration,
        /// The time between probes.
        probe_interval: Duration,
    },
    /// The entrance would give up on a node before it could answer.
    #[error("the request timeout must be at least 1 ms")]
    RequestTimeout,
    /// The data dir names something that is not a directory.
    #[error(
        "--data-dir {} is not a directory; name a directory (it is created if missing)",
        .0.display()
    )]
    DataDirNotADir(PathBuf),
}

impl Config {
    /// Refuses settings the entrance cannot run with. The binary only parses flags;
    /// [`crate::Entrance::start`] checks here, so an entrance started in-process gets the same
    /// checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.probe_interval.is_zero() {
            return Err(ConfigError::ProbeInterval);
        }
        if self.down_after <= self.probe_interval {
            return Err(ConfigError::DownAfter {
                down_after: self.down_after,
                probe_interval: self.probe_interval,
            });
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::RequestTimeout);
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(ConfigError::DataDirNotADir(self.data_dir.clone()));
        }
        Ok(())
    }

    /// `--probe-interval-ms`.
    pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
    /// `--down-after-ms`.
    pub const DEFAULT_DOWN_AFTER: Duration = Duration::from_millis(1500);

    /// Defaults of the command line, with the lab default key.
    pub fn new(listen: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: listen.into(),
            data_dir: data_dir.into(),
            key: ClusterKey::lab_default(),
            auto_approve: false,
            probe_interval: Self::DEFAULT_PROBE_INTERVAL,
            down_after: Self::DEFAULT_DOWN_AFTER,
            auto_remove_after: None,
            request_timeout: Duration::from_secs(2),
            relay_timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_each_rule_refuses() {
        let config = || Config::new("127.0.0.1:0", "/nonexistent");
        assert_eq!(config().validate(), Ok(()));
        let mut c = config();
        c.probe_interval = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::ProbeInterval));
        let mut c = config();
        c.down_after = c.probe_interval;
        assert!(matches!(c.validate(), Err(ConfigError::DownAfter { .. })));
        let mut c = config();
        c.request_timeout = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::RequestTimeout));
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut c = config();
        c.data_dir = file.path().to_owned();
        assert!(matches!(c.validate(), Err(ConfigError::DataDirNotADir(_))));
    }
}
