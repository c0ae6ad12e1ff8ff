//! The cases of the store tests, shared by the property test (`main.rs`) and the
//! `store_apply` fuzz target (which includes this file by path): the state store (redb,
//! on the simulated file system) applying arbitrary batches of
//! committed entries, held to the in-memory model of `myraft_node::state_machine`.
//!
//! Entries carry commands built from arbitrary fields (puts, deletes, compactions, no-ops,
//! from a few clients whose sequence numbers go forward, repeat or go back, at times that
//! may expire sessions), arbitrary payload bytes, Raft no-ops and configurations; some
//! batches skip an index or repeat applied ones; a batch may be synced or not, and between
//! batches the store may be reopened or the power cut. Checked: no panic; a batch is
//! applied, answering what the model answers, or refused whole (only for a gap in the
//! indexes) and the store then reopens to the state before it; after each batch the
//! store's counters and reads are the model's; a reopened store holds what it held, and
//! after a power cut (the process dies at its next write), the state after its last synced
//! batch or after one of the batches since, never a mix.

use arbitrary::Arbitrary;
use myraft_node::state_machine::{
    ApplyResult, ClientCommand, Command, Config, LogCommand, StateMachine,
};
use myraft_node::storage::{Fault, SimFs, Vfs};
use myraft_node::store::{AppliedKind, Store, StoreConfig, StoreError};
use myraft_wire::raft::{Entry, EntryPayload, Membership};
use std::collections::BTreeSet;
use std::path::Path;

#[path = "../../../wire/tests/common/num.rs"]
mod num;
pub use num::Num;

const PATH: &str = "/node/state.redb";
const SESSION_TIMEOUT_MS: u64 = 1_000;

#[derive(Arbitrary, Debug, Clone)]
pub enum CmdSpec {
    Put { key: KeySpec, value: Vec<u8> },
    Delete { key: KeySpec },
    Compact { revision: Num },
    Noop,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum KeySpec {
    /// One of a few keys, so that keys get many versions.
    Few(u8),
    Any(Vec<u8>),
}

impl KeySpec {
    fn key(self) -> Vec<u8> {
        match self {
            KeySpec::Few(k) => vec![b'k', k % 5],
            KeySpec::Any(k) => k,
        }
    }
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Seq {
    Next,
    Same,
    Back(u8),
    Any(u64),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum EntrySpec {
    Command {
        /// Milliseconds since the previous command's stamp; may expire sessions.
        after_ms: u16,
        client: u8,
        seq: Seq,
        cmd: CmdSpec,
    },
    Bytes(Vec<u8>),
    Noop,
    Config,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum IndexSpec {
    Next,
    /// Skips ahead: the store must refuse the batch.
    Gap(u8),
    /// Goes back over applied entries: the store skips them.
    Back(u8),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Between {
    Nothing,
    Reopen,
    PowerCut,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Batch {
    pub entries: Vec<(IndexSpec, EntrySpec)>,
    pub durable: bool,
    pub then: Between,
}

/// Where the writer stands: time, and each client's last sequence number.
struct Writer {
    time_ms: u64,
    seqs: [u64; 4],
}

impl Writer {
    fn entry(&mut self, index: u64, spec: EntrySpec) -> Entry {
        let payload = match spec {
            EntrySpec::Command {
                after_ms,
                client,
                seq,
                cmd,
            } => {
                self.time_ms += u64::from(after_ms);
                // Client 0 is the cluster's own (no session).
                let client = usize::from(client % 4);
                let last = &mut self.seqs[client];
                let seq = match seq {
                    Seq::Next => {
                        *last += 1;
                        *last
                    }
                    Seq::Same => *last,
                    Seq::Back(n) => last.saturating_sub(u64::from(n)),
                    Seq::Any(s) => s,
                };
                let cmd = match cmd {
                    CmdSpec::Put { key, value } => Command::Put {
                        key: key.key(),
                        value,
                    },
                    CmdSpec::Delete { key } => Command::Delete { key: key.key() },
                    CmdSpec::Compact { revision } => Command::Compact {
                        revision: revision.get(32),
                    },
                    CmdSpec::Noop => Command::Noop,
                };
                let c = LogCommand {
                    entry_time_ms: self.time_ms,
                    req: ClientCommand {
                        client_id: client as u64,
                        seq,
                        cmd,
                    },
                };
                EntryPayload::Command(c.encode())
            }
            EntrySpec::Bytes(b) => EntryPayload::Command(b),
            EntrySpec::Noop => EntryPayload::Noop,
            EntrySpec::Config => EntryPayload::Config(Membership::default()),
        };
        Entry {
            term: 1 + index / 8,
            index,
            payload,
        }
    }
}

fn cfg() -> StoreConfig {
    StoreConfig {
        cache_bytes: 1 << 20,
        session_timeout_ms: SESSION_TIMEOUT_MS,
    }
}

fn open(fs: &SimFs) -> Store {
    Store::open(fs, Path::new(PATH), &cfg()).unwrap_or_else(|e| panic!("store does not open: {e}"))
}

/// The model after `entries`, as the store applies them (skipping those at or below the
/// applied index), and the replies to the commands.
fn model_apply(model: &mut StateMachine, entries: &[Entry]) -> Vec<ApplyResult> {
    let mut replies = Vec::new();
    for e in entries {
        if e.index <= model.applied_index() {
            continue;
        }
        match &e.payload {
            EntryPayload::Command(bytes) => replies.push(model.apply_entry(e.index, bytes)),
            _ => model
                .skip(e.index)
                .unwrap_or_else(|err| panic!("model refuses index {}: {err}", e.index)),
        }
    }
    replies
}

/// The store answers as the model does: counters, and every read of every key written.
fn same(store: &Store, model: &StateMachine, keys: &BTreeSet<Vec<u8>>, every_revision: bool) {
    let r = store.reader().expect("reader");
    let m = r.meta();
    assert_eq!(m.applied_index, model.applied_index());
    assert_eq!(m.kv.revision, model.revision());
    assert_eq!(m.kv.compacted_before, model.compacted_before());
    assert_eq!(m.clock_ms, model.clock_ms());
    let stats = model.stats();
    assert_eq!(m.kv.live_keys, stats.live_keys as u64);
    assert_eq!(m.kv.versions, stats.versions as u64);
    assert_eq!(store.sessions(), stats.sessions);
    let (revs, idx, latest) = r.count_rows().expect("counts");
    assert_eq!(
        (revs, idx, latest),
        (m.kv.versions, m.kv.versions, m.kv.live_keys)
    );
    for key in keys {
        let revisions: Vec<Option<u64>> = if every_revision {
            (0..=model.revision() + 1).map(Some).chain([None]).collect()
        } else {
            vec![None, Some(model.compacted_before()), Some(model.revision())]
        };
        for at in revisions {
            assert_eq!(
                r.get(key, at).expect("store reads"),
                model.get(key, at),
                "{key:?} at {at:?}"
            );
        }
        assert_eq!(r.history(key).expect("store reads"), model.history(key));
    }
}

/// Applies the batches, checking the store against the model; panics on a violation.
pub fn run(batches: Vec<Batch>) {
    let fs = SimFs::new(7);
    fs.create_dir_all(Path::new(PATH).parent().expect("has a parent"))
        .expect("SimFs makes dirs");
    let mut store = open(&fs);
    let new_model = || {
        StateMachine::new(Config {
            session_timeout_ms: SESSION_TIMEOUT_MS,
        })
    };
    let mut model = new_model();
    // The model after the last synced batch and after each batch since: what a power cut
    // may leave.
    let mut since_sync = vec![new_model()];
    let mut keys = BTreeSet::new();
    let mut w = Writer {
        time_ms: 0,
        seqs: [0; 4],
    };
    for batch in batches.into_iter().take(32) {
        let mut entries = Vec::new();
        let mut next = model.applied_index() + 1;
        for (index, spec) in batch.entries.into_iter().take(64) {
            let index = match index {
                IndexSpec::Next => next,
                IndexSpec::Gap(n) => next + 1 + u64::from(n % 4),
                IndexSpec::Back(n) => next.saturating_sub(1 + u64::from(n % 4)).max(1),
            };
            let e = w.entry(index, spec);
            if let EntryPayload::Command(bytes) = &e.payload {
                if let Ok(c) = LogCommand::decode(bytes) {
                    match c.req.cmd {
                        Command::Put { key, .. } | Command::Delete { key } => {
                            keys.insert(key);
                        }
                        _ => {}
                    }
                }
            }
            next = next.max(index + 1);
            entries.push(e);
        }

        let mut after = model.clone();
        let want = model_apply(&mut after, &entries);
        // The model has no gaps to refuse: a batch is refused exactly when an entry above
        // the applied index does not follow the one before it.
        let mut applied = model.applied_index();
        let mut gap = None;
        for e in &entries {
            if e.index <= applied {
                continue;
            }
            if e.index != applied + 1 {
                gap = Some((applied, e.index));
                break;
            }
            applied = e.index;
        }
        match store.apply(&entries, batch.durable) {
            Ok(done) => {
                assert_eq!(gap, None, "a batch with a gap was applied");
                let got: Vec<ApplyResult> = done
                    .into_iter()
                    .filter_map(|a| match a.what {
                        AppliedKind::Command(r) => Some(r),
                        _ => None,
                    })
                    .collect();
                assert_eq!(got, want);
                model = after;
                if batch.durable {
                    since_sync.clear();
                }
                since_sync.push(model.clone());
            }
            Err(StoreError::Gap { applied, got }) => {
                assert_eq!(gap, Some((applied, got)));
                // The store refuses writes after a failure; a restart reads back the
                // state before the batch.
                assert!(matches!(store.apply(&[], false), Err(StoreError::Failed)));
                drop(store);
                store = open(&fs);
            }
            Err(e) => panic!("store refused a batch: {e}"),
        }
        same(&store, &model, &keys, false);
        match batch.then {
            Between::Nothing => {}
            Between::Reopen => {
                drop(store);
                store = open(&fs);
                same(&store, &model, &keys, false);
            }
            Between::PowerCut => {
                fs.arm(1, Fault::Crash);
                drop(store);
                fs.power_cut();
                store = open(&fs);
                let at = store.meta().applied_index;
                model = since_sync
                    .iter()
                    .find(|m| m.applied_index() == at)
                    .unwrap_or_else(|| {
                        panic!("after a power cut the store is at {at}, not after a batch")
                    })
                    .clone();
                since_sync = vec![model.clone()];
                same(&store, &model, &keys, false);
            }
        }
    }
    same(&store, &model, &keys, true);
    drop(store);
    let store = open(&fs);
    same(&store, &model, &keys, true);
}
