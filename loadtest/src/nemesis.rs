//! The nemeses and their seeded schedule (`--nemesis KIND,... --seed N`): which fault happens
//! when, for how long, and which nodes it hits. Pure: the fault thread (`faults.rs`) asks for
//! the plan once and for each fault's shape when it is due (the leader is only known then);
//! everything random comes from the seed, so one seed gives the same schedule, the same
//! partition shapes and the same damaged bytes relative to the leader on every run.

use clap::ValueEnum;
use rcraft::core::rng::SplitMix64;
use std::time::Duration;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum NemesisKind {
    /// `kill -9` the leader, restart it later on the same data directory.
    Kill,
    /// `SIGSTOP` the leader, `SIGCONT` later.
    Pause,
    /// Cut the leader from every other node, both ways.
    IsolateLeader,
    /// Split the nodes into a majority and a minority (the leader on either side).
    Halves,
    /// Two halves that only one node (the bridge) sees both of.
    Bridge,
    /// Drop the leader's packets to every other node, or every other node's to the leader
    /// (one way only).
    OneWay,
    /// 20 % packet loss on every node (`tc netem`; skipped when the kernel lacks it).
    Loss,
    /// 40 ms +- 20 ms delay on every node (`tc netem`; skipped when the kernel lacks it).
    Delay,
    /// Stop a follower, damage the last record of its log (a torn write), start it again.
    WalTail,
    /// Stop a follower, damage a record before the end of its log (synced data lost): it
    /// must start, name the lost range and repair it from the leader.
    WalRecord,
}

impl NemesisKind {
    /// The flag value (`isolate-leader`).
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::IsolateLeader => "isolate-leader",
            NemesisKind::Halves => "halves",
            NemesisKind::Bridge => "bridge",
            NemesisKind::OneWay => "one-way",
            NemesisKind::Loss => "loss",
            NemesisKind::Delay => "delay",
            NemesisKind::WalTail => "wal-tail",
            NemesisKind::WalRecord => "wal-record",
        }
    }

    /// True for the faults that need the nodes in network namespaces (root).
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            NemesisKind::IsolateLeader
                | NemesisKind::Halves
                | NemesisKind::Bridge
                | NemesisKind::OneWay
                | NemesisKind::Loss
                | NemesisKind::Delay
        )
    }

    /// True for the faults made with `tc netem`.
    pub fn needs_netem(self) -> bool {
        matches!(self, NemesisKind::Loss | NemesisKind::Delay)
    }

    /// The `tc netem` arguments of a loss or delay fault.
    pub fn netem_args(self) -> &'static [&'static str] {
        match self {
            NemesisKind::Loss => &["loss", "20%"],
            _ => &["delay", "40ms", "20ms"],
        }
    }
}

/// The schedule's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct NemesisSchedule {
    /// Kinds to draw from.
    pub kinds: Vec<NemesisKind>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Mean time between the starts of two faults.
    pub every: Duration,
    /// Longest a fault stays in force (each lasts between half of this and all of it).
    pub hold: Duration,
}

/// One planned fault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// What it is.
    pub kind: NemesisKind,
    /// How long it stays in force.
    pub hold: Duration,
    /// Random bits its shape is drawn from (which nodes, which bytes).
    pub draw: u64,
}

/// Every fault starting before `until`, in time order. The k-th starts at `k * every` plus a
/// jitter below a quarter of `every`.
pub fn plan(schedule: &NemesisSchedule, until: Duration) -> Vec<Planned> {
    let mut rng = SplitMix64::new(schedule.seed);
    let every_ns = schedule.every.as_nanos() as u64;
    let hold_ns = schedule.hold.as_nanos() as u64;
    let mut planned = Vec::new();
    if schedule.kinds.is_empty() || every_ns == 0 {
        return planned;
    }
    for k in 1.. {
        let at = Duration::from_nanos(k * every_ns + rng.in_range(0, every_ns / 4));
        if at >= until {
            break;
        }
        let kind = schedule.kinds[rng.in_range(0, schedule.kinds.len() as u64) as usize];
        let hold = Duration::from_nanos(rng.in_range(hold_ns / 2, hold_ns + 1));
        planned.push(Planned {
            at,
            kind,
            hold,
            draw: rng.next_u64(),
        });
    }
    planned
}

/// The node ids `0..n` in an order drawn from `draw` (Fisher-Yates).
pub fn shuffled(n: usize, draw: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(draw);
    let mut ids: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        ids.swap(i, rng.in_range(0, i as u64 + 1) as usize);
    }
    ids
}

/// A partition: the one-way cuts (from, to) it makes, and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Packets from `.0` to `.1` are dropped.
    pub cuts: Vec<(usize, usize)>,
    /// E.g. `{0} | {1,2}`.
    pub text: String,
}

fn group(ids: &[usize]) -> String {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("{{{}}}", list.join(","))
}

fn both_ways(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    for &x in a {
        for &y in b {
            cuts.push((x, y));
            cuts.push((y, x));
        }
    }
    cuts.sort_unstable();
    cuts
}

/// The partition a network fault makes in a cluster of `n` nodes led by `leader`; `None` for
/// kinds that are no partition, or when `n` is too small for the shape.
pub fn partition(kind: NemesisKind, n: usize, leader: usize, draw: u64) -> Option<Partition> {
    let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    match kind {
        NemesisKind::IsolateLeader if n >= 2 => Some(Partition {
            cuts: both_ways(&[leader], &others),
            text: format!("isolate {} | {}", group(&[leader]), group(&others)),
        }),
        NemesisKind::Halves if n >= 2 => {
            let order = shuffled(n, draw);
            let minority = &order[..(n - 1) / 2];
            let minority = if minority.is_empty() {
                &order[..1]
            } else {
                minority
            };
            let majority: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| !minority.contains(i))
                .collect();
            Some(Partition {
                cuts: both_ways(minority, &majority),
                text: format!("halves {} | {}", group(minority), group(&majority)),
            })
        }
        NemesisKind::Bridge if n >= 3 => {
            let order = shuffled(n, draw);
            let left = &order[..(n - 1) / 2];
            let bridge = order[(n - 1) / 2];
            let right = &order[(n - 1) / 2 + 1..];
            Some(Partition {
                cuts: both_ways(left, right),
                text: format!("bridge {} - {bridge} - {}", group(left), group(right)),
            })
        }
        NemesisKind::OneWay if n >= 2 => {
            let outbound = draw & 1 == 0;
            let mut cuts: Vec<(usize, usize)> = others
                .iter()
                .map(|&o| if outbound { (leader, o) } else { (o, leader) })
                .collect();
            cuts.sort_unstable();
            let text = if outbound {
                format!("one-way {leader} -> {} dropped", group(&others))
            } else {
                format!("one-way {} -> {leader} dropped", group(&others))
            };
            Some(Partition { cuts, text })
        }
        _ => None,
    }
}

/// A follower of a cluster of `n` led by `leader`, drawn from `draw`.
pub fn follower(n: usize, leader: usize, draw: u64) -> Option<usize> {
    let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
    (!others.is_empty()).then(|| others[(draw % others.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(seed: u64) -> NemesisSchedule {
        NemesisSchedule {
            kinds: vec![NemesisKind::Halves, NemesisKind::Kill, NemesisKind::WalTail],
            seed,
            every: Duration::from_secs(2),
            hold: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_seed_gives_one_schedule() {
        let until = Duration::from_secs(20);
        let a = plan(&schedule(7), until);
        assert_eq!(a, plan(&schedule(7), until));
        assert_ne!(a, plan(&schedule(8), until));
        assert_eq!(a.len(), 9, "{a:?}");
        for (k, p) in a.iter().enumerate() {
            let start = Duration::from_secs(2 * (k as u64 + 1));
            assert!(p.at >= start && p.at < start + Duration::from_millis(500));
            assert!(p.hold >= Duration::from_millis(500) && p.hold <= Duration::from_secs(1));
        }
        let kinds: std::collections::HashSet<_> = plan(&schedule(1), Duration::from_secs(200))
            .iter()
            .map(|p| p.kind)
            .collect();
        assert_eq!(kinds.len(), 3, "every kind is drawn");
        assert!(plan(&schedule(7), Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn partitions_have_the_promised_shape() {
        let p = partition(NemesisKind::IsolateLeader, 3, 1, 0).unwrap();
        assert_eq!(p.cuts, vec![(0, 1), (1, 0), (1, 2), (2, 1)]);
        assert_eq!(p.text, "isolate {1} | {0,2}");
        for draw in 0..50 {
            let halves = partition(NemesisKind::Halves, 5, 0, draw).unwrap();
            assert_eq!(halves.cuts.len(), 2 * 2 * 3, "{}", halves.text);
            let bridge = partition(NemesisKind::Bridge, 5, 0, draw).unwrap();
            assert_eq!(bridge.cuts.len(), 2 * 2 * 2, "{}", bridge.text);
            // The bridge node is in no cut.
            let bridge_node = (0..5)
                .find(|i| !bridge.cuts.iter().any(|&(a, b)| a == *i || b == *i))
                .unwrap();
            assert!(bridge.text.contains(&format!(" - {bridge_node} - ")));
            let one_way = partition(NemesisKind::OneWay, 3, 2, draw).unwrap();
            assert_eq!(one_way.cuts.len(), 2);
            assert!(one_way.cuts.iter().all(|&(a, b)| (a == 2) != (b == 2)));
        }
        assert_eq!(
            partition(NemesisKind::Halves, 3, 0, 3).unwrap().cuts.len(),
            4
        );
        assert!(partition(NemesisKind::Bridge, 2, 0, 0).is_none());
        assert!(partition(NemesisKind::Kill, 3, 0, 0).is_none());
    }

    #[test]
    fn shuffles_are_permutations_and_followers_are_not_the_leader() {
        for draw in 0..100 {
            let mut order = shuffled(5, draw);
            order.sort_unstable();
            assert_eq!(order, vec![0, 1, 2, 3, 4]);
            assert_ne!(follower(3, 1, draw), Some(1));
        }
        assert_eq!(follower(1, 0, 5), None);
    }
}
