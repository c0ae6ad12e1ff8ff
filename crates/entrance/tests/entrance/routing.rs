//! Client requests: docs/protocol.md "Client requests".

use crate::support::{
    client, cluster_with_leader, cluster_with_leader_using, fast_config, second_member_joins,
    FakeNode, TestEntrance, PATIENCE,
};
use myraft_entrance::EntranceEvent;
use myraft_wire::admission::JoinDecision;
use myraft_wire::api::{ClientError, ClientOp, ClientResponse, PutResult, StopTarget};
use myraft_wire::health::{Health, PeerRef, Role};
use myraft_wire::raft::Member;

#[tokio::test]
async fn status_node_detail_and_pending_show_what_the_probes_said() {
    let mut entrance = TestEntrance::start(false).await;
    let mut n1 = FakeNode::start("n1", 0x11, entrance.cluster_id).await;
    n1.lead_alone(3);
    n1.update(|s| {
        s.commit_index = 17;
        s.applied_index = 16;
    });
    assert!(matches!(
        n1.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));
    let mut admin = client(entrance.addr).await;
    admin
        .request(ClientOp::Approve { name: "n1".into() })
        .await
        .unwrap();
    n1.wait_accepted().await;
    let mut n9 = FakeNode::start("n9", 0x99, entrance.cluster_id).await;
    assert!(matches!(
        n9.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));
    // Health is judged before leadership from the same reply.
    entrance.wait_health("n1", Health::Up).await;
    entrance.wait_leader("n1").await;

    let Ok(ClientResponse::PendingJoins(pending)) = admin.request(ClientOp::PendingJoins).await
    else {
        panic!("no pending list");
    };
    let pending: Vec<(String, String)> = pending.into_iter().map(|p| (p.name, p.addr)).collect();
    assert_eq!(pending, [("n9".to_owned(), n9.addr.to_string())]);

    let Ok(ClientResponse::Status(status)) = admin.request(ClientOp::Status).await else {
        panic!("no status");
    };
    assert_eq!(status.cluster_id, entrance.cluster_id);
    assert_eq!(
        status.leader,
        Some(PeerRef {
            id: 0x11,
            name: "n1".into()
        })
    );
    assert_eq!(status.term, 3);
    assert_eq!(status.entrance, Some(entrance.addr.to_string()));
    assert_eq!(
        status
            .pending
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["n9"]
    );
    let n1_status = &status.members[0];
    assert_eq!(
        (
            n1_status.name.as_str(),
            n1_status.role,
            n1_status.voter,
            n1_status.term,
            n1_status.commit_index,
            n1_status.applied_index
        ),
        ("n1", Role::Leader, true, 3, 17, 16)
    );
    assert!(n1_status.last_contact_ms.is_some());

    let Ok(ClientResponse::NodeDetail(detail)) = admin
        .request(ClientOp::NodeDetail { name: "n1".into() })
        .await
    else {
        panic!("no node detail");
    };
    assert_eq!(detail.id, 0x11);
    assert_eq!(detail.addr, n1.addr.to_string());
    assert_eq!(detail.health, Health::Up);
    assert_eq!(
        (detail.stats.log_bytes, detail.stats.data_dir_bytes),
        (4096, 8192)
    );
    assert_eq!(
        (detail.stats.store.store_bytes, detail.stats.store.revision),
        (16384, 7)
    );
    assert_eq!(
        (detail.stats.uptime_ms, detail.stats.dropped_datagrams),
        (1234, 5)
    );
    assert_eq!(detail.voted_for.map(|p| p.name), Some("n1".to_owned()));
}

#[tokio::test]
async fn node_detail_of_an_unknown_name_is_not_found() {
    let (entrance, _n1) = cluster_with_leader().await;
    let mut admin = client(entrance.addr).await;
    assert_eq!(
        admin
            .request(ClientOp::NodeDetail {
                name: "ghost".into()
            })
            .await,
        Err(ClientError::NotFound {
            what: "node ghost".into()
        })
    );
}

#[tokio::test]
async fn put_is_forwarded_to_the_leader_and_the_reply_relayed() {
    let (entrance, mut n1) = cluster_with_leader().await;
    let mut client = client(entrance.addr).await;
    let put = ClientOp::Put {
        key: b"alpha".to_vec(),
        value: b"one".to_vec(),
    };
    assert_eq!(
        client.request(put.clone()).await,
        Ok(ClientResponse::Put(PutResult { revision: 42 }))
    );
    let forwarded = n1.next_request().await;
    assert_eq!(forwarded.op, put);
    assert_eq!(
        forwarded.client_id, client.id,
        "the client's session, not the entrance's"
    );
}

#[tokio::test]
async fn requests_without_a_known_leader_get_not_leader() {
    let entrance = TestEntrance::start(false).await;
    let mut client = client(entrance.addr).await;
    assert_eq!(
        client
            .request(ClientOp::Get {
                key: b"alpha".to_vec(),
                rev: None,
                consistency: Default::default(),
            })
            .await,
        Err(ClientError::NotLeader { hint: None })
    );
}

#[tokio::test]
async fn stop_node_is_forwarded_and_confirmed() {
    let (entrance, mut n1) = cluster_with_leader().await;
    let mut admin = client(entrance.addr).await;
    let stop = ClientOp::StopNode {
        target: StopTarget::Node { name: "n1".into() },
    };
    assert_eq!(admin.request(stop.clone()).await, Ok(ClientResponse::Done));
    assert_eq!(n1.next_request().await.op, stop);
    assert!(matches!(
        admin
            .request(ClientOp::StopNode {
                target: StopTarget::Node {
                    name: "ghost".into()
                }
            })
            .await,
        Err(ClientError::NotFound { .. })
    ));
}

/// Puts `node` into the leader's configuration, as a committed AddMember would.
fn add_to_configuration(leader: &FakeNode, node: &FakeNode, voter: bool) {
    let member = Member {
        id: node.id(),
        name: node.name(),
        addr: node.addr.to_string(),
        voter,
    };
    leader.update(|s| {
        s.membership.members.insert(member.id, member);
    });
}

#[tokio::test]
async fn stop_all_stops_followers_then_the_leader_then_the_entrance() {
    let (mut entrance, mut n1) = cluster_with_leader().await;
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    add_to_configuration(&n1, &n2, true);
    entrance.wait_health("n2", Health::Up).await;

    let mut admin = client(entrance.addr).await;
    assert_eq!(
        admin
            .request(ClientOp::StopNode {
                target: StopTarget::All
            })
            .await,
        Ok(ClientResponse::Done)
    );
    let stop_of = |name: &str| ClientOp::StopNode {
        target: StopTarget::Node { name: name.into() },
    };
    let (follower_at, follower_stop) = n2.next_request_at().await;
    let (leader_at, leader_stop) = n1.next_request_at().await;
    assert_eq!(follower_stop.op, stop_of("n2"));
    assert_eq!(leader_stop.op, stop_of("n1"));
    assert!(follower_at < leader_at, "followers stop before the leader");
    let stopped = entrance.entrance.take().unwrap();
    tokio::time::timeout(PATIENCE, stopped.wait())
        .await
        .expect("the entrance stops after stop --all");
}

#[tokio::test]
async fn remove_node_goes_through_the_leader_then_stops_the_node() {
    let (mut entrance, mut n1) = cluster_with_leader().await;
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    add_to_configuration(&n1, &n2, true);
    entrance.wait_health("n2", Health::Up).await;

    let mut admin = client(entrance.addr).await;
    assert_eq!(
        admin
            .request(ClientOp::RemoveNode { name: "n2".into() })
            .await,
        Ok(ClientResponse::Done)
    );
    assert_eq!(
        n1.next_request().await.op,
        ClientOp::RemoveNode { name: "n2".into() }
    );
    assert_eq!(
        n2.next_request().await.op,
        ClientOp::StopNode {
            // Exactly the member removed, by id: not a node of that name that joins later.
            target: StopTarget::Member {
                name: "n2".into(),
                id: 0x22
            }
        }
    );
    let Ok(ClientResponse::Status(status)) = admin.request(ClientOp::Status).await else {
        panic!("no status");
    };
    let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["n1"]);
}

#[tokio::test]
async fn remove_retried_after_its_change_committed_still_stops_the_node() {
    let (mut entrance, mut n1) = cluster_with_leader().await;
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    add_to_configuration(&n1, &n2, true);
    entrance.wait_health("n2", Health::Up).await;

    // The leader removes n2 but its "done" is lost; the retry finds n2 no longer a member.
    n1.update(|s| s.lose_replies = 1);
    let mut admin = client(entrance.addr).await;
    assert_eq!(
        admin
            .request(ClientOp::RemoveNode { name: "n2".into() })
            .await,
        Ok(ClientResponse::Done)
    );
    for _ in 0..2 {
        assert_eq!(
            n1.next_request().await.op,
            ClientOp::RemoveNode { name: "n2".into() }
        );
    }
    assert_eq!(
        n2.next_request().await.op,
        ClientOp::StopNode {
            // Exactly the member removed, by id: not a node of that name that joins later.
            target: StopTarget::Member {
                name: "n2".into(),
                id: 0x22
            }
        }
    );
}

#[tokio::test]
async fn a_leader_that_misses_its_probes_is_not_forwarded_to() {
    let (mut entrance, n1) = cluster_with_leader_using(|dir| fast_config(dir, true)).await;
    n1.update(|s| s.answer_probes = false);
    entrance.wait_health("n1", Health::Suspect).await;
    let mut client = client(entrance.addr).await;
    let put = ClientOp::Put {
        key: b"alpha".to_vec(),
        value: b"one".to_vec(),
    };
    assert_eq!(
        client.request(put).await,
        Err(ClientError::NotLeader { hint: None }),
        "no leader yet, said at once rather than forwarded into silence"
    );
}

#[tokio::test]
async fn a_member_in_a_later_term_means_no_leader_until_one_claims_it() {
    let (mut entrance, mut n1) = cluster_with_leader().await;
    let n2 = second_member_joins(&entrance, &mut n1).await;

    // n2 started an election: it tells the entrance of its new term.
    n2.update(|s| {
        s.role = Role::Candidate;
        s.term = 2;
    });
    n2.announce(entrance.addr).await;
    entrance
        .wait_event(|e| match e {
            EntranceEvent::Leader { leader: None, term } if *term == 2 => Some(()),
            _ => None,
        })
        .await;
    let mut client = client(entrance.addr).await;
    let get = ClientOp::Get {
        key: b"alpha".to_vec(),
        rev: None,
        consistency: Default::default(),
    };
    assert_eq!(
        client.request(get).await,
        Err(ClientError::NotLeader { hint: None })
    );

    // Its victory makes it the leader at once.
    n2.update(|s| s.role = Role::Leader);
    n2.announce(entrance.addr).await;
    entrance.wait_leader("n2").await;
}
