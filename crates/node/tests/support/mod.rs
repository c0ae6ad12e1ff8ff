//! What the tests that run the real node on turmoil's simulated network share: the socket
//! adapter and a bare client with explicit client ids and sequence numbers.
#![allow(dead_code, clippy::unwrap_used)]

use myraft_node::server::transport::RecvFuture;
use myraft_node::server::{NodeConfig, Socket, Timing};
use myraft_wire::client::{
    ClientError, ClientOp, ClientReply, ClientRequest, ClientResponse, Consistency, NodeDetail,
};
use myraft_wire::codec;
use myraft_wire::envelope::{Body, Envelope};
use myraft_wire::health::{Probe, ProbeReply};
use myraft_wire::key::ClusterKey;
use myraft_wire::raft::{Member, Membership};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// turmoil's socket as the node's [`Socket`]; only tests know about turmoil.
pub struct SimSocket(pub turmoil::net::UdpSocket);

impl Socket for SimSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.try_send_to(buf, to)
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> RecvFuture<'a> {
        Box::pin(self.0.recv_from(buf))
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.try_recv_from(buf)
    }
}

/// Client id of reads: they go through no session, so their sequence numbers only pair
/// replies with requests.
pub const READER: u64 = 0x5EAD;

/// A client as bare as the one in `tests/server.rs`: one socket, explicit client ids and
/// sequence numbers, and the leader it last heard from tried first.
pub struct Client {
    pub sock: turmoil::net::UdpSocket,
    pub key: ClusterKey,
    pub cluster: u64,
    pub nodes: Vec<SocketAddr>,
    pub leader: Option<SocketAddr>,
    pub msg_id: u64,
    pub read_seq: u64,
    /// Attempts that got no answer in time: evidence that the network did lose things.
    pub unanswered: u64,
    /// How long one attempt waits for its answer.
    pub attempt: Duration,
}

impl Client {
    pub async fn new(cluster: u64, nodes: Vec<SocketAddr>) -> Client {
        Client {
            sock: turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .await
                .unwrap(),
            key: ClusterKey::lab_default(),
            cluster,
            nodes,
            leader: None,
            msg_id: 1,
            read_seq: 0,
            unanswered: 0,
            attempt: Duration::from_millis(500),
        }
    }

    /// One attempt against one node: `None` if nothing came back in time.
    pub async fn ask(
        &mut self,
        to: SocketAddr,
        client_id: u64,
        seq: u64,
        op: &ClientOp,
    ) -> Option<Result<ClientResponse, ClientError>> {
        self.send(to, client_id, seq, op).await;
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + self.attempt;
        loop {
            let Ok(r) = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await
            else {
                self.unanswered += 1;
                return None;
            };
            let (n, _) = r.unwrap();
            let Ok(env) = codec::decode(&buf[..n], &self.key, Some(self.cluster)) else {
                continue;
            };
            if let Body::ClientReply(ClientReply {
                client_id: c,
                seq: s,
                result,
            }) = env.body
            {
                if c == client_id && s == seq {
                    return Some(result);
                }
            }
        }
    }

    /// Sends one request and does not wait for its answer.
    pub async fn send(&mut self, to: SocketAddr, client_id: u64, seq: u64, op: &ClientOp) {
        self.msg_id += 1;
        let req = ClientRequest {
            client_id,
            seq,
            op: op.clone(),
        };
        let env = Envelope::new(
            self.cluster,
            client_id,
            self.msg_id,
            Body::ClientRequest(req),
        );
        self.sock
            .send_to(&codec::encode(&env, &self.key).unwrap(), to)
            .await
            .unwrap();
    }

    /// Retries until a node succeeds: the last leader first, then a leader a node names,
    /// then every node in turn; gives up after `within` of simulated time.
    pub async fn call_within(
        &mut self,
        client_id: u64,
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("{op:?}: no node succeeded within {within:?}"))
    }

    pub async fn call(
        &mut self,
        client_id: u64,
        seq: u64,
        op: &ClientOp,
    ) -> Result<(ClientResponse, SocketAddr), String> {
        self.call_within(client_id, seq, op, Duration::from_secs(60))
            .await
    }

    pub async fn get(&mut self, key: &str) -> Result<(Seen, SocketAddr), String> {
        self.read_seq += 1;
        let op = ClientOp::Get {
            key: key.into(),
            rev: None,
            consistency: Consistency::Linearizable,
        };
        match self.call(READER, self.read_seq, &op).await? {
            (ClientResponse::Get(g), at) => Ok((
                Seen {
                    value: g.value,
                    revision: g.revision,
                    version: g.version,
                },
                at,
            )),
            (other, _) => Err(format!("get {key}: expected a get result, got {other:?}")),
        }
    }

    /// What node `at` has applied of `key`, without asking the leader.
    pub async fn stale_get(&mut self, at: SocketAddr, key: &str) -> Option<Seen> {
        self.read_seq += 1;
        let op = ClientOp::Get {
            key: key.into(),
            rev: None,
            consistency: Consistency::Stale,
        };
        match self.ask(at, READER, self.read_seq, &op).await {
            Some(Ok(ClientResponse::Get(g))) => Some(Seen {
                value: g.value,
                revision: g.revision,
                version: g.version,
            }),
            _ => None,
        }
    }

    /// The node's probe reply (role, term, the configuration it uses), if it answers.
    pub async fn probe(&mut self, at: SocketAddr) -> Option<ProbeReply> {
        self.msg_id += 1;
        let nonce = self.msg_id;
        let env = Envelope::new(
            self.cluster,
            READER,
            self.msg_id,
            Body::Probe(Probe { nonce }),
        );
        self.sock
            .send_to(&codec::encode(&env, &self.key).unwrap(), at)
            .await
            .unwrap();
        let mut buf = vec![0u8; 65_536];
        let deadline = Instant::now() + self.attempt;
        loop {
            let r = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf))
                .await
                .ok()?;
            let (n, _) = r.unwrap();
            if let Ok(env) = codec::decode(&buf[..n], &self.key, Some(self.cluster)) {
                if let Body::ProbeReply(p) = env.body {
                    if p.nonce == nonce {
                        return Some(p);
                    }
                }
            }
        }
    }

    /// The node's own account of itself, if it answers.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub value: Option<Vec<u8>>,
    pub revision: u64,
    pub version: u64,
}

pub fn put_op(key: &str, value: &str) -> ClientOp {
    ClientOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

/// The port every simulated node listens on; hosts differ by address.
pub const PORT: u16 = 7001;

/// Where node `name` listens; only answerable inside the simulation, once every host is
/// registered.
pub fn node_addr(name: &str) -> SocketAddr {
    SocketAddr::new(turmoil::lookup(name), PORT)
}

/// Every name a voter, with ids 1, 2, 3… in order. Founding happens inside the hosts
/// because the addresses are the ones turmoil assigned.
pub fn membership(names: &[&str]) -> Membership {
    let mut m = Membership::default();
    for (i, name) in names.iter().enumerate() {
        let id = i as u64 + 1;
        m.members.insert(
            id,
            Member {
                id,
                name: (*name).to_owned(),
                addr: node_addr(name).to_string(),
                voter: true,
            },
        );
    }
    m
}

/// A node of a simulated cluster: fast timing (10 ms ticks, elections after 150–300 ms),
/// its own address advertised, and election timeouts drawn from the run's seed.
pub fn node_config(seed: u64, id: u64, name: &str, dir: PathBuf) -> NodeConfig {
    let mut cfg = NodeConfig::new(name, (Ipv4Addr::UNSPECIFIED, PORT).into(), vec![], dir);
    cfg.advertise = Some(node_addr(name).to_string());
    cfg.timing = Timing {
        tick: Duration::from_millis(10),
        election_ticks: 15,
        heartbeat_ticks: 2,
    };
    cfg.rng_seed = Some(seed.wrapping_mul(31).wrapping_add(id));
    // A simulated run replays from its seed only if nothing runs beside the loop.
    cfg.single_threaded = true;
    cfg.sync_interval = Duration::from_millis(30);
    cfg.cache_bytes = 4 << 20;
    cfg
}

/// The simulated socket a node binds.
pub async fn bind() -> io::Result<SimSocket> {
    Ok(SimSocket(
        turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PORT)).await?,
    ))
}

/// Which of `names` listens at `addr`, for messages that name nodes rather than addresses.
pub fn name_of(names: &[&'static str], addr: SocketAddr) -> &'static str {
    names
        .iter()
        .find(|n| node_addr(n) == addr)
        .copied()
        .unwrap_or("?")
}

/// The seeds a scripted scenario runs: `MYRAFT_SEED=N` alone, else 0..3.
pub fn seeds() -> Vec<u64> {
    match std::env::var("MYRAFT_SEED") {
        Ok(s) => vec![s
            .trim()
            .parse()
            .expect("MYRAFT_SEED must be an unsigned integer")],
        Err(_) => (0..3).collect(),
    }
}

/// Runs `test` for each of [`seeds`]; a failure names its seed and how to replay it.
pub fn for_each_seed(test: impl Fn(u64) -> Result<(), String>) {
    for seed in seeds() {
        if let Err(e) = test(seed) {
            panic!("seed {seed} failed: {e}\nreplay with MYRAFT_SEED={seed}");
        }
    }
}

/// A simulated network for the scripted scenarios: seeded, 2 ms ticks, 1–5 ms latency.
pub fn sim_builder(seed: u64, duration: Duration) -> turmoil::Builder {
    let mut b = turmoil::Builder::new();
    b.rng_seed(seed)
        .simulation_duration(duration)
        .tick_duration(Duration::from_millis(2))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5));
    b
}
