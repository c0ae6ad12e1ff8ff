//! The node's one UDP socket: authenticated encode on the way out; decode, freshness and
//! replay checks ([`myraft_wire::replay`]) and drop counters on the way in. Nothing above
//! this module sees raw bytes.
//!
//! The socket is a [`Socket`] rather than tokio's type so that tests can run the real node
//! on a simulated network (partitions, loss, virtual time) without changing a line of it.

use super::config::NodeConfig;
use super::msg_ids::MsgIds;
use super::ServerError;
use myraft_wire::admission::ClusterId;
use myraft_wire::codec::{self, MAX_DATAGRAM};
use myraft_wire::envelope::{Body, Envelope, UNKNOWN_CLUSTER};
use myraft_wire::key::ClusterKey;
use myraft_wire::replay::ReplayGuard;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

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
        grow_buffers(&std);
        let send = std.try_clone()?;
        Ok(UdpSocket {
            recv: tokio::net::UdpSocket::from_std(std)?,
            send,
        })
    }
}

/// Bytes asked for in each of the socket's buffers. The default receive buffer (about
/// 200 KiB on Linux) overflows while a snapshot window and a burst of client requests
/// arrive between two turns of the loop, and the kernel then drops datagrams silently.
const SOCKET_BUFFER: usize = 4 << 20;

/// Best effort: the kernel caps the sizes (`net.core.rmem_max`, `wmem_max`); what it gave
/// is logged so that an operator can raise the caps.
fn grow_buffers(sock: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(sock);
    let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    let (rcv, snd) = (s.recv_buffer_size(), s.send_buffer_size());
    match (rcv, snd) {
        (Ok(r), Ok(w)) if r < SOCKET_BUFFER || w < SOCKET_BUFFER => tracing::info!(
            receive = r,
            send = w,
            "socket buffers smaller than asked ({SOCKET_BUFFER} bytes); raise \
             net.core.rmem_max and wmem_max for fewer drops under load"
        ),
        (Ok(_), Ok(_)) => {}
        (r, w) => tracing::warn!(?r, ?w, "cannot read the socket's buffer sizes"),
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
    ids: MsgIds,
    replay: ReplayGuard,
    /// The wall clock in µs, which message ids are minted from and checked against.
    clock_us: fn() -> u64,
    /// Dropped datagrams by reason: bad input is counted, never fatal.
    pub dropped: BTreeMap<&'static str, u64>,
    buf: Vec<u8>,
}

// A client's request replayed after its session expired would be applied as new, rolling
// its key back to an old value; freshness must refuse it long before the session can expire.
const _: () = assert!(
    crate::state_machine::DEFAULT_SESSION_TIMEOUT_MS > 10 * myraft_wire::replay::MAX_AGE_MS
);

impl Transport {
    /// A transport for the node whose data dir `cfg` names; message ids are reserved there
    /// before anything is sent.
    pub fn open(
        socket: Box<dyn Socket>,
        cfg: &NodeConfig,
        cluster_id: ClusterId,
        me: u64,
    ) -> Result<Self, ServerError> {
        let ids = MsgIds::open(&cfg.data_dir, (cfg.wall_clock_us)() / 1000)?;
        Ok(Self::with_ids(
            socket,
            cfg.key.clone(),
            cluster_id,
            me,
            ids,
            cfg.wall_clock_us,
        ))
    }

    fn with_ids(
        socket: Box<dyn Socket>,
        key: ClusterKey,
        cluster_id: ClusterId,
        me: u64,
        ids: MsgIds,
        clock_us: fn() -> u64,
    ) -> Self {
        let started_ms = clock_us() / 1000;
        Transport {
            socket,
            key,
            cluster_id,
            me,
            ids,
            // Everything minted before this instant is refused: a datagram recorded before
            // the restart, a `StopNode` above all, must not act again.
            replay: ReplayGuard::new(started_ms),
            clock_us,
            dropped: BTreeMap::new(),
            buf: vec![0u8; MAX_DATAGRAM + 1],
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Counts a datagram dropped above the transport, by what the node found wrong in it.
    pub fn count_drop(&mut self, reason: &'static str) {
        self.drop_for(reason);
    }

    fn drop_for(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }

    /// Sends one body. A send error (no route, buffer full) is a lost datagram like any
    /// other on UDP: counted and logged, never fatal.
    pub fn send(&mut self, to: SocketAddr, body: Body) {
        let Some(msg_id) = self.ids.next(self.now_ms()) else {
            self.drop_for("no_msg_id");
            return;
        };
        let env = Envelope::new(self.cluster_id, self.me, msg_id, body);
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
    ///
    /// Fails at once when message ids ran out (see `MsgIds::next`): a node that cannot
    /// send must stop, and the loop that waits here is what stops it.
    pub async fn recv(&mut self) -> io::Result<(Envelope, SocketAddr)> {
        if let Some(why) = self.ids.failure() {
            return Err(io::Error::other(why.to_owned()));
        }
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
        if self.ids.failure().is_some() {
            return None;
        }
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
        let now_ms = self.now_ms();
        if let Err(e) = self.replay.accept(env.from, env.msg_id, now_ms) {
            if self.replay.warn_of_clock(&e, now_ms) {
                tracing::warn!(%from, sender = env.from, "dropped datagram: {e}");
            } else {
                tracing::debug!(%from, sender = env.from, "dropped datagram: {e}");
            }
            self.drop_for(e.reason());
            return None;
        }
        Some(env)
    }

    fn now_ms(&self) -> u64 {
        (self.clock_us)() / 1000
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | Interrupted | WouldBlock | InvalidData
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
pub(crate) mod tests {
    use super::*;
    use myraft_wire::health::Probe;
    use std::collections::VecDeque;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// Datagrams in flight between the sockets of one test, with their senders.
    pub(crate) type Air = Arc<Mutex<VecDeque<(Vec<u8>, SocketAddr)>>>;

    struct TestSocket {
        addr: SocketAddr,
        air: Air,
    }

    impl Socket for TestSocket {
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok(self.addr)
        }

        fn try_send_to(&self, buf: &[u8], _to: SocketAddr) -> io::Result<usize> {
            self.air
                .lock()
                .unwrap()
                .push_back((buf.to_vec(), self.addr));
            Ok(buf.len())
        }

        fn recv_from<'a>(&'a self, buf: &'a mut [u8]) -> RecvFuture<'a> {
            let r = self.try_recv_from(buf);
            Box::pin(std::future::ready(r))
        }

        fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
            let (bytes, from) = self
                .air
                .lock()
                .unwrap()
                .pop_front()
                .ok_or(io::ErrorKind::WouldBlock)?;
            buf[..bytes.len()].copy_from_slice(&bytes);
            Ok((bytes.len(), from))
        }
    }

    const CLUSTER: ClusterId = 0xC1;
    const NOW_US: u64 = 1_700_000_000_000_000;

    pub(crate) fn clock_now() -> u64 {
        NOW_US
    }

    /// A clock NTP stepped back: within what peers accept, behind what the node used.
    fn clock_ten_seconds_back() -> u64 {
        NOW_US - 10_000_000
    }

    thread_local! {
        /// The time of [`test_clock`]; each test runs on a thread of its own.
        static TEST_NOW_US: std::cell::Cell<u64> = const { std::cell::Cell::new(NOW_US) };
    }

    /// A clock the test moves with [`set_test_clock`].
    fn test_clock() -> u64 {
        TEST_NOW_US.with(|t| t.get())
    }

    fn set_test_clock(us: u64) {
        TEST_NOW_US.with(|t| t.set(us));
    }

    pub(crate) fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub(crate) fn transport(
        dir: &Path,
        port: u16,
        me: u64,
        clock: fn() -> u64,
        air: &Air,
    ) -> Transport {
        let mut cfg = NodeConfig::new("t", addr(port), vec![], dir.to_owned());
        cfg.wall_clock_us = clock;
        let socket = TestSocket {
            addr: addr(port),
            air: air.clone(),
        };
        Transport::open(Box::new(socket), &cfg, CLUSTER, me).unwrap()
    }

    #[test]
    fn a_node_restarted_with_its_clock_stepped_back_is_still_heard() {
        let air = Air::default();
        let (node_dir, peer_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut peer = transport(peer_dir.path(), 2, 0xB, clock_now, &air);
        let mut node = transport(node_dir.path(), 1, 0xA, clock_now, &air);
        for nonce in 0..3 {
            node.send(addr(2), Body::Probe(Probe { nonce }));
            assert!(
                peer.try_recv().is_some(),
                "nonce {nonce}: {:?}",
                peer.dropped
            );
        }
        drop(node);

        let mut node = transport(node_dir.path(), 1, 0xA, clock_ten_seconds_back, &air);
        node.send(addr(2), Body::Probe(Probe { nonce: 3 }));
        match peer.try_recv() {
            Some((env, from)) => {
                assert_eq!(
                    (env.from, env.body, from),
                    (0xA, Body::Probe(Probe { nonce: 3 }), addr(1))
                );
            }
            None => panic!(
                "the peer dropped the restarted node's datagram: {:?}",
                peer.dropped
            ),
        }
    }

    #[test]
    fn ids_that_cannot_be_reserved_stop_sending_and_fail_the_receive_loop() {
        let air = Air::default();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let ids = MsgIds::open_with_block(&data, NOW_US / 1000, 1).unwrap();
        let socket = TestSocket {
            addr: addr(1),
            air: air.clone(),
        };
        let mut node = Transport::with_ids(
            Box::new(socket),
            ClusterKey::lab_default(),
            CLUSTER,
            0xA,
            ids,
            test_clock,
        );
        node.send(addr(2), Body::Probe(Probe { nonce: 0 }));
        assert_eq!(air.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&data).unwrap();
        // The next epoch lies beyond the 1 ms reserved.
        set_test_clock(NOW_US + 1_000_000);

        node.send(addr(2), Body::Probe(Probe { nonce: 1 }));
        assert_eq!(air.lock().unwrap().len(), 1, "sent without a reserved id");
        assert_eq!(node.dropped.get("no_msg_id"), Some(&1));
        assert!(node.try_recv().is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match rt.block_on(node.recv()) {
            Err(e) => assert!(e.to_string().contains("cannot reserve message ids"), "{e}"),
            Ok(got) => panic!("received {got:?} after ids ran out"),
        }
    }

    /// The datagrams in flight, taken off the air: what someone on the wire recorded.
    fn record(air: &Air) -> Vec<(Vec<u8>, SocketAddr)> {
        air.lock().unwrap().drain(..).collect()
    }

    fn replay_into(air: &Air, recorded: &[(Vec<u8>, SocketAddr)]) {
        air.lock().unwrap().extend(recorded.iter().cloned());
    }

    #[test]
    fn a_datagram_recorded_before_a_restart_is_refused_after_it() {
        let air = Air::default();
        let (node_dir, peer_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut sender = transport(node_dir.path(), 1, 0xA, test_clock, &air);
        let mut receiver = transport(peer_dir.path(), 2, 0xB, test_clock, &air);
        sender.send(addr(2), Body::Probe(Probe { nonce: 7 }));
        let recorded = record(&air);
        replay_into(&air, &recorded);
        assert!(receiver.try_recv().is_some(), "{:?}", receiver.dropped);
        replay_into(&air, &recorded);
        assert!(receiver.try_recv().is_none());
        assert_eq!(receiver.dropped.get("replayed"), Some(&1));

        // The receiver restarts a second later: its windows are gone, and the recording is
        // still refused, as minted before the new process started.
        drop(receiver);
        set_test_clock(NOW_US + 1_000_000);
        let mut receiver = transport(peer_dir.path(), 2, 0xB, test_clock, &air);
        replay_into(&air, &recorded);
        assert!(receiver.try_recv().is_none(), "a replay was accepted");
        assert_eq!(receiver.dropped.get("before_start"), Some(&1));
        // The live sender is heard: its next id is of a new epoch, after the restart.
        sender.send(addr(2), Body::Probe(Probe { nonce: 8 }));
        match receiver.try_recv() {
            Some((env, _)) => assert_eq!(env.body, Body::Probe(Probe { nonce: 8 })),
            None => panic!("the live sender was dropped: {:?}", receiver.dropped),
        }
    }

    #[test]
    fn a_recording_replayed_to_a_receiver_that_never_saw_its_sender_is_refused_when_stale() {
        let air = Air::default();
        let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
        let mut sender = transport(dirs[0].path(), 1, 0xA, test_clock, &air);
        let mut meant_for = transport(dirs[1].path(), 2, 0xB, test_clock, &air);
        sender.send(addr(2), Body::Probe(Probe { nonce: 1 }));
        let recorded = record(&air);
        replay_into(&air, &recorded);
        assert!(meant_for.try_recv().is_some());

        // A third process that started after it was sent refuses it at once...
        set_test_clock(NOW_US + 2_000_000);
        let mut stranger = transport(dirs[2].path(), 3, 0xC, test_clock, &air);
        replay_into(&air, &recorded);
        assert!(stranger.try_recv().is_none());
        assert_eq!(stranger.dropped.get("before_start"), Some(&1));
        // ...and one that runs all along refuses it once it is stale, an hour later, even
        // though its window for the sender was pruned in between.
        set_test_clock(NOW_US + 3_600_000_000);
        sender.send(addr(2), Body::Probe(Probe { nonce: 2 }));
        let fresh = record(&air);
        replay_into(&air, &fresh);
        assert!(meant_for.try_recv().is_some(), "{:?}", meant_for.dropped);
        replay_into(&air, &recorded);
        assert!(meant_for.try_recv().is_none());
        assert_eq!(meant_for.dropped.get("stale"), Some(&1));
    }

    #[test]
    fn a_sender_whose_clock_is_minutes_off_is_refused_and_counted() {
        fn behind() -> u64 {
            NOW_US - 600_000_000
        }
        fn ahead() -> u64 {
            NOW_US + 600_000_000
        }
        let air = Air::default();
        let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
        let mut receiver = transport(dirs[0].path(), 1, 0xA, clock_now, &air);
        let mut slow = transport(dirs[1].path(), 2, 0xB, behind, &air);
        let mut fast = transport(dirs[2].path(), 3, 0xC, ahead, &air);
        slow.send(addr(1), Body::Probe(Probe { nonce: 1 }));
        fast.send(addr(1), Body::Probe(Probe { nonce: 2 }));
        assert!(receiver.try_recv().is_none());
        assert_eq!(receiver.dropped.get("stale"), Some(&1));
        assert_eq!(receiver.dropped.get("from_future"), Some(&1));
    }
}
