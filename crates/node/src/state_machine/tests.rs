//! Tests of the whole state machine: exactly-once sessions, determinism, snapshots, and a
//! model test of the versioned map against the plainest possible implementation.

use super::*;
use proptest::prelude::*;

const MINUTE: u64 = 60 * 1000;

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn req(client_id: u64, seq: u64, cmd: Command) -> ClientCommand {
    ClientCommand {
        client_id,
        seq,
        cmd,
    }
}

/// Applies entries at consecutive log indexes, all stamped with the same time.
struct Log {
    model: StateMachine,
    index: u64,
}

impl Log {
    fn new() -> Self {
        Self {
            model: StateMachine::default(),
            index: 0,
        }
    }

    fn apply(&mut self, time_ms: u64, r: ClientCommand) -> ApplyResult {
        self.index += 1;
        self.model.apply(self.index, time_ms, &r)
    }

    fn ok(&mut self, time_ms: u64, r: ClientCommand) -> Reply {
        self.apply(time_ms, r).expect("applies")
    }
}

// ---- exactly-once (dissertation §6.3) ----

#[test]
fn a_retry_gets_the_original_reply_and_is_applied_once() {
    let mut log = Log::new();
    assert_eq!(
        log.apply(0, req(1, 1, put("k", "a"))),
        Ok(Reply::Put { revision: 1 })
    );
    assert_eq!(
        log.apply(0, req(2, 1, put("x", "b"))),
        Ok(Reply::Put { revision: 2 })
    );
    // The reply to client 1 was lost; it sends the same request again.
    assert_eq!(
        log.apply(0, req(1, 1, put("k", "a"))),
        Ok(Reply::Put { revision: 1 })
    );
    assert_eq!(log.model.revision(), 2);
    assert_eq!(log.model.history(b"k").versions.len(), 1);

    assert_eq!(
        log.apply(0, req(1, 2, Command::Delete { key: b"k".to_vec() })),
        Ok(Reply::Delete {
            revision: 3,
            deleted: true
        })
    );
    // A retried delete must not report "nothing deleted" just because the first try did.
    assert_eq!(
        log.apply(0, req(1, 2, Command::Delete { key: b"k".to_vec() })),
        Ok(Reply::Delete {
            revision: 3,
            deleted: true
        })
    );
    assert_eq!(log.model.revision(), 3);
}

#[test]
fn a_failed_command_is_answered_the_same_on_retry() {
    let mut log = Log::new();
    let compact = req(1, 1, Command::Compact { revision: 1 });
    let refused = Err(ApplyError::Kv(KvError::FutureRevision {
        requested: 1,
        current: 0,
    }));
    assert_eq!(log.apply(0, compact.clone()), refused);
    log.ok(0, req(2, 1, put("k", "a")));
    // Compacting at 1 would succeed now, but the retry is the same request: same answer.
    assert_eq!(log.apply(0, compact), refused);
    assert_eq!(log.model.compacted_before(), 0);
}

#[test]
fn an_older_request_than_the_last_is_refused() {
    let mut log = Log::new();
    log.ok(0, req(1, 1, put("k", "a")));
    log.ok(0, req(1, 2, put("k", "b")));
    assert_eq!(
        log.apply(0, req(1, 1, put("k", "a"))),
        Err(ApplyError::StaleSequence {
            client_id: 1,
            seq: 1,
            last_seq: 2
        })
    );
    assert_eq!(log.model.revision(), 2);
}

#[test]
fn sessions_expire_by_the_time_in_the_log() {
    let mut log = Log::new();
    let t0 = 1_000 * MINUTE;
    log.ok(t0, req(1, 1, put("k", "a")));
    log.ok(t0 + 5 * MINUTE, req(2, 1, Command::Noop));
    // Exactly the timeout after its last request, client 1 is still known.
    assert_eq!(
        log.apply(t0 + 10 * MINUTE, req(1, 1, put("k", "a"))),
        Ok(Reply::Put { revision: 1 })
    );
    assert_eq!(log.model.stats().sessions, 2);
    // That retry counted as activity; one past the timeout after it, the session is gone.
    log.ok(t0 + 20 * MINUTE + 1, req(3, 1, Command::Noop));
    assert_eq!(log.model.stats().sessions, 1, "clients 1 and 2 expired");
    assert_eq!(
        log.apply(t0 + 20 * MINUTE + 1, req(1, 2, put("k", "b"))),
        Err(ApplyError::SessionExpired { client_id: 1 })
    );
    assert_eq!(
        log.model.revision(),
        1,
        "an expired client's request is not applied"
    );
}

#[test]
fn the_session_clock_never_runs_backwards() {
    let mut log = Log::new();
    log.ok(100 * MINUTE, req(1, 1, Command::Noop));
    log.ok(111 * MINUTE, req(2, 1, Command::Noop));
    // A new leader whose clock lags stamps an earlier time; client 1 stays expired.
    assert_eq!(
        log.apply(100 * MINUTE, req(1, 2, Command::Noop)),
        Err(ApplyError::SessionExpired { client_id: 1 })
    );
}

#[test]
fn the_session_timeout_is_configurable_and_survives_snapshots() {
    let mut model = StateMachine::new(Config {
        session_timeout_ms: 1000,
    });
    model
        .apply(1, 0, &req(1, 1, Command::Noop))
        .expect("applies");
    let mut restored = StateMachine::restore(&model.snapshot()).expect("restores");
    assert_eq!(
        restored.apply(2, 1001, &req(1, 2, Command::Noop)),
        Err(ApplyError::SessionExpired { client_id: 1 })
    );
}

#[test]
fn entries_must_arrive_in_log_order() {
    let mut model = StateMachine::default();
    model
        .apply(5, 0, &req(1, 1, put("k", "a")))
        .expect("applies");
    let before = model.snapshot();
    assert_eq!(
        model.apply(5, 0, &req(1, 2, put("k", "b"))),
        Err(ApplyError::AlreadyApplied {
            index: 5,
            applied_index: 5
        })
    );
    assert_eq!(
        model.skip(3),
        Err(ApplyError::AlreadyApplied {
            index: 3,
            applied_index: 5
        })
    );
    assert_eq!(model.snapshot(), before, "a refused entry changes nothing");
    model.skip(6).expect("a no-op entry advances the index");
    assert_eq!(model.applied_index(), 6);
}

#[test]
fn encoded_entries_apply_and_bad_ones_are_refused_deterministically() {
    let mut model = StateMachine::default();
    let entry = LogCommand {
        entry_time_ms: 7,
        req: req(1, 1, put("k", "v")),
    };
    assert_eq!(
        model.apply_entry(1, &entry.encode()),
        Ok(Reply::Put { revision: 1 })
    );
    let bad = model.apply_entry(2, b"\xc1 not msgpack");
    assert!(
        matches!(bad, Err(ApplyError::BadEntry { index: 2, .. })),
        "{bad:?}"
    );
    assert_eq!(model.applied_index(), 2);
    assert_eq!(model.revision(), 1);
}

#[test]
fn stats_report_sizes() {
    let mut log = Log::new();
    log.ok(0, req(1, 1, put("a", "1")));
    log.ok(0, req(1, 2, put("a", "2")));
    log.ok(0, req(2, 1, put("b", "1")));
    log.ok(0, req(2, 2, Command::Delete { key: b"b".to_vec() }));
    assert_eq!(
        log.model.stats(),
        Stats {
            applied_index: 4,
            revision: 4,
            compacted_before: 0,
            live_keys: 1,
            tracked_keys: 2,
            versions: 4,
            sessions: 2,
        }
    );
}

// ---- snapshots ----

/// A state with every kind of content: values, tombstones, compaction, sessions with cached
/// successes and failures, binary keys.
fn busy_state_machine() -> StateMachine {
    let mut log = Log::new();
    let mut t = 5 * MINUTE;
    for i in 0..40u64 {
        t += 1000;
        let key = vec![(i % 7) as u8, 0xff];
        let cmd = match i % 5 {
            0..=2 => Command::Put {
                key,
                value: i.to_be_bytes().to_vec(),
            },
            3 => Command::Delete { key },
            _ => Command::Compact { revision: i / 2 },
        };
        let _ = log.apply(t, req(i % 4, i / 4 + 1, cmd));
    }
    log.model
}

#[test]
fn snapshot_restore_round_trips() {
    let model = busy_state_machine();
    assert!(model.compacted_before() > 0 && model.stats().versions > model.stats().live_keys);
    let bytes = model.snapshot();
    let restored = StateMachine::restore(&bytes).expect("restores");
    assert_eq!(restored, model);
    assert_eq!(restored.snapshot(), bytes);
}

#[test]
fn an_empty_state_machine_round_trips() {
    let model = StateMachine::default();
    assert_eq!(
        StateMachine::restore(&model.snapshot()).expect("restores"),
        model
    );
}

#[test]
fn restore_refuses_truncated_extended_and_foreign_bytes() {
    let bytes = busy_state_machine().snapshot();
    for len in 0..bytes.len() {
        assert!(
            StateMachine::restore(&bytes[..len]).is_err(),
            "restored from {len} of {} bytes",
            bytes.len()
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        StateMachine::restore(&longer),
        Err(SnapshotError::TrailingBytes { extra: 1 })
    ));
    let future = rmp_serde::to_vec(&(2u32, "a layout from a later version")).expect("encodes");
    let err = StateMachine::restore(&future).expect_err("refused");
    assert!(
        matches!(err, SnapshotError::UnsupportedFormat { found: 2 }),
        "{err:?}"
    );
    assert!(err.to_string().contains("same MyRaft version"), "{err}");
}

#[test]
fn restore_refuses_a_state_no_commands_could_produce() {
    // The snapshot layout written out by hand: [format, [applied_index, clock_ms,
    // session_timeout_ms, [revision, compacted_before, {key: [versions]}], [{sessions}]]].
    let snapshot = |revision: u64, compacted_before: u64, versions: Vec<KeyVersion>| {
        let keys =
            std::collections::BTreeMap::from([(serde_bytes::ByteBuf::from(*b"k"), versions)]);
        let no_sessions = std::collections::BTreeMap::<u64, ()>::new();
        rmp_serde::to_vec(&(
            SNAPSHOT_FORMAT,
            (
                1u64,
                0u64,
                DEFAULT_SESSION_TIMEOUT_MS,
                (revision, compacted_before, keys),
                (no_sessions,),
            ),
        ))
        .expect("encodes")
    };
    let v = |revision, create_revision, version, value: Option<&str>| KeyVersion {
        revision,
        create_revision,
        version,
        value: value.map(|s| s.as_bytes().to_vec()),
    };
    let good = snapshot(2, 0, vec![v(1, 1, 1, Some("a")), v(2, 1, 2, Some("b"))]);
    let restored = StateMachine::restore(&good).expect("the hand-written layout is right");
    assert_eq!(restored.stats().versions, 2);

    for (what, bad) in [
        (
            "version above the revision",
            snapshot(1, 0, vec![v(1, 1, 1, Some("a")), v(2, 1, 2, Some("b"))]),
        ),
        (
            "compaction point above the revision",
            snapshot(2, 3, vec![v(1, 1, 1, Some("a"))]),
        ),
        (
            "revisions out of order",
            snapshot(2, 0, vec![v(2, 2, 1, Some("a")), v(1, 2, 2, Some("b"))]),
        ),
        (
            "version count skips",
            snapshot(2, 0, vec![v(1, 1, 1, Some("a")), v(2, 1, 3, Some("b"))]),
        ),
        (
            "starts with a tombstone",
            snapshot(2, 0, vec![v(1, 0, 0, None), v(2, 2, 1, Some("b"))]),
        ),
        ("key with no versions", snapshot(2, 0, vec![])),
    ] {
        let err = StateMachine::restore(&bad).expect_err(what);
        assert!(
            matches!(err, SnapshotError::Inconsistent(_)),
            "{what}: {err:?}"
        );
    }
}

proptest! {
    #[test]
    fn restore_of_random_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = StateMachine::restore(&bytes);
    }

    #[test]
    fn restore_of_a_corrupted_snapshot_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
    ) {
        let mut bytes = busy_state_machine().snapshot();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(model) = StateMachine::restore(&bytes) {
            // Whatever passes the checks must behave: it snapshots and reads without panicking.
            let again = StateMachine::restore(&model.snapshot());
            prop_assert!(again.is_ok());
            let _ = model.get(&[0, 0xff], None);
        }
    }
}

// ---- determinism ----

#[derive(Clone, Debug)]
pub(crate) enum Step {
    /// A new request from one of a few clients.
    New { client: u64, cmd: Command },
    /// That client's last request again, as after a lost reply.
    Retry { client: u64 },
    /// A request older than that client's last.
    Old { client: u64 },
}

fn command() -> impl Strategy<Value = Command> {
    let key = prop::collection::vec(0u8..4, 1..3);
    prop_oneof![
        4 => (key.clone(), prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(key, value)| Command::Put { key, value }),
        2 => key.prop_map(|key| Command::Delete { key }),
        1 => (0u64..40).prop_map(|revision| Command::Compact { revision }),
        1 => Just(Command::Noop),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u64..4, command()).prop_map(|(client, cmd)| Step::New { client, cmd }),
        2 => (0u64..4).prop_map(|client| Step::Retry { client }),
        1 => (0u64..4).prop_map(|client| Step::Old { client }),
    ]
}

/// Turns steps into log entries: (time, request). Time moves in jumps that sometimes exceed
/// the session timeout and sometimes go backwards.
pub(crate) fn entries(steps: &[(Step, i64)]) -> Vec<(u64, ClientCommand)> {
    let mut last: std::collections::BTreeMap<u64, ClientCommand> = Default::default();
    let mut time: u64 = 60 * MINUTE;
    let mut out = Vec::new();
    for (step, dt) in steps {
        time = time.saturating_add_signed(*dt);
        let r = match step {
            Step::New { client, cmd } => {
                let seq = last.get(client).map_or(1, |r| r.seq + 1);
                req(*client, seq, cmd.clone())
            }
            Step::Retry { client } => match last.get(client) {
                Some(r) => r.clone(),
                None => continue,
            },
            Step::Old { client } => match last.get(client) {
                Some(r) if r.seq > 1 => req(*client, r.seq - 1, Command::Noop),
                _ => continue,
            },
        };
        last.insert(r.client_id, r.clone());
        out.push((time, r));
    }
    out
}

pub(crate) fn steps() -> impl Strategy<Value = Vec<(Step, i64)>> {
    let dt = prop_oneof![
        8 => 0i64..2000,
        1 => (11 * MINUTE) as i64..(12 * MINUTE) as i64,
        1 => -(MINUTE as i64)..0,
    ];
    prop::collection::vec((step(), dt), 0..80)
}

proptest! {
    #[test]
    fn replicas_applying_the_same_log_agree_to_the_byte(
        steps in steps(),
        cut in any::<prop::sample::Index>(),
    ) {
        let entries = entries(&steps);
        let mut a = StateMachine::default();
        let mut b = StateMachine::default();
        // A third replica catches up from a snapshot of the first part of the log.
        let cut = cut.index(entries.len() + 1);
        let mut c = StateMachine::default();
        for (i, (time, r)) in entries.iter().enumerate() {
            let index = i as u64 + 1;
            let reply_a = a.apply(index, *time, r);
            let reply_b = b.apply(index, *time, r);
            prop_assert_eq!(&reply_a, &reply_b);
            if i == cut {
                c = StateMachine::restore(&a.snapshot()).expect("restores");
            } else if i > cut {
                prop_assert_eq!(c.apply(index, *time, r), reply_a);
            }
        }
        if cut == entries.len() {
            c = StateMachine::restore(&a.snapshot()).expect("restores");
        }
        prop_assert_eq!(a.snapshot(), b.snapshot());
        prop_assert_eq!(a.snapshot(), c.snapshot());
        prop_assert_eq!(&c, &a);
    }
}

// ---- the versioned map against a model ----

/// The plainest correct store: every write ever made, in revision order. Nothing is ever
/// dropped; compaction only moves the point below which reads are refused.
#[derive(Default)]
struct Model {
    /// Write number i has revision i + 1; `None` is a delete.
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    compacted_before: u64,
}

type Read = Option<(Vec<u8>, u64, u64, u64)>;

impl Model {
    fn revision(&self) -> u64 {
        self.writes.len() as u64
    }

    fn get(&self, key: &[u8], at: Option<u64>) -> Result<Read, KvError> {
        let at = at.unwrap_or(self.revision());
        if at > self.revision() {
            return Err(KvError::FutureRevision {
                requested: at,
                current: self.revision(),
            });
        }
        if at < self.compacted_before {
            return Err(KvError::Compacted {
                compacted_before: self.compacted_before,
            });
        }
        let mut state: Read = None;
        for (i, (k, v)) in self.writes.iter().take(at as usize).enumerate() {
            if k != key {
                continue;
            }
            let rev = i as u64 + 1;
            state = v.as_ref().map(|v| match state {
                Some((_, _, create, version)) => (v.clone(), rev, create, version + 1),
                None => (v.clone(), rev, rev, 1),
            });
        }
        Ok(state)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> u64 {
        self.writes.push((key.to_vec(), Some(value.to_vec())));
        self.revision()
    }

    fn delete(&mut self, key: &[u8]) -> (u64, bool) {
        if matches!(self.get(key, None), Ok(Some(_))) {
            self.writes.push((key.to_vec(), None));
            (self.revision(), true)
        } else {
            (self.revision(), false)
        }
    }

    fn compact(&mut self, rev: u64) -> Result<(), KvError> {
        if rev > self.revision() {
            return Err(KvError::FutureRevision {
                requested: rev,
                current: self.revision(),
            });
        }
        if rev < self.compacted_before {
            return Err(KvError::Compacted {
                compacted_before: self.compacted_before,
            });
        }
        self.compacted_before = rev;
        Ok(())
    }

    /// What compaction is specified to keep: every write above the point, and the one at or
    /// below it that a read at the point sees, if that is a value.
    fn history(&self, key: &[u8]) -> Vec<(u64, Option<Vec<u8>>)> {
        let all: Vec<(u64, Option<Vec<u8>>)> = (1..)
            .zip(&self.writes)
            .filter(|(_, (k, _))| k == key)
            .map(|(rev, (_, v))| (rev, v.clone()))
            .collect();
        let below = all
            .iter()
            .rfind(|(rev, _)| *rev <= self.compacted_before)
            .filter(|(_, v)| v.is_some());
        below
            .into_iter()
            .chain(all.iter().filter(|(rev, _)| *rev > self.compacted_before))
            .cloned()
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    /// A revision from 0 to one past the current, as a fraction of that range.
    Compact(prop::sample::Index),
    Get(u8, Option<prop::sample::Index>),
}

const KEYS: u8 = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..KEYS, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (0..KEYS).prop_map(Op::Delete),
        1 => any::<prop::sample::Index>().prop_map(Op::Compact),
        4 => (0..KEYS, any::<Option<prop::sample::Index>>()).prop_map(|(k, at)| Op::Get(k, at)),
    ]
}

fn as_read(r: Result<Option<KeyValue>, KvError>) -> Result<Read, KvError> {
    r.map(|kv| kv.map(|kv| (kv.value, kv.mod_revision, kv.create_revision, kv.version)))
}

proptest! {
    #[test]
    fn the_versioned_map_matches_a_list_of_all_writes(ops in prop::collection::vec(op(), 0..120)) {
        let mut log = Log::new();
        let mut model = Model::default();
        for op in ops {
            // Range of revisions worth asking about: every one, plus one in the future.
            let pick = |at: prop::sample::Index| at.index(model.revision() as usize + 2) as u64;
            match op {
                Op::Put(k, v) => {
                    let got = log.apply(0, req(1, log.index + 1, Command::Put { key: vec![k], value: vec![v] }));
                    prop_assert_eq!(got, Ok(Reply::Put { revision: model.put(&[k], &[v]) }));
                }
                Op::Delete(k) => {
                    let got = log.apply(0, req(1, log.index + 1, Command::Delete { key: vec![k] }));
                    let (revision, deleted) = model.delete(&[k]);
                    prop_assert_eq!(got, Ok(Reply::Delete { revision, deleted }));
                }
                Op::Compact(at) => {
                    let rev = pick(at);
                    let got = log.apply(0, req(1, log.index + 1, Command::Compact { revision: rev }));
                    let want = model
                        .compact(rev)
                        .map(|()| Reply::Compact { compacted_before: rev })
                        .map_err(ApplyError::from);
                    prop_assert_eq!(got, want);
                }
                Op::Get(k, at) => {
                    let at = at.map(pick);
                    prop_assert_eq!(as_read(log.model.get(&[k], at)), model.get(&[k], at));
                }
            }
            prop_assert_eq!(log.model.revision(), model.revision());
            prop_assert_eq!(log.model.compacted_before(), model.compacted_before);
        }

        // Every retained read agrees, at every revision, and history keeps exactly what
        // compaction promises.
        let mut versions = 0;
        for k in 0..KEYS {
            for at in 0..=model.revision() + 1 {
                prop_assert_eq!(as_read(log.model.get(&[k], Some(at))), model.get(&[k], Some(at)));
            }
            let h = log.model.history(&[k]);
            let got: Vec<_> = h.versions.iter().map(|v| (v.revision, v.value.clone())).collect();
            prop_assert_eq!(got, model.history(&[k]));
            prop_assert_eq!(h.compacted_before, model.compacted_before);
            versions += h.versions.len();
        }
        let stats = log.model.stats();
        prop_assert_eq!(stats.versions, versions);
        let live = (0..KEYS).filter(|k| matches!(model.get(&[*k], None), Ok(Some(_)))).count();
        prop_assert_eq!(stats.live_keys, live);

        prop_assert_eq!(StateMachine::restore(&log.model.snapshot()).expect("restores"), log.model);
    }
}
