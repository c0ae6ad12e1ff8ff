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
