//! The checker against the corpus in tests/data/linearizability: every history there must
//! get the verdict EXPECTED.tsv gives it (an unknown verdict counts as a wrong one).
//! `cargo test -p myraft-tui --test verify_corpus -- --nocapture` prints the table.

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use myraft_tui::verify::{self, Verdict};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Far more than any file takes; running out of it fails the test instead of hanging it.
const BUDGET: Duration = Duration::from_secs(120);

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/linearizability")
}

/// EXPECTED.tsv's rows: each file and whether it is linearizable.
fn expected() -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(corpus().join("EXPECTED.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (file, verdict) = line.split_once('\t').unwrap();
            (file.to_owned(), verdict.trim().parse::<bool>().unwrap())
        })
        .collect()
}

/// Checks each file, prints a table row per file, and returns the rows that disagree.
fn run(files: &[(String, bool)]) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut total = Duration::ZERO;
    let mut slowest = (Duration::ZERO, String::new());
    println!(
        "{:<28} {:>8} {:>8} {:>7} {:>9}",
        "file", "ops", "expected", "got", "ms"
    );
    for (file, linearizable) in files {
        let text = std::fs::read_to_string(corpus().join(file)).unwrap();
        let started = Instant::now();
        let history = verify::parse(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let checked = verify::check(&history, BUDGET);
        let took = started.elapsed();
        let got = match &checked.verdict {
            Verdict::Linearizable => "true",
            Verdict::NotLinearizable { .. } => "false",
            Verdict::Unknown => "unknown",
        };
        let agrees = got == linearizable.to_string();
        println!(
            "{file:<28} {:>8} {:>8} {got:>7} {:>9.1}{}",
            history.invoked(),
            linearizable,
            took.as_secs_f64() * 1e3,
            if agrees { "" } else { "  WRONG" }
        );
        if !agrees {
            wrong.push(format!("{file}: expected {linearizable}, got {got}"));
        }
        total += took;
        if took > slowest.0 {
            slowest = (took, file.clone());
        }
    }
    println!(
        "{} files, {} agreed, {:.2} s in all, slowest {} ({:.2} s)",
        files.len(),
        files.len() - wrong.len(),
        total.as_secs_f64(),
        slowest.1,
        slowest.0.as_secs_f64()
    );
    wrong
}

/// The whole table runs in about a second even unoptimised; the c50 key/value histories
/// (50 clients over 10 keys) are the slowest.
#[test]
fn every_expected_verdict_agrees() {
    let files = expected();
    assert!(
        files.len() >= 108,
        "EXPECTED.tsv lists {} files",
        files.len()
    );
    let wrong = run(&files);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every history of the corpus has a verdict, except ones with no operations (the etcd run
/// whose cluster never started), which are linearizable.
#[test]
fn every_corpus_file_is_listed_or_empty() {
    let listed: Vec<String> = expected().into_iter().map(|(f, _)| f).collect();
    let mut seen = 0;
    for dir in ["jepsen-etcd", "kv"] {
        for entry in std::fs::read_dir(corpus().join(dir)).unwrap() {
            let name = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            seen += 1;
            if listed.contains(&name) {
                continue;
            }
            let text = std::fs::read_to_string(corpus().join(&name)).unwrap();
            let history = verify::parse(&text).unwrap();
            assert!(
                history.ops.is_empty(),
                "{name} has operations but no expected verdict"
            );
            let checked = verify::check(&history, BUDGET);
            assert_eq!(checked.verdict, Verdict::Linearizable, "{name}");
        }
    }
    assert!(
        seen >= listed.len(),
        "{seen} files, {} listed",
        listed.len()
    );
}

