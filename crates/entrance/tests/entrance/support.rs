//! Test doubles for the entrance: a fake node that answers probes and records the requests
//! it gets, a minimal client, and helpers that wait for replies or events with a timeout
//! (never for a fixed time).

use myraft_entrance::{Config, Entrance, EntranceEvent};
use myraft_wire::admission::{ClusterId, JoinDecision, JoinRequest, JoinResponse};
use myraft_wire::api::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, PutResult,
};
use myraft_wire::envelope::UNKNOWN_CLUSTER;
use myraft_wire::health::{NodeStats, PeerRef, ProbeReply, Role, StoreStats};
use myraft_wire::raft::{Member, Membership, NodeId, Term};
use myraft_wire::replay::IdSource;
use myraft_wire::test_util::TestClient;
use myraft_wire::{Body, ClusterKey};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for any wait; a test that hits it has failed, it never paces a test.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn key() -> ClusterKey {
    ClusterKey::lab_default()
}

/// An entrance on 127.0.0.1:0 with fast probes, in its own temp dir.
pub struct TestEntrance {
    pub entrance: Option<Entrance>,
    pub addr: SocketAddr,
    pub cluster_id: ClusterId,
    pub shutdown: CancellationToken,
    pub events: broadcast::Receiver<EntranceEvent>,
    pub dir: Arc<tempfile::TempDir>,
}

pub fn fast_config(dir: &std::path::Path, auto_approve: bool) -> Config {
    let mut config = Config::new("127.0.0.1:0", dir);
    config.auto_approve = auto_approve;
    // Fast enough that "down" comes quickly; tests that need a member to stay "up" use a
    // calmer pace (see `calm_config`), since a stalled test thread can miss two probes.
    config.probe_interval = Duration::from_millis(20);
    config.down_after = Duration::from_millis(200);
    config.request_timeout = Duration::from_millis(300);
    config
}

/// `RUST_LOG=debug cargo test …` shows the entrance's log.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Probes slow enough that a member that answers stays "up" even on a busy machine.
pub fn calm_config(dir: &std::path::Path, auto_approve: bool) -> Config {
    let mut config = fast_config(dir, auto_approve);
    config.probe_interval = Duration::from_millis(100);
    config.down_after = Duration::from_secs(10);
    config
}

impl TestEntrance {
    /// With [`calm_config`]: for tests that need members to stay up and leading.
    pub async fn start(auto_approve: bool) -> TestEntrance {
        Self::start_in_new_dir(|dir| calm_config(dir, auto_approve)).await
    }

    pub async fn start_in_new_dir(config: impl FnOnce(&std::path::Path) -> Config) -> TestEntrance {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let config = config(dir.path());
        Self::start_with(config, dir).await
    }

    pub async fn start_with(config: Config, dir: Arc<tempfile::TempDir>) -> TestEntrance {
        init_logging();
        let shutdown = CancellationToken::new();
        let entrance = Entrance::start(config, shutdown.clone()).await.unwrap();
        TestEntrance {
            addr: entrance.local_addr(),
            cluster_id: entrance.cluster_id(),
            events: entrance.subscribe(),
            entrance: Some(entrance),
            shutdown,
            dir,
        }
    }

    /// Stops the entrance and waits until every task ended (and the dir is unlocked).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(entrance) = self.entrance.take() {
            tokio::time::timeout(PATIENCE, entrance.wait())
                .await
                .unwrap();
        }
    }

    pub fn drop_counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.entrance.as_ref().unwrap().drop_counts()
    }

    /// Waits for the first event `pick` accepts.
    pub async fn wait_event<T>(&mut self, mut pick: impl FnMut(&EntranceEvent) -> Option<T>) -> T {
        let events = &mut self.events;
        tokio::time::timeout(PATIENCE, async {
            loop {
                match events.recv().await {
                    Ok(event) => {
                        if let Some(found) = pick(&event) {
                            return found;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("event stream ended: {e}"),
                }
            }
        })
        .await
        .expect("the expected event did not come")
    }

    pub async fn wait_leader(&mut self, name: &str) {
        self.wait_event(|e| match e {
            EntranceEvent::Leader {
                leader: Some(PeerRef { name: n, .. }),
                ..
            } if n == name => Some(()),
            _ => None,
        })
        .await;
    }

    pub async fn wait_health(&mut self, name: &str, health: myraft_wire::health::Health) {
        self.wait_event(|e| match e {
            EntranceEvent::Health {
                name: n, health: h, ..
            } if n == name && *h == health => Some(()),
            _ => None,
        })
        .await;
    }
}

/// The shared test client, speaking to the entrance only.
pub type Client = TestClient;

/// A client of the entrance at `to`, as `myraft` is before it heard from the cluster: no
/// cluster id yet, and patient enough that a reply that does not come means a failure.
pub async fn client(to: SocketAddr) -> Client {
    let mut client = TestClient::bind(UNKNOWN_CLUSTER, vec![to]).await;
    client.attempt = PATIENCE;
    client
}

/// What a fake node says about itself in its probe replies.
#[derive(Clone, Debug)]
pub struct FakeState {
    pub id: NodeId,
    pub name: String,
    pub role: Role,
    pub term: Term,
    pub commit_index: u64,
    pub applied_index: u64,
    pub membership: Membership,
    /// What it says, as leader, about how long ago it heard each peer.
    pub since_heard_ms: BTreeMap<NodeId, u64>,
    pub answer_probes: bool,
    /// How many of the next client requests it carries out without its reply getting
    /// through, as when the reply datagram is lost.
    pub lose_replies: u32,
    pub cluster_id: ClusterId,
}

/// A node that answers probes from its [`FakeState`], answers every client request with a
/// plausible success, and records what it got.
pub struct FakeNode {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
    pub requests: mpsc::UnboundedReceiver<(Instant, ClientRequest)>,
    joins: mpsc::UnboundedReceiver<JoinResponse>,
    socket: Arc<UdpSocket>,
    msg_id: Arc<IdSource>,
    task: JoinHandle<()>,
}

async fn send_from(
    socket: &UdpSocket,
    msg_id: &IdSource,
    cluster: ClusterId,
    from: NodeId,
    body: &Body,
    to: SocketAddr,
) {
    let id = msg_id.next(myraft_wire::util::unix_ms());
    let bytes = myraft_wire::encode_body(cluster, from, id, body, &key()).unwrap();
    socket.send_to(&bytes, to).await.unwrap();
}

impl FakeNode {
    pub async fn start(name: &str, id: NodeId, cluster_id: ClusterId) -> FakeNode {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState {
            id,
            name: name.to_owned(),
            role: Role::Follower,
            term: 1,
            commit_index: 0,
            applied_index: 0,
            membership: Membership::default(),
            since_heard_ms: BTreeMap::new(),
            answer_probes: true,
            lose_replies: 0,
            cluster_id,
        }));
        let (req_tx, requests) = mpsc::unbounded_channel();
        let (join_tx, joins) = mpsc::unbounded_channel();
        let msg_id = Arc::new(IdSource::new());
        let task = tokio::spawn(Self::serve(
            Arc::clone(&socket),
            Arc::clone(&state),
            Arc::clone(&msg_id),
            req_tx,
            join_tx,
        ));
        FakeNode {
            addr,
            state,
            requests,
            joins,
            socket,
            msg_id,
            task,
        }
    }

    fn probe_reply(state: &FakeState, nonce: u64) -> ProbeReply {
        let leader = (state.role == Role::Leader).then(|| PeerRef {
            id: state.id,
            name: state.name.clone(),
        });
        ProbeReply {
            nonce,
            id: state.id,
            name: state.name.clone(),
            role: state.role,
            voted_for: Some(state.id),
            stats: NodeStats {
                term: state.term,
                leader,
                commit_index: state.commit_index,
                applied_index: state.applied_index,
                last_log_index: state.commit_index + 1,
                snapshot_index: 0,
                log_bytes: 4096,
                data_dir_bytes: 8192,
                uptime_ms: 1234,
                dropped_datagrams: 5,
                store: StoreStats {
                    store_bytes: 16384,
                    revision: 7,
                    compacted_revision: 2,
                    keys: 5,
                    apply_lag: 1,
                    transfers: Vec::new(),
                },
            },
            membership: state.membership.clone(),
            since_heard_ms: state.since_heard_ms.clone(),
        }
    }

    async fn serve(
        socket: Arc<UdpSocket>,
        state: Arc<Mutex<FakeState>>,
        msg_id: Arc<IdSource>,
        requests: mpsc::UnboundedSender<(Instant, ClientRequest)>,
        joins: mpsc::UnboundedSender<JoinResponse>,
    ) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok((len, src)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let envelope = myraft_wire::decode(&buf[..len], &key(), None).unwrap();
            let (cluster, id) = {
                let s = state.lock().unwrap();
                (s.cluster_id, s.id)
            };
            match envelope.body {
                Body::Probe(probe) => {
                    let reply = {
                        let s = state.lock().unwrap();
                        s.answer_probes.then(|| Self::probe_reply(&s, probe.nonce))
                    };
                    if let Some(reply) = reply {
                        send_from(&socket, &msg_id, cluster, id, &Body::ProbeReply(reply), src)
                            .await;
                    }
                }
                Body::ClientRequest(request) => {
                    let result = {
                        let mut s = state.lock().unwrap();
                        match &request.op {
                            ClientOp::AddMember { id, name, addr } => {
                                s.membership.members.insert(
                                    *id,
                                    Member {
                                        id: *id,
                                        name: name.clone(),
                                        addr: addr.clone(),
                                        voter: false,
                                    },
                                );
                                Ok(ClientResponse::Done)
                            }
                            // As a real leader: a name out of the configuration is not found.
                            ClientOp::RemoveNode { name } => {
                                let before = s.membership.members.len();
                                s.membership.members.retain(|_, m| &m.name != name);
                                if s.membership.members.len() < before {
                                    Ok(ClientResponse::Done)
                                } else {
                                    Err(ClientError::NotFound {
                                        what: format!("member {name}"),
                                    })
                                }
                            }
                            ClientOp::Put { .. } => {
                                Ok(ClientResponse::Put(PutResult { revision: 42 }))
                            }
                            _ => Ok(ClientResponse::Done),
                        }
                    };
                    let lost = {
                        let mut s = state.lock().unwrap();
                        let lost = s.lose_replies > 0;
                        s.lose_replies = s.lose_replies.saturating_sub(1);
                        lost
                    };
                    if !lost {
                        let reply = Body::ClientReply(ClientReply {
                            client_id: request.client_id,
                            seq: request.seq,
                            result,
                        });
                        send_from(&socket, &msg_id, cluster, id, &reply, src).await;
                    }
                    let _ = requests.send((Instant::now(), request));
                }
                Body::JoinResponse(response) => {
                    let _ = joins.send(response);
                }
                _ => {}
            }
        }
    }

    pub fn id(&self) -> NodeId {
        self.state.lock().unwrap().id
    }

    pub fn name(&self) -> String {
        self.state.lock().unwrap().name.clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut FakeState)) {
        change(&mut self.state.lock().unwrap());
    }

    /// Makes this node the leader of a one-node configuration holding just itself.
    pub fn lead_alone(&self, term: Term) {
        self.update(|s| {
            s.role = Role::Leader;
            s.term = term;
            s.membership.members.insert(
                s.id,
                Member {
                    id: s.id,
                    name: s.name.clone(),
                    addr: self.addr.to_string(),
                    voter: true,
                },
            );
        });
    }

    /// Sends a `JoinRequest` as a node with an empty data dir would.
    pub async fn ask_to_join(&self, entrance: SocketAddr, addr: &str, node_id: Option<NodeId>) {
        let request = JoinRequest {
            name: self.name(),
            addr: addr.to_owned(),
            node_id,
        };
        send_from(
            &self.socket,
            &self.msg_id,
            UNKNOWN_CLUSTER,
            self.id(),
            &Body::JoinRequest(request),
            entrance,
        )
        .await;
    }

    /// The next `JoinResponse` this node receives.
    pub async fn next_join_response(&mut self) -> JoinResponse {
        tokio::time::timeout(PATIENCE, self.joins.recv())
            .await
            .expect("no JoinResponse")
            .unwrap()
    }

    /// Asks to join at its own address and returns the answer.
    pub async fn join(&mut self, entrance: SocketAddr) -> JoinDecision {
        self.ask_to_join(entrance, &self.addr.to_string(), Some(self.id()))
            .await;
        self.next_join_response().await.decision
    }

    /// Waits, without asking again, for the entrance to send `Accepted`.
    pub async fn wait_accepted(&mut self) -> (NodeId, Membership) {
        loop {
            match self.next_join_response().await.decision {
                JoinDecision::Accepted {
                    node_id,
                    membership,
                } => return (node_id, membership),
                JoinDecision::Pending { .. } => {}
                JoinDecision::Rejected { reason } => panic!("rejected: {reason}"),
            }
        }
    }

    /// The next client request this node receives.
    pub async fn next_request(&mut self) -> ClientRequest {
        self.next_request_at().await.1
    }

    /// The next client request, with when it arrived (to tell which of two came first).
    pub async fn next_request_at(&mut self) -> (Instant, ClientRequest) {
        tokio::time::timeout(PATIENCE, self.requests.recv())
            .await
            .expect("no request reached the node")
            .unwrap()
    }

    /// Sends what a node that just won an election sends: a `ProbeReply` nobody asked for.
    pub async fn announce(&self, entrance: SocketAddr) {
        let (reply, cluster) = {
            let s = self.state.lock().unwrap();
            (Self::probe_reply(&s, 0), s.cluster_id)
        };
        send_from(
            &self.socket,
            &self.msg_id,
            cluster,
            reply.id,
            &Body::ProbeReply(reply),
            entrance,
        )
        .await;
    }

    /// The process dies: nothing is answered any more.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An entrance with `n1` founded and leading (term 1), as most routing tests need.
pub async fn cluster_with_leader() -> (TestEntrance, FakeNode) {
    cluster_with_leader_using(|dir| calm_config(dir, true)).await
}

/// `n2` asks to join the cluster of [`cluster_with_leader`], `n1` adds it and it is in.
pub async fn second_member_joins(entrance: &TestEntrance, n1: &mut FakeNode) -> FakeNode {
    let mut n2 = FakeNode::start("n2", 0x22, entrance.cluster_id).await;
    n2.ask_to_join(entrance.addr, &n2.addr.to_string(), Some(0x22))
        .await;
    n1.next_request().await;
    n2.wait_accepted().await;
    n2
}

pub async fn cluster_with_leader_using(
    config: impl FnOnce(&std::path::Path) -> Config,
) -> (TestEntrance, FakeNode) {
    let mut entrance = TestEntrance::start_in_new_dir(config).await;
    let mut n1 = FakeNode::start("n1", 0x11, entrance.cluster_id).await;
    n1.lead_alone(1);
    match n1.join(entrance.addr).await {
        JoinDecision::Accepted { .. } => {}
        other => panic!("n1 not accepted: {other:?}"),
    }
    entrance.wait_leader("n1").await;
    (entrance, n1)
}
