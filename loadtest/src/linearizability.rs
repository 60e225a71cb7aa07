//! The linearizability checker: is the run's history of gets, puts, deletes and
//! compare-and-swaps explainable by one register per key, each operation taking effect at one
//! instant between its call and its return?
//!
//! Keys are independent registers, so each key's history is checked on its own (Herlihy and
//! Wing's locality). The search is Wing and Gong's, with Lowe's memoisation ("Testing for
//! linearisability", 2017), as in Porcupine: at each step any operation called before the
//! first return of a pending operation may be linearized next; backtrack when none can, and
//! never revisit a (set of linearized operations, register value) configuration. The set is
//! fingerprinted with 128-bit Zobrist hashing so a configuration costs 20 bytes in the cache.
//! The order in which candidates are tried is chosen to find an answer fast (see `search`);
//! unknown writes the history already decides are settled first (`settle_unknown_writes`).
//! Every search has a step budget ([`CHECK_STEPS_PER_KEY`]); a key that exhausts it is
//! reported as inconclusive, never as linearizable.
//!
//! Outcomes: a definite failure never took effect and is left out; a write with an unknown
//! outcome may take effect at any time after its call, or never (its return is moved to the
//! end of time, where taking effect last is the same as never); a read with an unknown outcome
//! says nothing and is left out.
//!
//! On a violation the smallest failing window is searched for: first the shortest failing
//! prefix of the history (linearizability is prefix-closed, operations answered after the cut
//! counting as pending), then the latest start at which the rest still fails from any register
//! value. A start is only taken at a cut no finished operation spans (operations whose outcome
//! is unknown may span it), so every operation before it is linearized before every operation
//! after it and the window alone proves the violation.
//!
//! Pure: called by the main thread after the run.

use crate::limits::{CHECK_STEPS_PER_KEY, VIOLATIONS_KEPT, WINDOW_LINES_MAX};
use crate::oplog::{OpRecord, Outcome, Request, Value};
use crate::report::thousands;
use std::collections::{BTreeMap, HashMap, HashSet};

/// A register value inside the checker: an index into the key's written values.
type Val = u32;
/// The key does not exist.
const ABSENT: Val = 0;
/// A value the key can never hold (read, but never written to this key by a write that may
/// have taken effect).
const FOREIGN: Val = u32::MAX;
/// Any value the key could hold: absent or one of its written values. Only a window's
/// starting state; it makes the model more permissive, never less.
const ANY: Val = u32::MAX - 1;
/// Return time of an operation that may take effect at any time after its call.
const NEVER: u64 = u64::MAX;

/// One operation as the register model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Put(Val),
    Delete,
    Get(Val),
    CasSwapped {
        expected: Val,
        new: Val,
    },
    CasNotSwapped {
        expected: Val,
        found: Val,
    },
    /// A compare-and-swap whose outcome is unknown: swaps if the value matches.
    CasMaybe {
        expected: Val,
        new: Val,
    },
}

impl Step {
    /// The register value after this operation from `state`; `None` when the operation's
    /// answer is impossible from `state`.
    fn apply(self, state: Val) -> Option<Val> {
        let matches = |v: Val| v != FOREIGN && (state == ANY || state == v);
        match self {
            Step::Put(v) => Some(v),
            Step::Delete => Some(ABSENT),
            Step::Get(v) => matches(v).then_some(v),
            Step::CasSwapped { expected, new } => matches(expected).then_some(new),
            Step::CasNotSwapped { expected, found } => {
                (found != expected && matches(found)).then_some(found)
            }
            Step::CasMaybe { expected, new } => Some(match state {
                ANY => ANY,
                s if s == expected => new,
                s => s,
            }),
        }
    }

    /// The same write with its answer not yet known (a cut of the history fell inside it);
    /// `None` for a read, which then says nothing.
    fn pending(self, new_of_cas: Option<Val>) -> Option<Step> {
        match self {
            Step::Put(_) | Step::Delete | Step::CasMaybe { .. } => Some(self),
            Step::CasSwapped { expected, new } => Some(Step::CasMaybe { expected, new }),
            Step::CasNotSwapped { expected, .. } => Some(Step::CasMaybe {
                expected,
                new: new_of_cas.expect("a compare-and-swap has a new value"),
            }),
            Step::Get(_) => None,
        }
    }
}

/// One operation with its interval, as the search sees it.
#[derive(Debug, Clone, Copy)]
struct ModelOp {
    call: u64,
    ret: u64,
    step: Step,
    /// The new value of a compare-and-swap (for [`Step::pending`]).
    cas_new: Option<Val>,
    /// Position of the record in the key's history.
    record: usize,
}

/// Translates one key's records into model operations, ordered by call time.
fn model_ops(records: &[OpRecord]) -> Vec<ModelOp> {
    // Every value a write that may have taken effect stores gets an index; any other value
    // (another key's, a definitely failed write's, another run's) is FOREIGN.
    let mut index: HashMap<Value, Val> = HashMap::new();
    for r in records.iter().filter(|r| r.outcome != Outcome::Failed) {
        if let Request::Put(id) | Request::Cas { new: id, .. } = r.request {
            let next = Val::try_from(index.len() + 1).expect("fewer than 2^32 writes per key");
            index.entry(Value::Written(id)).or_insert(next);
        }
    }
    let val = |v: Value| match v {
        Value::Absent => ABSENT,
        v => index.get(&v).copied().unwrap_or(FOREIGN),
    };
    let mut ops: Vec<ModelOp> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let unknown = r.outcome == Outcome::Unknown;
            let (step, cas_new) = match (r.request, r.outcome) {
                (_, Outcome::Failed) | (Request::Get, Outcome::Unknown) => return None,
                (Request::Get, Outcome::Read(v)) => (Step::Get(val(v)), None),
                (Request::Put(id), Outcome::Done | Outcome::Unknown) => {
                    (Step::Put(val(Value::Written(id))), None)
                }
                (Request::Delete, Outcome::Done | Outcome::Unknown) => (Step::Delete, None),
                (Request::Cas { expected, new }, outcome) => {
                    let (expected, new) = (val(expected), val(Value::Written(new)));
                    let step = match outcome {
                        Outcome::Swapped => Step::CasSwapped { expected, new },
                        Outcome::NotSwapped(found) => Step::CasNotSwapped {
                            expected,
                            found: val(found),
                        },
                        Outcome::Unknown => Step::CasMaybe { expected, new },
                        // An answer that does not fit the request: nothing can explain it.
                        _ => Step::Get(FOREIGN),
                    };
                    (step, Some(new))
                }
                // An answer that does not fit the request: nothing can explain it.
                _ => (Step::Get(FOREIGN), None),
            };
            Some(ModelOp {
                call: r.call_ns,
                ret: if unknown {
                    NEVER
                } else {
                    r.return_ns.max(r.call_ns)
                },
                step,
                cas_new,
                record: i,
            })
        })
        .collect();
    ops.sort_by_key(|op| (op.call, op.ret, op.record));
    ops
}

/// `ops` with the unknown writes the history decides settled (`settle_unknown_writes`).
/// Only for a whole history or a prefix of one, from an absent key: the settling reasons
/// from every operation that could store a value, which a window does not hold.
fn settled(ops: &[ModelOp]) -> Vec<ModelOp> {
    let mut ops = ops.to_vec();
    settle_unknown_writes(&mut ops);
    ops
}

/// The value an operation writes when it takes effect: `Some` for puts and
/// compare-and-swaps, whose values are unique to one write in the loadtest's histories.
fn written(step: Step) -> Option<Val> {
    match step {
        Step::Put(v) | Step::CasSwapped { new: v, .. } | Step::CasMaybe { new: v, .. } => Some(v),
        _ => None,
    }
}

/// Settles writes with unknown outcomes where the rest of the history already decides them,
/// so the search need not try every place for them. Only for a value that one write alone
/// stores (every value in a loadtest run), since the reasoning rests on that:
///
/// - Observed (a read returned it, a compare-and-swap expected it and swapped, or found it):
///   the write took effect (for a compare-and-swap: it swapped) before the earliest answer
///   of an observer, so that answer bounds its return.
/// - Unreferenced (no operation observes it or expects it): dropping the write keeps the
///   history linearizable or not. After it took effect nothing could read its value before
///   the next write overwrote it, except unknown compare-and-swaps that then changed
///   nothing, and those may as well take effect at the end.
///
/// Unknown deletes stay as they are (absence is written by many).
fn settle_unknown_writes(ops: &mut Vec<ModelOp>) {
    let mut writers: HashMap<Val, u32> = HashMap::new();
    for op in ops.iter() {
        if let Some(v) = written(op.step) {
            *writers.entry(v).or_default() += 1;
        }
    }
    // Earliest return of an operation that observes each value, and values merely expected.
    let mut observed_by: HashMap<Val, u64> = HashMap::new();
    let mut expected: HashSet<Val> = HashSet::new();
    for op in ops.iter() {
        let observed = match op.step {
            Step::Get(v) | Step::CasSwapped { expected: v, .. } => Some(v),
            Step::CasNotSwapped { found, .. } => Some(found),
            Step::CasMaybe { expected: v, .. } => {
                expected.insert(v);
                None
            }
            Step::Put(_) | Step::Delete => None,
        };
        if let Some(v) = observed {
            let earliest = observed_by.entry(v).or_insert(op.ret);
            *earliest = (*earliest).min(op.ret);
        }
    }
    ops.retain_mut(|op| {
        let Some(v) = written(op.step).filter(|v| writers[v] == 1 && op.ret == NEVER) else {
            return true;
        };
        match observed_by.get(&v) {
            Some(&first_answer) => {
                op.ret = first_answer.max(op.call);
                if let Step::CasMaybe { expected, new } = op.step {
                    op.step = Step::CasSwapped { expected, new };
                }
                true
            }
            None => expected.contains(&v),
        }
    });
}

/// What one search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out first.
    Inconclusive,
}

/// Random 128-bit keys for Zobrist hashing of the linearized set, from a fixed seed: the
/// checker is deterministic.
fn zobrist_keys(n: usize) -> Vec<u128> {
    let mut rng = crate::workload::Rng::new(0x5EED_0F11_AEA4_1200);
    (0..n)
        .map(|_| (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()))
        .collect()
}

/// The events of `ops` as a doubly linked list in time order, for the search to unlink an
/// operation's call and return when it linearizes it and relink them when it undoes that.
/// Node 0 is the head; operation `i` has its call at node `1 + 2i` and its return at `2 + 2i`.
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EventList {
    fn new(ops: &[ModelOp]) -> EventList {
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            // At equal times a call sorts before a return: the two operations overlap.
            events.push((op.call, 0, 1 + 2 * i));
            events.push((op.ret, 1, 2 + 2 * i));
        }
        events.sort_unstable();
        let nodes = 2 * ops.len() + 1;
        let (mut next, mut prev) = (vec![0usize; nodes], vec![0usize; nodes]);
        let mut last = 0;
        for &(_, _, node) in &events {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        next[last] = 0;
        prev[0] = last;
        EventList { next, prev }
    }

    /// Takes operation `i` out (it has been linearized).
    fn remove(&mut self, i: usize) {
        for node in [1 + 2 * i, 2 + 2 * i] {
            self.next[self.prev[node]] = self.next[node];
            self.prev[self.next[node]] = self.prev[node];
        }
    }

    /// Puts operation `i` back; undoes the latest [`EventList::remove`].
    fn restore(&mut self, i: usize) {
        for node in [2 + 2 * i, 1 + 2 * i] {
            self.next[self.prev[node]] = node;
            self.prev[self.next[node]] = node;
        }
    }

    /// The operations that may be linearized next: those called before the first return of
    /// an operation not yet linearized.
    fn minimal(&self) -> Vec<usize> {
        let mut found = Vec::new();
        let mut node = self.next[0];
        while node != 0 && node % 2 == 1 {
            found.push((node - 1) / 2);
            node = self.next[node];
        }
        found
    }
}

/// The register value an operation requires, when it leaves the register unchanged.
fn observes_only(step: Step) -> Option<Val> {
    match step {
        Step::Get(v) | Step::CasNotSwapped { found: v, .. } => Some(v),
        _ => None,
    }
}

/// The register value an operation's answer shows the register held.
fn observed(step: Step) -> Option<Val> {
    match step {
        Step::Get(v) | Step::CasSwapped { expected: v, .. } => Some(v),
        Step::CasNotSwapped { found, .. } => Some(found),
        _ => None,
    }
}

/// One level of the depth-first search: the operations that could come next, in the order
/// they are tried, and how the search got here.
struct Level {
    candidates: Vec<usize>,
    tried: usize,
    /// The operation linearized to reach this level and the register value before it.
    via: Option<(usize, Val)>,
}

/// Wing and Gong's search with memoisation over `ops` from register value `initial`, with
/// two choices of order that only make it faster. An operation that only observes the
/// register and matches it is linearized at once with no alternative tried (if any order
/// works, one with it first does; not from [`ANY`], where observing narrows the value). Writes whose value some pending operation observes are
/// tried after the others, so the write a later read needs tends to come last.
fn search(ops: &[ModelOp], initial: Val, steps_max: u64) -> Search {
    let mut events = EventList::new(ops);
    let keys = zobrist_keys(ops.len());
    // Pending operations observing each value.
    let mut watchers: HashMap<Val, u32> = HashMap::new();
    for op in ops {
        if let Some(v) = observed(op.step) {
            *watchers.entry(v).or_default() += 1;
        }
    }
    let mut state = initial;
    let mut linearized: u128 = 0;
    let mut remaining = ops.len();
    let mut seen: HashSet<(u128, Val)> = HashSet::new();
    let order = |events: &EventList, state: Val, watchers: &HashMap<Val, u32>| {
        let minimal = events.minimal();
        if let Some(&i) = minimal.iter().find(|&&i| {
            observes_only(ops[i].step).is_some() && ops[i].step.apply(state) == Some(state)
        }) {
            return vec![i];
        }
        // Observers first (from ANY they may narrow it), then writes nothing pending
        // observes, then the others.
        let rank = |i: usize| {
            if observes_only(ops[i].step).is_some() {
                return 0;
            }
            let value = written(ops[i].step).unwrap_or(ABSENT);
            if watchers.get(&value).is_some_and(|&n| n > 0) {
                2
            } else {
                1
            }
        };
        let mut candidates = minimal;
        candidates.sort_by_key(|&i| rank(i));
        candidates
    };
    let mut levels = vec![Level {
        candidates: order(&events, state, &watchers),
        tried: 0,
        via: None,
    }];
    let mut steps = 0u64;
    while remaining > 0 {
        steps += 1;
        if steps > steps_max {
            return Search::Inconclusive;
        }
        let level = levels.last_mut().expect("the root level is never popped");
        if let Some(&i) = level.candidates.get(level.tried) {
            level.tried += 1;
            let Some(after) = ops[i].step.apply(state) else {
                continue;
            };
            if !seen.insert((linearized ^ keys[i], after)) {
                continue;
            }
            linearized ^= keys[i];
            events.remove(i);
            remaining -= 1;
            if let Some(v) = observed(ops[i].step) {
                *watchers.get_mut(&v).expect("counted above") -= 1;
            }
            levels.push(Level {
                candidates: order(&events, after, &watchers),
                tried: 0,
                via: Some((i, state)),
            });
            state = after;
        } else {
            // Every choice here failed: undo the one that led here.
            let Some((i, before)) = levels.pop().and_then(|l| l.via) else {
                return Search::NotLinearizable;
            };
            linearized ^= keys[i];
            events.restore(i);
            remaining += 1;
            if let Some(v) = observed(ops[i].step) {
                *watchers.get_mut(&v).expect("counted above") += 1;
            }
            state = before;
        }
    }
    Search::Linearizable
}

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    /// Some order of the operations explains every answer.
    Linearizable,
    /// None does; `window` is the smallest failing window found.
    Violation {
        /// Positions of the window's operations in the key's records, by call time.
        window: Vec<usize>,
        /// Operations answered after this time were treated as pending.
        cut_ns: u64,
        /// True when the window starts with the history (from an absent key); false when
        /// it fails from any value the key could hold at its start.
        from_start: bool,
        /// Where the window starts: no operation answered before it is in the window, and
        /// every operation called before it that is in the window has an unknown outcome.
        start_ns: u64,
    },
    /// The search ran out of steps.
    Inconclusive,
}

/// Checks one key's records (all of the same key) against a register.
pub fn check_key(records: &[OpRecord], steps_max: u64) -> KeyCheck {
    check_key_until(records, steps_max, NEVER, true)
}

/// [`check_key`] on the history cut at `cut_ns`: operations called later are left out and
/// those answered later count as pending. Without `want_window` a violation comes with an
/// empty window (searching for one costs a few dozen more searches).
fn check_key_until(
    records: &[OpRecord],
    steps_max: u64,
    cut_ns: u64,
    want_window: bool,
) -> KeyCheck {
    let ops = prefix(&model_ops(records), cut_ns);
    match search(&settled(&ops), ABSENT, steps_max) {
        Search::Linearizable => KeyCheck::Linearizable,
        Search::Inconclusive => KeyCheck::Inconclusive,
        Search::NotLinearizable if !want_window => KeyCheck::Violation {
            window: Vec::new(),
            cut_ns,
            from_start: true,
            start_ns: 0,
        },
        Search::NotLinearizable => {
            let (window, cut_ns, from_start, start_ns) = smallest_window(&ops, steps_max);
            KeyCheck::Violation {
                window,
                cut_ns,
                from_start,
                start_ns,
            }
        }
    }
}

/// `ops` cut at `end`: only operations called by then; those answered later are pending.
fn prefix(ops: &[ModelOp], end: u64) -> Vec<ModelOp> {
    ops.iter()
        .filter(|op| op.call <= end)
        .filter_map(|op| {
            if op.ret <= end {
                return Some(*op);
            }
            op.step.pending(op.cas_new).map(|step| ModelOp {
                ret: NEVER,
                step,
                ..*op
            })
        })
        .collect()
}

/// The largest `i` in `0..len` for which `fails(i)` holds, given that `fails(0)` holds and
/// that `fails` is monotone (true up to some index, false after it).
fn binary_search_last(len: usize, mut fails: impl FnMut(usize) -> bool) -> usize {
    // Invariant: fails(lo); no index above hi fails.
    let (mut lo, mut hi) = (0, len - 1);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fails(mid) { lo = mid } else { hi = mid - 1 }
    }
    lo
}

/// Shortest failing prefix, then latest failing start. Returns the window's record positions,
/// the prefix's end, whether the window starts with the history, and its start.
fn smallest_window(ops: &[ModelOp], steps_max: u64) -> (Vec<usize>, u64, bool, u64) {
    let mut ends: Vec<u64> = ops
        .iter()
        .map(|op| op.ret)
        .filter(|&r| r != NEVER)
        .collect();
    ends.push(NEVER);
    ends.sort_unstable();
    ends.dedup();
    // The full history fails; find the first end at which the prefix already fails
    // (searching from the back keeps the invariant's shape: index 0 is the full history).
    let ends_desc: Vec<u64> = ends.into_iter().rev().collect();
    let fails_at_end = |i: usize| {
        i == 0
            || search(&settled(&prefix(ops, ends_desc[i])), ABSENT, steps_max)
                == Search::NotLinearizable
    };
    let end = ends_desc[binary_search_last(ends_desc.len(), fails_at_end)];
    let cut = prefix(ops, end);

    // Starts where no finished operation is in flight (ops are sorted by call).
    let mut starts = vec![0usize];
    let mut reach = 0u64;
    for (i, op) in cut.iter().enumerate() {
        if i > 0 && reach < op.call {
            starts.push(i);
        }
        if op.ret != NEVER {
            reach = reach.max(op.ret);
        }
    }
    let window_from = |start: usize| -> Vec<ModelOp> {
        // Finished operations before the start all returned before it (it is a cut).
        cut.iter()
            .enumerate()
            .filter(|&(i, op)| i >= start || op.ret == NEVER)
            .map(|(_, op)| *op)
            .collect()
    };
    let fails_from = |i: usize| {
        i == 0 || search(&window_from(starts[i]), ANY, steps_max) == Search::NotLinearizable
    };
    let start = starts[binary_search_last(starts.len(), fails_from)];
    let start_ns = cut.get(start).map_or(0, |op| op.call);
    let window = if start == 0 { cut } else { window_from(start) };
    let records = window.iter().map(|op| op.record).collect();
    (records, end, start == 0, start_ns)
}

/// A key whose history is not linearizable, with its smallest failing window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Key number.
    pub key: u64,
    /// Operations of the key in the history.
    pub ops: u64,
    /// The window's operations, by call time.
    pub window: Vec<OpRecord>,
    /// Operations answered after this time (ns since the start) were treated as pending.
    pub cut_ns: u64,
    /// The window starts with the history (the key absent) rather than from any value.
    pub from_start: bool,
}

impl Violation {
    /// The window as text, one operation per line, at most `lines_max` operations.
    pub fn describe(&self, key_name: &str, lines_max: usize) -> String {
        let from = if self.from_start {
            "starting from an absent key"
        } else {
            "whatever value the key held before"
        };
        let mut text = format!(
            "key {key_name} ({} ops): no order of these {} operations explains every answer, {from}\n",
            self.ops,
            self.window.len()
        );
        for record in self.window.iter().take(lines_max) {
            text.push_str("    ");
            text.push_str(&record.describe());
            if record.outcome != Outcome::Unknown && record.return_ns > self.cut_ns {
                text.push_str("  (answered after the window: taken as pending)");
            }
            text.push('\n');
        }
        if self.window.len() > lines_max {
            text.push_str(&format!("    ... {} more\n", self.window.len() - lines_max));
        }
        text
    }
}

/// The verdict over the whole history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Linearizability {
    /// Operations of the keys whose check finished.
    pub ops_checked: u64,
    /// Keys whose check finished.
    pub keys_checked: u64,
    /// Keys whose search ran out of steps.
    pub keys_inconclusive: u64,
    /// Keys found not linearizable.
    pub keys_violated: u64,
    /// The first [`VIOLATIONS_KEPT`] violations, by key.
    pub violations: Vec<Violation>,
    /// The history was cut here (ns since the start) because it reached
    /// `HISTORY_OPS_MAX` operations; only the run before the cut was checked.
    pub cut_ns: Option<u64>,
}

impl Linearizability {
    /// `Some(true)` when every key was checked and passed, `Some(false)` on a violation,
    /// `None` when some key was inconclusive and none failed.
    pub fn linearizable(&self) -> Option<bool> {
        match (self.keys_violated, self.keys_inconclusive) {
            (0, 0) => Some(true),
            (0, _) => None,
            _ => Some(false),
        }
    }
}

impl Linearizability {
    /// The verdict in one line, for the report.
    pub fn summary(&self) -> String {
        let checked = format!(
            "{} operations on {} keys",
            thousands(self.ops_checked),
            thousands(self.keys_checked)
        );
        let mut text = match self.linearizable() {
            Some(true) => format!("yes: {checked}"),
            Some(false) => format!(
                "NO: {} KEYS NOT LINEARIZABLE ({checked} checked)",
                thousands(self.keys_violated)
            ),
            None => format!("not decided: {checked} linearizable"),
        };
        if let Some(cut_ns) = self.cut_ns {
            text.push_str(&format!(
                " (history capped: the first {:.1} s checked)",
                cut_ns as f64 / 1e9
            ));
        }
        if self.keys_inconclusive > 0 {
            // The search grows with the operations in flight on one key at a time.
            text.push_str(&format!(
                ", {} keys over the search budget (too many operations in flight per key: \
                 use more --keys)",
                thousands(self.keys_inconclusive)
            ));
        }
        text
    }

    /// The failing windows kept, one operation per line, naming keys with `key_name`.
    pub fn windows_text(&self, key_name: impl Fn(u64) -> String) -> String {
        self.violations
            .iter()
            .map(|v| v.describe(&key_name(v.key), WINDOW_LINES_MAX))
            .collect()
    }
}

/// Checks every key of `records` with at most `steps_max` search steps per key, up to
/// `cut_ns` when the history was cut.
pub fn check_history(
    records: Vec<OpRecord>,
    steps_max: u64,
    cut_ns: Option<u64>,
) -> Linearizability {
    let mut by_key: BTreeMap<u64, Vec<OpRecord>> = BTreeMap::new();
    for record in records {
        by_key.entry(record.key).or_default().push(record);
    }
    let mut result = Linearizability {
        cut_ns,
        ..Linearizability::default()
    };
    for (key, records) in by_key {
        let want_window = result.violations.len() < VIOLATIONS_KEPT;
        match check_key_until(&records, steps_max, cut_ns.unwrap_or(NEVER), want_window) {
            KeyCheck::Inconclusive => {
                result.keys_inconclusive += 1;
                continue;
            }
            KeyCheck::Linearizable => {}
            KeyCheck::Violation {
                window,
                cut_ns,
                from_start,
                ..
            } => {
                result.keys_violated += 1;
                if result.violations.len() < VIOLATIONS_KEPT {
                    result.violations.push(Violation {
                        key,
                        ops: records.len() as u64,
                        window: window.iter().map(|&i| records[i]).collect(),
                        cut_ns,
                        from_start,
                    });
                }
            }
        }
        result.keys_checked += 1;
        result.ops_checked += records.len() as u64;
    }
    result
}

/// [`check_history`] with the default step budget.
pub fn check(records: Vec<OpRecord>, cut_ns: Option<u64>) -> Linearizability {
    check_history(records, CHECK_STEPS_PER_KEY, cut_ns)
}

#[cfg(test)]
mod tests;
