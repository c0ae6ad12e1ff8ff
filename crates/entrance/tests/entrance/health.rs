//! The failure detector: docs/protocol.md "Health".

use crate::support::{
    cluster_with_leader, cluster_with_leader_using, fast_config, Client, FakeNode, TestEntrance,
};
use myraft_wire::client::{ClientOp, ClientResponse};
use myraft_wire::health::{Health, Role};
use myraft_wire::raft::Member;
use std::time::Duration;

#[tokio::test]
async fn health_goes_up_then_down_when_the_node_stops_answering() {
    // Leadership is taken from a reply that marked n1 up just before.
    let (mut entrance, n1) = cluster_with_leader_using(|dir| fast_config(dir, true)).await;
    n1.kill();
    entrance.wait_health("n1", Health::Down).await;
    let mut admin = Client::new(entrance.addr).await;
    let Ok(ClientResponse::Status(status)) = admin.request(ClientOp::Status).await else {
        panic!("no status");
    };
    assert_eq!(status.members[0].health, Health::Down);
    assert_eq!(status.leader, None, "a leader that is down leads nobody");
}

#[tokio::test]
async fn unsolicited_reply_of_a_new_leader_takes_effect_at_once() {
    let (mut entrance, mut n1) = cluster_with_leader().await;
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    n2.ask_to_join(entrance.addr, &n2.addr.to_string(), Some(0x22))
        .await;
    n1.next_request().await;
    n2.wait_accepted().await;

    // n2 answers no probe, so only its announcement can make it the leader.
    let membership = n1.state.lock().unwrap().membership.clone();
    n2.update(|s| {
        s.answer_probes = false;
        s.role = Role::Leader;
        s.term = 2;
        s.membership = membership;
    });
    n1.update(|s| s.role = Role::Follower);
    n2.announce(entrance.addr).await;
    entrance.wait_leader("n2").await;
}

#[tokio::test]
async fn member_down_long_enough_is_removed_when_a_quorum_remains() {
    let mut entrance = TestEntrance::start_in_new_dir(|dir| {
        let mut config = fast_config(dir, true);
        config.auto_remove_after = Some(Duration::from_millis(300));
        config
    })
    .await;
    let mut n1 = FakeNode::start("n1", 0x11, entrance.cluster_id).await;
    n1.lead_alone(1);
    n1.join(entrance.addr).await;
    let n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    let n3 = FakeNode::start("n3", 0x33, entrance.cluster_id).await;
    for node in [&n2, &n3] {
        let member = Member {
            id: node.id(),
            name: node.name(),
            addr: node.addr.to_string(),
            voter: true,
        };
        n1.update(|s| {
            s.membership.members.insert(member.id, member);
        });
    }
    entrance.wait_health("n3", Health::Up).await;
    n3.kill();
    entrance.wait_health("n3", Health::Down).await;
    let remove = n1.next_request().await;
    assert_eq!(remove.op, ClientOp::RemoveNode { name: "n3".into() });
    drop(n2);
}
