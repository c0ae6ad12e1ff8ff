//! What the tests that run the real node on turmoil's simulated network share: the socket
//! adapter, and the bare client of `myraft_wire::test_util` on it.
#![allow(dead_code, clippy::unwrap_used)]

use myraft_node::server::transport::RecvFuture;
use myraft_node::server::{NodeConfig, Socket, Timing};
use myraft_wire::api::ClientOp;
use myraft_wire::raft::{Member, Membership};
use myraft_wire::test_util::{TestClient, TestSocket};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// turmoil's socket as the node's [`Socket`] and the test client's [`TestSocket`]; only
/// tests know about turmoil.
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

impl TestSocket for SimSocket {
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>> {
        self.0.send_to(buf, to)
    }

    fn recv_from(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>> {
        self.0.recv_from(buf)
    }
}

/// The shared test client, on the simulated network.
pub type Client = TestClient<SimSocket>;

/// A client of the simulated `nodes`, on a port of its own.
pub async fn client(cluster: u64, nodes: Vec<SocketAddr>) -> Client {
    let socket = turmoil::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .unwrap();
    let mut client = TestClient::new(SimSocket(socket), cluster, nodes);
    client.clock_ms = || sim_clock_us() / 1000;
    client
}

/// Where the simulated wall clock starts: 2027-01-15, in µs since the Unix epoch.
pub const SIM_EPOCH_US: u64 = 1_800_000_000_000_000;

/// The wall clock of a simulation: [`SIM_EPOCH_US`] plus the virtual time elapsed, so that
/// message ids and their freshness move with virtual time, as they do with real time
/// outside. The real clock would barely move during a run that spans simulated minutes: a
/// restarted node would refuse its peers' ids (minted before it started, by that clock)
/// for most of the run.
pub fn sim_clock_us() -> u64 {
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    SIM_EPOCH_US + u64::try_from(elapsed.as_micros()).unwrap()
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
    cfg.wall_clock_us = sim_clock_us;
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
