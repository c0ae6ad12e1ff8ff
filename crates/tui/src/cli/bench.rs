//! `myraft bench`: C concurrent clients share N operations (or run for S seconds), each a
//! linearizable `Get` with probability R, else a `Put` of a random B-byte value.
//!
//! Measured as etcd's `benchmark` tool does:
//! - Reads only ask for keys that hold a B-byte value: before the clock starts, the clients
//!   fill the K read keys, so a read never measures a cheap "not found".
//! - Writes go to one of the K keys at random, or with `--sequential-keys` each to a new
//!   key, so a run can measure an ever-growing key space instead of overwrites.
//! - Latency goes into an HDR histogram (microseconds, 3 significant digits): memory stays
//!   fixed however long the run, and percentiles are exact to that precision.
//!
//! Each worker has its own [`Client`] (its own client id and socket), as separate client
//! processes would: one client keeps one write in flight, so sharing one would measure the
//! queue, not the cluster. Latency is measured per request, retries included.

use super::render::Report;
use super::{Cli, CliError, Context};
use crate::local::{free_base_port, wait_for_leader, LocalCluster, LocalOptions};
use clap::Args;
use hdrhistogram::Histogram;
use myraft_wire::api::{ClientOp, ClientResponse, Consistency};
use myraft_wire::client::Client;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest latency the histogram tells apart; slower requests count as this long. Far
/// above any client timeout anyone would set for a benchmark.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The longest `--duration` accepted: a week, well past any benchmark, and small enough that
/// the deadline cannot overflow the clock.
const MAX_DURATION_S: f64 = 7.0 * 24.0 * 3600.0;

/// How often the progress line goes to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Start a local cluster of N nodes (in a temporary directory) for the run, and stop it
    /// afterwards, instead of using --entrance.
    #[arg(long, value_name = "N")]
    pub local: Option<usize>,
    /// Concurrent clients.
    #[arg(long, value_name = "C", default_value_t = 16)]
    pub clients: usize,
    /// Operations in total, over all clients.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub ops: u64,
    /// Run for S seconds (fractions allowed) instead of a fixed number of operations; no new
    /// operation starts after that, and the report counts the operations that completed.
    #[arg(long, value_name = "S", conflicts_with = "ops")]
    pub duration: Option<f64>,
    /// Bytes per written value.
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of operations that are reads (linearizable gets), 0.0 to 1.0.
    #[arg(long, value_name = "R", default_value_t = 0.5)]
    pub read_ratio: f64,
    /// How many distinct keys reads spread over (and writes, without --sequential-keys);
    /// with reads, these keys are filled before the run.
    #[arg(long, value_name = "K", default_value_t = 1000)]
    pub keys: u64,
    /// Each write puts a new key (the i-th operation writes key i, zero-padded so keys sort
    /// in order), as etcd's `benchmark put --sequential-keys`.
    #[arg(long)]
    pub sequential_keys: bool,
}

impl BenchArgs {
    fn validate(&self) -> Result<(), CliError> {
        if self.clients == 0 || self.clients > 10_000 {
            return Err(CliError::bad_request(
                "--clients must be between 1 and 10000",
            ));
        }
        if self.ops == 0 {
            return Err(CliError::bad_request("--ops must be at least 1"));
        }
        if let Some(s) = self.duration {
            if !(s > 0.0 && s <= MAX_DURATION_S) {
                return Err(CliError::bad_request(format!(
                    "--duration must be a number of seconds above 0 and at most {MAX_DURATION_S}"
                )));
            }
        }
        if self.value_size > super::MAX_VALUE_BYTES {
            return Err(CliError::bad_request(format!(
                "--value-size must be at most {} bytes (the value limit)",
                super::MAX_VALUE_BYTES
            )));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(CliError::bad_request(
                "--read-ratio must be between 0.0 (writes only) and 1.0 (reads only)",
            ));
        }
        if self.keys == 0 {
            return Err(CliError::bad_request("--keys must be at least 1"));
        }
        if self.local == Some(0) {
            return Err(CliError::bad_request("--local needs at least 1 node"));
        }
        Ok(())
    }

    /// When the run ends: after a number of operations, or at a deadline.
    fn limit(&self) -> Limit {
        match self.duration {
            Some(s) => Limit::Duration(Duration::from_secs_f64(s)),
            None => Limit::Ops(self.ops),
        }
    }

    /// Digits of a sequential key's number: enough for every operation of the run, so that
    /// the keys sort in the order they were written.
    fn key_width(&self) -> usize {
        match self.limit() {
            Limit::Ops(n) => digits(n.saturating_sub(1)),
            Limit::Duration(_) => digits(u64::MAX),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Limit {
    Ops(u64),
    Duration(Duration),
}

fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The key a read (or a write without --sequential-keys) uses: one of the K filled keys.
pub fn spread_key(k: u64) -> Vec<u8> {
    format!("bench-{k}").into_bytes()
}

/// The key the i-th operation writes with --sequential-keys. Apart from the read keys, so
/// that sequential writes always create a key rather than overwrite a filled one.
pub fn sequential_key(i: u64, width: usize) -> Vec<u8> {
    format!("bench-seq-{i:0width$}").into_bytes()
}

/// An empty latency histogram, in microseconds.
pub fn latency_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy the crate's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5), so this cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid constant histogram bounds")
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub elapsed: Duration,
    /// Latency of successful requests, microseconds.
    pub write_us: Histogram<u64>,
    pub read_us: Histogram<u64>,
    pub errors: u64,
    /// Reads that found no value: zero unless something deleted the filled keys meanwhile.
    pub reads_not_found: u64,
    /// The first error of the run, to show why errors happened.
    pub first_error: Option<String>,
}

impl BenchResult {
    fn empty() -> Self {
        BenchResult {
            elapsed: Duration::ZERO,
            write_us: latency_histogram(),
            read_us: latency_histogram(),
            errors: 0,
            reads_not_found: 0,
            first_error: None,
        }
    }

    /// Operations that completed, failed ones included.
    pub fn completed(&self) -> u64 {
        self.write_us.len() + self.read_us.len() + self.errors
    }

    fn merge(&mut self, part: BenchResult) -> Result<(), CliError> {
        // Both sides have the same bounds, so adding cannot overflow the range.
        self.write_us
            .add(&part.write_us)
            .and_then(|()| self.read_us.add(&part.read_us))
            .map_err(|e| CliError::io(format!("cannot merge latency histograms: {e:?}")))?;
        self.errors += part.errors;
        self.reads_not_found += part.reads_not_found;
        if self.first_error.is_none() {
            self.first_error = part.first_error;
        }
        Ok(())
    }
}

pub async fn run(cli: &Cli, args: &BenchArgs) -> Result<Report, CliError> {
    args.validate()?;
    let mut ctx = Context::from_cli(cli)?;
    let cluster = match args.local {
        Some(nodes) => {
            let base_port = free_base_port(nodes + 1).ok_or_else(|| {
                CliError::io("found no free run of UDP ports on 127.0.0.1 for --local")
            })?;
            let opts = LocalOptions {
                nodes,
                dir: None,
                base_port,
                key_file: cli.key_file.clone(),
                bin_dir: None,
            };
            let cluster = LocalCluster::start(&opts).map_err(super::local_error)?;
            ctx.entrances = vec![cluster.entrance_addr()];
            eprintln!(
                "myraft: local cluster of {nodes} node(s) on {} (data in {}), waiting for a leader",
                cluster.entrance_addr(),
                cluster.dir().display()
            );
            let ready = wait_for_leader(
                cluster.entrance_addr(),
                ctx.key.clone(),
                nodes,
                Duration::from_secs(30),
            )
            .await;
            if ready.is_none() {
                let dir = cluster.dir().to_owned();
                cluster.stop().await;
                return Err(CliError::new(
                    "timeout",
                    format!(
                        "the local cluster elected no leader within 30 s; see the logs in {}",
                        dir.display()
                    ),
                ));
            }
            Some(cluster)
        }
        None => None,
    };

    let outcome = measure(&ctx, args).await;
    if let Some(cluster) = cluster {
        let dir = cluster.dir().to_owned();
        cluster.stop().await;
        // A throwaway cluster; its data is of no use after the run.
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (leader, result) = outcome?;
    Ok(report(args, leader.as_deref(), &result))
}

async fn measure(
    ctx: &Context,
    args: &BenchArgs,
) -> Result<(Option<String>, BenchResult), CliError> {
    // One status first: fails fast with a clear reason if the cluster is not there.
    let probe = ctx.client()?;
    let status = probe
        .request(ClientOp::Status)
        .await
        .map_err(|e| CliError::request(e, &ClientOp::Status, &probe))?;
    let leader = match status {
        ClientResponse::Status(s) => s.leader.map(|l| l.name),
        _ => None,
    };

    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = ctx.client()?;
        // Learn the leader before the clock starts, so the run measures the hot path.
        let _ = client.refresh_leader().await;
        clients.push(Arc::new(client));
    }

    if args.read_ratio > 0.0 {
        eprintln!(
            "myraft: bench: filling {} key(s) with {}-byte values for the reads (not timed)",
            args.keys, args.value_size
        );
        fill(&clients, args).await?;
    }

    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = match args.limit() {
        Limit::Duration(d) => Some(started + d),
        Limit::Ops(_) => None,
    };
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let shared = Shared {
                next: Arc::clone(&next),
                done: Arc::clone(&done),
                deadline,
            };
            tokio::spawn(worker(client, shared, args.clone()))
        })
        .collect();

    let mut all = std::pin::pin!(futures_util::future::join_all(workers));
    let mut progress =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    // A late tick after a stall would report a rate over the wrong interval; skip it.
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = (Instant::now(), 0u64);
    let parts = loop {
        tokio::select! {
            parts = &mut all => break parts,
            _ = progress.tick() => {
                let now = Instant::now();
                let count = done.load(Ordering::Relaxed);
                eprintln!("{}", progress_line(count, count - last.1, now - last.0));
                last = (now, count);
            }
        }
    };

    let mut result = BenchResult::empty();
    for part in parts {
        let part = part.map_err(|e| CliError::io(format!("a bench worker failed: {e}")))?;
        result.merge(part)?;
    }
    result.elapsed = started.elapsed();
    Ok((leader, result))
}

/// The stderr line once a second: the total so far and the rate since the last line.
pub fn progress_line(done: u64, since_last: u64, interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    let rate = if secs > 0.0 {
        since_last as f64 / secs
    } else {
        0.0
    };
    format!("myraft: bench: {done} ops done, {rate:.0} ops/s")
}

/// Puts a value into each of the K read keys, the clients sharing the keys between them.
async fn fill(clients: &[Arc<Client>], args: &BenchArgs) -> Result<(), CliError> {
    let next = Arc::new(AtomicU64::new(0));
    let fillers: Vec<_> = clients
        .iter()
        .map(|client| {
            let client = Arc::clone(client);
            let next = Arc::clone(&next);
            let (keys, value_size) = (args.keys, args.value_size);
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= keys {
                        return Ok(());
                    }
                    let op = ClientOp::Put {
                        key: spread_key(k),
                        value: random_value(value_size),
                    };
                    if let Err(e) = client.request(op.clone()).await {
                        // A read of a key left empty would measure a miss, not a read.
                        return Err(CliError::request(e, &op, &client));
                    }
                }
            })
        })
        .collect();
    for filler in futures_util::future::join_all(fillers).await {
        filler.map_err(|e| CliError::io(format!("a bench worker failed: {e}")))??;
    }
    Ok(())
}

/// What the workers of one run share.
struct Shared {
    /// The index of the next operation, over all clients.
    next: Arc<AtomicU64>,
    /// Operations completed, for the progress line.
    done: Arc<AtomicU64>,
    deadline: Option<Instant>,
}

async fn worker(client: Arc<Client>, shared: Shared, args: BenchArgs) -> BenchResult {
    let mut part = BenchResult::empty();
    let width = args.key_width();
    loop {
        if shared.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if shared.deadline.is_none() && i >= args.ops {
            break;
        }
        let read = rand::random_bool(args.read_ratio);
        let op = if read {
            ClientOp::Get {
                key: spread_key(rand::random_range(0..args.keys)),
                rev: None,
                consistency: Consistency::Linearizable,
            }
        } else {
            let key = if args.sequential_keys {
                sequential_key(i, width)
            } else {
                spread_key(rand::random_range(0..args.keys))
            };
            ClientOp::Put {
                key,
                value: random_value(args.value_size),
            }
        };
        let start = Instant::now();
        match client.request(op).await {
            Ok(response) => {
                let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                if read {
                    part.read_us.saturating_record(us);
                    if let ClientResponse::Get(g) = response {
                        if !g.found {
                            part.reads_not_found += 1;
                        }
                    }
                } else {
                    part.write_us.saturating_record(us);
                }
            }
            Err(e) => {
                part.errors += 1;
                if part.first_error.is_none() {
                    part.first_error = Some(e.to_string());
                }
            }
        }
        shared.done.fetch_add(1, Ordering::Relaxed);
    }
    part
}

/// Printable ASCII, so that `myraft get` shows the values the bench wrote.
fn random_value(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random_range(b'a'..=b'z')).collect()
}

/// The `q` quantile of a microsecond histogram, in milliseconds.
pub fn percentile_ms(us: &Histogram<u64>, q: f64) -> Option<f64> {
    if us.is_empty() {
        return None;
    }
    Some(round3(us.value_at_quantile(q) as f64 / 1000.0))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn report(args: &BenchArgs, leader: Option<&str>, r: &BenchResult) -> Report {
    let elapsed_s = r.elapsed.as_secs_f64();
    let done = (r.write_us.len() + r.read_us.len()) as f64;
    let ops_per_s = if elapsed_s > 0.0 {
        round3(done / elapsed_s)
    } else {
        0.0
    };
    // With --duration the number of operations is what completed, not what was asked for.
    let ops = match args.limit() {
        Limit::Ops(n) => n,
        Limit::Duration(_) => r.completed(),
    };
    let w50 = percentile_ms(&r.write_us, 0.50);
    let w99 = percentile_ms(&r.write_us, 0.99);
    let w999 = percentile_ms(&r.write_us, 0.999);
    // The longest wait is what a failover or a handover costs a client.
    let wmax = percentile_ms(&r.write_us, 1.0);
    let r50 = percentile_ms(&r.read_us, 0.50);
    let r99 = percentile_ms(&r.read_us, 0.99);
    let rmax = percentile_ms(&r.read_us, 1.0);
    let json = json!({
        "clients": args.clients,
        "ops": ops,
        "value_size": args.value_size,
        "read_ratio": args.read_ratio,
        "elapsed_s": round3(elapsed_s),
        "ops_per_s": ops_per_s,
        "write_p50_ms": w50,
        "write_p99_ms": w99,
        "write_p999_ms": w999,
        "write_max_ms": wmax,
        "read_p50_ms": r50,
        "read_p99_ms": r99,
        "read_max_ms": rmax,
        "errors": r.errors,
        "leader": leader,
        "writes": r.write_us.len(),
        "reads": r.read_us.len(),
        "reads_not_found": r.reads_not_found,
        "keys": args.keys,
        "sequential_keys": args.sequential_keys,
        "duration_s": args.duration,
        "local_nodes": args.local,
        "cores": cores(),
    });
    let ms = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"));
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let limit = match args.duration {
        Some(s) => format!("{s} s"),
        None => format!("{} operations", args.ops),
    };
    let keys = if args.sequential_keys {
        format!("{} for reads, a new key per write", args.keys)
    } else {
        args.keys.to_string()
    };
    let mut human = format!(
        "command        {command_line}\n\
         cores          {}\n\
         cluster        {}\n\
         clients        {}\n\
         run for        {limit}\n\
         operations     {ops} ({} writes, {} reads, {} errors)\n\
         value size     {} bytes\n\
         read ratio     {}\n\
         keys           {keys}\n\
         leader         {}\n\
         elapsed        {:.3} s\n\
         throughput     {ops_per_s:.1} ops/s\n\
         write latency  p50 {}  p99 {}  p99.9 {}  max {}\n\
         read latency   p50 {}  p99 {}  max {}\n",
        cores(),
        args.local.map_or_else(
            || "given by --entrance".to_owned(),
            |n| format!("local, {n} node(s)")
        ),
        args.clients,
        r.write_us.len(),
        r.read_us.len(),
        r.errors,
        args.value_size,
        args.read_ratio,
        leader.unwrap_or("unknown"),
        elapsed_s,
        ms(w50),
        ms(w99),
        ms(w999),
        ms(wmax),
        ms(r50),
        ms(r99),
        ms(rmax),
    );
    if r.reads_not_found > 0 {
        human.push_str(&format!(
            "missing reads  {} read(s) found no value\n",
            r.reads_not_found
        ));
    }
    if let Some(e) = &r.first_error {
        human.push_str(&format!("first error    {e}\n"));
    }
    Report::new(json, human)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::Value;

    fn args() -> BenchArgs {
        BenchArgs {
            local: None,
            clients: 1,
            ops: 1,
            duration: None,
            value_size: 1,
            read_ratio: 0.0,
            keys: 1,
            sequential_keys: false,
        }
    }

    fn histogram(samples_us: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = latency_histogram();
        for us in samples_us {
            h.record(us).unwrap();
        }
        h
    }

    /// Within the histogram's three significant digits.
    fn close(actual: Option<f64>, expected_ms: f64) -> bool {
        actual.is_some_and(|a| (a - expected_ms).abs() <= expected_ms * 1e-3)
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        // 1 ms, 2 ms, ..., 1000 ms.
        let h = histogram((1..=1000).map(|i| i * 1000));
        assert!(
            close(percentile_ms(&h, 0.5), 500.0),
            "{:?}",
            percentile_ms(&h, 0.5)
        );
        assert!(
            close(percentile_ms(&h, 0.99), 990.0),
            "{:?}",
            percentile_ms(&h, 0.99)
        );
        assert!(
            close(percentile_ms(&h, 0.999), 999.0),
            "{:?}",
            percentile_ms(&h, 0.999)
        );
        // Small values are exact: below 2048 µs every microsecond has its own bucket.
        assert_eq!(percentile_ms(&histogram([1500]), 0.999), Some(1.5));
        assert_eq!(percentile_ms(&latency_histogram(), 0.5), None);
    }

    #[test]
    fn a_latency_beyond_the_histogram_counts_as_its_maximum() {
        let mut h = latency_histogram();
        h.saturating_record(u64::MAX);
        assert!(close(
            percentile_ms(&h, 0.5),
            MAX_LATENCY_US as f64 / 1000.0
        ));
    }

    #[test]
    fn worker_histograms_merge() {
        let mut total = BenchResult::empty();
        let mut part = BenchResult::empty();
        part.write_us = histogram([1000, 3000]);
        part.errors = 1;
        part.first_error = Some("boom".into());
        total.merge(part.clone()).unwrap();
        total.merge(part).unwrap();
        assert_eq!(total.write_us.len(), 4);
        assert_eq!(total.errors, 2);
        assert_eq!(total.completed(), 6);
        assert_eq!(total.first_error.as_deref(), Some("boom"));
        assert!(close(percentile_ms(&total.write_us, 0.99), 3.0));
    }

    #[test]
    fn sequential_keys_are_distinct_and_sorted() {
        let a = BenchArgs {
            ops: 1000,
            ..args()
        };
        let width = a.key_width();
        assert_eq!(width, 3);
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| sequential_key(i, width)).collect();
        assert_eq!(keys[0], b"bench-seq-000");
        assert_eq!(keys[999], b"bench-seq-999");
        // Strictly increasing byte order: distinct, and sorted as they were written.
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        // Never one of the read keys, which the fill wrote.
        assert!((0..1000).all(|k| !keys.contains(&spread_key(k))));
    }

    #[test]
    fn sequential_keys_of_a_timed_run_fit_any_count() {
        let a = BenchArgs {
            duration: Some(1.0),
            ..args()
        };
        let width = a.key_width();
        assert!(sequential_key(9, width) < sequential_key(10, width));
        assert!(sequential_key(u64::MAX - 1, width) < sequential_key(u64::MAX, width));
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(u64::MAX), 20);
    }

    #[test]
    fn the_progress_line_gives_the_total_and_the_current_rate() {
        let line = progress_line(5000, 1500, Duration::from_millis(500));
        assert_eq!(line, "myraft: bench: 5000 ops done, 3000 ops/s");
        assert!(progress_line(0, 0, Duration::ZERO).contains("0 ops/s"));
    }

    #[test]
    fn the_report_has_every_documented_field() {
        let args = BenchArgs {
            clients: 4,
            ops: 3,
            value_size: 64,
            read_ratio: 0.5,
            keys: 10,
            ..args()
        };
        let result = BenchResult {
            elapsed: Duration::from_millis(1500),
            write_us: histogram([1000, 2000]),
            errors: 1,
            first_error: Some("boom".into()),
            ..BenchResult::empty()
        };
        let r = report(&args, Some("n1"), &result);
        for field in [
            "clients",
            "ops",
            "value_size",
            "read_ratio",
            "elapsed_s",
            "ops_per_s",
            "write_p50_ms",
            "write_p99_ms",
            "write_p999_ms",
            "read_p50_ms",
            "read_p99_ms",
            "errors",
            "leader",
        ] {
            assert!(r.json.get(field).is_some(), "{field} missing");
        }
        assert_eq!(r.json["ops"], json!(3));
        assert_eq!(r.json["ops_per_s"], json!(1.333));
        assert_eq!(r.json["write_p99_ms"], json!(2.0));
        assert_eq!(r.json["read_p50_ms"], Value::Null);
        assert_eq!(r.json["leader"], json!("n1"));
        assert_eq!(r.json["duration_s"], Value::Null);
        assert!(r.human.contains("ops/s"));
        assert!(r.human.contains("cores"));
        assert!(r.human.contains("boom"));
    }

    #[test]
    fn a_timed_run_reports_the_operations_it_completed() {
        let args = BenchArgs {
            ops: 10_000,
            duration: Some(2.5),
            sequential_keys: true,
            ..args()
        };
        let result = BenchResult {
            elapsed: Duration::from_secs(2),
            write_us: histogram([1000; 7]),
            read_us: histogram([500; 2]),
            errors: 1,
            ..BenchResult::empty()
        };
        let r = report(&args, None, &result);
        assert_eq!(r.json["ops"], json!(10));
        assert_eq!(r.json["duration_s"], json!(2.5));
        assert_eq!(r.json["sequential_keys"], json!(true));
        assert_eq!(r.json["ops_per_s"], json!(4.5));
        assert!(r.human.contains("2.5 s"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let good = args();
        assert!(good.validate().is_ok());
        assert!(BenchArgs {
            duration: Some(0.5),
            sequential_keys: true,
            ..good.clone()
        }
        .validate()
        .is_ok());
        for bad in [
            BenchArgs {
                clients: 0,
                ..good.clone()
            },
            BenchArgs {
                ops: 0,
                ..good.clone()
            },
            BenchArgs {
                read_ratio: 1.5,
                ..good.clone()
            },
            BenchArgs {
                keys: 0,
                ..good.clone()
            },
            BenchArgs {
                local: Some(0),
                ..good.clone()
            },
            BenchArgs {
                value_size: super::super::MAX_VALUE_BYTES + 1,
                ..good.clone()
            },
            BenchArgs {
                duration: Some(0.0),
                ..good.clone()
            },
            BenchArgs {
                duration: Some(-1.0),
                ..good.clone()
            },
            BenchArgs {
                duration: Some(f64::NAN),
                ..good.clone()
            },
            BenchArgs {
                duration: Some(f64::INFINITY),
                ..good.clone()
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(err.code, "bad_request", "{bad:?}");
        }
        let err = BenchArgs {
            duration: Some(0.0),
            ..good
        }
        .validate()
        .unwrap_err();
        assert!(err.message.contains("--duration"), "{}", err.message);
    }
}
