//! Link probes, the measurement behind the network half of gray-failure self-demotion
//! (gray_failure.rs): every voter measures its round trip to every other voter, and each
//! follower tells its leader what it measures to the others, leaving the leader out.
//!
//! A leader whose own network is slow (a failing card, a congested uplink, a bad route)
//! still gets its heartbeats through in time, so no election replaces it, yet every write
//! waits for its slow round trips. Its own round trips alone cannot tell that apart from slow
//! followers; the followers' links to each other, which do not pass through the leader, can.
//! So, with `SelfDemotionConfig::link_probe_interval_ticks` set, every that many ticks a voter
//! that leads, or follows a leader it knows, sends `LinkProbe { sent_tick }` to every other
//! voter (in configurations of at least three voters: with two, no link avoids the leader).
//! The receiver echoes `sent_tick` at once in a `LinkProbeReply`, and the sender takes
//! `now - sent_tick` as a sample of that link's round trip, in ticks (what the core counts;
//! the node drives the ticks), smoothed as the disk half's figures are. A follower's probe
//! to its leader carries `peers_milliticks`, the (upper) median of its fresh averages over
//! the links to the other voters; the leader keeps the latest report of each voter.
//!
//! Probes are outside the term rules, as repair queries are: a probe of any term is
//! answered, and neither a probe nor a reply changes a term, a vote or a timer. For the
//! leader's own figure only completed round trips count: a link that carries nothing is a
//! partition, which Raft handles itself (check-quorum, elections), not a gray failure. In a
//! follower's report, the oldest probe still unanswered counts with its age when that is
//! longer than the link's average, so a report never rests on samples from before a peer
//! stopped answering (simulator seed 594: a slow follower, whose only other peer had just
//! crashed, reported that peer's last quick round trips, and the leader, whose one live
//! link was the slow follower's, looked slow). Both choices err towards not demoting. An echo
//! of a tick that is not later than the last one taken from that peer (a duplicate, or a
//! reply overtaken by a newer one), or that is later than now (an answer to a previous life
//! of this node), is ignored.
//!
//! Owned by the replica's owner thread. Invariants: a link's `last_echo` only grows; links
//! are kept only for voters of the current configuration, so the map is bounded by it.

use super::gray_failure::{Average, SCALE};
use super::replica::{Phase, Replica};
use rcraft_wire::{MessageBody, NodeId, Term};
use std::collections::BTreeMap;

/// What one node measures of its links (every role).
#[derive(Debug, Default)]
pub(super) struct LinkWatch {
    links: BTreeMap<NodeId, Link>,
    /// Ticks since the last round of probes.
    probe_elapsed: u64,
}

/// One link's round trip.
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    average: Average,
    /// The latest `sent_tick` taken as a sample.
    last_echo: u64,
    /// The tick of the oldest probe sent over this link and not answered (nor overtaken by
    /// the answer to a later one).
    unanswered_since: Option<u64>,
}

impl LinkWatch {
    /// The fresh round-trip averages (in 1/SCALE ticks) to the peers `include` keeps, fastest
    /// first (ties by id).
    pub(super) fn latencies(
        &self,
        now: u64,
        window: u64,
        include: impl Fn(NodeId) -> bool,
    ) -> Vec<(u64, NodeId)> {
        self.collect_latencies(now, window, include, false)
    }

    /// As [`LinkWatch::latencies`], each counting the age of its oldest unanswered probe when
    /// that is longer (what a follower reports).
    fn latencies_with_unanswered(
        &self,
        now: u64,
        window: u64,
        include: impl Fn(NodeId) -> bool,
    ) -> Vec<(u64, NodeId)> {
        self.collect_latencies(now, window, include, true)
    }

    /// Both of the above: with `count_unanswered`, a link's figure is at least the age of
    /// its oldest unanswered probe.
    fn collect_latencies(
        &self,
        now: u64,
        window: u64,
        include: impl Fn(NodeId) -> bool,
        count_unanswered: bool,
    ) -> Vec<(u64, NodeId)> {
        let mut latencies: Vec<(u64, NodeId)> = (self.links.iter())
            .filter(|(id, _)| include(**id))
            .filter_map(|(&id, link)| {
                let average = link.average.fresh(now, window)?;
                let waiting = match (count_unanswered, link.unanswered_since) {
                    (true, Some(sent)) => now.saturating_sub(sent).saturating_mul(SCALE),
                    _ => 0,
                };
                Some((average.max(waiting), id))
            })
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// A probe went out to `peer`.
    fn on_probe_sent(&mut self, peer: NodeId, now: u64) {
        let link = self.links.entry(peer).or_default();
        link.unanswered_since.get_or_insert(now);
    }

    /// Takes the echo of `sent_tick` from `peer` as a sample; false when it is ignored.
    fn on_echo(&mut self, peer: NodeId, sent_tick: u64, now: u64) -> bool {
        let link = self.links.entry(peer).or_default();
        if sent_tick > now || sent_tick <= link.last_echo {
            return false;
        }
        link.last_echo = sent_tick;
        link.average.sample(now - sent_tick, now);
        if link
            .unanswered_since
            .is_some_and(|since| since <= sent_tick)
        {
            link.unanswered_since = None;
        }
        true
    }
}

impl Replica {
    /// Every tick: a round of probes every `link_probe_interval_ticks` (see the module
    /// header).
    pub(super) fn tick_link_probes(&mut self) {
        let interval = (self.config.self_demotion).map_or(0, |c| c.link_probe_interval_ticks);
        if interval == 0 {
            return;
        }
        self.links.probe_elapsed += 1;
        if self.links.probe_elapsed < interval {
            return;
        }
        self.links.probe_elapsed = 0;
        let membership = &self.membership;
        self.links.links.retain(|id, _| membership.is_voter(*id));
        let voters: Vec<NodeId> = (membership.voters.iter())
            .chain(membership.voters_outgoing.iter())
            .copied()
            .filter(|id| *id != self.id)
            .collect();
        let probing = match self.phase {
            Phase::Leader => true,
            Phase::Follower => self.leader.is_some(),
            Phase::PreCandidate | Phase::Candidate => false,
        };
        if !probing || !membership.is_voter(self.id) || voters.len() < 2 {
            return;
        }
        let report = self.peers_milliticks();
        let sent_tick = self.now_ticks;
        for to in voters {
            let peers_milliticks = (self.leader == Some(to)).then_some(report).flatten();
            let body = MessageBody::LinkProbe {
                sent_tick,
                peers_milliticks,
            };
            self.links.on_probe_sent(to, sent_tick);
            self.send(to, body);
        }
    }

    /// A follower's report: the median of its fresh round trips to the voters other than
    /// itself and its leader (an unanswered probe counting with its age).
    fn peers_milliticks(&self) -> Option<u64> {
        let window = self.config.self_demotion?.window_ticks;
        let leader = self.leader;
        let membership = &self.membership;
        let latencies = (self.links).latencies_with_unanswered(self.now_ticks, window, |id| {
            Some(id) != leader && membership.is_voter(id)
        });
        latencies.get(latencies.len() / 2).map(|&(value, _)| value)
    }

    /// A probe: echo it; at a leader of the same term, keep the sender's report.
    pub(super) fn on_link_probe(
        &mut self,
        from: NodeId,
        term: Term,
        sent_tick: u64,
        peers_milliticks: Option<u64>,
    ) {
        self.send(from, MessageBody::LinkProbeReply { sent_tick });
        let now = self.now_ticks;
        let counted = term == self.term && self.membership.is_voter(from);
        if let (Some(state), Some(report), true) =
            (&mut self.leader_state, peers_milliticks, counted)
        {
            state.latency.on_report(from, report, now);
        }
    }

    /// The echo of one of our probes: a round-trip sample of the link to `from`.
    pub(super) fn on_link_probe_reply(&mut self, from: NodeId, sent_tick: u64) {
        if !self.membership.is_voter(from) {
            return;
        }
        let taken = self.links.on_echo(from, sent_tick, self.now_ticks);
        if let (true, Some(state)) = (taken, self.leader_state.as_mut()) {
            state.latency.on_link_sample();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{Action, CoreConfig, Input, SelfDemotionConfig};
    use super::super::testing::{from_peer_in, leader_of_three};
    use super::*;

    const CONFIG: SelfDemotionConfig = SelfDemotionConfig {
        link_probe_interval_ticks: 5,
        ..SelfDemotionConfig::DEFAULT
    };

    fn probes(actions: &[Action]) -> Vec<(NodeId, u64, Option<u64>)> {
        (actions.iter())
            .filter_map(|action| match action {
                Action::Send(m) => match m.body {
                    MessageBody::LinkProbe {
                        sent_tick,
                        peers_milliticks,
                    } => Some((m.to, sent_tick, peers_milliticks)),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_leader_probes_every_other_voter_each_interval_and_only_when_turned_on() {
        let mut leader = leader_of_three(|c: &mut CoreConfig| c.self_demotion = Some(CONFIG));
        leader.take_actions();
        let mut sent = Vec::new();
        for _ in 0..10 {
            leader.step(Input::Tick);
            sent.extend(probes(&leader.take_actions()));
        }
        let to: Vec<NodeId> = sent.iter().map(|p| p.0).collect();
        assert_eq!(to, [NodeId(2), NodeId(3), NodeId(2), NodeId(3)]);
        assert!(
            sent.iter().all(|p| p.2.is_none()),
            "a leader reports nothing"
        );

        let mut quiet = leader_of_three(|_| {});
        for _ in 0..10 {
            quiet.step(Input::Tick);
            assert!(probes(&quiet.take_actions()).is_empty());
        }
    }

    #[test]
    fn a_probe_of_any_term_is_echoed_and_changes_no_term() {
        let mut leader = leader_of_three(|_| {});
        leader.take_actions();
        let probe = MessageBody::LinkProbe {
            sent_tick: 77,
            peers_milliticks: Some(3_000),
        };
        leader.step(from_peer_in(9, 2, probe));
        assert!(leader.is_leader());
        assert_eq!(leader.hard_state().term, Term(1));
        let actions = leader.take_actions();
        let [Action::Send(reply)] = actions.as_slice() else {
            panic!("one reply expected: {actions:?}");
        };
        assert_eq!(reply.to, NodeId(2));
        assert_eq!(reply.body, MessageBody::LinkProbeReply { sent_tick: 77 });
    }

    #[test]
    fn echoes_from_the_future_duplicates_and_non_voters_are_ignored() {
        let mut watch = LinkWatch::default();
        assert!(!watch.on_echo(NodeId(2), 11, 10), "later than now");
        assert!(watch.on_echo(NodeId(2), 8, 10));
        assert!(!watch.on_echo(NodeId(2), 8, 12), "a duplicate");
        assert!(!watch.on_echo(NodeId(2), 7, 12), "overtaken");
        assert!(watch.on_echo(NodeId(2), 9, 12));
        let latencies = watch.latencies(12, 50, |_| true);
        // First sample 2 ticks, then 3 weighs a quarter.
        assert_eq!(latencies, [(2_250, NodeId(2))]);
        assert!(watch.latencies(100, 50, |_| true).is_empty(), "stale");

        let mut leader = leader_of_three(|c: &mut CoreConfig| c.self_demotion = Some(CONFIG));
        leader.step(Input::Tick);
        let reply = MessageBody::LinkProbeReply { sent_tick: 1 };
        leader.step(from_peer_in(1, 7, reply));
        assert!(leader.links.links.is_empty(), "node 7 is no voter");
    }

    #[test]
    fn a_follower_reports_its_links_to_the_others_to_its_leader_only() {
        // Node 1 follows node 2 among voters 1-4.
        let recovered = super::super::api::RecoveredState {
            initial_membership: rcraft_wire::Membership::with_voters((1..=4).map(NodeId)),
            ..Default::default()
        };
        let mut config = CoreConfig::new(NodeId(1), 3);
        config.self_demotion = Some(CONFIG);
        let mut follower = Replica::new(config, recovered).expect("valid");
        let heartbeat = MessageBody::Heartbeat {
            leader_commit: rcraft_wire::LogIndex(0),
            read_context: 0,
        };
        follower.step(from_peer_in(1, 2, heartbeat.clone()));
        assert_eq!(follower.leader(), Some(NodeId(2)));
        let mut reports = Vec::new();
        let mut echoes: Vec<(u64, u64, u64)> = Vec::new();
        for tick in 1..=20 {
            follower.step(from_peer_in(1, 2, heartbeat.clone()));
            follower.step(Input::Tick);
            for &(_, from, sent_tick) in echoes.iter().filter(|e| e.0 == tick) {
                let echo = MessageBody::LinkProbeReply { sent_tick };
                follower.step(from_peer_in(1, from, echo));
            }
            for (to, sent_tick, report) in probes(&follower.take_actions()) {
                reports.push((to, report));
                // Node 2 (the leader) answers in 9 ticks, node 3 in 1 and node 4 in 3.
                let delay = [9, 1, 3][to.0 as usize - 2];
                echoes.push((tick + delay, to.0, sent_tick));
            }
        }
        let to_leader: Vec<Option<u64>> = (reports.iter())
            .filter(|(to, _)| *to == NodeId(2))
            .map(|(_, report)| *report)
            .collect();
        // The first round has nothing to report; then the upper median of 1 and 3 ticks.
        assert_eq!(to_leader, [None, Some(3_000), Some(3_000), Some(3_000)]);
        assert!((reports.iter()).all(|(to, report)| *to == NodeId(2) || report.is_none()));
    }

    #[test]
    fn a_report_counts_a_probe_left_unanswered_with_its_age() {
        let mut watch = LinkWatch::default();
        watch.on_probe_sent(NodeId(3), 10);
        assert!(watch.on_echo(NodeId(3), 10, 11));
        watch.on_probe_sent(NodeId(3), 15);
        let all = |_| true;
        assert_eq!(
            watch.latencies_with_unanswered(16, 50, all),
            [(1_000, NodeId(3))]
        );
        // Node 3 stopped answering: its quick average no longer speaks for it in a report,
        // but the leader's own figure takes only answers.
        assert_eq!(
            watch.latencies_with_unanswered(30, 50, all),
            [(15_000, NodeId(3))]
        );
        assert_eq!(watch.latencies(30, 50, all), [(1_000, NodeId(3))]);
        // The answer to a later probe settles the earlier one too.
        watch.on_probe_sent(NodeId(3), 20);
        assert!(watch.on_echo(NodeId(3), 20, 31));
        assert_eq!(watch.latencies_with_unanswered(31, 50, all)[0].0, 3_500);
    }
}
