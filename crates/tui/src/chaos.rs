//! A chaos proxy: a userspace UDP relay in front of a server, so that a test can do to the
//! traffic between real processes what a lab's network does: drop, duplicate, reorder and
//! delay datagrams, cut a link one way or both, split the cluster, bridge two halves
//! through one node, and heal.
//!
//! One [`Proxy`] fronts one server. It listens on an address of its own, which the server
//! advertises instead of its own (`myraft-node --advertise`), and relays each datagram from
//! a peer to the server through a socket it opens for that peer, so the server's answer
//! comes back on that socket and goes on to the peer from the proxy's address. A node's
//! own datagrams to its peers go to their advertised addresses, that is through their
//! proxies: every link between two nodes passes exactly one proxy in each direction.
//!
//! What happens to a datagram is decided by [`Faults`], shared by all the proxies of a
//! test: per link `(from, to)`, by name (a sender the proxies were not told of is
//! [`CLIENT`]). The proxy never looks inside a datagram; authentication stays end to end.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// The name of every sender the proxies were not told of: clients, the console, `myraft`.
pub const CLIENT: &str = "client";

/// The largest datagram relayed, with a byte to spare so that an oversized one is seen as
/// such and relayed whole rather than cut.
const BUFFER: usize = 65_536;

/// What happens to datagrams, per link and in general. Changes apply to the next datagram.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug)]
struct FaultState {
    loss: f64,
    duplicate: f64,
    /// The chance that a datagram is held back by up to `reorder_by`, so later ones pass it.
    reorder: f64,
    reorder_by: Duration,
    delay: Duration,
    jitter: Duration,
    /// Links cut, `(from, to)`: one way each.
    blocked: HashSet<(String, String)>,
    /// Names by address: the servers' own addresses, as their datagrams arrive from them.
    names: HashMap<SocketAddr, String>,
    rng: StdRng,
    counts: BTreeMap<&'static str, u64>,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Drop,
    /// Send this many copies, each after its own delay.
    Deliver {
        copies: u8,
    },
}

fn lock(m: &Mutex<FaultState>) -> MutexGuard<'_, FaultState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Faults {
    /// No faults yet; `seed` makes the random ones replayable.
    pub fn new(seed: u64) -> Arc<Faults> {
        Arc::new(Faults {
            state: Mutex::new(FaultState {
                loss: 0.0,
                duplicate: 0.0,
                reorder: 0.0,
                reorder_by: Duration::ZERO,
                delay: Duration::ZERO,
                jitter: Duration::ZERO,
                blocked: HashSet::new(),
                names: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
                counts: BTreeMap::new(),
            }),
        })
    }

    /// Datagrams from `addr` come from the server `name` (its bound address, not its proxy).
    pub fn name(&self, addr: SocketAddr, name: &str) {
        lock(&self.state).names.insert(addr, name.to_owned());
    }

    /// Drops each datagram with probability `p`, on every link.
    pub fn set_loss(&self, p: f64) {
        lock(&self.state).loss = p.clamp(0.0, 1.0);
    }

    /// Sends each datagram twice with probability `p`.
    pub fn set_duplicate(&self, p: f64) {
        lock(&self.state).duplicate = p.clamp(0.0, 1.0);
    }

    /// Holds each datagram back by up to `by` with probability `p`, so later ones overtake.
    pub fn set_reorder(&self, p: f64, by: Duration) {
        let mut s = lock(&self.state);
        s.reorder = p.clamp(0.0, 1.0);
        s.reorder_by = by;
    }

    /// Delays every datagram by `delay`, plus up to `jitter` more.
    pub fn set_delay(&self, delay: Duration, jitter: Duration) {
        let mut s = lock(&self.state);
        s.delay = delay;
        s.jitter = jitter;
    }

    /// Cuts the link from `from` to `to`, one way.
    pub fn block(&self, from: &str, to: &str) {
        lock(&self.state)
            .blocked
            .insert((from.to_owned(), to.to_owned()));
    }

    /// Cuts every link between a member of `a` and a member of `b`, both ways.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        let mut s = lock(&self.state);
        for x in a {
            for y in b {
                s.blocked.insert(((*x).to_owned(), (*y).to_owned()));
                s.blocked.insert(((*y).to_owned(), (*x).to_owned()));
            }
        }
    }

    /// Two halves that hear each other only through `bridge`, which is in neither.
    pub fn bridge(&self, a: &[&str], b: &[&str], bridge: &str) {
        let a: Vec<&str> = a.iter().copied().filter(|n| *n != bridge).collect();
        let b: Vec<&str> = b.iter().copied().filter(|n| *n != bridge).collect();
        self.partition(&a, &b);
    }

    /// Removes every fault: no loss, duplication, reordering, delay or cut link.
    pub fn heal(&self) {
        let mut s = lock(&self.state);
        s.loss = 0.0;
        s.duplicate = 0.0;
        s.reorder = 0.0;
        s.delay = Duration::ZERO;
        s.jitter = Duration::ZERO;
        s.blocked.clear();
    }

    /// Datagrams so far by what happened to them: `relayed`, `lost`, `blocked`,
    /// `duplicated`, `reordered`.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.state).counts.clone()
    }

    fn who(&self, addr: SocketAddr) -> String {
        lock(&self.state)
            .names
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| CLIENT.to_owned())
    }

    /// Decides one datagram's fate on the link `from → to`, and the delay of each copy.
    fn decide(&self, from: &str, to: &str) -> (Fate, [Duration; 2]) {
        let mut guard = lock(&self.state);
        let s = &mut *guard;
        let fate = if s.blocked.contains(&(from.to_owned(), to.to_owned())) {
            *s.counts.entry("blocked").or_default() += 1;
            Fate::Drop
        } else if s.loss > 0.0 && s.rng.random_bool(s.loss) {
            *s.counts.entry("lost").or_default() += 1;
            Fate::Drop
        } else if s.duplicate > 0.0 && s.rng.random_bool(s.duplicate) {
            *s.counts.entry("duplicated").or_default() += 1;
            Fate::Deliver { copies: 2 }
        } else {
            Fate::Deliver { copies: 1 }
        };
        let mut delays = [s.delay; 2];
        for d in &mut delays {
            if !s.jitter.is_zero() {
                *d += s.jitter.mul_f64(s.rng.random_range(0.0..1.0));
            }
            if s.reorder > 0.0 && s.rng.random_bool(s.reorder) {
                *s.counts.entry("reordered").or_default() += 1;
                *d += s.reorder_by.mul_f64(s.rng.random_range(0.0..1.0));
            }
        }
        if fate != Fate::Drop {
            *s.counts.entry("relayed").or_default() += 1;
        }
        (fate, delays)
    }
}

/// Sends `bytes` to `to` from `socket` as `fate` says, each copy after its delay.
async fn deliver(
    socket: &Arc<UdpSocket>,
    bytes: &[u8],
    to: SocketAddr,
    decided: (Fate, [Duration; 2]),
) {
    let (fate, delays) = decided;
    let Fate::Deliver { copies } = fate else {
        return;
    };
    for delay in delays.iter().take(usize::from(copies)) {
        if delay.is_zero() {
            // A send that fails is a datagram lost, as on a real network.
            let _ = socket.send_to(bytes, to).await;
            continue;
        }
        let (socket, bytes, delay) = (Arc::clone(socket), bytes.to_vec(), *delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = socket.send_to(&bytes, to).await;
        });
    }
}

/// A relay in front of one server; it stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts a relay for the server `name` at `upstream`, listening on `listen` (port 0
    /// picks one: see [`Proxy::addr`]).
    pub async fn start(
        name: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
        faults: Arc<Faults>,
    ) -> io::Result<Proxy> {
        let front = Arc::new(UdpSocket::bind(listen).await?);
        let addr = front.local_addr()?;
        let name = name.to_owned();
        let task = tokio::spawn(relay(name, front, upstream, faults));
        Ok(Proxy { addr, task })
    }

    /// Where peers send to reach the server through this proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn relay(name: String, front: Arc<UdpSocket>, upstream: SocketAddr, faults: Arc<Faults>) {
    // One socket towards the server per peer, so that its answers find their way back; the
    // tasks relaying those answers end with this one (a JoinSet aborts them when dropped).
    let mut back: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut answering = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; BUFFER];
    loop {
        let Ok((len, peer)) = front.recv_from(&mut buf).await else {
            continue;
        };
        let socket = match back.get(&peer) {
            Some(s) => Arc::clone(s),
            None => {
                let Ok(s) = UdpSocket::bind((upstream.ip(), 0)).await else {
                    continue;
                };
                let s = Arc::new(s);
                back.insert(peer, Arc::clone(&s));
                answering.spawn(answers(
                    name.clone(),
                    Arc::clone(&s),
                    Arc::clone(&front),
                    peer,
                    Arc::clone(&faults),
                ));
                s
            }
        };
        let from = faults.who(peer);
        deliver(&socket, &buf[..len], upstream, faults.decide(&from, &name)).await;
    }
}

/// Relays the server's answers to one peer back to it, from the proxy's own address.
async fn answers(
    name: String,
    socket: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    faults: Arc<Faults>,
) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let Ok((len, _)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let to = faults.who(peer);
        deliver(&front, &buf[..len], peer, faults.decide(&name, &to)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    const LOCAL: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

    /// A server that answers every datagram with itself.
    async fn echo() -> SocketAddr {
        let s = UdpSocket::bind(LOCAL).await.unwrap();
        let addr = s.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        });
        addr
    }

    /// An echo server `n1` behind a proxy, with no faults yet.
    async fn proxied() -> (Arc<Faults>, Proxy) {
        let faults = Faults::new(1);
        let proxy = Proxy::start("n1", LOCAL, echo().await, Arc::clone(&faults))
            .await
            .unwrap();
        (faults, proxy)
    }

    /// Long enough for anything on loopback, even on a loaded machine; the tests wait for
    /// conditions, this only bounds a failing one.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// Sends `msgs` through the proxy and collects `want` echoes.
    async fn round(proxy: SocketAddr, msgs: &[&[u8]], want: usize) -> Vec<Vec<u8>> {
        let client = UdpSocket::bind(LOCAL).await.unwrap();
        for m in msgs {
            client.send_to(m, proxy).await.unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1500];
        while got.len() < want {
            let (n, _) = tokio::time::timeout(PATIENCE, client.recv_from(&mut buf))
                .await
                .expect("the echoes come back")
                .unwrap();
            got.push(buf[..n].to_vec());
        }
        got
    }

    /// Waits until the proxies have counted `n` datagrams as `what`.
    async fn counted(faults: &Faults, what: &str, n: u64) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while faults.counts().get(what).copied().unwrap_or(0) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {:?}",
                faults.counts()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn a_healthy_link_relays_both_ways() {
        let (faults, proxy) = proxied().await;
        let got = round(proxy.addr(), &[b"a", b"b"], 2).await;
        assert_eq!(got, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(
            faults.counts().get("relayed"),
            Some(&4),
            "{:?}",
            faults.counts()
        );
    }

    #[tokio::test]
    async fn a_link_cut_one_way_loses_only_that_way_until_healed() {
        let (faults, proxy) = proxied().await;
        faults.block("n1", CLIENT);
        round(proxy.addr(), &[b"a"], 0).await;
        // The answer was refused on its way back; the request had got through.
        counted(&faults, "blocked", 1).await;
        assert_eq!(
            faults.counts().get("relayed"),
            Some(&1),
            "{:?}",
            faults.counts()
        );
        faults.heal();
        let got = round(proxy.addr(), &[b"b"], 1).await;
        assert_eq!(got, [b"b".to_vec()]);
    }

    #[tokio::test]
    async fn duplication_sends_every_datagram_twice() {
        let (faults, proxy) = proxied().await;
        faults.set_duplicate(1.0);
        // Each way doubles: one request, two at the server, four answers back.
        let got = round(proxy.addr(), &[b"x"], 4).await;
        assert!(got.iter().all(|g| g == b"x"), "{got:?}");
        counted(&faults, "duplicated", 3).await;
    }

    #[tokio::test]
    async fn total_loss_loses_everything() {
        let (faults, proxy) = proxied().await;
        faults.set_loss(1.0);
        round(proxy.addr(), &[b"a", b"b"], 0).await;
        counted(&faults, "lost", 2).await;
        assert_eq!(
            faults.counts().get("relayed"),
            None,
            "{:?}",
            faults.counts()
        );
    }

    #[test]
    fn a_bridge_cuts_the_halves_but_not_the_bridge() {
        let faults = Faults::new(1);
        faults.bridge(&["n1", "n2", "n3"], &["n3", "n4", "n5"], "n3");
        let cut = |a: &str, b: &str| faults.decide(a, b).0 == Fate::Drop;
        assert!(cut("n1", "n4") && cut("n5", "n2"));
        assert!(!cut("n1", "n3") && !cut("n3", "n5") && !cut("n1", "n2"));
    }

    #[test]
    fn reordering_holds_some_datagrams_back() {
        let faults = Faults::new(7);
        faults.set_reorder(0.5, Duration::from_millis(40));
        let held = (0..200)
            .filter(|_| !faults.decide("n1", "n2").1[0].is_zero())
            .count();
        assert!((40..160).contains(&held), "{held} of 200 held back");
    }
}
