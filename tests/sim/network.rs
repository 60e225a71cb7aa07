//! The simulated network: per-message delay, loss, duplication (and so reordering), and
//! partitions, including one-way ones.
//!
//! Owned by one simulated world. A message's fate (lost, or delivered once or twice, each
//! after its own delay) is drawn from the seeded generator when it is sent; whether a link is
//! cut is checked when it would arrive, so a partition also swallows messages in flight.
//! Invariant: `cut` only holds pairs of distinct nodes.

use crate::rng::SimRng;
use rcraft::wire::NodeId;
use std::collections::BTreeSet;

/// How unreliable the network is, drawn per seed.
#[derive(Clone, Debug)]
pub(crate) struct NetworkProfile {
    /// Chance a message is lost, per mille (while not calm).
    pub(crate) drop_per_mille: u64,
    /// Chance a message is delivered twice, per mille.
    pub(crate) duplicate_per_mille: u64,
    /// Shortest delivery delay in sim milliseconds.
    pub(crate) delay_min_ms: u64,
    /// Longest usual delivery delay.
    pub(crate) delay_max_ms: u64,
    /// Chance a message is very slow, per mille.
    pub(crate) slow_per_mille: u64,
    /// Longest delay of a very slow message.
    pub(crate) slow_delay_max_ms: u64,
}

impl NetworkProfile {
    /// A random profile, from nearly perfect to quite hostile.
    pub(crate) fn random(rng: &mut SimRng) -> NetworkProfile {
        let delay_min_ms = rng.between(1, 3);
        NetworkProfile {
            drop_per_mille: rng.pick(&[0, 10, 50, 150]),
            duplicate_per_mille: rng.pick(&[0, 10, 50]),
            delay_min_ms,
            delay_max_ms: delay_min_ms + rng.pick(&[2, 10, 20]),
            slow_per_mille: rng.pick(&[0, 5, 30]),
            slow_delay_max_ms: rng.pick(&[100, 400]),
        }
    }
}

/// The network between the nodes of one simulated cluster.
#[derive(Clone, Debug)]
pub(crate) struct Network {
    profile: NetworkProfile,
    /// While calm (faults healed), nothing is lost and nothing is very slow.
    calm: bool,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// A fully connected network with the given profile.
    pub(crate) fn new(profile: NetworkProfile) -> Network {
        Network {
            profile,
            calm: false,
            cut: BTreeSet::new(),
        }
    }

    /// The delays after which copies of one message arrive: none when lost, two when
    /// duplicated.
    pub(crate) fn delivery_delays(&self, rng: &mut SimRng) -> Vec<u64> {
        let p = &self.profile;
        if !self.calm && rng.chance(p.drop_per_mille) {
            return Vec::new();
        }
        let copies = if rng.chance(p.duplicate_per_mille) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                if !self.calm && rng.chance(p.slow_per_mille) {
                    rng.between(p.delay_max_ms, p.slow_delay_max_ms)
                } else {
                    rng.between(p.delay_min_ms, p.delay_max_ms)
                }
            })
            .collect()
    }

    /// The unreliability profile.
    pub(crate) fn profile(&self) -> &NetworkProfile {
        &self.profile
    }

    /// Whether faults are healed (nothing lost, nothing very slow).
    pub(crate) fn is_calm(&self) -> bool {
        self.calm
    }

    /// True when messages from `from` to `to` are currently lost.
    pub(crate) fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Cuts `node` off from everyone, both ways.
    pub(crate) fn isolate(&mut self, node: NodeId, all: &[NodeId]) {
        for &other in all.iter().filter(|&&o| o != node) {
            self.cut.insert((node, other));
            self.cut.insert((other, node));
        }
    }

    /// Splits the cluster: no message crosses between `side` and the rest, either way.
    pub(crate) fn split(&mut self, side: &BTreeSet<NodeId>, all: &[NodeId]) {
        for &a in side {
            for &b in all.iter().filter(|b| !side.contains(b)) {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    /// Cuts the link from `from` to `to` only: `to` still reaches `from`.
    pub(crate) fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        if from != to {
            self.cut.insert((from, to));
        }
    }

    /// Restores every link to and from `node`.
    pub(crate) fn reconnect(&mut self, node: NodeId) {
        self.cut.retain(|(from, to)| *from != node && *to != node);
    }

    /// Restores every link.
    pub(crate) fn heal(&mut self) {
        self.cut.clear();
    }

    /// Enters or leaves the calm phase (no loss, no very slow messages).
    pub(crate) fn set_calm(&mut self, calm: bool) {
        self.calm = calm;
    }

    /// A short description of the cut links, for traces.
    pub(crate) fn describe_cuts(&self) -> String {
        let links: Vec<String> = self.cut.iter().map(|(a, b)| format!("{a}->{b}")).collect();
        if links.is_empty() {
            "none".to_string()
        } else {
            links.join(" ")
        }
    }
}
