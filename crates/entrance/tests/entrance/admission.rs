//! Joining: docs/protocol.md "Admission".

use crate::support::{client, cluster_with_leader, FakeNode, TestEntrance};
use myraft_wire::admission::JoinDecision;
use myraft_wire::api::{ClientError, ClientOp, ClientResponse};

fn rejection(decision: JoinDecision) -> String {
    match decision {
        JoinDecision::Rejected { reason } => reason,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn join_waits_for_approval_and_the_first_node_founds_the_cluster() {
    let entrance = TestEntrance::start(false).await;
    let mut n1 = FakeNode::start("n1", 0xa1, entrance.cluster_id).await;
    assert!(matches!(
        n1.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));
    assert!(matches!(
        n1.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));

    let mut admin = client(entrance.addr).await;
    assert_eq!(
        admin.request(ClientOp::Approve { name: "n1".into() }).await,
        Ok(ClientResponse::Done)
    );
    let (node_id, membership) = n1.wait_accepted().await;
    assert_eq!(
        node_id, 0xa1,
        "the id the node asked for is free, so it keeps it"
    );
    let founder = &membership.members[&0xa1];
    assert_eq!(
        (
            founder.name.as_str(),
            founder.voter,
            membership.members.len()
        ),
        ("n1", true, 1)
    );
    // A node that lost its Accepted and asks again hears the same.
    match n1.join(entrance.addr).await {
        JoinDecision::Accepted { node_id, .. } => assert_eq!(node_id, 0xa1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn auto_approve_accepts_at_once_and_replaces_a_zero_id() {
    let entrance = TestEntrance::start(true).await;
    let mut n1 = FakeNode::start("n1", 0xa1, entrance.cluster_id).await;
    n1.ask_to_join(entrance.addr, &n1.addr.to_string(), Some(0))
        .await;
    let (node_id, membership) = n1.wait_accepted().await;
    assert_ne!(node_id, 0);
    assert!(membership.members[&node_id].voter);
}

#[tokio::test]
async fn duplicate_name_is_refused_with_a_reason() {
    let entrance = TestEntrance::start(false).await;
    let mut first = FakeNode::start("n1", 0xa1, entrance.cluster_id).await;
    assert!(matches!(
        first.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));

    let mut second = FakeNode::start("n1", 0xb2, entrance.cluster_id).await;
    let reason = rejection(second.join(entrance.addr).await);
    assert!(reason.contains("name n1"), "{reason}");

    // Once n1 is a member, its name stays taken for any other node.
    let mut admin = client(entrance.addr).await;
    admin
        .request(ClientOp::Approve { name: "n1".into() })
        .await
        .unwrap();
    first.wait_accepted().await;
    let reason = rejection(second.join(entrance.addr).await);
    assert!(
        reason.contains("n1") && reason.contains("taken"),
        "{reason}"
    );
}

#[tokio::test]
async fn duplicate_address_is_refused_with_a_reason() {
    let entrance = TestEntrance::start(false).await;
    let mut n1 = FakeNode::start("n1", 0xa1, entrance.cluster_id).await;
    assert!(matches!(
        n1.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));

    let mut n2 = FakeNode::start("n2", 0xb2, entrance.cluster_id).await;
    n2.ask_to_join(entrance.addr, &n1.addr.to_string(), Some(0xb2))
        .await;
    let reason = rejection(n2.next_join_response().await.decision);
    assert!(
        reason.contains(&n1.addr.to_string()) && reason.contains("n1"),
        "{reason}"
    );
}

#[tokio::test]
async fn rejected_join_is_told_on_the_next_request() {
    let entrance = TestEntrance::start(false).await;
    let mut n1 = FakeNode::start("n1", 0xa1, entrance.cluster_id).await;
    assert!(matches!(
        n1.join(entrance.addr).await,
        JoinDecision::Pending { .. }
    ));

    let mut admin = client(entrance.addr).await;
    assert_eq!(
        admin.request(ClientOp::Reject { name: "n1".into() }).await,
        Ok(ClientResponse::Done)
    );
    let reason = rejection(n1.join(entrance.addr).await);
    assert!(reason.contains("rejected"), "{reason}");

    assert_eq!(
        admin
            .request(ClientOp::Reject {
                name: "ghost".into()
            })
            .await,
        Err(ClientError::NotFound {
            what: "pending join ghost".into()
        })
    );
    assert!(matches!(
        admin
            .request(ClientOp::Approve {
                name: "ghost".into()
            })
            .await,
        Err(ClientError::NotFound { .. })
    ));
}

#[tokio::test]
async fn later_join_is_added_through_the_leader_as_a_learner() {
    let (entrance, mut n1) = cluster_with_leader().await;
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    n2.ask_to_join(entrance.addr, &n2.addr.to_string(), Some(0x22))
        .await;

    let add = n1.next_request().await;
    assert_eq!(
        add.op,
        ClientOp::AddMember {
            id: 0x22,
            name: "n2".into(),
            addr: n2.addr.to_string()
        }
    );
    let (node_id, membership) = n2.wait_accepted().await;
    assert_eq!(node_id, 0x22);
    assert!(membership.members[&0x11].voter, "{membership:?}");
    assert!(
        !membership.members[&0x22].voter,
        "joins as a learner: {membership:?}"
    );
}

#[tokio::test]
async fn joins_added_back_to_back_keep_each_other_in_the_membership() {
    let (entrance, mut n1) = cluster_with_leader().await;
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    let mut n3 = FakeNode::start("n3", 0x33, entrance.cluster_id).await;
    n2.ask_to_join(entrance.addr, &n2.addr.to_string(), Some(0x22))
        .await;
    n3.ask_to_join(entrance.addr, &n3.addr.to_string(), Some(0x33))
        .await;
    // Both adds go through before n1's next probe reply, which would name n2.
    n1.next_request().await;
    n1.next_request().await;
    let (_, first) = n2.wait_accepted().await;
    let (_, second) = n3.wait_accepted().await;
    let ids = |m: &myraft_wire::raft::Membership| m.members.keys().copied().collect::<Vec<_>>();
    let (earlier, later) = match first.members.len() <= second.members.len() {
        true => (first, second),
        false => (second, first),
    };
    assert_eq!(ids(&earlier).len(), 2, "{earlier:?}");
    assert_eq!(ids(&later), [0x11, 0x22, 0x33], "{later:?}");
}

#[tokio::test]
async fn node_id_taken_by_a_member_is_replaced() {
    let (entrance, _n1) = cluster_with_leader().await;
    // Asks for n1's id (while sending from its own, so that n1's replay window is not
    // disturbed).
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    n2.ask_to_join(entrance.addr, &n2.addr.to_string(), Some(0x11))
        .await;
    let (node_id, membership) = n2.wait_accepted().await;
    assert_ne!(node_id, 0x11);
    assert_eq!(membership.members[&node_id].name, "n2");
}

#[tokio::test]
async fn restart_keeps_cluster_id_and_members_and_the_dir_is_locked() {
    let mut first = TestEntrance::start(true).await;
    let mut n1 = FakeNode::start("n1", 0xa1, first.cluster_id).await;
    assert!(matches!(
        n1.join(first.addr).await,
        JoinDecision::Accepted { .. }
    ));

    let config = crate::support::calm_config(first.dir.path(), true);
    let err = myraft_entrance::Entrance::start(config.clone(), Default::default())
        .await
        .err()
        .expect("a second entrance on the same dir must refuse");
    assert!(err.to_string().contains("in use"), "{err}");

    first.stop().await;
    let second = TestEntrance::start_with(config, first.dir.clone()).await;
    assert_eq!(second.cluster_id, first.cluster_id);
    let mut admin = client(second.addr).await;
    let Ok(ClientResponse::Status(status)) = admin.request(ClientOp::Status).await else {
        panic!("no status");
    };
    assert_eq!(status.cluster_id, first.cluster_id);
    let names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["n1"]);
}
