//! Startup: lock the data dir, bind, open the log, join the cluster if the data dir is new,
//! recover the core and the state machine, and hand over to the event loop.

use super::*;

/// Runs a node until `shutdown` is cancelled (Ctrl-C, SIGTERM, a `StopNode` request or a
/// test), then flushes and returns.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    let lock = lock_data_dir(&cfg)?;
    let socket = crate::server::transport::UdpSocket::bind(cfg.listen).map_err(|source| {
        ServerError::Bind {
            addr: cfg.listen,
            source,
        }
    })?;
    serve(cfg, Box::new(socket), shutdown, lock).await
}

/// [`run`] on a socket the caller bound, such as one of a simulated network; `cfg.listen`
/// is not used.
pub async fn run_with_socket(
    cfg: NodeConfig,
    socket: impl Socket,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let lock = lock_data_dir(&cfg)?;
    serve(cfg, Box::new(socket), shutdown, lock).await
}

/// Taken before the socket is bound, so that a second process on the same data dir is told
/// about the data dir, not about the port.
pub(super) fn lock_data_dir(cfg: &NodeConfig) -> Result<DataDirLock, ServerError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ServerError::io("create", &cfg.data_dir, e))?;
    Ok(DataDirLock::acquire(&cfg.data_dir)?)
}

async fn serve(
    cfg: NodeConfig,
    socket: Box<dyn Socket>,
    shutdown: CancellationToken,
    _lock: DataDirLock,
) -> Result<(), ServerError> {
    let bound = socket
        .local_addr()
        .map_err(|e| ServerError::io("inspect", Path::new("socket"), e))?;
    let advertise = cfg.advertised(bound);
    let raft_dir = cfg.data_dir.join("raft");
    let (mut storage, report) = DiskStorage::open(&raft_dir, cfg.disk.clone())?;
    if report.truncated_bytes > 0 {
        tracing::warn!(?report.truncated_at, bytes = report.truncated_bytes, "cut a torn record from the log tail (a crash during a write)");
    }

    let mut rng = match cfg.rng_seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_rng(&mut rand::rng()),
    };
    let (identity, t) = match Identity::load(&cfg.data_dir)? {
        Some(id) => {
            tracing::info!(node_id = %format!("{:x}", id.node_id), "restarting from {}", cfg.data_dir.display());
            let t = Transport::open(socket, &cfg, id.cluster_id, id.node_id)?;
            (id, t)
        }
        None => {
            let node_id = loop {
                let id: u64 = rng.random();
                if id != 0 {
                    break id;
                }
            };
            let mut t = Transport::open(socket, &cfg, UNKNOWN_CLUSTER, node_id)?;
            let Some(admitted) = join(
                &mut t,
                &cfg.entrances,
                &cfg.name,
                &advertise,
                node_id,
                &shutdown,
            )
            .await?
            else {
                return Ok(());
            };
            let id = Identity {
                cluster_id: admitted.cluster_id,
                node_id: admitted.node_id,
                name: cfg.name.clone(),
            };
            let founding = admitted.membership.members.len() == 1
                && admitted.membership.is_voter(admitted.node_id);
            if founding && storage.last_index() == 0 {
                let init = InitialState::bootstrap(admitted.membership.clone());
                storage.append(&init.entries)?;
                storage.save_hard_state(&init.hard_state)?;
                storage.sync()?;
                tracing::info!("founded a new cluster {:x}", admitted.cluster_id);
            }
            id.store(&cfg.data_dir)?;
            t.cluster_id = id.cluster_id;
            t.me = id.node_id;
            tracing::info!(
                "admitted as {:x} to cluster {:x}",
                id.node_id,
                id.cluster_id
            );
            (id, t)
        }
    };

    let (init, sm) = recover(&storage)?;
    // The state machine starts from the snapshot, so the configuration applied so far is
    // the snapshot's; the log after it is applied again.
    let applied_membership = init
        .snapshot
        .as_ref()
        .map(|s| s.meta.membership.clone())
        .unwrap_or_default();
    let mut rc = RaftConfig::new(identity.node_id);
    rc.election_ticks = cfg.timing.election_ticks;
    rc.heartbeat_ticks = cfg.timing.heartbeat_ticks;
    // Leave room for the envelope, tag and message framing.
    rc.max_msg_bytes = cfg.max_datagram.saturating_sub(300).max(256);
    let raft = Raft::new(rc, init, StdRng::seed_from_u64(rng.random()));
    let mut seen = BTreeMap::new();
    remember_addrs(&mut seen, raft.membership());

    let mut node = Node {
        snaps: SnapshotTransfers::new(cfg.max_datagram),
        advertise,
        raft,
        storage,
        sm,
        t,
        seen,
        pending_writes: BTreeMap::new(),
        pending_reads: BTreeMap::new(),
        ready_reads: BTreeMap::new(),
        next_ctx: 1,
        started: Instant::now(),
        was_leader: false,
        data_dir_bytes: 0,
        ticks: 0,
        clock: ReplicatedClock::default(),
        applied_membership,
        removed_notices: Vec::new(),
        shutdown: shutdown.clone(),
        cfg,
    };
    node.data_dir_bytes = dir_size(&node.cfg.data_dir);
    tracing::info!(name = %node.cfg.name, listen = %bound, advertise = %node.advertise, "node running");
    node.event_loop().await
}

/// What the core and the state machine start from: the snapshot, and the log after it.
pub(in crate::server) fn recover(
    storage: &DiskStorage,
) -> Result<(InitialState, StateMachine), ServerError> {
    let snapshot = storage.snapshot()?;
    let sm = match &snapshot {
        Some(s) => StateMachine::restore(&s.data).map_err(|e| {
            ServerError::Recovery(format!("snapshot at index {}: {e}", s.meta.last_index))
        })?,
        None => StateMachine::default(),
    };
    let entries = storage.entries(storage.first_index(), storage.last_index() + 1)?;
    let init = InitialState {
        hard_state: storage.hard_state(),
        snapshot,
        entries,
    };
    Ok((init, sm))
}

pub(super) fn remember_addrs(seen: &mut BTreeMap<NodeId, SocketAddr>, m: &Membership) {
    for mem in m.members.values() {
        if let Ok(a) = mem.addr.parse() {
            seen.insert(mem.id, a);
        }
    }
}

pub(super) fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
