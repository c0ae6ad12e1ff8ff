//! The node's one UDP socket: authenticated encode on the way out; decode, replay filter and
//! drop counters on the way in. Nothing above this module sees raw bytes.
//!
//! The socket is a [`Socket`] rather than tokio's type so that tests can run the real node
//! on a simulated network (partitions, loss, virtual time) without changing a line of it.

use myraft_wire::admission::ClusterId;
use myraft_wire::codec::{self, MAX_DATAGRAM};
use myraft_wire::envelope::{Body, Envelope, UNKNOWN_CLUSTER};
use myraft_wire::key::ClusterKey;
use myraft_wire::replay::ReplayFilter;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a node needs from a datagram socket. Sends never wait: a datagram that cannot leave
/// at once is lost, as UDP allows.
pub trait Socket: Send + Sync + 'static {
    fn local_addr(&self) -> io::Result<SocketAddr>;
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// Waits for one datagram. Must be cancel safe: the event loop drops it on every tick.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> RecvFuture<'a>;
    /// A datagram already waiting; `WouldBlock` when there is none.
    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// Boxed so that `Socket` stays object safe and the node's future stays `Send`.
pub type RecvFuture<'a> =
    Pin<Box<dyn Future<Output = io::Result<(usize, SocketAddr)>> + Send + 'a>>;

/// The node's real socket. Sends go through a non-blocking std handle on the same socket:
/// tokio's `try_send_to` refuses with `WouldBlock` until it has seen the socket writable,
/// which would lose the first datagrams a node sends; the kernel's answer is what counts.
pub struct UdpSocket {
    recv: tokio::net::UdpSocket,
    send: std::net::UdpSocket,
}

impl UdpSocket {
    /// Binds `addr`; must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
        let std = std::net::UdpSocket::bind(addr)?;
        std.set_nonblocking(true)?;
        let send = std.try_clone()?;
        Ok(UdpSocket {
            recv: tokio::net::UdpSocket::from_std(std)?,
            send,
        })
    }
}

impl Socket for UdpSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.recv.local_addr()
    }

    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send.send_to(buf, to)
    }

    fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> RecvFuture<'a> {
        Box::pin(self.recv.recv_from(buf))
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.recv.try_recv_from(buf)
    }
}

pub struct Transport {
    pub socket: Box<dyn Socket>,
    key: ClusterKey,
    pub cluster_id: ClusterId,
    pub me: u64,
    next_msg_id: u64,
    replay: ReplayFilter,
    /// Dropped datagrams by reason: bad input is counted, never fatal.
    pub dropped: BTreeMap<&'static str, u64>,
    buf: Vec<u8>,
}

impl Transport {
    pub fn new(socket: Box<dyn Socket>, key: ClusterKey, cluster_id: ClusterId, me: u64) -> Self {
        // Message ids never repeat across restarts: start at the wall clock in µs.
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Transport {
            socket,
            key,
            cluster_id,
            me,
            next_msg_id: start,
            replay: ReplayFilter::new(),
            dropped: BTreeMap::new(),
            buf: vec![0u8; MAX_DATAGRAM + 1],
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    fn drop_for(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Sends one body. A send error (no route, buffer full) is a lost datagram like any
    /// other on UDP: counted and logged, never fatal.
    pub fn send(&mut self, to: SocketAddr, body: Body) {
        self.next_msg_id += 1;
        let env = Envelope::new(self.cluster_id, self.me, self.next_msg_id, body);
        match codec::encode(&env, &self.key) {
            Ok(bytes) => {
                if let Err(e) = self.socket.try_send_to(&bytes, to) {
                    tracing::debug!(%to, error = %e, "send failed");
                    self.drop_for("send_failed");
                }
            }
            Err(e) => {
                tracing::warn!(%to, error = %e, kind = env.body.kind(), "cannot encode");
                self.drop_for("encode_failed");
            }
        }
    }

    /// Waits for the next datagram that decodes, authenticates and is not a replay.
    pub async fn recv(&mut self) -> io::Result<(Envelope, SocketAddr)> {
        loop {
            let (n, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                // An error about one datagram (an ICMP report, a truncated read) is a lost
                // datagram, not a reason to stop the node.
                Err(e) if is_transient(&e) => {
                    tracing::debug!(error = %e, "receive error");
                    self.drop_for("recv_error");
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(env) = self.accept(n, from) {
                return Ok((env, from));
            }
        }
    }

    /// A datagram already waiting, without blocking; `None` when there is none.
    pub fn try_recv(&mut self) -> Option<(Envelope, SocketAddr)> {
        loop {
            let (n, from) = self.socket.try_recv_from(&mut self.buf).ok()?;
            if let Some(env) = self.accept(n, from) {
                return Some((env, from));
            }
        }
    }

    fn accept(&mut self, n: usize, from: SocketAddr) -> Option<Envelope> {
        let expected = (self.cluster_id != UNKNOWN_CLUSTER).then_some(self.cluster_id);
        let env = match codec::decode(&self.buf[..n], &self.key, expected) {
            Ok(env) => env,
            Err(e) => {
                tracing::debug!(%from, error = %e, "dropped datagram");
                self.drop_for(e.reason());
                return None;
            }
        };
        if self.replay.accept(env.from, env.msg_id).is_err() {
            self.drop_for("replayed");
            return None;
        }
        Some(env)
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock | InvalidData
    )
}
