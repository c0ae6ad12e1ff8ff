//! Startup: lock the data dir, bind, open the log, join the cluster if the data dir is new,
//! open the state store, recover the core, and hand over to the event loop.

use super::*;
use crate::server::applier::ApplyCore;
use crate::store::{Store, StoreConfig, STORE_FILE};
use myraft_wire::raft::{Snapshot, SnapshotMeta};

/// Bytes of a datagram left for the envelope, its tag and the Raft message's own framing,
/// so that a message the core sizes to `max_datagram - ENVELOPE_ROOM` still fits.
const ENVELOPE_ROOM: usize = 300;
/// The smallest Raft message budget: an AppendEntries with one small entry.
const MIN_RAFT_MESSAGE: usize = 256;

/// Runs a node until `shutdown` is cancelled (Ctrl-C, SIGTERM, a `StopNode` request or a
/// test), then flushes and returns.
pub async fn run(cfg: NodeConfig, shutdown: CancellationToken) -> Result<(), ServerError> {
    cfg.validate()?;
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
    cfg.validate()?;
    let lock = lock_data_dir(&cfg)?;
    serve(cfg, Box::new(socket), shutdown, lock).await
}

/// Taken before the socket is bound, so that a second process on the same data dir is told
/// about the data dir, not about the port.
pub(super) fn lock_data_dir(cfg: &NodeConfig) -> Result<DataDirLock, ServerError> {
    std::fs::create_dir_all(&cfg.data_dir)
        .map_err(|e| ServerError::io("create", &cfg.data_dir, e))?;
    Ok(crate::storage::lock_data_dir(&cfg.data_dir)?)
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

    let store_cfg = StoreConfig {
        cache_bytes: cfg.cache_bytes,
        ..StoreConfig::default()
    };
    cfg.disk
        .vfs
        .create_dir_all(&cfg.data_dir)
        .map_err(|e| ServerError::io("create", &cfg.data_dir, e))?;
    let store = Store::open(&*cfg.disk.vfs, &cfg.data_dir.join(STORE_FILE), &store_cfg)?;
    let mut store = store;
    migrate_legacy_snapshot(&mut storage, &mut store, &cfg, &store_cfg)?;
    let init = recover(&mut storage, &store)?;
    let applied_membership = store.meta().membership.clone();
    let mut rc = RaftConfig::new(identity.node_id);
    rc.election_ticks = cfg.timing.election_ticks;
    rc.heartbeat_ticks = cfg.timing.heartbeat_ticks;
    rc.max_msg_bytes = cfg
        .max_datagram
        .saturating_sub(ENVELOPE_ROOM)
        .max(MIN_RAFT_MESSAGE);
    rc.validate()?;
    let raft = Raft::new(rc, init, StdRng::seed_from_u64(rng.random()));
    let mut seen = BTreeMap::new();
    remember_addrs(&mut seen, raft.membership());

    // A snapshot stream cut short by a stop is kept for a stream that continues it.
    let partial = crate::store::Import::resume_point(
        &*cfg.disk.vfs,
        &store.incoming_path(),
        store_cfg.cache_bytes,
    )?;
    if let Some(p) = &partial {
        tracing::info!(
            after_revision = p.after_revision,
            "a partial snapshot store is kept for a stream that continues it"
        );
    }
    let core = ApplyCore::new(store, cfg.disk.vfs.clone(), store_cfg, cfg.sync_interval);
    let store_state = core.state();
    let (events_tx, apply_events) = tokio::sync::mpsc::unbounded_channel();
    let applier = if cfg.single_threaded {
        Applier::inline(core, events_tx)
    } else {
        Applier::spawn(core, events_tx)
            .map_err(|e| ServerError::io("start the apply thread for", &cfg.data_dir, e))?
    };

    let syncer = if cfg.single_threaded {
        LogSyncer::inline()
    } else {
        LogSyncer::spawn()
            .map_err(|e| ServerError::io("start the log-sync thread for", &cfg.data_dir, e))?
    };

    let mut node = Node {
        syncer,
        snapshots: SnapshotTransfers::new(cfg.max_datagram, cfg.single_threaded, partial),
        advertise,
        raft,
        storage,
        applier,
        apply_events,
        store: store_state,
        transport: t,
        seen,
        pending_writes: PendingWrites::default(),
        pending_reads: BTreeMap::new(),
        deferred: VecDeque::new(),
        auto_compact_at: None,
        next_ctx: 1,
        started: Instant::now(),
        was_leader: false,
        told_term: 0,
        stop_by_tick: None,
        handed_over: false,
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

/// A data dir of an earlier MyRaft keeps the state in the log's snapshot file and has no
/// store: the snapshot becomes the store, once, before anything else reads either.
pub(in crate::server) fn migrate_legacy_snapshot(
    storage: &mut DiskStorage,
    store: &mut Store,
    cfg: &NodeConfig,
    store_cfg: &StoreConfig,
) -> Result<(), ServerError> {
    if store.meta().applied_index > 0 {
        return Ok(());
    }
    let Some(snap) = storage.snapshot()? else {
        return Ok(());
    };
    if snap.data.is_empty() {
        return Ok(());
    }
    let model = crate::state_machine::StateMachine::restore(&snap.data).map_err(|e| {
        ServerError::Recovery(format!(
            "the log's snapshot at index {} (from an earlier MyRaft) cannot be read: {e}",
            snap.meta.last_index
        ))
    })?;
    let bytes =
        crate::store::stream::model_stream(&model, snap.meta.last_term, snap.meta.membership);
    let incoming = store.incoming_path();
    let vfs = &*cfg.disk.vfs;
    let mut import = crate::store::Import::create(vfs, &incoming, store_cfg.cache_bytes)?;
    let stream_err = |e: crate::store::ImportError| {
        ServerError::Recovery(format!(
            "moving the log's snapshot into the state store: {e}"
        ))
    };
    import.feed(&bytes).map_err(stream_err)?;
    import.finish().map_err(stream_err)?;
    store.replace_with(vfs, &incoming, store_cfg)?;
    tracing::info!(
        index = snap.meta.last_index,
        keys = store.meta().kv.live_keys,
        "moved the state of an earlier MyRaft from the log's snapshot into the state store"
    );
    Ok(())
}

/// What the core starts from: the log, made to agree with the state store.
///
/// The store may be ahead of the log's snapshot (it always is, a little: the log is
/// compacted only below what the store synced) — the core then starts with the store's
/// applied index, and committed entries after it are applied again. It may also be ahead
/// of the whole log: a snapshot streamed from the leader was swapped in, and the node
/// stopped before the log heard of it. The log then takes the store's position as its
/// snapshot, as it would have (Raft §7). The store can never be behind the log's snapshot:
/// that would mean entries in neither.
pub(in crate::server) fn recover(
    storage: &mut DiskStorage,
    store: &Store,
) -> Result<InitialState, ServerError> {
    let m = store.meta();
    let snapshot_index = storage.snapshot_meta().map_or(0, |s| s.last_index);
    if m.applied_index < snapshot_index {
        return Err(ServerError::Recovery(format!(
            "the state store holds the log up to index {}, but the log starts after {}; \
             entries in between are lost (was {} replaced or written by an older MyRaft?). \
             Remove the data dir and let the node rejoin and catch up from its peers",
            m.applied_index,
            snapshot_index,
            store.path().display()
        )));
    }
    if m.applied_index > 0 && storage.term(m.applied_index) != Some(m.applied_term) {
        let snap = Snapshot {
            meta: SnapshotMeta {
                last_index: m.applied_index,
                last_term: m.applied_term,
                membership: m.membership.clone(),
            },
            data: Vec::new(),
        };
        tracing::info!(
            index = m.applied_index,
            "the state store was installed from a snapshot; the log follows it"
        );
        storage.save_snapshot(&snap)?;
        storage.compact_prefix(m.applied_index)?;
    }
    let snapshot = storage.snapshot()?;
    let entries = storage.entries(storage.first_index(), storage.last_index() + 1)?;
    Ok(InitialState {
        hard_state: storage.hard_state(),
        snapshot,
        entries,
        applied: m.applied_index,
    })
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
