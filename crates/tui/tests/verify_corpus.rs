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

/// `myraft verify` as scripts see it: the JSON object, and exit 0 only when linearizable.
fn myraft_verify(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_myraft"))
        .arg("--json")
        .arg("verify")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    (out.status.code().unwrap(), json, stderr)
}

fn corpus_file(name: &str) -> String {
    corpus().join(name).display().to_string()
}

#[test]
fn the_verify_command_reports_each_verdict_and_its_exit_code() {
    let fields = [
        "completed",
        "elapsed_s",
        "faults",
        "indeterminate",
        "keys",
        "linearizable",
        "message",
        "ops",
    ];
    let (code, json, _) = myraft_verify(&["--history", &corpus_file("kv/c10-ok.txt")]);
    assert_eq!(code, 0, "{json}");
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, fields);
    assert_eq!(json["linearizable"], true);
    assert_eq!(json["ops"], 337);
    assert_eq!(json["completed"], 337);
    assert_eq!(json["keys"], 10);
    assert_eq!(json["faults"], 0);
    assert!(json["message"]
        .as_str()
        .unwrap()
        .starts_with("linearizable: "));

    let (code, json, _) = myraft_verify(&["--history", &corpus_file("jepsen-etcd/etcd_000.log")]);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["linearizable"], false);
    assert_eq!(json["keys"], 1);
    assert!(json["indeterminate"].as_u64().unwrap() > 0);
    let message = json["message"].as_str().unwrap();
    assert!(
        message.starts_with("not linearizable on the register: "),
        "{message}"
    );
    assert!(message.contains("line 85"), "{message}");

    // 24 appends that may each have happened, and a read no order of them explains.
    let dir = tempfile::tempdir().unwrap();
    let hard = dir.path().join("hard.jsonl");
    let mut text = String::new();
    for p in 0..24 {
        text.push_str(&format!(
            "{{\"process\":{p},\"type\":\"invoke\",\"f\":\"append\",\"key\":\"k\",\
             \"value\":\"{p},\"}}\n"
        ));
    }
    text.push_str("{\"process\":99,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"k\"}\n");
    text.push_str("{\"process\":99,\"type\":\"ok\",\"f\":\"get\",\"key\":\"k\",\"value\":\"z\"}\n");
    std::fs::write(&hard, text).unwrap();
    let hard = hard.display().to_string();
    let (code, json, _) = myraft_verify(&["--history", &hard, "--budget-s", "1"]);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["linearizable"], false);
    assert_eq!(json["indeterminate"], 24);
    let message = json["message"].as_str().unwrap();
    assert!(message.starts_with("unknown: "), "{message}");
}

#[test]
fn the_verify_command_refuses_files_it_cannot_read() {
    let (code, json, stderr) = myraft_verify(&["--history", "/nonexistent/history.jsonl"]);
    assert_eq!(code, 1);
    assert_eq!(json["error"], "bad_request");
    assert!(stderr.contains("/nonexistent/history.jsonl"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"process\":1,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"k\"}\n\
         {\"process\":1,\"type\":\"done\",\"f\":\"get\",\"key\":\"k\"}\n",
    )
    .unwrap();
    let (code, json, _) = myraft_verify(&["--history", &bad.display().to_string()]);
    assert_eq!(code, 1);
    assert_eq!(json["error"], "bad_request");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("line 2: \"type\""), "{message}");
}
