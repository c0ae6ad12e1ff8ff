//! A bare UDP client for the tests of the servers (with the `test-util` feature): one
//! socket, explicit client ids and sequence numbers, and the datagrams themselves within
//! reach, where [`crate::Client`] hides all of that behind retries and sessions.
//!
//! The entrance's tests send it hand-made and tampered datagrams; the node's tests drive a
//! cluster with it, on real sockets and on a simulated network. That is why the socket is a
//! parameter: [`TestSocket`] is implemented here for tokio's, and a test crate implements
//! it for a wrapper around any other (turmoil's, say).
//!
//! It panics when its socket fails or a datagram cannot be encoded: in a test, that is a
//! failed test.

use crate::admission::ClusterId;
use crate::api::{
    ClientError, ClientId, ClientOp, ClientReply, ClientRequest, ClientResponse, Consistency,
    GetResult, NodeDetail,
};
use crate::codec::{decode, encode_body};
use crate::envelope::{Body, Envelope, SenderId, UNKNOWN_CLUSTER};
use crate::health::{Probe, ProbeReply};
use crate::key::ClusterKey;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// The sender id of probes and the client id of reads ([`TestClient::get`] and the like):
/// reads go through no session, so their sequence numbers only pair replies with requests.
pub const READER: ClientId = 0x5EAD;

/// What [`TestClient`] needs of a UDP socket.
pub trait TestSocket {
    /// Sends one datagram to `to`.
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>>;
    /// Receives one datagram into `buf`: its length and where it came from.
    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>>;
}

impl TestSocket for tokio::net::UdpSocket {
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> {
        tokio::net::UdpSocket::send_to(self, buf, to)
    }

    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
}

/// A client as bare as possible: one socket, the client ids and sequence numbers its caller
/// chooses (or its own id and the next number, for [`TestClient::request`]), and the server
/// that last succeeded tried first.
pub struct TestClient<S = tokio::net::UdpSocket> {
    /// Where it sends from and hears replies.
    pub socket: S,
    /// Encodes what it sends and authenticates what it hears.
    pub key: ClusterKey,
    /// The cluster id on what it sends. With [`UNKNOWN_CLUSTER`] (as a client that has not
    /// heard from the cluster yet) it takes replies of any cluster; otherwise only that
    /// cluster's.
    pub cluster: ClusterId,
    /// Its own client id, for [`TestClient::request`] and [`TestClient::encode`]: random,
    /// so that clients of one test do not share a replay window.
    pub id: ClientId,
    /// The last sequence number [`TestClient::request`] or [`TestClient::encode`] used.
    pub seq: u64,
    /// The message id of the last datagram it encoded; 0 before the first.
    pub msg_id: u64,
    /// The wall clock in ms that message ids are minted from ([`crate::replay`]):
    /// [`crate::util::unix_ms`] unless a simulation has a clock of its own.
    pub clock_ms: fn() -> u64,
    /// The last sequence number of its reads as [`READER`].
    pub read_seq: u64,
    /// The servers it talks to: `request` asks the first, `call` tries them all.
    pub nodes: Vec<SocketAddr>,
    /// The server that last answered `call` with a success, tried first next time.
    pub leader: Option<SocketAddr>,
    /// Attempts that got no answer in time: evidence that the network did lose things.
    pub unanswered: u64,
    /// How long one attempt waits for its answer.
    pub attempt: Duration,
}

impl TestClient {
    /// A client on a tokio socket bound to 127.0.0.1, on a port of the system's choice.
    pub async fn bind(cluster: ClusterId, nodes: Vec<SocketAddr>) -> TestClient {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("a test client binds 127.0.0.1:0");
        TestClient::new(socket, cluster, nodes)
    }
}

impl<S: TestSocket> TestClient<S> {
    /// A client on `socket` with the lab key, a random id of its own and attempts of
    /// 500 ms.
    pub fn new(socket: S, cluster: ClusterId, nodes: Vec<SocketAddr>) -> Self {
        TestClient {
            socket,
            key: ClusterKey::lab_default(),
            cluster,
            // Zero reads as "no id" in logs; avoid it.
            id: rand::random::<u64>() | 1,
            seq: 0,
            msg_id: 0,
            clock_ms: crate::util::unix_ms,
            read_seq: 0,
            nodes,
            leader: None,
            unanswered: 0,
            attempt: Duration::from_millis(500),
        }
    }

    /// `body` from sender `from` with the next message id, encoded with `cluster` and
    /// `key`: to send as is, or to tamper with first.
    pub fn encode_body(
        &mut self,
        cluster: ClusterId,
        key: &ClusterKey,
        from: SenderId,
        body: &Body,
    ) -> Vec<u8> {
        self.msg_id =
            crate::replay::next_id((self.msg_id != 0).then_some(self.msg_id), (self.clock_ms)());
        encode_body(cluster, from, self.msg_id, body, key).expect("a test datagram encodes")
    }

    /// A request of the client's own id with the next sequence number, encoded with
    /// `cluster` and `key` (not necessarily its own).
    pub fn encode(&mut self, cluster: ClusterId, op: ClientOp, key: &ClusterKey) -> Vec<u8> {
        self.seq += 1;
        let body = Body::ClientRequest(ClientRequest {
            client_id: self.id,
            seq: self.seq,
            op,
        });
        self.encode_body(cluster, key, self.id, &body)
    }

    /// Sends `bytes` to `to` as they are.
    pub async fn send_raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.socket
            .send_to(bytes, to)
            .await
            .expect("a test client sends");
    }

    /// Sends `body` from sender `from` to `to`, with the client's cluster and key.
    pub async fn send_body(&mut self, to: SocketAddr, from: SenderId, body: &Body) {
        let key = self.key.clone();
        let bytes = self.encode_body(self.cluster, &key, from, body);
        self.send_raw(to, &bytes).await;
    }

    /// Sends one request and does not wait for its answer.
    pub async fn send(&mut self, to: SocketAddr, client_id: ClientId, seq: u64, op: &ClientOp) {
        let body = Body::ClientRequest(ClientRequest {
            client_id,
            seq,
            op: op.clone(),
        });
        self.send_body(to, client_id, &body).await;
    }

    /// Receives until `pick` takes an envelope, skipping datagrams that do not decode;
    /// `None` once `deadline` passed.
    pub async fn recv_until<T>(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(Envelope) -> Option<T>,
    ) -> Option<T> {
        let expected = (self.cluster != UNKNOWN_CLUSTER).then_some(self.cluster);
        let mut buf = vec![0u8; 65_536];
        loop {
            let received = tokio::time::timeout_at(deadline, self.socket.recv_from(&mut buf))
                .await
                .ok()?;
            let (len, _) = received.expect("a test client receives");
            let Ok(envelope) = decode(&buf[..len], &self.key, expected) else {
                continue;
            };
            if let Some(picked) = pick(envelope) {
                return Some(picked);
            }
        }
    }

    /// One attempt against one server: `None` if no reply to `(client_id, seq)` came
    /// within [`TestClient::attempt`].
    pub async fn ask(
        &mut self,
        to: SocketAddr,
        client_id: ClientId,
        seq: u64,
        op: &ClientOp,
    ) -> Option<Result<ClientResponse, ClientError>> {
        self.send(to, client_id, seq, op).await;
        let deadline = Instant::now() + self.attempt;
        let reply = self
            .recv_until(deadline, |envelope| match envelope.body {
                Body::ClientReply(ClientReply {
                    client_id: c,
                    seq: s,
                    result,
                }) if c == client_id && s == seq => Some(result),
                _ => None,
            })
            .await;
        if reply.is_none() {
            self.unanswered += 1;
        }
        reply
    }

    /// Asks the first of [`TestClient::nodes`] once, with the client's own id and the
    /// next sequence number, and returns whatever it answers; panics without an answer.
    pub async fn request(&mut self, op: ClientOp) -> Result<ClientResponse, ClientError> {
        let to = *self
            .nodes
            .first()
            .expect("a test client with a server to ask");
        self.seq += 1;
        let (id, seq) = (self.id, self.seq);
        match self.ask(to, id, seq, &op).await {
            Some(result) => result,
            None => panic!("no reply from {to} to {op:?} within {:?}", self.attempt),
        }
    }

    /// Retries until a server succeeds: the last leader first, then a leader a server
    /// names, then every one of [`TestClient::nodes`] in turn; gives up after `within`.
    /// Errors other than "not the leader", "unavailable" and "timeout" end it at once.
    pub async fn call_within(
        &mut self,
        client_id: ClientId,
        seq: u64,
        op: &ClientOp,
        within: Duration,
    ) -> Result<(ClientResponse, SocketAddr), String> {
        let deadline = Instant::now() + within;
        let mut first = self.leader;
        while Instant::now() < deadline {
            let order: Vec<SocketAddr> = first
                .into_iter()
                .chain(self.nodes.iter().copied().filter(|a| Some(*a) != first))
                .collect();
            first = None;
            for to in order {
                match self.ask(to, client_id, seq, op).await {
                    Some(Ok(r)) => {
                        self.leader = Some(to);
                        return Ok((r, to));
                    }
                    Some(Err(ClientError::NotLeader { hint: Some(h) })) => {
                        if let Ok(a) = h.addr.parse::<SocketAddr>() {
                            if a != to {
                                first = Some(a);
                                break;
                            }
                        }
                    }
                    Some(Err(
                        ClientError::NotLeader { .. }
                        | ClientError::Unavailable { .. }
                        | ClientError::Timeout,
                    ))
                    | None => {}
                    Some(Err(e)) => return Err(format!("{op:?} failed at {to}: {e}")),
                }
            }
            // As a real client backs off while an election is under way.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("{op:?}: no server succeeded within {within:?}"))
    }

    /// [`TestClient::call_within`] a minute.
    pub async fn call(
        &mut self,
        client_id: ClientId,
        seq: u64,
        op: &ClientOp,
    ) -> Result<(ClientResponse, SocketAddr), String> {
        self.call_within(client_id, seq, op, Duration::from_secs(60))
            .await
    }

    /// A linearizable read of `key` as [`READER`], and the server that answered.
    pub async fn get(&mut self, key: &str) -> Result<(GetResult, SocketAddr), String> {
        self.read_seq += 1;
        let op = ClientOp::Get {
            key: key.into(),
            rev: None,
            consistency: Consistency::Linearizable,
        };
        match self.call(READER, self.read_seq, &op).await? {
            (ClientResponse::Get(g), at) => Ok((g, at)),
            (other, _) => Err(format!("get {key}: expected a get result, got {other:?}")),
        }
    }

    /// What server `at` has applied of `key`, without asking the leader; `None` if it
    /// does not answer with a get result.
    pub async fn stale_get(&mut self, at: SocketAddr, key: &str) -> Option<GetResult> {
        self.read_seq += 1;
        let op = ClientOp::Get {
            key: key.into(),
            rev: None,
            consistency: Consistency::Stale,
        };
        match self.ask(at, READER, self.read_seq, &op).await {
            Some(Ok(ClientResponse::Get(g))) => Some(g),
            _ => None,
        }
    }

    /// Node `at`'s probe reply (role, term, the configuration it uses), if it answers.
    pub async fn probe(&mut self, at: SocketAddr) -> Option<ProbeReply> {
        let nonce = self.msg_id + 1;
        self.send_body(at, READER, &Body::Probe(Probe { nonce }))
            .await;
        let deadline = Instant::now() + self.attempt;
        self.recv_until(deadline, |envelope| match envelope.body {
            Body::ProbeReply(p) if p.nonce == nonce => Some(p),
            _ => None,
        })
        .await
    }

    /// Node `at`'s own account of itself, if it answers.
    pub async fn detail(&mut self, at: SocketAddr) -> Option<NodeDetail> {
        self.read_seq += 1;
        let op = ClientOp::NodeDetail {
            name: String::new(),
        };
        match self.ask(at, READER, self.read_seq, &op).await {
            Some(Ok(ClientResponse::NodeDetail(d))) => Some(d),
            _ => None,
        }
    }
}
