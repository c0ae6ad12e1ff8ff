//! The real node on a data dir that cannot take what it must write, or holds what it
//! cannot trust: a file system that fills up while it serves and one mounted read-only
//! (each a small tmpfs the test mounts itself, which needs root, CAP_SYS_ADMIN: without it
//! those tests say so and check nothing), and a damaged state store or log.
//!
//! Checked: the node stops, or refuses to start, with an error that names the remedy, never
//! a panic; it changes nothing it cannot trust; nothing it acknowledged is lost; given space
//! again, it restarts on its data dir and serves.
#![allow(clippy::unwrap_used)]

use myraft_node::server::{bootstrap_static, run, NodeConfig, Timing};
use myraft_wire::api::{ClientOp, ClientResponse};
use myraft_wire::raft::{Member, Membership};
use myraft_wire::test_util::TestClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CLUSTER: u64 = 0xD1;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` when this process may not mount (not root), after saying so.
    fn mount(options: &str) -> Option<Tmpfs> {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("fs");
        std::fs::create_dir(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                dir,
                _parent: parent,
            }),
            Ok(o) => {
                eprintln!(
                    "NOT RUN: cannot mount a tmpfs ({}); run the tests as root to check a full \
                     and a read-only data dir",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("NOT RUN: cannot run mount: {e}");
                None
            }
        }
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a node task that still holds a file must not keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn free_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A one-node cluster's only member, founded on `dir`.
fn config(dir: &Path, addr: SocketAddr) -> NodeConfig {
    let mut cfg = NodeConfig::new("n1", addr, vec!["127.0.0.1:9".parse().unwrap()], dir.into());
    cfg.timing = Timing {
        tick: Duration::from_millis(10),
        election_ticks: 15,
        heartbeat_ticks: 2,
    };
    cfg
}

fn found(dir: &Path, addr: SocketAddr) {
    let mut m = Membership::default();
    m.members.insert(
        1,
        Member {
            id: 1,
            name: "n1".into(),
            addr: addr.to_string(),
            voter: true,
        },
    );
    bootstrap_static(dir, CLUSTER, 1, "n1", m).unwrap();
}

fn put(key: &str, value: &str) -> ClientOp {
    ClientOp::Put {
        key: key.into(),
        value: value.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_with_advice_and_loses_no_acknowledged_write() {
    let Some(fs) = Tmpfs::mount("size=4m") else {
        return;
    };
    let dir = fs.dir.join("n1");
    let addr = free_addr();
    found(&dir, addr);
    let stop = CancellationToken::new();
    let node = tokio::spawn(run(config(&dir, addr), stop.clone()));
    let mut cl = TestClient::bind(CLUSTER, vec![addr]).await;
    let value = "v".repeat(16 * 1024);
    let mut acked = Vec::new();
    // Writes until the node stops answering; 4 MiB holds a few hundred of them.
    for i in 0..2000u64 {
        let op = put(&format!("k{i}"), &format!("{i}:{value}"));
        match cl
            .call_within(cl.id, i + 1, &op, Duration::from_secs(3))
            .await
        {
            Ok((ClientResponse::Put(_), _)) => acked.push(i),
            Ok((other, _)) => panic!("a put answered {other:?}"),
            Err(_) if node.is_finished() => break,
            Err(e) => panic!("the node neither answered nor stopped: {e}"),
        }
    }
    assert!(node.is_finished(), "2000 writes of 16 KiB fit in 4 MiB?");
    let err = node
        .await
        .unwrap()
        .expect_err("the node stopped with an error");
    let said = myraft_wire::util::describe(&err);
    assert!(
        said.contains("No space left") && said.contains("free space"),
        "the error names the cause and the remedy: {said}"
    );
    assert!(acked.len() > 10, "only {} writes fit", acked.len());
    eprintln!(
        "{} writes acknowledged before the disk was full: {said}",
        acked.len()
    );

    // Space again: the node restarts on what it kept, and has every write it acknowledged.
    fs.remount("size=64m");
    let node = tokio::spawn(run(config(&dir, addr), stop.clone()));
    for i in &acked {
        match cl.get(&format!("k{i}")).await {
            Ok((g, _)) => {
                let v = g
                    .value
                    .unwrap_or_else(|| panic!("acknowledged k{i} is lost"));
                assert!(v.starts_with(format!("{i}:").as_bytes()), "k{i}");
            }
            Err(e) => panic!("reading k{i} after the restart: {e}"),
        }
    }
    let more = put("after", "space again");
    let after = cl
        .call_within(cl.id, 10_000, &more, Duration::from_secs(10))
        .await;
    assert!(
        matches!(after, Ok((ClientResponse::Put(_), _))),
        "{after:?}"
    );
    stop.cancel();
    node.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_data_dir_is_refused_with_advice() {
    let Some(fs) = Tmpfs::mount("size=1m") else {
        return;
    };
    let dir = fs.dir.join("n1");
    let addr = free_addr();
    found(&dir, addr);
    fs.remount("ro");
    let err = run(config(&dir, addr), CancellationToken::new())
        .await
        .expect_err("a node cannot run on a read-only data dir");
    let said = myraft_wire::util::describe(&err);
    assert!(
        said.contains("read-only") && said.contains("remount it read-write"),
        "{said}"
    );
}

/// A one-node cluster on `dir` that acknowledged `writes` puts, then stopped cleanly.
async fn served(dir: &Path, addr: SocketAddr, writes: u64) {
    found(dir, addr);
    let stop = CancellationToken::new();
    let node = tokio::spawn(run(config(dir, addr), stop.clone()));
    let mut cl = TestClient::bind(CLUSTER, vec![addr]).await;
    for i in 0..writes {
        let op = put(&format!("k{i}"), &format!("value {i}"));
        let done = cl
            .call_within(cl.id, i + 1, &op, Duration::from_secs(10))
            .await;
        assert!(matches!(done, Ok((ClientResponse::Put(_), _))), "{done:?}");
    }
    stop.cancel();
    node.await.unwrap().unwrap();
}

/// Flips one byte of `file` in the middle, and returns the damaged contents.
fn damage(file: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(file, &bytes).unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_state_store_is_refused_with_advice_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    let addr = free_addr();
    served(&dir, addr, 20).await;
    let store = dir.join("state.redb");
    let mut bytes = std::fs::read(&store).unwrap();
    // The header: what redb checks first.
    bytes[..64].fill(0xee);
    std::fs::write(&store, &bytes).unwrap();
    let err = run(config(&dir, addr), CancellationToken::new())
        .await
        .expect_err("a node must not start on a damaged store");
    let said = myraft_wire::util::describe(&err);
    assert!(
        said.contains("state.redb") && said.contains("remove the data dir"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        bytes,
        "the store was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_refused_with_advice_and_left_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("n1");
    let addr = free_addr();
    served(&dir, addr, 200).await;
    let wal = dir.join("raft").join("wal");
    let segment = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .expect("a log segment");
    let damaged = damage(&segment);
    let err = run(config(&dir, addr), CancellationToken::new())
        .await
        .expect_err("a node must not start on a damaged log");
    let said = myraft_wire::util::describe(&err);
    assert!(
        said.contains("corrupt data in") && said.contains("restore the data dir from a backup"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(&segment).unwrap(),
        damaged,
        "the log was changed"
    );
}
