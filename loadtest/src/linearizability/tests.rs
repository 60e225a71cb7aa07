//! Known-good and known-bad histories, and a cross-check of the search against a brute-force
//! enumeration of every order on small random histories.

use super::*;
use crate::history::WriteId;
use proptest::prelude::*;

fn w(counter: u64) -> WriteId {
    WriteId { client: 0, counter }
}

fn v(counter: u64) -> Value {
    Value::Written(w(counter))
}

fn op(request: Request, outcome: Outcome, call_ns: u64, return_ns: u64) -> OpRecord {
    OpRecord {
        client: 0,
        key: 0,
        request,
        outcome,
        call_ns,
        return_ns,
    }
}

fn put(n: u64, call: u64, ret: u64) -> OpRecord {
    op(Request::Put(w(n)), Outcome::Done, call, ret)
}

fn put_unknown(n: u64, call: u64) -> OpRecord {
    op(Request::Put(w(n)), Outcome::Unknown, call, call + 1_000)
}

fn put_failed(n: u64, call: u64, ret: u64) -> OpRecord {
    op(Request::Put(w(n)), Outcome::Failed, call, ret)
}

fn get(value: Value, call: u64, ret: u64) -> OpRecord {
    op(Request::Get, Outcome::Read(value), call, ret)
}

fn del(call: u64, ret: u64) -> OpRecord {
    op(Request::Delete, Outcome::Done, call, ret)
}

fn cas(expected: Value, new: u64, outcome: Outcome, call: u64, ret: u64) -> OpRecord {
    let request = Request::Cas {
        expected,
        new: w(new),
    };
    op(request, outcome, call, ret)
}

const STEPS: u64 = 1_000_000;

fn linearizable(history: &[OpRecord]) -> bool {
    match check_key(history, STEPS) {
        KeyCheck::Linearizable => true,
        KeyCheck::Violation { .. } => false,
        KeyCheck::Inconclusive => panic!("inconclusive on a tiny history"),
    }
}

/// The failing window, as the records themselves.
fn window(history: &[OpRecord]) -> Vec<OpRecord> {
    match check_key(history, STEPS) {
        KeyCheck::Violation { window, .. } => window.iter().map(|&i| history[i]).collect(),
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn sequential_histories_pass() {
    let history = [
        get(Value::Absent, 0, 1),
        put(1, 2, 3),
        get(v(1), 4, 5),
        put(2, 6, 7),
        get(v(2), 8, 9),
        del(10, 11),
        get(Value::Absent, 12, 13),
        cas(Value::Absent, 3, Outcome::Swapped, 14, 15),
        cas(v(1), 4, Outcome::NotSwapped(v(3)), 16, 17),
        cas(v(3), 5, Outcome::Swapped, 18, 19),
        get(v(5), 20, 21),
    ];
    assert!(linearizable(&history));
    assert!(linearizable(&[]));
}

#[test]
fn overlapping_operations_that_are_linearizable_pass() {
    // Two overlapping puts may land in either order; a read overlapping them sees either.
    assert!(linearizable(&[
        put(1, 0, 10),
        put(2, 5, 15),
        get(v(1), 12, 20)
    ]));
    assert!(linearizable(&[
        put(1, 0, 10),
        put(2, 5, 15),
        get(v(2), 12, 20)
    ]));
    // Reads overlapping a put: the earlier read sees the old value, the later the new.
    assert!(linearizable(&[
        put(1, 0, 5),
        put(2, 10, 30),
        get(v(1), 12, 20),
        get(v(2), 15, 25),
    ]));
    // A read that overlaps everything may see the first value even after later writes.
    assert!(linearizable(&[
        get(v(1), 0, 100),
        put(1, 10, 20),
        put(2, 30, 40),
        get(v(2), 50, 60),
    ]));
    // Two overlapping compare-and-swaps from the same value: one swaps, one sees its result.
    assert!(linearizable(&[
        put(1, 0, 1),
        cas(v(1), 2, Outcome::Swapped, 2, 10),
        cas(v(1), 3, Outcome::NotSwapped(v(2)), 3, 11),
    ]));
}

#[test]
fn unknown_outcomes_may_take_effect_late_or_never() {
    // An unknown put first seen long after it was called.
    assert!(linearizable(&[
        put(1, 0, 5),
        put_unknown(2, 6),
        get(v(1), 10, 12),
        get(v(2), 20, 22),
        get(v(2), 30, 32),
    ]));
    // ... or never seen at all.
    assert!(linearizable(&[
        put(1, 0, 5),
        put_unknown(2, 6),
        get(v(1), 100, 120)
    ]));
    // An unknown compare-and-swap that did swap.
    assert!(linearizable(&[
        put(1, 0, 5),
        cas(v(1), 2, Outcome::Unknown, 6, 7),
        get(v(2), 50, 60),
    ]));
    // An unknown read says nothing; a definitely failed put is simply absent.
    assert!(linearizable(&[
        put(1, 0, 5),
        op(Request::Get, Outcome::Unknown, 6, 7),
        put_failed(2, 8, 9),
        get(v(1), 10, 11),
    ]));
}

#[test]
fn a_stale_read_after_an_acknowledged_write_fails_in_a_two_operation_window() {
    let history = [put(1, 0, 1), put(2, 2, 3), get(v(1), 4, 5)];
    assert!(!linearizable(&history));
    assert_eq!(window(&history), vec![put(2, 2, 3), get(v(1), 4, 5)]);
}

#[test]
fn a_new_then_old_read_inversion_fails() {
    // The put overlaps both reads, but once one read saw the new value a later one cannot
    // see the old.
    let history = [
        put(1, 0, 5),
        put(2, 10, 30),
        get(v(2), 12, 14),
        get(v(1), 15, 20),
    ];
    assert!(!linearizable(&history));
}

#[test]
fn a_read_of_a_value_never_written_fails_alone() {
    let history = [put(1, 0, 1), get(Value::Foreign, 2, 3)];
    assert_eq!(window(&history), vec![get(Value::Foreign, 2, 3)]);
    // A value of this run that was never written to this key is as foreign.
    assert!(!linearizable(&[put(1, 0, 1), get(v(9), 2, 3)]));
}

#[test]
fn a_read_of_a_definitely_failed_write_fails() {
    let history = [put(1, 0, 1), put_failed(2, 2, 3), get(v(2), 4, 5)];
    assert!(!linearizable(&history));
    assert_eq!(window(&history), vec![get(v(2), 4, 5)]);
}

#[test]
fn two_compare_and_swaps_that_both_succeed_from_one_value_fail() {
    let history = [
        put(1, 0, 1),
        cas(v(1), 2, Outcome::Swapped, 2, 10),
        cas(v(1), 3, Outcome::Swapped, 3, 11),
    ];
    assert!(!linearizable(&history));
    assert_eq!(window(&history), history[1..].to_vec());
}

#[test]
fn a_lost_acknowledged_write_fails() {
    // Read back after the run: absent, or the value before the acknowledged write.
    assert!(!linearizable(&[put(1, 0, 1), get(Value::Absent, 100, 101)]));
    assert!(!linearizable(&[
        put(1, 0, 1),
        put(2, 2, 3),
        put_unknown(3, 4),
        get(v(1), 100, 101),
    ]));
    // A delete lost the same way.
    assert!(!linearizable(&[put(1, 0, 1), del(2, 3), get(v(1), 4, 5)]));
}

#[test]
fn impossible_compare_and_swap_answers_fail() {
    // Not swapped although the key held the expected value.
    assert!(!linearizable(&[
        put(1, 0, 1),
        cas(v(1), 2, Outcome::NotSwapped(v(1)), 2, 3),
    ]));
    // Swapped although the key held something else.
    assert!(!linearizable(&[
        put(1, 0, 1),
        cas(v(7), 2, Outcome::Swapped, 2, 3)
    ]));
    // A not-swapped compare-and-swap stored nothing: reading its value is impossible.
    assert!(!linearizable(&[
        put(1, 0, 1),
        cas(Value::Absent, 2, Outcome::NotSwapped(v(1)), 2, 3),
        get(v(2), 4, 5),
    ]));
}

#[test]
fn the_window_of_a_long_history_is_near_the_violation() {
    let mut history = Vec::new();
    for n in 0..200u64 {
        history.push(put(n, 10 * n, 10 * n + 3));
        history.push(get(v(n), 10 * n + 4, 10 * n + 8));
    }
    history.push(get(v(150), 5_000, 5_001));
    let found = window(&history);
    assert!(found.len() <= 3, "{found:?}");
    assert_eq!(found.last(), Some(&get(v(150), 5_000, 5_001)));
    let result = check_history(history.clone(), STEPS, None);
    assert_eq!(result.linearizable(), Some(false));
    assert_eq!((result.keys_violated, result.ops_checked), (1, 401));
    let text = result.violations[0].describe("k0", 10);
    assert!(text.contains("c0.150") && text.contains("get"), "{text}");
}

#[test]
fn a_window_keeps_the_unknown_write_that_spans_its_start() {
    // The unknown put of 1 may land after the put of 2; a window without it would be wrong.
    let history = [
        put_unknown(1, 0),
        put(2, 10, 20),
        get(v(1), 30, 40),
        get(v(2), 50, 60),
    ];
    assert!(!linearizable(&history));
    let found = window(&history);
    assert!(found.contains(&put_unknown(1, 0)), "{found:?}");
}

#[test]
fn keys_are_checked_independently_and_a_budget_makes_a_key_inconclusive() {
    let mut other = put(1, 0, 1);
    other.key = 1;
    let result = check_history(vec![put(1, 0, 1), get(v(1), 2, 3), other], STEPS, None);
    assert_eq!(result.linearizable(), Some(true));
    assert_eq!((result.keys_checked, result.ops_checked), (2, 3));

    let concurrent: Vec<OpRecord> = (0..12).map(|n| put(n, 0, 100)).collect();
    let mut history = concurrent.clone();
    history.push(get(v(99), 200, 201));
    assert_eq!(check_key(&history, 5), KeyCheck::Inconclusive);
    let result = check_history(history, 5, None);
    assert_eq!(result.linearizable(), None);
    assert_eq!((result.keys_inconclusive, result.ops_checked), (1, 0));
}

#[test]
fn windows_are_searched_for_the_kept_violations_only() {
    let mut history = Vec::new();
    for key in 0..10 {
        for mut r in [put(1, 0, 1), put(2, 2, 3), get(v(1), 4, 5)] {
            r.key = key;
            history.push(r);
        }
    }
    let result = check_history(history, STEPS, None);
    assert_eq!(result.keys_violated, 10);
    assert_eq!(result.violations.len(), crate::limits::VIOLATIONS_KEPT);
    assert!(result.violations.iter().all(|v| v.window.len() == 2));
    let text = result.windows_text(|k| format!("k{k}"));
    assert!(text.contains("key k0 ") && text.contains("key k2 ") && !text.contains("key k3 "));
}

#[test]
fn a_cut_history_is_checked_as_the_prefix_before_the_cut() {
    let history = vec![
        put(1, 0, 10),
        get(v(1), 20, 30),
        // Answered after the cut: the read is left out, the put becomes pending.
        get(v(7), 40, 60),
        put(2, 45, 55),
        // Called after the cut: left out.
        get(Value::Foreign, 100, 110),
    ];
    assert_eq!(
        check_history(history.clone(), STEPS, None).linearizable(),
        Some(false)
    );
    let cut = check_history(history, STEPS, Some(50));
    assert_eq!(cut.linearizable(), Some(true));
    assert_eq!(cut.cut_ns, Some(50));
    assert!(
        cut.summary().contains("history capped"),
        "{}",
        cut.summary()
    );
}

#[test]
fn ten_concurrent_writes_are_searched_exhaustively() {
    // Ten overlapping puts, then reads that disagree: every order of the puts is refuted.
    // The search is exponential in the writes that overlap on one key; memoisation keeps
    // ten cheap, and the step budget bounds anything larger.
    let mut history = Vec::new();
    for n in 0..10u64 {
        history.push(put(n, n, 1_000 + n));
        history.push(get(v(n), 2_000 + n, 3_000));
    }
    assert!(!linearizable(&history));
    history.retain(|r| r.request != Request::Get);
    history.push(get(v(7), 2_000, 3_000));
    history.push(get(v(7), 2_001, 3_000));
    assert!(linearizable(&history));
}

#[test]
fn unknown_writes_are_settled_by_their_readers_or_dropped() {
    // A thousand unknown puts, half of them read: each read one is bounded by its first
    // reader, the unread ones are dropped, so refuting a final stale read needs no search
    // over where a thousand writes of unknown outcome might go.
    let mut history = Vec::new();
    for n in 0..1_000u64 {
        history.push(put_unknown(n, 10 * n));
        if n % 2 == 0 {
            history.push(get(v(n), 10 * n + 2, 10 * n + 3));
        }
    }
    assert_eq!(check_key(&history, 50_000), KeyCheck::Linearizable);
    history.push(get(v(0), 100_000, 100_001));
    assert!(matches!(
        check_key(&history, 50_000),
        KeyCheck::Violation { .. }
    ));
}

/// The plain Wing and Gong search with memoisation (events in time order, no choice of
/// order), kept as a reference the faster search must agree with.
fn wgl_reference(ops: &[ModelOp], initial: Val, steps_max: u64) -> Search {
    let n = ops.len();
    // Event nodes: 0 is the list head; op i has its call at 1 + 2i and its return at 2 + 2i.
    let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        // At equal times a call sorts before a return: the two operations overlap.
        events.push((op.call, 0, 1 + 2 * i));
        events.push((op.ret, 1, 2 + 2 * i));
    }
    events.sort_unstable();
    let nodes = 2 * n + 1;
    let (mut next, mut prev) = (vec![0usize; nodes], vec![0usize; nodes]);
    let mut last = 0;
    for &(_, _, node) in &events {
        next[last] = node;
        prev[node] = last;
        last = node;
    }
    next[last] = 0;
    prev[0] = last;

    let unlink = |next: &mut [usize], prev: &mut [usize], node: usize| {
        next[prev[node]] = next[node];
        prev[next[node]] = prev[node];
    };
    let relink = |next: &mut [usize], prev: &mut [usize], node: usize| {
        next[prev[node]] = node;
        prev[next[node]] = node;
    };

    let keys = zobrist_keys(n);
    let mut linearized: u128 = 0;
    let mut seen: HashSet<(u128, Val)> = HashSet::new();
    let mut stack: Vec<(usize, Val)> = Vec::new();
    let mut state = initial;
    let mut node = next[0];
    let mut steps = 0u64;
    while next[0] != 0 {
        steps += 1;
        if steps > steps_max {
            return Search::Inconclusive;
        }
        if node % 2 == 1 {
            // A call: try to linearize its operation now.
            let i = (node - 1) / 2;
            if let Some(after) = ops[i].step.apply(state)
                && seen.insert((linearized ^ keys[i], after))
            {
                linearized ^= keys[i];
                stack.push((i, state));
                state = after;
                unlink(&mut next, &mut prev, node);
                unlink(&mut next, &mut prev, node + 1);
                node = next[0];
            } else {
                node = next[node];
            }
        } else {
            // A return whose call is still pending: undo the latest choice.
            let Some((i, before)) = stack.pop() else {
                return Search::NotLinearizable;
            };
            linearized ^= keys[i];
            state = before;
            relink(&mut next, &mut prev, 2 + 2 * i);
            relink(&mut next, &mut prev, 1 + 2 * i);
            node = next[1 + 2 * i];
        }
    }
    Search::Linearizable
}

fn medium_record_strategy() -> impl Strategy<Value = OpRecord> {
    (record_strategy(), 0u64..400, 0u64..40).prop_map(|(mut r, call, len)| {
        r.call_ns = call;
        r.return_ns = call + len;
        r
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_ordered_search_agrees_with_plain_wing_and_gong(
        history in prop::collection::vec(medium_record_strategy(), 0..40),
    ) {
        let ops = model_ops(&history);
        for initial in [ABSENT, ANY] {
            let plain = wgl_reference(&ops, initial, STEPS);
            let ordered = search(&ops, initial, STEPS);
            if plain != Search::Inconclusive && ordered != Search::Inconclusive {
                prop_assert_eq!(plain, ordered);
            }
        }
    }
}

/// Builds a linearizable history: each operation takes effect at a point inside its interval
/// (`plan`: call, length, where in the interval, kind, outcome roll, choice), answers are
/// computed from a register, written values are unique, some writes end with an unknown
/// outcome (having taken effect or not) and some operations fail definitely.
fn linearizable_history(plan: &[(u64, u64, u64, u8, u8, u8)]) -> Vec<OpRecord> {
    let mut order: Vec<(u64, usize)> = plan
        .iter()
        .enumerate()
        .map(|(i, &(call, len, at, ..))| (call * 100 + (len * 100 * at) / 100, i))
        .collect();
    order.sort_unstable();
    let mut state = Value::Absent;
    let mut written: Vec<Value> = vec![Value::Absent];
    let mut records: Vec<Option<OpRecord>> = vec![None; plan.len()];
    for (_, i) in order {
        let (call, len, _, kind, roll, choice) = plan[i];
        let (call, ret) = (call * 100, (call + len) * 100);
        let id = i as u64;
        let (request, outcome) = match kind % 4 {
            0 => (Request::Get, Outcome::Read(state)),
            1 => (Request::Put(w(id)), Outcome::Done),
            2 => (Request::Delete, Outcome::Done),
            _ => {
                let expected = if choice % 2 == 0 {
                    state
                } else {
                    written[usize::from(choice) % written.len()]
                };
                let outcome = if expected == state {
                    Outcome::Swapped
                } else {
                    Outcome::NotSwapped(state)
                };
                (
                    Request::Cas {
                        expected,
                        new: w(id),
                    },
                    outcome,
                )
            }
        };
        let (outcome, takes_effect) = match (roll % 10, request.is_write()) {
            (0, _) => (Outcome::Failed, false),
            (1, true) => (Outcome::Unknown, true),
            (2, true) => (Outcome::Unknown, false),
            _ => (outcome, true),
        };
        if takes_effect {
            state = match (request, outcome) {
                (Request::Put(id), _) => Value::Written(id),
                (Request::Delete, _) => Value::Absent,
                (Request::Cas { expected, new }, _) if expected == state => Value::Written(new),
                _ => state,
            };
            written.push(state);
        }
        records[i] = Some(op(request, outcome, call, ret));
    }
    records
        .into_iter()
        .map(|r| r.expect("every operation placed"))
        .collect()
}

fn plan_strategy() -> impl Strategy<Value = Vec<(u64, u64, u64, u8, u8, u8)>> {
    prop::collection::vec(
        (
            0u64..600,
            0u64..60,
            0u64..=100,
            any::<u8>(),
            any::<u8>(),
            any::<u8>(),
        ),
        0..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn histories_built_linearizable_are_found_linearizable(plan in plan_strategy()) {
        let history = linearizable_history(&plan);
        prop_assert_eq!(check_key(&history, STEPS), KeyCheck::Linearizable);
    }

    #[test]
    fn a_changed_read_is_judged_alike_by_both_searches(plan in plan_strategy(), pick in any::<usize>(), to in 0u64..60) {
        let mut history = linearizable_history(&plan);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].outcome, Outcome::Read(_)))
            .collect();
        if let Some(&i) = reads.get(pick % reads.len().max(1)) {
            history[i].outcome = Outcome::Read(v(to));
        }
        let ops = model_ops(&history);
        let plain = wgl_reference(&ops, ABSENT, STEPS);
        let ordered = search(&ops, ABSENT, STEPS);
        if plain != Search::Inconclusive && ordered != Search::Inconclusive {
            prop_assert_eq!(plain, ordered);
        }
        // With the unknown writes settled, the verdict is the same again.
        let settled = search(&settled(&ops), ABSENT, STEPS);
        if ordered != Search::Inconclusive && settled != Search::Inconclusive {
            prop_assert_eq!(ordered, settled);
        }
    }
}

#[test]
fn many_overlapping_writes_with_one_read_need_no_backtracking() {
    // Forty overlapping puts, then a read of the twelfth: the plain search tries subsets of
    // the others before putting the twelfth last; the ordered search puts it last at once.
    let mut history: Vec<OpRecord> = (0..40u64).map(|n| put(n, n, 1_000 + n)).collect();
    history.push(get(v(12), 2_000, 2_001));
    let ops = model_ops(&history);
    assert_eq!(search(&ops, ABSENT, 10_000), Search::Linearizable);
    assert_eq!(wgl_reference(&ops, ABSENT, 10_000), Search::Inconclusive);
}

// ---------------------------------------------------------------------------------------
// Brute force: every order that respects real time, from a given starting value.

fn brute_apply(r: &OpRecord, state: Value) -> Option<Value> {
    match (r.request, r.outcome) {
        (Request::Get, Outcome::Read(value)) => (value == state).then_some(state),
        (Request::Put(id), _) => Some(Value::Written(id)),
        (Request::Delete, _) => Some(Value::Absent),
        (Request::Cas { expected, new }, Outcome::Swapped) => {
            (state == expected).then_some(Value::Written(new))
        }
        (Request::Cas { expected, .. }, Outcome::NotSwapped(found)) => {
            (state != expected && state == found).then_some(state)
        }
        (Request::Cas { expected, new }, Outcome::Unknown) => Some(if state == expected {
            Value::Written(new)
        } else {
            state
        }),
        other => panic!("generator made {other:?}"),
    }
}

fn brute_linearizable(records: &[OpRecord], initial: Value) -> bool {
    let ops: Vec<&OpRecord> = records
        .iter()
        .filter(|r| {
            !matches!(
                (r.request, r.outcome),
                (_, Outcome::Failed) | (Request::Get, Outcome::Unknown)
            )
        })
        .collect();
    let ret = |r: &OpRecord| match r.outcome {
        Outcome::Unknown => u64::MAX,
        _ => r.return_ns,
    };
    fn dfs(ops: &[&OpRecord], ret: &dyn Fn(&OpRecord) -> u64, done: u32, state: Value) -> bool {
        if done.count_ones() as usize == ops.len() {
            return true;
        }
        (0..ops.len()).any(|i| {
            let free = done & (1 << i) == 0
                && (0..ops.len())
                    .all(|j| j == i || done & (1 << j) != 0 || ret(ops[j]) >= ops[i].call_ns);
            free && brute_apply(ops[i], state)
                .is_some_and(|next| dfs(ops, ret, done | (1 << i), next))
        })
    }
    dfs(&ops, &ret, 0, initial)
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (0u64..6).prop_map(v),
        1 => Just(Value::Absent),
        1 => Just(Value::Foreign),
    ]
}

fn record_strategy() -> impl Strategy<Value = OpRecord> {
    let interval = (0u64..30, 0u64..12);
    let request = prop_oneof![
        3 => Just(Request::Get),
        3 => (0u64..6).prop_map(|n| Request::Put(w(n))),
        1 => Just(Request::Delete),
        2 => (value_strategy(), 0u64..6).prop_map(|(expected, n)| Request::Cas {
            expected,
            new: w(n),
        }),
    ];
    (request, interval, value_strategy(), 0u8..12).prop_map(
        |(request, (call, len), value, roll)| {
            let outcome = match (request, roll) {
                (_, 0) => Outcome::Failed,
                (_, 1..=3) => Outcome::Unknown,
                (Request::Get, _) => Outcome::Read(value),
                (Request::Put(_) | Request::Delete, _) => Outcome::Done,
                (Request::Cas { .. }, r) if r % 2 == 0 => Outcome::Swapped,
                (Request::Cas { .. }, _) => Outcome::NotSwapped(value),
            };
            op(request, outcome, call, call + len)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_search_agrees_with_brute_force(history in prop::collection::vec(record_strategy(), 0..8)) {
        let expected = brute_linearizable(&history, Value::Absent);
        let verdict = check_key(&history, STEPS);
        prop_assert_eq!(verdict == KeyCheck::Linearizable, expected, "{:?}", verdict);
        if let KeyCheck::Violation { window, from_start, start_ns, .. } = verdict {
            // The window alone fails from every value the key could hold at its start,
            // with operations answered after its end taken as pending.
            let cut_records: Vec<OpRecord> = window.iter().map(|&i| history[i]).collect();
            prop_assert!(!cut_records.is_empty());
            // Those values: absent, or one a write that may have taken effect could store.
            let starts = if from_start {
                vec![Value::Absent]
            } else {
                reachable(&history, start_ns)
            };
            for start in starts {
                prop_assert!(
                    !brute_linearizable(&pending_after(&cut_records, &history, &window), start),
                    "window {:?} passes from {:?}", cut_records, start
                );
            }
        }
    }
}

/// Every value the key can hold at `start_ns`: absent, and the values stored by writes called
/// before it (puts, and compare-and-swaps that swapped or may have, whose expected value can
/// be held; to a fixed point).
fn reachable(history: &[OpRecord], start_ns: u64) -> Vec<Value> {
    let mut values = vec![Value::Absent];
    loop {
        let before = values.len();
        let may_store = |r: &&OpRecord| {
            r.call_ns < start_ns && !matches!(r.outcome, Outcome::Failed | Outcome::NotSwapped(_))
        };
        for r in history.iter().filter(may_store) {
            let stored = match r.request {
                Request::Put(id) => Some(Value::Written(id)),
                Request::Cas { expected, new } if values.contains(&expected) => {
                    Some(Value::Written(new))
                }
                _ => None,
            };
            if let Some(value) = stored.filter(|v| !values.contains(v)) {
                values.push(value);
            }
        }
        if values.len() == before {
            return values;
        }
    }
}

/// The window's records with those answered after the window's end turned into pending
/// operations (writes unknown, reads dropped), as the checker treated them.
fn pending_after(window: &[OpRecord], history: &[OpRecord], positions: &[usize]) -> Vec<OpRecord> {
    let KeyCheck::Violation { cut_ns, .. } = check_key(history, STEPS) else {
        unreachable!("called on violations only")
    };
    debug_assert_eq!(window.len(), positions.len());
    window
        .iter()
        .filter_map(|r| {
            if r.outcome == Outcome::Unknown || r.return_ns <= cut_ns {
                return Some(*r);
            }
            match r.request {
                Request::Get => None,
                _ => Some(OpRecord {
                    outcome: Outcome::Unknown,
                    ..*r
                }),
            }
        })
        .collect()
}
