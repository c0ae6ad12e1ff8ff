//! The failure detector: docs/protocol.md "Health".

use crate::support::{
    client, cluster_with_leader, cluster_with_leader_using, fast_config, second_member_joins,
    FakeNode, TestEntrance,
};
use myraft_wire::api::{ClientOp, ClientResponse};
use myraft_wire::health::{Health, Role};
use myraft_wire::raft::Member;
use std::time::Duration;

#[tokio::test]
async fn health_goes_up_then_down_when_the_node_stops_answering() {
    // Leadership is taken from a reply that marked n1 up just before.
    let (mut entrance, n1) = cluster_with_leader_using(|dir| fast_config(dir, true)).await;
    n1.kill();
    entrance.wait_health("n1", Health::Down).await;
    let mut admin = client(entrance.addr).await;
    let Ok(ClientResponse::Status(status)) = admin.request(ClientOp::Status).await else {
        panic!("no status");
    };
    assert_eq!(status.members[0].health, Health::Down);
    assert_eq!(status.leader, None, "a leader that is down leads nobody");
}

#[tokio::test]
async fn unsolicited_reply_of_a_new_leader_takes_effect_at_once() {
    let (mut entrance, mut n1) = cluster_with_leader().await;
    let n2 = second_member_joins(&entrance, &mut n1).await;

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

/// An entrance that removes members down for 300 ms, and `n1` leading voters `n1`..`n{count}`
/// (ids 0x11, 0x22, …), every one of which `n1` says it hears.
async fn voters_led_by_n1(count: u64) -> (TestEntrance, FakeNode, Vec<FakeNode>) {
    let entrance = TestEntrance::start_in_new_dir(|dir| {
        let mut config = fast_config(dir, true);
        config.auto_remove_after = Some(Duration::from_millis(300));
        config
    })
    .await;
    let mut n1 = FakeNode::start("n1", 0x11, entrance.cluster_id).await;
    n1.lead_alone(1);
    n1.join(entrance.addr).await;
    let mut others = Vec::new();
    for i in 2..=count {
        let node = FakeNode::start(&format!("n{i}"), 0x11 * i, entrance.cluster_id).await;
        let member = Member {
            id: node.id(),
            name: node.name(),
            addr: node.addr.to_string(),
            voter: true,
        };
        n1.update(|s| {
            s.since_heard_ms.insert(member.id, 0);
            s.membership.members.insert(member.id, member);
        });
        others.push(node);
    }
    (entrance, n1, others)
}

/// The node dies, and the leader stops hearing it too.
fn dies(node: &FakeNode, leader: &FakeNode) {
    node.kill();
    leader.update(|s| {
        s.since_heard_ms.insert(node.id(), u64::MAX);
    });
}

#[tokio::test]
async fn member_down_long_enough_is_removed_when_a_quorum_remains() {
    let (mut entrance, mut n1, others) = voters_led_by_n1(3).await;
    let n3 = &others[1];
    entrance.wait_health("n3", Health::Up).await;
    dies(n3, &n1);
    entrance.wait_health("n3", Health::Down).await;
    let remove = n1.next_request().await;
    assert_eq!(remove.op, ClientOp::RemoveNode { name: "n3".into() });
}

#[tokio::test]
async fn member_cut_off_from_the_entrance_only_is_not_removed() {
    // n2 stays in touch with the leader; removing it while n3 is really down would leave
    // {n1, n3} with one live voter of two: no quorum.
    let (mut entrance, mut n1, others) = voters_led_by_n1(3).await;
    let (n2, n3) = (&others[0], &others[1]);
    n2.update(|s| s.answer_probes = false);
    entrance.wait_health("n2", Health::Down).await;
    dies(n3, &n1);
    let remove = n1.next_request().await;
    assert_eq!(remove.op, ClientOp::RemoveNode { name: "n3".into() });
}

#[tokio::test]
async fn down_members_are_removed_one_by_one_while_a_live_quorum_remains() {
    // Five voters, n4 and n5 down for the leader as well, n3 unreachable from the entrance
    // only: n4 and n5 go, each removal leaving n1, n2, n3 as a live quorum; n3 stays.
    let (mut entrance, mut n1, others) = voters_led_by_n1(5).await;
    let (n3, n4, n5) = (&others[1], &others[2], &others[3]);
    n3.update(|s| s.answer_probes = false);
    entrance.wait_health("n3", Health::Down).await;
    dies(n4, &n1);
    dies(n5, &n1);
    for name in ["n4", "n5"] {
        let remove = n1.next_request().await;
        assert_eq!(remove.op, ClientOp::RemoveNode { name: name.into() });
    }
}
