//! A linearizability checker for key/value histories, and the history formats it reads.
//!
//! A history is what clients saw: each operation's call, its result and when each
//! happened. It is linearizable if every operation can be given one instant between its
//! call and its return at which it took effect, such that the results are those of a single
//! copy of the map applying the operations in that order. [`check`] decides this:
//!
//! - the history is split per key and each key's part is checked alone (a history is
//!   linearizable if and only if every key's part is; porcupine's P-compositionality), in
//!   parallel;
//! - each part is searched with Wing and Gong's algorithm and Lowe's memo of (set of
//!   operations linearized, state) pairs already explored, as porcupine does ([`checker`]
//!   tells how), against [`model::KeyModel`];
//! - an operation whose outcome is unknown (*indeterminate*: it timed out, or the history
//!   ends before it returned) has its return at +infinity: it may take effect at any time
//!   after its call, or never;
//! - after the time budget the verdict is [`Verdict::Unknown`], not a guess;
//! - a violation names its key and the deepest point the search reached: the longest
//!   linearizable prefix of that key's operations, the value it leaves, and the operation
//!   that returned before it could take effect ([`Window`]).
//!
//! # Formats
//!
//! [`parse()`] tells the formats apart by their first non-blank line. In all of them an
//! invocation is completed by the next completion line of the same process; `fail` means
//! the operation did not happen (it is dropped), `info` that it may or may not have (it is
//! indeterminate), and an invocation never completed is indeterminate too. A failed or
//! indeterminate read tells nothing and is not checked. A process that invokes again while
//! its last operation is pending leaves that one indeterminate.
//!
//! **JSON lines**, MyRaft's own: one object per line, for example
//!
//! ```text
//! {"process":3,"type":"invoke","f":"put","key":"k","value":"v","time_ns":1000}
//! {"process":3,"type":"ok","f":"put","key":"k","value":"v","time_ns":2400}
//! {"process":4,"type":"invoke","f":"get","key":"k","value":null,"time_ns":1900}
//! {"process":4,"type":"ok","f":"get","key":"k","value":"v","time_ns":2600}
//! {"process":5,"type":"invoke","f":"cas","key":"k","expected":"v","value":"w","time_ns":3000}
//! {"process":5,"type":"info","f":"cas","key":"k","time_ns":9000}
//! ```
//!
//! - `process` (integer ≥ 0, required): the client; it has one operation at a time.
//! - `type` (required): `invoke` when the call is made; `ok` when it succeeded, `fail` when
//!   it certainly did not take effect, `info` when it is unknown whether it did.
//! - `f` (required): `get` (or `read`), `put` (or `write`), `delete`, `append` (concatenates
//!   `value` to the key's value; an absent key counts as empty) or `cas` (sets `value` if
//!   the key holds `expected`; a cas that found another value is a `fail`). A completion
//!   must name the same `f` as its invocation.
//! - `key` (string): the key; without it, every operation is on one register.
//! - `value`: on an invocation, what put, append and cas write; on a get's `ok`, what it
//!   read. `null` (or leaving it out) is an absent key, so a get of a missing key returns
//!   `null`.
//! - `expected`: for `cas`, the value it expects, `null` for an absent key.
//! - `time_ns` (integer): when the line's event happened, in nanoseconds from any fixed
//!   origin. Give it on every line or on none; without it the line order is the time order.
//!   At equal times an invocation is taken to come before a completion.
//!
//! Values are strings; a number is taken as its decimal text. Other fields are ignored.
//!
//! **Jepsen EDN**: one map per line, as Jepsen writes `history.edn`:
//! `{:process 0, :type :invoke, :f :append, :key "4", :value "x 0 1 y"}`, with the same
//! types and functions as keywords (`:cas` takes `[expected new]`). Lines of a process that
//! is not a number (`:nemesis`) are skipped. With `:key`, a key never written reads as the
//! empty string `""`, as Jepsen's key/value tests record it; without, the history is one
//! register that starts as `nil`.
//!
//! **Jepsen log**: the `jepsen.util` lines of a Jepsen run's log over one register,
//! `INFO  jepsen.util - 3 :invoke :cas [3 0]` (fields apart by tabs or spaces), with
//! `:read`, `:write N`, `:cas [FROM TO]`, results `:ok`, `:fail` and `:info`; other lines
//! are skipped.
//!
//! - [`model`]: the sequential model, [`model::KeyModel`].
//! - [`checker`]: the search over one key.
//! - [`parse`](mod@parse): the three formats.
//! - [`live`]: a workload against a running cluster that records such a history
//!   (`myraft verify` without `--history`, and the fault tests).

pub mod checker;
pub mod live;
pub mod model;
pub mod parse;

pub use parse::{detect, parse, Format, ParseError};

use checker::{Outcome, Stop, Timed};
use model::KeyModel;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The operations of a history, each with its call, result and times.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Every operation that may have taken effect, in the order of its invocation line.
    pub ops: Vec<Operation>,
    /// Operations that failed (certainly did not take effect): counted, not kept.
    pub failed: usize,
    /// What a key holds before anything is written to it (`None`: absent).
    pub initial: Option<String>,
}

impl History {
    /// Operations invoked, failed ones included.
    pub fn invoked(&self) -> usize {
        self.ops.len() + self.failed
    }

    /// Operations whose success is known.
    pub fn completed(&self) -> usize {
        self.ops.iter().filter(|op| op.ret.is_some()).count()
    }

    /// Operations that may or may not have taken effect.
    pub fn indeterminate(&self) -> usize {
        self.ops.iter().filter(|op| op.ret.is_none()).count()
    }

    /// The distinct keys, in order.
    pub fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.ops.iter().map(|op| op.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// One operation: who called what on which key, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub process: u64,
    /// The key; empty for the single register of a register history.
    pub key: String,
    pub action: Action,
    /// When it was called.
    pub call: u64,
    /// When it returned, or `None` if its outcome is unknown (indeterminate).
    pub ret: Option<u64>,
    /// The line of the file with its invocation, from 1.
    pub line: usize,
}

/// What an operation did, result included.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A get or read that returned `value` (`None`: absent or nil).
    Read { value: Option<String> },
    /// A put or write of `value`; `None` is a delete.
    Write { value: Option<String> },
    /// Appends `value` to the key's value (an absent key counts as empty).
    Append { value: String },
    /// Sets `value` if the key holds `expected`; it succeeded, or is indeterminate.
    Cas {
        expected: Option<String>,
        value: Option<String>,
    },
}

impl fmt::Display for Operation {
    /// `put k "v" (process 3, line 12)`; on the register (the empty key), `write "v" ..`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, get, put) = if self.key.is_empty() {
            (String::new(), "read", "write")
        } else {
            (format!(" {}", self.key), "get", "put")
        };
        match &self.action {
            Action::Read { .. } if self.ret.is_none() => write!(f, "{get}{key}")?,
            Action::Read { value } => write!(f, "{get}{key} -> {}", shown(value))?,
            Action::Write { value: None } if self.key.is_empty() => write!(f, "write nil")?,
            Action::Write { value: None } => write!(f, "delete{key}")?,
            Action::Write { value } => write!(f, "{put}{key} {}", shown(value))?,
            Action::Append { value } => write!(f, "append{key} {}", quoted(value))?,
            Action::Cas { expected, value } => {
                write!(f, "cas{key} {} -> {}", shown(expected), shown(value))?
            }
        }
        if self.ret.is_none() {
            write!(f, " (indeterminate)")?;
        }
        write!(f, " (process {}, line {})", self.process, self.line)
    }
}

/// Values longer than this many characters are shown with their middle left out.
const SHOWN_CHARS: usize = 60;

/// A value as the checker's messages show it: quoted, or `nil`.
pub fn shown(value: &Option<String>) -> String {
    match value {
        Some(v) => quoted(v),
        None => "nil".to_owned(),
    }
}

/// `"abc"`; a long value keeps its start and its end (where appends differ), with the
/// number of characters left out between: `"x 1 yx 2 …[212 chars]… yx 9 y"`.
fn quoted(value: &str) -> String {
    let chars = value.chars().count();
    if chars <= SHOWN_CHARS {
        return format!("{value:?}");
    }
    let (head, tail) = (SHOWN_CHARS / 3, SHOWN_CHARS * 2 / 3);
    let start: String = value.chars().take(head).collect();
    let end: String = value.chars().skip(chars - tail).collect();
    // Escaped as Debug escapes, inside one pair of quotes.
    let escaped = |part: &str| format!("{part:?}").trim_matches('"').to_owned();
    format!(
        "\"{}…[{} chars]…{}\"",
        escaped(&start),
        chars - head - tail,
        escaped(&end)
    )
}

/// Whether a history is linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable; `window` shows where on which key.
    NotLinearizable {
        window: Window,
    },
    /// The time budget ran out first.
    Unknown,
}

/// Where a key's history stops being linearizable: after `prefix` took effect, in that
/// order, the key holds `state`, and `blocked` returned before any of the operations
/// `pending` then (itself among them) could take effect next. Operations are indices into
/// [`History::ops`]. It is the longest linearizable prefix the search found: every shorter
/// way to order the key's operations fails sooner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    pub key: String,
    pub prefix: Vec<usize>,
    pub state: Option<String>,
    pub blocked: usize,
    pub pending: Vec<usize>,
}

/// A verdict and what it took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub verdict: Verdict,
    pub elapsed: Duration,
    /// Keys left undecided when the budget ran out (empty unless the verdict is unknown).
    pub undecided: Vec<String>,
}

/// Checks `history`, giving up with [`Verdict::Unknown`] after `budget`.
pub fn check(history: &History, budget: Duration) -> Checked {
    let started = Instant::now();
    // Past a century is forever, and cannot overflow.
    let deadline = started + budget.min(Duration::from_secs(100 * 365 * 86_400));

    // Each key's operations; an indeterminate read constrains nothing, so it is left out.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        if op.ret.is_none() && matches!(op.action, Action::Read { .. }) {
            continue;
        }
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let mut parts: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();
    // The largest first, so that the last one to finish is a short one.
    parts.sort_by_key(|(key, ops)| (std::cmp::Reverse(ops.len()), *key));

    let cancelled = AtomicBool::new(false);
    let stop = Stop {
        deadline,
        cancelled: &cancelled,
    };
    let taken = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<Outcome<Option<String>>>>> =
        Mutex::new((0..parts.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(parts.len());
    let work = || loop {
        let i = taken.fetch_add(1, Ordering::Relaxed);
        let Some((_, indices)) = parts.get(i) else {
            break;
        };
        if cancelled.load(Ordering::Relaxed) {
            break;
        }
        let timed: Vec<Timed<'_, Operation>> = indices
            .iter()
            .map(|&k| {
                let op = &history.ops[k];
                Timed {
                    op,
                    call: op.call,
                    ret: op.ret,
                }
            })
            .collect();
        let outcome = checker::search(&KeyModel, history.initial.clone(), &timed, &stop);
        if matches!(outcome, Outcome::Violation(_)) {
            cancelled.store(true, Ordering::Relaxed);
        }
        if let Ok(mut slots) = outcomes.lock() {
            slots[i] = Some(outcome);
        }
    };
    if workers > 1 {
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(work);
            }
        });
    } else {
        work();
    }

    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut violation: Option<Window> = None;
    let mut undecided = Vec::new();
    for ((key, indices), outcome) in parts.iter().zip(outcomes) {
        match outcome {
            Some(Outcome::Linearizable) => {}
            Some(Outcome::Violation(stuck)) => {
                // The first key in key order, when several are found at once.
                if violation.as_ref().is_none_or(|w| w.key.as_str() > *key) {
                    violation = Some(Window {
                        key: (*key).to_owned(),
                        prefix: stuck.prefix.iter().map(|&p| indices[p]).collect(),
                        state: stuck.state,
                        blocked: indices[stuck.blocked],
                        pending: stuck.pending.iter().map(|&p| indices[p]).collect(),
                    });
                }
            }
            Some(Outcome::Stopped) | None => undecided.push((*key).to_owned()),
        }
    }
    let verdict = match violation {
        Some(window) => {
            undecided.clear();
            Verdict::NotLinearizable { window }
        }
        None if undecided.is_empty() => Verdict::Linearizable,
        None => {
            undecided.sort();
            Verdict::Unknown
        }
    };
    Checked {
        verdict,
        elapsed: started.elapsed(),
        undecided,
    }
}

#[cfg(test)]
mod tests;
