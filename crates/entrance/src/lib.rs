//! `myraft-entrance`: the cluster's front door. It admits nodes (with an operator's
//! approval), watches their health by probing, and answers or routes client requests.
//! It decides *who may* join; Raft decides *when* they are members. Everything it knows
//! besides the cluster id it can rebuild from the nodes.
//!
//! A datagram flows through the modules in this order:
//!
//! - [`net`]: the one UDP socket; decode, authenticate, replay filter, drop counters; the
//!   correlation of replies to the entrance's own requests.
//! - `driver`: the task that owns the socket, the clock and the data dir, feeds each
//!   datagram, tick and task outcome to the engine, and carries out what it returns.
//! - [`engine`]: the rules, without I/O (the way the Raft core is), in three parts:
//!   - [`engine::admission`]: `JoinRequest`s, approve/reject, and the queue of
//!     configuration changes (one at a time);
//!   - [`engine::detector`]: probes, health, leader and term, the configuration as the
//!     leader sees it, and optional removal of long-dead members;
//!   - [`engine::router`]: client requests answered here, and those relayed to the leader.
//! - `ops`: tasks that talk to nodes on the entrance's behalf (add, remove, stop).
//! - [`store`]: the data dir: cluster id, members, pending joins, last leader; lock file.
//!
//! [`config`] holds the start-up settings; [`Entrance`] is a running entrance.

pub mod config;
mod driver;
pub mod engine;
pub mod net;
mod ops;
pub mod store;

pub use config::Config;
pub use engine::EntranceEvent;

use driver::Driver;
use engine::{Engine, Now};
use myraft_wire::admission::ClusterId;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use store::{PersistedState, Store, StoreError};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

/// How many decoded datagrams may wait for the server loop; beyond that they are dropped
/// (counted as `overloaded`) rather than letting a flood grow memory without bound.
const INBOUND_QUEUE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}; is another process using it?")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running entrance.
pub struct Entrance {
    net: Arc<net::Net>,
    events: broadcast::Sender<EntranceEvent>,
    tracker: TaskTracker,
    data_dir: PathBuf,
}

impl Entrance {
    /// Locks the data dir, loads (or creates) the cluster state, binds the socket and starts
    /// serving. Cancelling `shutdown` stops every task; [`Entrance::wait`] waits for that.
    pub async fn start(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<Entrance, StartError> {
        config.validate()?;
        let store = Store::open(&config.data_dir)?;
        let state = match store.load()? {
            Some(state) => {
                info!(
                    cluster = format_args!("{:016x}", state.cluster_id),
                    members = state.members.len(),
                    pending = state.pending.len(),
                    "loaded the entrance state"
                );
                state
            }
            None => {
                let state = PersistedState::fresh();
                // The cluster id must be on disk before any node hears it.
                store.save(&state)?;
                info!(
                    cluster = format_args!("{:016x}", state.cluster_id),
                    "new cluster"
                );
                state
            }
        };
        if config.key.is_lab_default() {
            tracing::warn!("{}", myraft_wire::ClusterKey::UNAUTHENTICATED);
        }
        let tracker = TaskTracker::new();
        let net = net::Net::bind(
            &config.listen,
            config.key.clone(),
            state.cluster_id,
            tracker.clone(),
        )
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        info!(addr = %net.local_addr(), "listening");

        let (events, _) = broadcast::channel(1024);
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (leader_tx, _) = watch::channel(None);
        let data_dir = config.data_dir.clone();
        let request_timeout = config.request_timeout;
        let engine = Engine::new(
            config,
            state,
            net.local_addr(),
            rand::rngs::StdRng::from_rng(&mut rand::rng()),
            Now::system(),
        );
        let driver = Driver {
            engine,
            net: Arc::clone(&net),
            store: Arc::new(store),
            events: events.clone(),
            leader_tx,
            completions: done_tx,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            request_timeout,
        };
        tracker.spawn(Arc::clone(&net).recv_loop(inbound_tx, shutdown.clone()));
        tracker.spawn(driver.serve(inbound_rx, done_rx));
        Ok(Entrance {
            net,
            events,
            tracker,
            data_dir,
        })
    }

    /// The bound address (useful after listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.net.local_addr()
    }

    pub fn cluster_id(&self) -> ClusterId {
        self.net.cluster_id()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Changes of health and leadership from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EntranceEvent> {
        self.events.subscribe()
    }

    /// Datagrams dropped so far, by reason ([`myraft_wire::DecodeError::reason`], `replayed`,
    /// `too_old`, `overloaded`, `unexpected`, …).
    pub fn drop_counts(&self) -> BTreeMap<String, u64> {
        self.net.drop_counts()
    }

    /// Waits until every task has ended, after the shutdown token was cancelled (by the
    /// caller, or by `stop --all`). The data dir is unlocked when this returns.
    pub async fn wait(self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Runs an entrance until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    Entrance::start(config, shutdown).await?.wait().await;
    Ok(())
}
