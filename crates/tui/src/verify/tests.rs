#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test.

use super::model::{KeyModel, Model, Next};
use super::*;

const BUDGET: Duration = Duration::from_secs(30);

/// A history from JSON lines, each `[process, type, f, value]` (key "k"), timed by order.
fn lines(events: &[(u64, &str, &str, Option<&str>)]) -> History {
    let text: String = events
        .iter()
        .map(|(process, kind, f, value)| {
            let mut line = serde_json::json!({
                "process": process, "type": kind, "f": f, "key": "k", "value": value,
            });
            // "a>b": expects a, writes b.
            if let Some((from, to)) = value
                .filter(|_| *f == "cas")
                .and_then(|v| v.split_once('>'))
            {
                line["expected"] = from.into();
                line["value"] = to.into();
            }
            format!("{line}\n")
        })
        .collect();
    parse(&text).unwrap()
}

fn verdict(history: &History) -> Verdict {
    check(history, BUDGET).verdict
}

fn linearizable(events: &[(u64, &str, &str, Option<&str>)]) -> bool {
    match verdict(&lines(events)) {
        Verdict::Linearizable => true,
        Verdict::NotLinearizable { .. } => false,
        Verdict::Unknown => panic!("no verdict"),
    }
}

#[test]
fn sequential_reads_see_the_last_write() {
    assert!(linearizable(&[
        (1, "invoke", "get", None),
        (1, "ok", "get", None),
        (1, "invoke", "put", Some("a")),
        (1, "ok", "put", None),
        (2, "invoke", "get", None),
        (2, "ok", "get", Some("a")),
        (2, "invoke", "delete", None),
        (2, "ok", "delete", None),
        (1, "invoke", "get", None),
        (1, "ok", "get", None),
    ]));
}

#[test]
fn a_stale_read_is_caught_and_named() {
    let history = lines(&[
        (1, "invoke", "put", Some("a")),
        (1, "ok", "put", None),
        (1, "invoke", "put", Some("b")),
        (1, "ok", "put", None),
        (2, "invoke", "get", None),
        (2, "ok", "get", Some("a")),
    ]);
    let Verdict::NotLinearizable { window } = verdict(&history) else {
        panic!("a stale read passed");
    };
    assert_eq!(window.key, "k");
    assert_eq!(window.prefix, [0, 1]);
    assert_eq!(window.state.as_deref(), Some("b"));
    assert_eq!(window.blocked, 2);
    assert_eq!(window.pending, [2]);
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in ["a", "b"] {
        assert!(linearizable(&[
            (1, "invoke", "put", Some("a")),
            (1, "ok", "put", None),
            (1, "invoke", "put", Some("b")),
            (2, "invoke", "get", None),
            (2, "ok", "get", Some(seen)),
            (1, "ok", "put", None),
        ]));
    }
    // But not a value nobody wrote, nor the new one and then the old one.
    assert!(!linearizable(&[
        (1, "invoke", "put", Some("a")),
        (2, "invoke", "get", None),
        (2, "ok", "get", Some("c")),
        (1, "ok", "put", None),
    ]));
    assert!(!linearizable(&[
        (1, "invoke", "put", Some("a")),
        (1, "ok", "put", None),
        (1, "invoke", "put", Some("b")),
        (2, "invoke", "get", None),
        (2, "ok", "get", Some("b")),
        (2, "invoke", "get", None),
        (2, "ok", "get", Some("a")),
        (1, "ok", "put", None),
    ]));
}

#[test]
fn an_indeterminate_write_may_be_seen_later_or_never() {
    let prefix = [
        (1, "invoke", "put", Some("a")),
        (1, "ok", "put", None),
        (1, "invoke", "put", Some("b")),
        (1, "info", "put", None),
    ];
    let with = |reads: &[&'static str]| {
        let mut events = prefix.to_vec();
        for &r in reads {
            events.push((2, "invoke", "get", None));
            events.push((2, "ok", "get", Some(r)));
        }
        events
    };
    assert!(linearizable(&with(&["a", "a", "a"])), "never");
    assert!(linearizable(&with(&["a", "a", "b", "b"])), "later");
    assert!(!linearizable(&with(&["b", "a"])), "seen, then undone");
    // The same without the info line: the history ends before the write returns.
    let mut events = prefix[..3].to_vec();
    events.extend([(2, "invoke", "get", None), (2, "ok", "get", Some("b"))]);
    assert!(linearizable(&events));
    let history = lines(&events);
    assert_eq!((history.completed(), history.indeterminate()), (2, 1));
}

#[test]
fn a_failed_cas_had_no_effect() {
    let cas = [
        (1, "invoke", "put", Some("a")),
        (1, "ok", "put", None),
        (1, "invoke", "cas", Some("a>b")),
    ];
    let then = |kind: &'static str, seen: &'static str| {
        let mut events = cas.to_vec();
        events.push((1, kind, "cas", Some("a>b")));
        events.push((2, "invoke", "get", None));
        events.push((2, "ok", "get", Some(seen)));
        events
    };
    assert!(linearizable(&then("fail", "a")));
    assert!(!linearizable(&then("fail", "b")));
    assert!(linearizable(&then("ok", "b")));
    assert!(!linearizable(&then("ok", "a")));
    assert!(linearizable(&then("info", "a")));
    assert!(linearizable(&then("info", "b")));
    let history = lines(&then("fail", "a"));
    assert_eq!(
        (history.invoked(), history.failed, history.ops.len()),
        (3, 1, 2)
    );
    // A cas that expects the wrong value cannot have succeeded.
    assert!(!linearizable(&[
        (1, "invoke", "put", Some("a")),
        (1, "ok", "put", None),
        (1, "invoke", "cas", Some("z>b")),
        (1, "ok", "cas", Some("z>b")),
    ]));
}

#[test]
fn appends_concatenate_in_their_order() {
    let appends = [
        (1, "invoke", "append", Some("x")),
        (2, "invoke", "append", Some("y")),
        (1, "ok", "append", None),
        (2, "ok", "append", None),
        (3, "invoke", "get", None),
    ];
    for (seen, ok) in [("xy", true), ("yx", true), ("x", false), ("xx", false)] {
        let mut events = appends.to_vec();
        events.push((3, "ok", "get", Some(seen)));
        assert_eq!(linearizable(&events), ok, "{seen}");
    }
}

#[test]
fn keys_are_checked_apart_and_the_bad_one_is_named() {
    let text = "\
{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"a\",\"value\":\"1\"}
{\"process\":1,\"type\":\"ok\",\"f\":\"put\",\"key\":\"a\"}
{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"key\":\"b\",\"value\":\"1\"}
{\"process\":1,\"type\":\"ok\",\"f\":\"put\",\"key\":\"b\"}
{\"process\":2,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"a\"}
{\"process\":2,\"type\":\"ok\",\"f\":\"get\",\"key\":\"a\",\"value\":\"1\"}
{\"process\":2,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"b\"}
{\"process\":2,\"type\":\"ok\",\"f\":\"get\",\"key\":\"b\",\"value\":null}
";
    let history = parse(text).unwrap();
    assert_eq!(history.keys(), ["a", "b"]);
    let Verdict::NotLinearizable { window } = verdict(&history) else {
        panic!("a lost write passed");
    };
    assert_eq!(window.key, "b");
    assert_eq!(window.prefix, [1]);
    assert_eq!(window.blocked, 3);
    assert_eq!(history.ops[3].line, 7);
    assert_eq!(
        history.ops[3].to_string(),
        "get b -> nil (process 2, line 7)"
    );
}

#[test]
fn time_ns_orders_events_across_processes() {
    // In line order the read follows the write's return; by time it overlaps the write.
    let text = "\
{\"process\":1,\"type\":\"invoke\",\"f\":\"put\",\"value\":\"a\",\"time_ns\":10}
{\"process\":1,\"type\":\"ok\",\"f\":\"put\",\"time_ns\":30}
{\"process\":2,\"type\":\"invoke\",\"f\":\"get\",\"time_ns\":20}
{\"process\":2,\"type\":\"ok\",\"f\":\"get\",\"value\":null,\"time_ns\":40}
";
    assert_eq!(verdict(&parse(text).unwrap()), Verdict::Linearizable);
    let untimed: String = text
        .lines()
        .map(|l| format!("{}}}\n", &l[..l.find(",\"time_ns\"").unwrap()]))
        .collect();
    assert!(matches!(
        verdict(&parse(&untimed).unwrap()),
        Verdict::NotLinearizable { .. }
    ));
}

#[test]
fn parse_errors_name_the_line() {
    let cases = [
        (
            "{\"process\":1,\"type\":\"ok\",\"f\":\"get\"}\n",
            1,
            "never invoked",
        ),
        (
            "{\"process\":1,\"type\":\"invoke\",\"f\":\"get\"}\n\n\
             {\"process\":1,\"type\":\"ok\",\"f\":\"put\"}\n",
            3,
            "is a get",
        ),
        (
            "{\"process\":1,\"type\":\"invoke\",\"f\":\"frob\"}\n",
            1,
            "\"f\"",
        ),
        (
            "{\"process\":-1,\"type\":\"invoke\",\"f\":\"get\"}\n",
            1,
            "\"process\"",
        ),
        (
            "{\"process\":1,\"type\":\"invoke\",\"f\":\"get\"}\n{oops\n",
            2,
            "not JSON",
        ),
        (
            "{\"process\":1,\"type\":\"invoke\",\"f\":\"get\",\"time_ns\":5}\n\
             {\"process\":1,\"type\":\"ok\",\"f\":\"get\"}\n",
            2,
            "on every line",
        ),
        (
            "{\"process\":1,\"type\":\"invoke\",\"f\":\"get\",\"time_ns\":5}\n\
             {\"process\":1,\"type\":\"ok\",\"f\":\"get\",\"time_ns\":4}\n",
            2,
            "before its invocation",
        ),
        ("hello\n", 1, "not a history"),
        (
            "\n{:process 0, :type :invoke, :f :get, :key \"a\"\n",
            2,
            "not EDN",
        ),
        (
            "{:process 0, :type :invoke, :f :cas, :value 3}\n",
            1,
            "[EXPECTED NEW]",
        ),
        (
            "INFO  jepsen.util - 0\t:invoke\t:frob\tnil\n",
            1,
            "function",
        ),
    ];
    for (text, line, says) in cases {
        let e = parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.to_string().contains(says), "{text:?}: {e}");
    }
}

#[test]
fn the_three_formats_are_told_apart() {
    assert_eq!(detect("").unwrap(), None);
    assert_eq!(parse("\n  \n").unwrap(), History::default());
    assert_eq!(
        detect("\n{\"process\":1}").unwrap(),
        Some(Format::JsonLines)
    );
    assert_eq!(detect("{:process 1}").unwrap(), Some(Format::JepsenEdn));
    assert_eq!(
        detect("INFO  jepsen.util - 0\t:invoke\t:read\tnil").unwrap(),
        Some(Format::JepsenLog)
    );

    let edn = parse(
        "{:process 0, :type :invoke, :f :append, :key \"4\", :value \"x 0 1 y\"}\n\
         {:process 0, :type :ok, :f :append, :key \"4\", :value \"x 0 1 y\"}\n\
         {:process :nemesis, :type :info, :f :start, :value nil}\n\
         {:process 1, :type :invoke, :f :get, :key \"4\", :value nil}\n\
         {:process 1, :type :ok, :f :get, :key \"4\", :value \"x 0 1 y\"}\n\
         {:process 1, :type :invoke, :f :get, :key \"5\", :value nil}\n\
         {:process 1, :type :ok, :f :get, :key \"5\", :value \"\"}\n",
    )
    .unwrap();
    assert_eq!(edn.initial.as_deref(), Some(""));
    assert_eq!(edn.ops.len(), 3);
    assert_eq!(edn.ops[1].line, 4);
    assert_eq!(verdict(&edn), Verdict::Linearizable);

    // Tabs or spaces; a timed-out read is dropped, a timed-out write stays indeterminate.
    let log = parse(
        "INFO  jepsen.util - 0\t:invoke\t:write\t3\n\
         INFO  jepsen.util - 0\t:ok\t:write\t3\n\
         INFO  jepsen.core - something else\n\
         INFO  jepsen.util - 1   :invoke :cas    [3 4]\n\
         INFO  jepsen.util - 1   :fail   :cas    [3 4]\n\
         INFO  jepsen.util - 2\t:invoke\t:read\tnil\n\
         INFO  jepsen.util - 2\t:fail\t:read\t:timed-out\n\
         INFO  jepsen.util - 3\t:invoke\t:write\t1\n\
         INFO  jepsen.util - 3\t:info\t:write\t:timed-out\n\
         INFO  jepsen.util - 4\t:invoke\t:read\tnil\n\
         INFO  jepsen.util - 4\t:ok\t:read\t1\n",
    )
    .unwrap();
    assert_eq!(log.initial, None);
    assert_eq!((log.invoked(), log.failed, log.indeterminate()), (5, 2, 1));
    assert_eq!(
        log.ops[1].action,
        Action::Write {
            value: Some("1".into())
        }
    );
    assert_eq!(verdict(&log), Verdict::Linearizable);
}

#[test]
fn a_process_that_invokes_again_left_its_last_operation_indeterminate() {
    let history = lines(&[
        (1, "invoke", "put", Some("a")),
        (1, "invoke", "get", None),
        (1, "ok", "get", Some("a")),
    ]);
    assert_eq!(history.ops[0].ret, None);
    assert_eq!(history.ops[1].ret, Some(2));
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn the_budget_gives_unknown_rather_than_a_guess() {
    // 24 concurrent appends that may each have happened, and a read nobody could see:
    // every subset in every order is a different state, far too many to try them all.
    let mut events: Vec<(u64, &str, &str, Option<&str>)> = Vec::new();
    const LETTERS: [&str; 24] = [
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x",
    ];
    for (p, letter) in LETTERS.iter().enumerate() {
        events.push((p as u64, "invoke", "append", Some(letter)));
    }
    events.push((99, "invoke", "get", None));
    events.push((99, "ok", "get", Some("zz")));
    let history = lines(&events);
    let started = Instant::now();
    let checked = check(&history, Duration::from_millis(200));
    assert_eq!(checked.verdict, Verdict::Unknown);
    assert_eq!(checked.undecided, ["k"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A tiny pseudo-random generator, so that the cross-check needs no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Linearizability by trying every order: some operation that no other remaining one
/// precedes goes next; indeterminate operations left at the end never happened.
fn brute_force(ops: &[&Operation], state: &Option<String>, done: &mut Vec<bool>) -> bool {
    if ops
        .iter()
        .zip(done.iter())
        .all(|(op, &d)| d || op.ret.is_none())
    {
        return true;
    }
    for i in 0..ops.len() {
        if done[i] {
            continue;
        }
        let preceded =
            (0..ops.len()).any(|j| !done[j] && ops[j].ret.is_some_and(|r| r < ops[i].call));
        if preceded {
            continue;
        }
        let after = match KeyModel.step(state, ops[i]) {
            Next::Illegal => continue,
            Next::Same => state.clone(),
            Next::To(s) => s,
        };
        done[i] = true;
        let found = brute_force(ops, &after, done);
        done[i] = false;
        if found {
            return true;
        }
    }
    false
}

#[test]
fn the_search_agrees_with_trying_every_order() {
    let values = [None, Some("a"), Some("b"), Some("ab")];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut yes, mut no) = (0, 0);
    for _ in 0..3000 {
        // Up to 7 operations of 3 processes, some left indeterminate.
        let mut events: Vec<(u64, &str, &str, Option<String>)> = Vec::new();
        let mut open = [false; 3];
        let mut calls = 0;
        while calls < 7 || open.iter().any(|&o| o) {
            let p = rng.below(3);
            if open[p] {
                open[p] = false;
                let kind = ["ok", "ok", "ok", "info", "fail"][rng.below(5)];
                let &(_, _, f, _) = events.iter().rev().find(|e| e.0 == p as u64).unwrap();
                let read = values[rng.below(4)].map(str::to_owned);
                events.push((p as u64, kind, f, if f == "get" { read } else { None }));
            } else if calls < 7 {
                open[p] = true;
                calls += 1;
                let (f, v) = match rng.below(6) {
                    0 | 1 => ("get", None),
                    2 => ("put", Some(["a", "b"][rng.below(2)].to_owned())),
                    3 => ("append", Some(["a", "b"][rng.below(2)].to_owned())),
                    4 => ("delete", None),
                    _ => ("cas", Some(["a>b", "b>a", "ab>a"][rng.below(3)].to_owned())),
                };
                events.push((p as u64, "invoke", f, v));
            }
        }
        let borrowed: Vec<(u64, &str, &str, Option<&str>)> = events
            .iter()
            .map(|(p, k, f, v)| (*p, *k, *f, v.as_deref()))
            .collect();
        let history = lines(&borrowed);
        let ops: Vec<&Operation> = history
            .ops
            .iter()
            .filter(|op| op.ret.is_some() || !matches!(op.action, Action::Read { .. }))
            .collect();
        let expected = brute_force(&ops, &None, &mut vec![false; ops.len()]);
        let got = verdict(&history);
        match (&got, expected) {
            (Verdict::Linearizable, true) => yes += 1,
            (Verdict::NotLinearizable { window }, false) => {
                no += 1;
                window_is_stuck(&history, window);
            }
            _ => panic!("{got:?}, expected {expected}, for {borrowed:?}"),
        }
    }
    assert!(yes > 300 && no > 300, "{yes} linearizable, {no} not");
}

/// The window's prefix replays to its state, and no pending operation can go next there.
fn window_is_stuck(history: &History, window: &Window) {
    let mut state = history.initial.clone();
    for &i in &window.prefix {
        match KeyModel.step(&state, &history.ops[i]) {
            Next::Illegal => panic!("the prefix is not linearizable: {window:?}"),
            Next::Same => {}
            Next::To(s) => state = s,
        }
    }
    assert_eq!(state, window.state);
    assert!(window.pending.contains(&window.blocked));
    for &i in &window.pending {
        assert!(!window.prefix.contains(&i));
        assert_eq!(
            KeyModel.step(&state, &history.ops[i]),
            Next::Illegal,
            "{window:?}"
        );
    }
}
