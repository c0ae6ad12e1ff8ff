//! The engine without a socket: each test feeds inputs at chosen times and asserts the
//! effects, in order.
#![allow(clippy::unwrap_used)]

use super::admission::{check_join, JoinCheck};
use super::*;
use myraft_wire::admission::{JoinDecision, JoinRequest, JoinResponse};
use myraft_wire::api::{ClientOp, ClientRequest, StopTarget};
use myraft_wire::health::{NodeStats, ProbeReply, Role};
use myraft_wire::raft::Membership;
use rand::SeedableRng;
use std::time::Duration;

const PROBE: Duration = Duration::from_millis(100);
const DOWN_AFTER: Duration = Duration::from_millis(1_000);
const CLIENT: SocketAddr = addr(9000);

const fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port)
}

fn node_addr(n: u16) -> String {
    format!("127.0.0.1:{}", 7000 + n)
}

/// An engine, and the time its inputs come at.
struct Rig {
    engine: Engine,
    t0: Instant,
    now: Duration,
}

impl Rig {
    fn new(auto_approve: bool) -> Rig {
        let mut config = Config::new("127.0.0.1:6000", "/nonexistent");
        config.auto_approve = auto_approve;
        config.probe_interval = PROBE;
        config.down_after = DOWN_AFTER;
        let t0 = Instant::now();
        let now = Now {
            at: t0,
            unix_ms: 1_000_000,
        };
        let rng = StdRng::seed_from_u64(7);
        let engine = Engine::new(config, PersistedState::fresh(), addr(6000), rng, now);
        Rig {
            engine,
            t0,
            now: Duration::ZERO,
        }
    }

    fn at(&self) -> Now {
        Now {
            at: self.t0 + self.now,
            unix_ms: 1_000_000 + u64::try_from(self.now.as_millis()).unwrap(),
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        let now = self.at();
        self.engine.handle(now, input)
    }

    fn datagram(&mut self, from: u64, src: SocketAddr, body: Body) -> Vec<Effect> {
        self.input(Input::Datagram { from, src, body })
    }

    fn join(&mut self, n: u16) -> Vec<Effect> {
        let request = JoinRequest {
            name: format!("n{n}"),
            addr: node_addr(n),
            node_id: Some(u64::from(n)),
        };
        self.datagram(u64::from(n), addr(8000 + n), Body::JoinRequest(request))
    }

    fn client(&mut self, seq: u64, op: ClientOp) -> Vec<Effect> {
        let request = ClientRequest {
            client_id: 42,
            seq,
            op,
        };
        self.datagram(42, CLIENT, Body::ClientRequest(request))
    }

    /// n1 founds the cluster (approved by an operator).
    fn founded() -> Rig {
        let mut rig = Rig::new(false);
        rig.join(1);
        rig.client(1, ClientOp::Approve { name: "n1".into() });
        rig
    }

    /// The nonce of the probe a tick sends to `to`.
    fn probe_nonce(&mut self, to: &str) -> u64 {
        let effects = self.input(Input::Tick);
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Send {
                    to: SendTo::Addr(a),
                    body: Body::Probe(p),
                } if a == to => Some(p.nonce),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no probe to {to} in {effects:?}"))
    }

    fn probe_reply(&mut self, n: u16, nonce: u64, role: Role, term: u64) -> Vec<Effect> {
        let id = u64::from(n);
        let reply = ProbeReply {
            nonce,
            id,
            name: format!("n{n}"),
            role,
            voted_for: None,
            stats: NodeStats {
                term,
                ..NodeStats::default()
            },
            membership: Membership {
                members: self.engine.state().members.clone(),
            },
            since_heard_ms: Default::default(),
        };
        self.datagram(id, addr(8000 + n), Body::ProbeReply(reply))
    }
}

fn sends_to(effects: &[Effect], to: &SendTo) -> Vec<Body> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to: t, body } if t == to => Some(body.clone()),
            _ => None,
        })
        .collect()
}

fn join_decision(effects: &[Effect], n: u16) -> Option<JoinDecision> {
    sends_to(effects, &SendTo::Socket(addr(8000 + n)))
        .into_iter()
        .find_map(|b| match b {
            Body::JoinResponse(JoinResponse { decision, .. }) => Some(decision),
            _ => None,
        })
}

fn client_result(effects: &[Effect]) -> Option<ClientResult> {
    sends_to(effects, &SendTo::Socket(CLIENT))
        .into_iter()
        .find_map(|b| match b {
            Body::ClientReply(r) => Some(r.result),
            _ => None,
        })
}

fn persisted(effects: &[Effect]) -> Option<&PersistedState> {
    effects.iter().find_map(|e| match e {
        Effect::Persist(s) => Some(&**s),
        _ => None,
    })
}

fn health_events(effects: &[Effect]) -> Vec<Health> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Event(EntranceEvent::Health { health, .. }) => Some(*health),
            _ => None,
        })
        .collect()
}

// ---- admission --------------------------------------------------------------------------

#[test]
fn a_new_join_is_saved_before_it_is_told_to_wait() {
    let mut rig = Rig::new(false);
    let effects = rig.join(1);
    assert!(
        matches!(effects.first(), Some(Effect::Persist(s)) if s.pending.len() == 1),
        "the pending join is saved first: {effects:?}"
    );
    assert_eq!(
        join_decision(&effects, 1),
        Some(JoinDecision::Pending { waiting_ms: 0 })
    );
    rig.advance(Duration::from_millis(1_500));
    let again = rig.join(1);
    assert!(
        persisted(&again).is_none(),
        "nothing new to save: {again:?}"
    );
    assert_eq!(
        join_decision(&again, 1),
        Some(JoinDecision::Pending { waiting_ms: 1_500 })
    );
}

#[test]
fn the_first_approved_join_founds_the_cluster_and_hears_so_at_once() {
    let mut rig = Rig::new(false);
    rig.join(1);
    let effects = rig.client(1, ClientOp::Approve { name: "n1".into() });
    let saved = persisted(&effects).expect("the new member is saved");
    assert_eq!(saved.members.len(), 1);
    assert!(saved.members[&1].voter, "the founder is a voter");
    assert!(matches!(
        join_decision(&effects, 1),
        Some(JoinDecision::Accepted { node_id: 1, .. })
    ));
    assert_eq!(client_result(&effects), Some(Ok(ClientResponse::Done)));
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Start(_))),
        "founding needs no leader: {effects:?}"
    );
}

#[test]
fn a_later_join_goes_through_the_leader_one_change_at_a_time() {
    let mut rig = Rig::founded();
    rig.join(2);
    rig.join(3);
    let effects = rig.client(2, ClientOp::Approve { name: "n2".into() });
    assert!(effects.contains(&Effect::Start(Task::Add {
        name: "n2".into(),
        node_id: 2,
        addr: node_addr(2),
    })));
    let effects = rig.client(3, ClientOp::Approve { name: "n3".into() });
    assert!(
        !effects.iter().any(|e| matches!(e, Effect::Start(_))),
        "n3 waits for n2's change: {effects:?}"
    );
    let effects = rig.input(Input::Completed(Completion::Added {
        name: "n2".into(),
        node_id: 2,
        result: Ok(()),
    }));
    let saved = persisted(&effects).expect("n2 is saved as a member");
    assert!(!saved.members[&2].voter, "a new member starts as a learner");
    assert!(matches!(
        join_decision(&effects, 2),
        Some(JoinDecision::Accepted { node_id: 2, .. })
    ));
    assert!(
        effects.contains(&Effect::Start(Task::Add {
            name: "n3".into(),
            node_id: 3,
            addr: node_addr(3),
        })),
        "then n3's change starts: {effects:?}"
    );
}

#[test]
fn a_rejected_join_hears_its_rejection_again() {
    let mut rig = Rig::founded();
    rig.join(2);
    let effects = rig.client(2, ClientOp::Reject { name: "n2".into() });
    assert!(matches!(
        join_decision(&effects, 2),
        Some(JoinDecision::Rejected { .. })
    ));
    let again = rig.join(2);
    assert!(matches!(
        join_decision(&again, 2),
        Some(JoinDecision::Rejected { reason }) if reason.contains("operator rejected")
    ));
}

#[test]
fn check_join_refuses_taken_names_and_addresses_and_bad_ones() {
    let rig = Rig::founded();
    let state = rig.engine.state();
    let request = |name: &str, port: u16, node_id: Option<u64>| JoinRequest {
        name: name.into(),
        addr: format!("127.0.0.1:{port}"),
        node_id,
    };
    assert_eq!(
        check_join(state, &request("n1", 7001, Some(1))),
        JoinCheck::Member(1)
    );
    assert!(matches!(
        check_join(state, &request("n1", 7009, Some(9))),
        JoinCheck::Refuse(r) if r.contains("taken")
    ));
    assert!(matches!(
        check_join(state, &request("n9", 7001, None)),
        JoinCheck::Refuse(r) if r.contains("already used")
    ));
    assert!(matches!(
        check_join(state, &request("bad name", 7009, None)),
        JoinCheck::Refuse(_)
    ));
    assert!(matches!(
        check_join(state, &request("n9", 0, None)),
        JoinCheck::Refuse(r) if r.contains("HOST:PORT")
    ));
    assert_eq!(
        check_join(state, &request("n9", 7009, None)),
        JoinCheck::New
    );
}

// ---- the failure detector ---------------------------------------------------------------

#[test]
fn a_member_that_stops_answering_goes_suspect_then_down() {
    let mut rig = Rig::founded();
    let nonce = rig.probe_nonce(&node_addr(1));
    let effects = rig.probe_reply(1, nonce, Role::Leader, 1);
    assert_eq!(health_events(&effects), [Health::Up]);
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::Event(EntranceEvent::Leader { leader: Some(p), term: 1 }) if p.id == 1
    )));
    rig.advance(PROBE * 2);
    assert_eq!(health_events(&rig.input(Input::Tick)), [] as [Health; 0]);
    rig.advance(Duration::from_millis(10));
    assert_eq!(health_events(&rig.input(Input::Tick)), [Health::Suspect]);
    rig.advance(DOWN_AFTER);
    let effects = rig.input(Input::Tick);
    assert_eq!(health_events(&effects), [Health::Down]);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Event(EntranceEvent::Leader { leader: None, .. }))),
        "a leader that is down leads no more: {effects:?}"
    );
}

#[test]
fn replies_to_unknown_probes_or_about_other_nodes_are_dropped_and_counted() {
    let mut rig = Rig::founded();
    let nonce = rig.probe_nonce(&node_addr(1));
    let effects = rig.probe_reply(1, nonce ^ 1, Role::Follower, 1);
    assert_eq!(effects, [Effect::Dropped("stale_probe_reply")]);
    let effects = rig.probe_reply(5, nonce, Role::Follower, 1);
    assert_eq!(effects, [Effect::Dropped("not_a_member")]);
}

// ---- the router ---------------------------------------------------------------------------

#[test]
fn a_put_is_relayed_to_the_leader_and_its_reply_back() {
    let mut rig = Rig::founded();
    let nonce = rig.probe_nonce(&node_addr(1));
    rig.probe_reply(1, nonce, Role::Leader, 1);
    let put = ClientOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let effects = rig.client(7, put);
    let relayed = sends_to(&effects, &SendTo::Addr(node_addr(1)));
    assert!(
        matches!(relayed.as_slice(), [Body::ClientRequest(r)] if r.seq == 7),
        "{effects:?}"
    );
    let reply = ClientReply {
        client_id: 42,
        seq: 7,
        result: Ok(ClientResponse::Done),
    };
    let effects = rig.datagram(1, addr(8001), Body::ClientReply(reply.clone()));
    assert_eq!(
        effects,
        [Effect::Send {
            to: SendTo::Socket(CLIENT),
            body: Body::ClientReply(reply.clone()),
        }]
    );
    let effects = rig.datagram(1, addr(8001), Body::ClientReply(reply));
    assert_eq!(effects, [Effect::Dropped("unexpected_reply")], "once only");
}

#[test]
fn without_a_leader_that_answers_a_put_hears_no_leader_at_once() {
    let mut rig = Rig::founded();
    let put = ClientOp::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
    };
    let effects = rig.client(7, put);
    assert_eq!(
        client_result(&effects),
        Some(Err(ClientError::NotLeader { hint: None }))
    );
}

#[test]
fn stop_all_is_one_task_answered_once_and_then_the_entrance_stops() {
    let mut rig = Rig::founded();
    let stop = ClientOp::StopNode {
        target: StopTarget::All,
    };
    let effects = rig.client(9, stop.clone());
    assert!(
        matches!(
            effects.as_slice(),
            [Effect::Start(Task::StopAll { key: (42, 9), .. })]
        ),
        "{effects:?}"
    );
    assert!(rig.client(9, stop).is_empty(), "a retry starts nothing new");
    let effects = rig.input(Input::Completed(Completion::StoppedAll {
        key: (42, 9),
        result: Ok(ClientResponse::Done),
    }));
    assert_eq!(client_result(&effects), Some(Ok(ClientResponse::Done)));
    assert_eq!(effects.last(), Some(&Effect::Stop));
}
