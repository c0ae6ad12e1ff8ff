//! The client against fake servers on loopback. Each fake answers only what the test tells
//! it to, so drops, redirects and silence are scripted, never timed.

use super::*;
use crate::api::{ClusterStatus, Consistency, GetResult, LeaderHint, MemberStatus, PutResult};
use crate::codec::encode;
use crate::envelope::Envelope;
use crate::health::{Health, PeerRef, Role};

const CLUSTER: u64 = 0x7f3a_0000_0000_0001;

fn key() -> ClusterKey {
    ClusterKey::from_bytes([9; ClusterKey::LEN])
}

/// One side of a scripted conversation: receives requests, sends whatever reply the test
/// chooses.
struct FakeServer {
    socket: UdpSocket,
    /// `(client_id, seq)` of every request received, to skip copies the client sent again
    /// because the test answered later than the attempt timeout (a slow machine).
    seen: Mutex<std::collections::HashSet<(u64, u64)>>,
}

struct Received {
    from: SocketAddr,
    envelope: Envelope,
    request: ClientRequest,
}

impl FakeServer {
    async fn bind() -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            seen: Mutex::default(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// The next request this server has not received before.
    async fn recv(&self) -> Received {
        loop {
            let r = self.recv_any().await;
            let id = (r.request.client_id, r.request.seq);
            if self.seen.lock().unwrap().insert(id) {
                return r;
            }
        }
    }

    /// The next request, even a copy of one received before.
    async fn recv_any(&self) -> Received {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let (len, from) = self.socket.recv_from(&mut buf).await.unwrap();
        let envelope = decode(&buf[..len], &key(), Some(CLUSTER)).unwrap();
        let Body::ClientRequest(request) = envelope.body.clone() else {
            panic!("not a client request: {envelope:?}");
        };
        Received {
            from,
            envelope,
            request,
        }
    }

    async fn reply(&self, to: &Received, result: Result<ClientResponse, ClientError>) {
        let body = Body::ClientReply(ClientReply {
            client_id: to.request.client_id,
            seq: to.request.seq,
            result,
        });
        let bytes = encode(&Envelope::new(CLUSTER, 77, next_msg_id(), body), &key()).unwrap();
        self.socket.send_to(&bytes, to.from).await.unwrap();
    }

    async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket.send_to(bytes, to).await.unwrap();
    }
}

fn client(entrances: Vec<SocketAddr>) -> Client {
    client_with(entrances, ClientOptions::default())
}

fn client_with(entrances: Vec<SocketAddr>, opts: ClientOptions) -> Client {
    Client::new(entrances, key(), opts).unwrap()
}

/// Options under which every silent attempt ends quickly, for tests that need silence.
fn quick(timeout_ms: u64) -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_millis(timeout_ms),
        attempt_timeout: Duration::from_millis(20),
        max_attempt_timeout: Duration::from_millis(40),
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        search_interval: Duration::from_millis(5),
    }
}

fn put(key: &str) -> ClientOp {
    ClientOp::Put {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
    }
}

fn get(key: &str) -> ClientOp {
    ClientOp::Get {
        key: key.as_bytes().to_vec(),
        rev: None,
        consistency: Consistency::Linearizable,
    }
}

fn put_ok(revision: u64) -> Result<ClientResponse, ClientError> {
    Ok(ClientResponse::Put(PutResult { revision }))
}

fn status_with_leader(leader_addr: SocketAddr) -> ClusterStatus {
    let member = |id: u64, name: &str, addr: String, role| MemberStatus {
        id,
        name: name.to_owned(),
        addr,
        role,
        voter: true,
        health: Health::Up,
        term: 3,
        commit_index: 10,
        applied_index: 10,
        last_contact_ms: Some(5),
    };
    ClusterStatus {
        cluster_id: CLUSTER,
        leader: Some(PeerRef {
            id: 2,
            name: "n2".to_owned(),
        }),
        term: 3,
        commit_index: 10,
        entrance: None,
        members: vec![
            member(1, "n1", "127.0.0.1:1".to_owned(), Role::Follower),
            member(2, "n2", leader_addr.to_string(), Role::Leader),
        ],
        pending: vec![],
    }
}

#[tokio::test]
async fn request_and_reply_and_the_cluster_id_is_learned() {
    let server = FakeServer::bind().await;
    let c = client(vec![server.addr()]);
    assert_eq!(c.cluster_id(), None);

    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::Status).await }
    });
    let first = server.recv().await;
    assert_eq!(first.envelope.cluster_id, UNKNOWN_CLUSTER);
    assert_eq!(first.envelope.from, c.client_id());
    assert_eq!(first.request.client_id, c.client_id());
    assert!(first.request.seq >= READ_SEQ_BASE);
    server.reply(&first, Ok(ClientResponse::Done)).await;
    assert_eq!(request.await.unwrap().unwrap(), ClientResponse::Done);
    assert_eq!(c.cluster_id(), Some(CLUSTER));

    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::PendingJoins).await }
    });
    let second = server.recv().await;
    assert_eq!(second.envelope.cluster_id, CLUSTER, "uses the learned id");
    assert!(second.envelope.msg_id > first.envelope.msg_id);
    assert_ne!(second.request.seq, first.request.seq);
    server
        .reply(&second, Ok(ClientResponse::PendingJoins(vec![])))
        .await;
    assert_eq!(
        request.await.unwrap().unwrap(),
        ClientResponse::PendingJoins(vec![])
    );
}

#[tokio::test]
async fn a_dropped_request_is_retried_with_the_same_seq() {
    let entrance = FakeServer::bind().await;
    let leader = FakeServer::bind().await;
    let c = client_with(vec![entrance.addr()], quick(10_000));

    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(put("a")).await }
    });
    // No leader known yet: the client asks the entrance who leads.
    let status = entrance.recv().await;
    assert_eq!(status.request.op, ClientOp::Status);
    entrance
        .reply(
            &status,
            Ok(ClientResponse::Status(status_with_leader(leader.addr()))),
        )
        .await;

    let first = leader.recv().await;
    assert_eq!(first.request.seq, 1, "a session opens at seq 1");
    // Dropped: the leader stays silent, the client is expected to send again. It forgets the
    // silent leader and goes to the entrance, which forwards.
    let second = entrance.recv().await;
    assert_eq!(second.request.client_id, first.request.client_id);
    assert_eq!(second.request.seq, first.request.seq);
    assert_eq!(second.request.op, first.request.op);
    assert!(second.envelope.msg_id > first.envelope.msg_id);
    entrance.reply(&second, put_ok(5)).await;
    assert_eq!(request.await.unwrap().unwrap(), put_ok(5).unwrap());
}

#[tokio::test]
async fn writes_count_up_and_reads_do_not_take_write_numbers() {
    let server = FakeServer::bind().await;
    let c = client(vec![server.addr()]);
    // The one server is entrance and leader at once, so every request comes to it.
    let status = tokio::spawn({
        let c = c.clone();
        async move { c.refresh_leader().await }
    });
    let r = server.recv().await;
    server
        .reply(
            &r,
            Ok(ClientResponse::Status(status_with_leader(server.addr()))),
        )
        .await;
    status.await.unwrap().unwrap();

    let mut seqs = Vec::new();
    for op in [
        put("a"),
        get("a"),
        put("b"),
        ClientOp::Delete { key: b"a".to_vec() },
    ] {
        let write = op.is_write();
        let request = tokio::spawn({
            let c = c.clone();
            async move { c.request(op).await }
        });
        let r = server.recv().await;
        seqs.push((write, r.request.seq));
        let result = if write {
            put_ok(1)
        } else {
            Ok(ClientResponse::Get(GetResult {
                found: false,
                value: None,
                revision: 0,
                create_revision: 0,
                version: 0,
            }))
        };
        server.reply(&r, result).await;
        request.await.unwrap().unwrap();
    }
    let writes: Vec<u64> = seqs.iter().filter(|s| s.0).map(|s| s.1).collect();
    assert_eq!(writes, vec![1, 2, 3]);
    assert!(seqs.iter().filter(|s| !s.0).all(|s| s.1 >= READ_SEQ_BASE));
}

#[tokio::test]
async fn not_leader_with_a_hint_is_followed_and_the_leader_cached() {
    let entrance = FakeServer::bind().await;
    let leader = FakeServer::bind().await;
    let c = client(vec![entrance.addr()]);

    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(put("k")).await }
    });
    let status = entrance.recv().await;
    assert_eq!(status.request.op, ClientOp::Status);
    let mut no_leader = status_with_leader(leader.addr());
    no_leader.leader = None;
    entrance
        .reply(&status, Ok(ClientResponse::Status(no_leader)))
        .await;

    let at_entrance = entrance.recv().await;
    entrance
        .reply(
            &at_entrance,
            Err(ClientError::NotLeader {
                hint: Some(LeaderHint {
                    id: 2,
                    name: "n2".to_owned(),
                    addr: leader.addr().to_string(),
                }),
            }),
        )
        .await;
    let at_leader = leader.recv().await;
    assert_eq!(at_leader.request.seq, at_entrance.request.seq);
    leader.reply(&at_leader, put_ok(9)).await;
    assert_eq!(request.await.unwrap().unwrap(), put_ok(9).unwrap());
    assert_eq!(c.cached_leader(), Some(leader.addr()));

    // The next data op goes straight to the cached leader.
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(get("k")).await }
    });
    let direct = leader.recv().await;
    assert!(matches!(direct.request.op, ClientOp::Get { .. }));
    leader
        .reply(&direct, Err(ClientError::NotFound { what: "x".into() }))
        .await;
    assert!(matches!(
        request.await.unwrap(),
        Err(RequestError::Server(ClientError::NotFound { .. }))
    ));
}

#[tokio::test]
async fn admin_ops_go_to_the_entrance_even_with_a_known_leader() {
    let entrance = FakeServer::bind().await;
    let leader = FakeServer::bind().await;
    let c = client(vec![entrance.addr()]);
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.refresh_leader().await }
    });
    let r = entrance.recv().await;
    entrance
        .reply(
            &r,
            Ok(ClientResponse::Status(status_with_leader(leader.addr()))),
        )
        .await;
    request.await.unwrap().unwrap();
    assert_eq!(c.cached_leader(), Some(leader.addr()));

    let request = tokio::spawn({
        let c = c.clone();
        async move {
            c.request(ClientOp::Approve {
                name: "n4".to_owned(),
            })
            .await
        }
    });
    let r = entrance.recv().await;
    assert!(matches!(r.request.op, ClientOp::Approve { .. }));
    entrance.reply(&r, Ok(ClientResponse::Done)).await;
    assert_eq!(request.await.unwrap().unwrap(), ClientResponse::Done);
}

#[tokio::test]
async fn a_silent_entrance_is_skipped_for_the_next_one() {
    let away = FakeServer::bind().await;
    let second = FakeServer::bind().await;
    let c = client_with(vec![away.addr(), second.addr()], quick(10_000));
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::Status).await }
    });
    let ignored = away.recv().await;
    let r = second.recv().await;
    assert_eq!(r.request.seq, ignored.request.seq);
    second.reply(&r, Ok(ClientResponse::Done)).await;
    request.await.unwrap().unwrap();

    // The entrance that answered is tried first from now on.
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::PendingJoins).await }
    });
    let r = second.recv().await;
    second.reply(&r, Ok(ClientResponse::Done)).await;
    request.await.unwrap().unwrap();
}

#[tokio::test]
async fn no_answer_ends_in_a_timeout_that_names_the_address() {
    // Bound but never read: datagrams vanish as they would at a dead host.
    let silent = FakeServer::bind().await;
    let c = client_with(vec![silent.addr()], quick(150));
    let err = c.request(ClientOp::Status).await.unwrap_err();
    assert!(
        matches!(err, RequestError::Timeout { ms: 150, .. }),
        "{err:?}"
    );
    assert_eq!(err.code(), "timeout");
    let text = err.to_string();
    assert!(
        text.contains(&format!("entrance {}", silent.addr())),
        "{text}"
    );
    assert!(text.contains("150 ms"), "{text}");
}

#[tokio::test]
async fn an_unreachable_port_ends_in_a_timeout_too() {
    let c = client_with(vec!["127.0.0.1:1".parse().unwrap()], quick(100));
    let err = c.request(put("k")).await.unwrap_err();
    assert!(matches!(err, RequestError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"));
}

#[tokio::test]
async fn garbage_and_strangers_are_dropped_and_counted() {
    let server = FakeServer::bind().await;
    let c = client(vec![server.addr()]);
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::Status).await }
    });
    let r = server.recv().await;
    let me = c.local_addr().unwrap();
    server.send_raw(me, b"not a datagram").await;
    // Right shape, wrong key.
    let body = Body::ClientReply(ClientReply {
        client_id: r.request.client_id,
        seq: r.request.seq,
        result: Ok(ClientResponse::Done),
    });
    let forged = encode(
        &Envelope::new(CLUSTER, 1, 1, body),
        &ClusterKey::lab_default(),
    )
    .unwrap();
    server.send_raw(me, &forged).await;
    // Authentic, but for a request nobody is waiting for.
    let stranger = Received {
        from: r.from,
        envelope: r.envelope.clone(),
        request: ClientRequest {
            seq: r.request.seq + 1,
            ..r.request.clone()
        },
    };
    server.reply(&stranger, Ok(ClientResponse::Done)).await;
    server
        .reply(&r, Ok(ClientResponse::PendingJoins(vec![])))
        .await;
    assert_eq!(
        request.await.unwrap().unwrap(),
        ClientResponse::PendingJoins(vec![])
    );
    // Datagrams from one socket arrive in order on loopback, so all three came first.
    assert_eq!(c.dropped_datagrams(), 3);
}

#[tokio::test]
async fn concurrent_requests_get_their_own_replies() {
    let server = FakeServer::bind().await;
    let c = client(vec![server.addr()]);
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let tasks: Vec<_> = names
        .iter()
        .map(|name| {
            let c = c.clone();
            let op = ClientOp::NodeDetail { name: name.clone() };
            tokio::spawn(async move { c.request(op).await })
        })
        .collect();
    let mut received = Vec::new();
    for _ in &names {
        received.push(server.recv().await);
    }
    // Answer in reverse order, each with a reason naming the node it was asked about.
    for r in received.iter().rev() {
        let ClientOp::NodeDetail { name } = &r.request.op else {
            panic!("unexpected {:?}", r.request.op);
        };
        server
            .reply(r, Err(ClientError::NotFound { what: name.clone() }))
            .await;
    }
    for (task, name) in tasks.into_iter().zip(&names) {
        match task.await.unwrap() {
            Err(RequestError::Server(ClientError::NotFound { what })) => assert_eq!(&what, name),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn no_leader_yet_means_back_off_and_retry() {
    let server = FakeServer::bind().await;
    let c = client_with(vec![server.addr()], quick(10_000));
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::Status).await }
    });
    let first = server.recv().await;
    server
        .reply(&first, Err(ClientError::NotLeader { hint: None }))
        .await;
    let second = server.recv_any().await;
    assert_eq!(second.request.seq, first.request.seq);
    server.reply(&second, Ok(ClientResponse::Done)).await;
    request.await.unwrap().unwrap();
}

/// Options under which no attempt is sent again before the test answers it, however slow
/// the machine: renewal depends on how many attempts were sent.
fn patient() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(600),
        attempt_timeout: Duration::from_secs(600),
        max_attempt_timeout: Duration::from_secs(600),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn an_expired_session_is_renewed_as_a_new_client() {
    let server = FakeServer::bind().await;
    let c = client_with(vec![server.addr()], patient());
    let old_id = c.client_id();
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(ClientOp::Compact { rev: 3 }).await }
    });
    let status = server.recv().await;
    server
        .reply(
            &status,
            Ok(ClientResponse::Status(status_with_leader(server.addr()))),
        )
        .await;
    let first = server.recv().await;
    server.reply(&first, Err(ClientError::SessionExpired)).await;
    let second = server.recv().await;
    assert_ne!(second.request.client_id, old_id);
    assert_eq!(second.request.seq, 1);
    server.reply(&second, Ok(ClientResponse::Done)).await;
    request.await.unwrap().unwrap();
    assert_eq!(c.client_id(), second.request.client_id);

    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(put("x")).await }
    });
    let next = server.recv().await;
    assert_eq!(next.request.seq, 2);
    server.reply(&next, put_ok(4)).await;
    request.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_retried_write_whose_session_expired_is_indeterminate_not_renewed() {
    let server = FakeServer::bind().await;
    let c = client_with(vec![server.addr()], quick(600_000));
    let old_id = c.client_id();
    let mut request = tokio::spawn({
        let c = c.clone();
        async move { c.request(put("a")).await }
    });
    let status = server.recv().await;
    server
        .reply(
            &status,
            Ok(ClientResponse::Status(status_with_leader(server.addr()))),
        )
        .await;
    // The first attempt is lost on the way back: it may have been applied.
    let first = server.recv().await;
    assert_eq!(first.request.op, put("a"));
    let retry = loop {
        let r = server.recv_any().await;
        if (r.request.client_id, r.request.seq) == (first.request.client_id, first.request.seq) {
            break r;
        }
    };
    server.reply(&retry, Err(ClientError::SessionExpired)).await;
    let result = tokio::select! {
        result = &mut request => result.unwrap(),
        again = server.recv() => panic!(
            "the write was sent again as client {} seq {} after its session expired: an \
             earlier attempt may have been applied, so this could apply it twice",
            again.request.client_id, again.request.seq
        ),
    };
    let err = result.unwrap_err();
    assert_eq!(err.code(), "indeterminate", "{err:?}");
    let text = err.to_string();
    assert!(text.contains("may or may not have been applied"), "{text}");

    // The expired session is left behind: the next write opens a new one.
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(put("b")).await }
    });
    let next = server.recv().await;
    assert_ne!(next.request.client_id, old_id);
    assert_eq!(next.request.seq, 1);
    server.reply(&next, put_ok(7)).await;
    assert_eq!(request.await.unwrap().unwrap(), put_ok(7).unwrap());
}

#[tokio::test]
async fn server_errors_are_returned_as_they_are() {
    let server = FakeServer::bind().await;
    let c = client(vec![server.addr()]);
    let request = tokio::spawn({
        let c = c.clone();
        async move {
            c.request(ClientOp::Reject {
                name: "n9".to_owned(),
            })
            .await
        }
    });
    let r = server.recv().await;
    server
        .reply(
            &r,
            Err(ClientError::Rejected {
                reason: "no such pending node".to_owned(),
            }),
        )
        .await;
    let err = request.await.unwrap().unwrap_err();
    assert_eq!(err.code(), "rejected");
    assert!(err.to_string().contains("no such pending node"));
}

/// A status naming `leader` the leader of members at `leader` and `others`.
fn status_of(leader: SocketAddr, others: &[SocketAddr]) -> ClusterStatus {
    let mut status = status_with_leader(leader);
    let template = status.members[0].clone();
    status.members = std::iter::once(leader)
        .chain(others.iter().copied())
        .enumerate()
        .map(|(i, addr)| MemberStatus {
            id: i as u64 + 2,
            name: format!("n{}", i + 2),
            addr: addr.to_string(),
            role: if i == 0 { Role::Leader } else { Role::Follower },
            ..template.clone()
        })
        .collect();
    status
}

#[tokio::test]
async fn a_silent_leader_is_looked_for_at_every_member_and_the_answer_taken() {
    let entrance = FakeServer::bind().await;
    let old_leader = FakeServer::bind().await;
    let new_leader = FakeServer::bind().await;
    let c = client_with(vec![entrance.addr()], quick(10_000));
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(put("k")).await }
    });
    let status = entrance.recv().await;
    let view = status_of(old_leader.addr(), &[new_leader.addr()]);
    entrance
        .reply(&status, Ok(ClientResponse::Status(view)))
        .await;
    // The leader it was told of never answers: the write is then sent to the entrance and
    // every member at once, under the same seq.
    let first = old_leader.recv().await;
    let copy = new_leader.recv().await;
    assert_eq!(copy.request.seq, first.request.seq);
    assert_eq!(copy.request.client_id, first.request.client_id);
    new_leader.reply(&copy, put_ok(4)).await;
    assert_eq!(request.await.unwrap().unwrap(), put_ok(4).unwrap());
    assert_eq!(
        c.cached_leader(),
        Some(new_leader.addr()),
        "writes go there next"
    );
}

#[tokio::test]
async fn a_member_naming_a_new_leader_while_searching_sends_the_request_there() {
    let entrance = FakeServer::bind().await;
    let old_leader = FakeServer::bind().await;
    let follower = FakeServer::bind().await;
    let new_leader = FakeServer::bind().await;
    let c = client_with(vec![entrance.addr()], quick(10_000));
    let request = tokio::spawn({
        let c = c.clone();
        async move { c.request(get("k")).await }
    });
    let status = entrance.recv().await;
    let view = status_of(old_leader.addr(), &[follower.addr()]);
    entrance
        .reply(&status, Ok(ClientResponse::Status(view)))
        .await;
    let _silence = old_leader.recv().await;
    let asked = follower.recv().await;
    let fresh = LeaderHint {
        id: 4,
        name: "n4".to_owned(),
        addr: new_leader.addr().to_string(),
    };
    follower
        .reply(&asked, Err(ClientError::NotLeader { hint: Some(fresh) }))
        .await;
    let at_new = new_leader.recv().await;
    assert_eq!(at_new.request.seq, asked.request.seq);
    new_leader
        .reply(&at_new, Err(ClientError::NotFound { what: "k".into() }))
        .await;
    assert!(matches!(
        request.await.unwrap(),
        Err(RequestError::Server(ClientError::NotFound { .. }))
    ));
    assert_eq!(c.cached_leader(), Some(new_leader.addr()));
}
