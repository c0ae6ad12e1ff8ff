//! Raft core throughput with no I/O at all: a three-server cluster in memory, the leader
//! proposing 100-byte commands in batches of 64, every message delivered at once. What is
//! measured is the core's own cost per committed entry (stepping, log handling, commit
//! counting, Ready), the ceiling the server's disk and network then lower.
//!
//! `cargo bench -p myraft-node --bench core`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use myraft_node::raft::{Config, InitialState, Raft};
use myraft_wire::raft::{Member, Membership};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::VecDeque;
use std::time::Duration;

const BATCH: u64 = 64;

struct Cluster {
    nodes: Vec<Raft>,
    queue: VecDeque<myraft_wire::raft::RaftMessage>,
}

impl Cluster {
    fn new() -> Cluster {
        let mut m = Membership::default();
        for id in 1..=3 {
            m.members.insert(
                id,
                Member {
                    id,
                    name: format!("n{id}"),
                    addr: String::new(),
                    voter: true,
                },
            );
        }
        let nodes = (1..=3)
            .map(|id| {
                Raft::new(
                    Config::new(id),
                    InitialState::bootstrap(m.clone()),
                    StdRng::seed_from_u64(id),
                )
            })
            .collect();
        let mut c = Cluster {
            nodes,
            queue: VecDeque::new(),
        };
        c.nodes[0].campaign();
        c.settle();
        assert!(c.nodes[0].is_leader(), "n1 must lead for the benchmark");
        c
    }

    /// Drives every server's Ready (persisting is free here) until no message is left.
    fn settle(&mut self) {
        loop {
            for n in &mut self.nodes {
                while n.has_ready() {
                    let rd = n.ready();
                    self.queue.extend(rd.messages);
                    n.advance();
                }
            }
            let Some(m) = self.queue.pop_front() else {
                break;
            };
            let to = (m.to - 1) as usize;
            self.nodes[to].step(m);
        }
    }
}

fn core(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!("cargo bench -p myraft-node --bench core  ({cores} cores)");
    let mut cluster = Cluster::new();
    let mut group = c.benchmark_group("raft core");
    group.measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("3 servers, commit 64 x 100 B entries", |b| {
        b.iter(|| {
            let target = cluster.nodes[0].last_index() + BATCH;
            for _ in 0..BATCH {
                cluster.nodes[0]
                    .propose(vec![0xab; 100])
                    .expect("leader accepts");
            }
            cluster.settle();
            assert!(cluster.nodes[0].commit_index() >= target);
        })
    });
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
