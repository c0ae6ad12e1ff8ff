//! The search: Wing and Gong's algorithm with Lowe's memo, as porcupine does it.
//!
//! A history of one partition becomes a doubly linked list of call and return entries in
//! time order (an indeterminate operation's return comes after every other entry). The
//! search walks the list from its head: at a call it tries to let that operation take
//! effect next (the model must accept it, and the pair of the set of operations linearized
//! so far and the state they leave must be new); if so it *lifts* the call and its return
//! out of the list, pushes the operation on a stack and starts again from the head. At a
//! return it is stuck, since that operation had to take effect before it returned: it pops
//! the last operation, *unlifts* its entries back into the list and tries the next call
//! after it. The history is linearizable when the list is empty, and not when the stack is
//! empty at a return.
//!
//! The memo of (linearized set, state) pairs already explored is what makes this fast: the
//! set is a bitset of u64 words with an incremental Zobrist hash, states are interned to
//! numbers, and each (state, operation) step is computed once.

use super::model::{Model, Next};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// No node: the end of the list, or a return entry's (absent) match.
const NIL: u32 = u32::MAX;
/// The list's head sentinel.
const HEAD: u32 = 0;
/// A step the model refused, in the transition memo.
const ILLEGAL: u32 = u32::MAX;
/// How many search steps between two looks at the clock and the stop flag.
const CHECK_EVERY: u32 = 1 << 12;

/// One operation of a partition: the model's op, when it was called and when it returned
/// (`None`: never known, so it may take effect at any time after its call).
pub struct Timed<'a, O> {
    pub op: &'a O,
    pub call: u64,
    pub ret: Option<u64>,
}

/// When to give up: past the deadline, or when another partition already settled it.
pub struct Stop<'a> {
    pub deadline: Instant,
    pub cancelled: &'a AtomicBool,
}

impl Stop<'_> {
    fn now(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || Instant::now() >= self.deadline
    }
}

/// Where a partition's search ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<S> {
    Linearizable,
    /// Not linearizable, shown by the longest linearizable prefix the search found.
    Violation(Stuck<S>),
    /// Out of time, or cancelled, before a verdict.
    Stopped,
}

/// The deepest point of a failed search: after `prefix` (indices into the partition's
/// operations, in the order they took effect) the state is `state`, and `blocked` returned
/// before any of `pending` (the operations called by then and not in the prefix, `blocked`
/// among them) could take effect next.
#[derive(Debug, PartialEq, Eq)]
pub struct Stuck<S> {
    pub prefix: Vec<usize>,
    pub state: S,
    pub blocked: usize,
    pub pending: Vec<usize>,
}

/// Checks one partition from `init`.
pub fn search<M: Model>(
    model: &M,
    init: M::State,
    ops: &[Timed<'_, M::Op>],
    stop: &Stop<'_>,
) -> Outcome<M::State> {
    if ops.is_empty() {
        return Outcome::Linearizable;
    }
    Search::new(model, init, ops).run(stop)
}

struct Search<'m, 'o, M: Model> {
    model: &'m M,
    ops: &'o [Timed<'o, M::Op>],
    // The entry list: node 0 is the head, then one call and one return node per operation.
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Each node's operation.
    node_op: Vec<u32>,
    /// A call node's return node; NIL for return nodes and the head.
    matching: Vec<u32>,
    states: States<M::State>,
    /// (state << 32 | op) to the state after the step, or ILLEGAL.
    steps: HashMap<u64, u32, Mixed>,
    linearized: Bitset,
    memo: Memo,
}

impl<'m, 'o, M: Model> Search<'m, 'o, M> {
    fn new(model: &'m M, init: M::State, ops: &'o [Timed<'o, M::Op>]) -> Self {
        let n = ops.len();
        // Calls before returns at equal times: such operations overlap.
        let mut entries: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            entries.push((op.call, false, i as u32));
            entries.push((op.ret.unwrap_or(u64::MAX), true, i as u32));
        }
        entries.sort_unstable();
        let len = entries.len() + 1;
        let mut node_op = vec![0u32; len];
        let mut return_node = vec![NIL; n];
        for (k, &(_, is_return, op)) in entries.iter().enumerate() {
            node_op[k + 1] = op;
            if is_return {
                return_node[op as usize] = (k + 1) as u32;
            }
        }
        let mut matching = vec![NIL; len];
        for (k, &(_, is_return, op)) in entries.iter().enumerate() {
            if !is_return {
                matching[k + 1] = return_node[op as usize];
            }
        }
        let next = (0..len as u32)
            .map(|i| if i as usize + 1 < len { i + 1 } else { NIL })
            .collect();
        let prev = (0..len as u32)
            .map(|i| i.checked_sub(1).unwrap_or(NIL))
            .collect();
        let mut states = States::default();
        states.intern(init);
        Self {
            model,
            ops,
            next,
            prev,
            node_op,
            matching,
            states,
            steps: HashMap::default(),
            linearized: Bitset::new(n),
            memo: Memo::new(n.div_ceil(64)),
        }
    }

    fn run(mut self, stop: &Stop<'_>) -> Outcome<M::State> {
        let mut calls: Vec<(u32, u32)> = Vec::new(); // (call node, state before it)
        let mut state = 0u32;
        let mut entry = self.next[HEAD as usize];
        let mut best: Option<Stuck<u32>> = None;
        let mut ticks = 0u32;
        while self.next[HEAD as usize] != NIL {
            ticks = ticks.wrapping_add(1);
            if ticks.is_multiple_of(CHECK_EVERY) && stop.now() {
                return Outcome::Stopped;
            }
            let e = entry as usize;
            if self.matching[e] != NIL {
                let op = self.node_op[e];
                let after = self.step(state, op);
                if after != ILLEGAL {
                    self.linearized.flip(op as usize);
                    let key = self.linearized.hash ^ mix(u64::from(after));
                    if self.memo.insert(key, &self.linearized.words, after) {
                        calls.push((entry, state));
                        state = after;
                        self.lift(entry);
                        entry = self.next[HEAD as usize];
                        continue;
                    }
                    self.linearized.flip(op as usize);
                }
                entry = self.next[e];
            } else {
                if best.as_ref().is_none_or(|b| calls.len() > b.prefix.len()) {
                    best = Some(self.stuck_at(entry, state, &calls));
                }
                let Some((call, before)) = calls.pop() else {
                    break;
                };
                state = before;
                self.linearized.flip(self.node_op[call as usize] as usize);
                self.unlift(call);
                entry = self.next[call as usize];
            }
        }
        match best {
            Some(stuck) if self.next[HEAD as usize] != NIL => Outcome::Violation(Stuck {
                state: self.states.list[stuck.state as usize].clone(),
                prefix: stuck.prefix,
                blocked: stuck.blocked,
                pending: stuck.pending,
            }),
            _ => Outcome::Linearizable,
        }
    }

    /// The state after `op` from state `state`, or ILLEGAL; each pair is computed once.
    fn step(&mut self, state: u32, op: u32) -> u32 {
        let key = (u64::from(state) << 32) | u64::from(op);
        if let Some(&after) = self.steps.get(&key) {
            return after;
        }
        let current = &self.states.list[state as usize];
        let after = match self.model.step(current, self.ops[op as usize].op) {
            Next::Illegal => ILLEGAL,
            Next::Same => state,
            Next::To(s) => self.states.intern(s),
        };
        self.steps.insert(key, after);
        after
    }

    fn stuck_at(&self, ret: u32, state: u32, calls: &[(u32, u32)]) -> Stuck<u32> {
        let mut pending = Vec::new();
        let mut node = self.next[HEAD as usize];
        while node != ret && node != NIL {
            if self.matching[node as usize] != NIL {
                pending.push(self.node_op[node as usize] as usize);
            }
            node = self.next[node as usize];
        }
        Stuck {
            prefix: calls
                .iter()
                .map(|&(call, _)| self.node_op[call as usize] as usize)
                .collect(),
            state,
            blocked: self.node_op[ret as usize] as usize,
            pending,
        }
    }

    /// Takes a call node and its return node out of the list.
    fn lift(&mut self, call: u32) {
        let c = call as usize;
        let (p, n) = (self.prev[c], self.next[c]);
        // A call's next node exists: at the latest, its own return.
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
        let r = self.matching[c] as usize;
        let (p, n) = (self.prev[r], self.next[r]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    /// Puts back what [`Self::lift`] took out; the nodes kept their own links.
    fn unlift(&mut self, call: u32) {
        let c = call as usize;
        let r = self.matching[c];
        let (p, n) = (self.prev[r as usize], self.next[r as usize]);
        self.next[p as usize] = r;
        if n != NIL {
            self.prev[n as usize] = r;
        }
        let (p, n) = (self.prev[c], self.next[c]);
        self.next[p as usize] = call;
        self.prev[n as usize] = call;
    }
}

/// States, each once, numbered in the order first seen.
struct States<S> {
    list: Vec<S>,
    ids: HashMap<S, u32>,
}

impl<S> Default for States<S> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<S: Clone + Eq + Hash> States<S> {
    fn intern(&mut self, state: S) -> u32 {
        if let Some(&id) = self.ids.get(&state) {
            return id;
        }
        let id = self.list.len() as u32;
        self.list.push(state.clone());
        self.ids.insert(state, id);
        id
    }
}

/// The set of linearized operations, with a hash kept up to date as bits flip: the XOR of
/// a fixed random number per set bit.
struct Bitset {
    words: Vec<u64>,
    hash: u64,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Self {
            words: vec![0; bits.div_ceil(64)],
            hash: 0,
        }
    }

    fn flip(&mut self, bit: usize) {
        self.words[bit / 64] ^= 1 << (bit % 64);
        self.hash ^= mix(bit as u64 ^ 0x5851_f42d_4c95_7f2d);
    }
}

/// The (linearized set, state) pairs seen: chains of arena entries by hash.
struct Memo {
    stride: usize,
    heads: HashMap<u64, u32, Mixed>,
    /// Per entry: the next entry of the same hash (NIL at the end) and the state.
    links: Vec<(u32, u32)>,
    /// Per entry: its bitset, `stride` words.
    bits: Vec<u64>,
}

impl Memo {
    fn new(stride: usize) -> Self {
        Self {
            stride,
            heads: HashMap::default(),
            links: Vec::new(),
            bits: Vec::new(),
        }
    }

    /// Adds the pair; false if it was already there.
    fn insert(&mut self, hash: u64, words: &[u64], state: u32) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut at = head;
        while at != NIL {
            let (next, seen) = self.links[at as usize];
            let start = at as usize * self.stride;
            if seen == state && self.bits[start..start + self.stride] == *words {
                return false;
            }
            at = next;
        }
        let id = self.links.len() as u32;
        self.links.push((head, state));
        self.bits.extend_from_slice(words);
        self.heads.insert(hash, id);
        true
    }
}

/// SplitMix64's finaliser: every input bit reaches every output bit.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A hasher for u64 keys that are mixed once (the memo's keys are hashes already, the
/// step memo's are packed numbers); SipHash would cost more than the search step.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

type Mixed = BuildHasherDefault<MixHasher>;
