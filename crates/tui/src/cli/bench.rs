//! `myraft bench`: C concurrent clients share N operations, each a linearizable `Get` with
//! probability R, else a `Put` of a random B-byte value, over K keys.
//!
//! Each worker has its own [`Client`] (its own client id and socket), as separate client
//! processes would: one client keeps one write in flight, so sharing one would measure the
//! queue, not the cluster. Latency is measured per request, retries included; percentiles
//! come from the sorted samples.

use super::render::Report;
use super::{Cli, CliError, Context};
use crate::local::{free_base_port, wait_for_leader, LocalCluster, LocalOptions};
use clap::Args;
use myraft_wire::client::{ClientOp, ClientResponse, Consistency};
use myraft_wire::request::Client;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Bytes per written value.
    #[arg(long, value_name = "B", default_value_t = 100)]
    pub value_size: usize,
    /// Fraction of operations that are reads (linearizable gets), 0.0 to 1.0.
    #[arg(long, value_name = "R", default_value_t = 0.5)]
    pub read_ratio: f64,
    /// How many distinct keys the operations spread over.
    #[arg(long, value_name = "K", default_value_t = 1000)]
    pub keys: u64,
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
        if self.value_size > super::MAX_VALUE {
            return Err(CliError::bad_request(format!(
                "--value-size must be at most {} bytes (the value limit)",
                super::MAX_VALUE
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
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchResult {
    pub elapsed: Duration,
    /// Microseconds, sorted.
    pub write_us: Vec<u64>,
    pub read_us: Vec<u64>,
    pub errors: u64,
    /// The first error of the run, to show why errors happened.
    pub first_error: Option<String>,
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
        clients.push(client);
    }

    let remaining = Arc::new(AtomicU64::new(args.ops));
    let started = Instant::now();
    let workers: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let remaining = Arc::clone(&remaining);
            let args = args.clone();
            tokio::spawn(worker(client, remaining, args))
        })
        .collect();
    let mut result = BenchResult {
        elapsed: Duration::ZERO,
        write_us: Vec::new(),
        read_us: Vec::new(),
        errors: 0,
        first_error: None,
    };
    for w in workers {
        let part = w
            .await
            .map_err(|e| CliError::io(format!("a bench worker failed: {e}")))?;
        result.write_us.extend(part.write_us);
        result.read_us.extend(part.read_us);
        result.errors += part.errors;
        if result.first_error.is_none() {
            result.first_error = part.first_error;
        }
    }
    result.elapsed = started.elapsed();
    result.write_us.sort_unstable();
    result.read_us.sort_unstable();
    Ok((leader, result))
}

async fn worker(client: Client, remaining: Arc<AtomicU64>, args: BenchArgs) -> BenchResult {
    let mut part = BenchResult {
        elapsed: Duration::ZERO,
        write_us: Vec::new(),
        read_us: Vec::new(),
        errors: 0,
        first_error: None,
    };
    while remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
    {
        let key = format!("bench-{}", rand::random_range(0..args.keys)).into_bytes();
        let read = rand::random_bool(args.read_ratio);
        let op = if read {
            ClientOp::Get {
                key,
                rev: None,
                consistency: Consistency::Linearizable,
            }
        } else {
            ClientOp::Put {
                key,
                value: random_value(args.value_size),
            }
        };
        let start = Instant::now();
        match client.request(op).await {
            Ok(_) => {
                let us = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
                if read {
                    part.read_us.push(us);
                } else {
                    part.write_us.push(us);
                }
            }
            Err(e) => {
                part.errors += 1;
                if part.first_error.is_none() {
                    part.first_error = Some(e.to_string());
                }
            }
        }
    }
    part
}

/// Printable ASCII, so that `myraft get` shows the values the bench wrote.
fn random_value(len: usize) -> Vec<u8> {
    (0..len).map(|_| rand::random_range(b'a'..=b'z')).collect()
}

/// The `q` quantile of sorted microsecond samples, in milliseconds (nearest rank).
pub fn percentile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = (q * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    Some(round3(sorted_us[index] as f64 / 1000.0))
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
    let w50 = percentile_ms(&r.write_us, 0.50);
    let w99 = percentile_ms(&r.write_us, 0.99);
    let w999 = percentile_ms(&r.write_us, 0.999);
    let r50 = percentile_ms(&r.read_us, 0.50);
    let r99 = percentile_ms(&r.read_us, 0.99);
    let json = json!({
        "clients": args.clients,
        "ops": args.ops,
        "value_size": args.value_size,
        "read_ratio": args.read_ratio,
        "elapsed_s": round3(elapsed_s),
        "ops_per_s": ops_per_s,
        "write_p50_ms": w50,
        "write_p99_ms": w99,
        "write_p999_ms": w999,
        "read_p50_ms": r50,
        "read_p99_ms": r99,
        "errors": r.errors,
        "leader": leader,
        "writes": r.write_us.len(),
        "reads": r.read_us.len(),
        "keys": args.keys,
        "local_nodes": args.local,
        "cores": cores(),
    });
    let ms = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"));
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let mut human = format!(
        "command        {command_line}\n\
         cores          {}\n\
         cluster        {}\n\
         clients        {}\n\
         operations     {} ({} writes, {} reads, {} errors)\n\
         value size     {} bytes\n\
         read ratio     {}\n\
         keys           {}\n\
         leader         {}\n\
         elapsed        {:.3} s\n\
         throughput     {ops_per_s:.1} ops/s\n\
         write latency  p50 {}  p99 {}  p99.9 {}\n\
         read latency   p50 {}  p99 {}\n",
        cores(),
        args.local.map_or_else(
            || "given by --entrance".to_owned(),
            |n| format!("local, {n} node(s)")
        ),
        args.clients,
        args.ops,
        r.write_us.len(),
        r.read_us.len(),
        r.errors,
        args.value_size,
        args.read_ratio,
        args.keys,
        leader.unwrap_or("unknown"),
        elapsed_s,
        ms(w50),
        ms(w99),
        ms(w999),
        ms(r50),
        ms(r99),
    );
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

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&samples, 0.5), Some(500.0));
        assert_eq!(percentile_ms(&samples, 0.99), Some(990.0));
        assert_eq!(percentile_ms(&samples, 0.999), Some(999.0));
        assert_eq!(percentile_ms(&[1500], 0.999), Some(1.5));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn the_report_has_every_documented_field() {
        let args = BenchArgs {
            local: None,
            clients: 4,
            ops: 3,
            value_size: 64,
            read_ratio: 0.5,
            keys: 10,
        };
        let result = BenchResult {
            elapsed: Duration::from_millis(1500),
            write_us: vec![1000, 2000],
            read_us: vec![],
            errors: 1,
            first_error: Some("boom".into()),
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
        assert_eq!(r.json["ops_per_s"], json!(1.333));
        assert_eq!(r.json["write_p99_ms"], json!(2.0));
        assert_eq!(r.json["read_p50_ms"], Value::Null);
        assert_eq!(r.json["leader"], json!("n1"));
        assert!(r.human.contains("ops/s"));
        assert!(r.human.contains("cores"));
        assert!(r.human.contains("boom"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        let good = BenchArgs {
            local: None,
            clients: 1,
            ops: 1,
            value_size: 1,
            read_ratio: 0.0,
            keys: 1,
        };
        assert!(good.validate().is_ok());
        for bad in [
            BenchArgs {
                clients: 0,
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
        ] {
            assert_eq!(bad.validate().unwrap_err().code, "bad_request");
        }
    }

    use serde_json::Value;
}
