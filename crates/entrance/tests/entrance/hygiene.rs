//! Wire hygiene (design principle 5): whatever arrives, the entrance drops and counts what
//! it cannot trust and keeps serving.

use crate::support::{client, key, TestEntrance};
use myraft_wire::api::{ClientOp, ClientResponse};
use myraft_wire::envelope::UNKNOWN_CLUSTER;
use myraft_wire::ClusterKey;

#[tokio::test]
async fn garbage_foreign_and_replayed_datagrams_are_counted_not_fatal() {
    let entrance = TestEntrance::start(false).await;
    let mut attacker = client(entrance.addr).await;
    attacker.send_raw(entrance.addr, b"\x00\x01garbage").await;
    attacker.send_raw(entrance.addr, &[0x96; 3]).await;
    attacker.send_raw(entrance.addr, &vec![0xff; 2000]).await;
    let wrong_key = ClusterKey::from_bytes([9; ClusterKey::LEN]);
    let forged = attacker.encode(UNKNOWN_CLUSTER, ClientOp::Status, &wrong_key);
    attacker.send_raw(entrance.addr, &forged).await;
    let foreign = attacker.encode(entrance.cluster_id ^ 1, ClientOp::Status, &key());
    attacker.send_raw(entrance.addr, &foreign).await;
    let genuine = attacker.encode(UNKNOWN_CLUSTER, ClientOp::PendingJoins, &key());
    attacker.send_raw(entrance.addr, &genuine).await;
    attacker.send_raw(entrance.addr, &genuine).await;

    // Still serving; and since one socket reads in order, every datagram above was judged
    // before this request.
    let mut client = client(entrance.addr).await;
    assert!(matches!(
        client.request(ClientOp::Status).await,
        Ok(ClientResponse::Status(_))
    ));
    let drops = entrance.drop_counts();
    let count = |reason: &str| drops.get(reason).copied().unwrap_or(0);
    assert_eq!(count("bad_tag"), 1, "{drops:?}");
    assert_eq!(count("wrong_cluster"), 1, "{drops:?}");
    assert_eq!(count("replayed"), 1, "{drops:?}");
    assert_eq!(
        count("malformed") + count("truncated"),
        3,
        "three kinds of garbage: {drops:?}"
    );
}

/// The entrance's drop count for `reason` once it has judged everything sent before: one
/// socket reads in order, so an answered request proves the datagrams before it were seen.
async fn drops_after_a_round_trip(entrance: &TestEntrance, reason: &str) -> u64 {
    let mut client = client(entrance.addr).await;
    assert!(matches!(
        client.request(ClientOp::Status).await,
        Ok(ClientResponse::Status(_))
    ));
    entrance.drop_counts().get(reason).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_request_recorded_an_hour_ago_is_refused_as_stale() {
    let entrance = TestEntrance::start(false).await;
    let mut recorder = client(entrance.addr).await;
    // Minted by a clock an hour back: what a recording made an hour ago carries.
    recorder.clock_ms = || myraft_wire::util::unix_ms() - 3_600_000;
    let old = recorder.encode(UNKNOWN_CLUSTER, ClientOp::PendingJoins, &key());
    recorder.send_raw(entrance.addr, &old).await;
    assert_eq!(drops_after_a_round_trip(&entrance, "stale").await, 1);
}

#[tokio::test]
async fn a_request_recorded_before_a_restart_is_refused_after_it() {
    let mut entrance = TestEntrance::start(false).await;
    let mut recorder = client(entrance.addr).await;
    let recorded = recorder.encode(UNKNOWN_CLUSTER, ClientOp::PendingJoins, &key());
    recorder.send_raw(entrance.addr, &recorded).await;
    assert_eq!(drops_after_a_round_trip(&entrance, "replayed").await, 0);
    recorder.send_raw(entrance.addr, &recorded).await;
    assert_eq!(drops_after_a_round_trip(&entrance, "replayed").await, 1);

    // The restarted entrance has no memory of the sender, and refuses the recording as
    // minted before it started. Its clock must have moved past the recording's epoch for
    // that to be decidable; it has in any real restart, and the test makes sure.
    let epoch = myraft_wire::replay::epoch_ms(recorder.msg_id);
    while myraft_wire::util::unix_ms() <= epoch {
        std::thread::yield_now();
    }
    entrance.stop().await;
    let config = crate::support::calm_config(entrance.dir.path(), false);
    let entrance = TestEntrance::start_with(config, entrance.dir.clone()).await;
    recorder.send_raw(entrance.addr, &recorded).await;
    assert_eq!(drops_after_a_round_trip(&entrance, "before_start").await, 1);
}
