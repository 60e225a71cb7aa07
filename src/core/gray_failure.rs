//! Gray-failure self-demotion: a leader whose own log writes stay far slower than its
//! followers' hands leadership to the fastest caught-up follower (`CoreConfig::self_demotion`).
//!
//! A leader with a failing or overloaded disk still answers heartbeats, so nothing in Raft
//! replaces it, yet every write waits for its slow sync before it is applied and answered.
//! The leader measures, in ticks and inside the core (so the decision is a pure function of
//! the inputs and the simulator replays it):
//! - its own durability latency: a `Persist` carrying entries issued while leading until the
//!   `Persisted` that confirms it;
//! - each follower's: an `AppendRequest` with entries sent to it (one sampled in flight per
//!   follower) until the acknowledgement that covers it, which includes the network both ways
//!   and the follower's own sync. That is the fair comparison: both clocks start when the
//!   leader hands the same entries to its disk and to the network (thesis §10.2.1).
//!
//! Each is smoothed by an exponentially weighted moving average, and a measurement still
//! running counts with its age when that is longer (a sync that hangs gives no samples, and is
//! the worst slowness of all; a follower that stopped answering looks slow). The leader counts
//! as slow while its figure is at least `ratio` times the median follower's (the upper median:
//! a quorum as slow as the leader keeps it) *and* at least `min_gap_ticks` above it (so on
//! fast disks, where a tick or two of noise is a large ratio, nothing ever triggers). When it
//! has been slow for a whole `window_ticks` (hysteresis: once slow, it stays slow until its
//! figure falls below half of either bound), with a sample within the window on both sides and
//! [`SLOW_SAMPLES_MIN`] syncs of its own meanwhile (or one pending the whole window), it emits
//! [`Action::SelfDemotion`] with the figures and starts a leadership transfer (transfer.rs) to
//! the voter with the lowest figure among those replicating, recently active and holding every
//! committed entry. A cool-down (`cooldown_ticks`, kept across terms) stops the node trying
//! again soon after, so leadership cannot ping-pong. With equal disks a follower's round trip
//! includes its sync plus the network, so it is never far below the leader's own sync.
//!
//! Owned by the replica's owner thread, as part of the leader state. Invariants: samples are
//! taken only while leading (a new term starts empty); `local_in_flight` holds increasing
//! sequence numbers, each a persist not yet confirmed.

use super::api::{Action, SelfDemotion, SelfDemotionConfig};
use super::progress::ProgressState;
use super::replica::Replica;
use rcraft_wire::{LogIndex, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// The averages are kept in 1/SCALE ticks, so a latency under a tick still counts.
const SCALE: u64 = 1_000;
/// A new sample weighs 1/2^EWMA_SHIFT in the moving averages: a quarter, so a slow leader
/// that syncs only every hundred milliseconds or so is seen within a few syncs.
const EWMA_SHIFT: u32 = 2;
/// Own samples needed while slow before a demotion: a window with one slow sync in it is not
/// a sustained slowness.
const SLOW_SAMPLES_MIN: u64 = 3;
/// Most own persists followed at once (more are not sampled until some are confirmed).
const LOCAL_IN_FLIGHT_MAX: usize = 1_024;

/// A moving average of latencies in 1/SCALE ticks, and when it last moved.
#[derive(Clone, Copy, Debug, Default)]
struct Average {
    value: Option<u64>,
    sampled_at: u64,
}

impl Average {
    fn sample(&mut self, ticks: u64, now: u64) {
        let scaled = ticks.saturating_mul(SCALE);
        self.value = Some(match self.value {
            None => scaled,
            Some(old) => old - (old >> EWMA_SHIFT) + (scaled >> EWMA_SHIFT),
        });
        self.sampled_at = now;
    }

    /// The value when sampled within the last `window` ticks.
    fn fresh(&self, now: u64, window: u64) -> Option<u64> {
        self.value
            .filter(|_| now.saturating_sub(self.sampled_at) <= window)
    }
}

/// One follower's durable round trip.
#[derive(Clone, Copy, Debug, Default)]
struct FollowerLatency {
    /// The sampled append in flight: its last index and the tick it was sent.
    in_flight: Option<(LogIndex, u64)>,
    average: Average,
}

/// The leader's latency measurements and its slowness timer (see the module header).
#[derive(Debug, Default)]
pub(super) struct LatencyWatch {
    /// Own persists with entries, issued and not yet confirmed: (sequence number, tick).
    local_in_flight: VecDeque<(u64, u64)>,
    local: Average,
    followers: BTreeMap<NodeId, FollowerLatency>,
    /// The tick since which the leader has counted as slow, and its own samples since.
    slow_since: Option<(u64, u64)>,
}

impl LatencyWatch {
    /// A persist with entries was issued.
    pub(super) fn on_local_issued(&mut self, seq: u64, now: u64) {
        if self.local_in_flight.len() < LOCAL_IN_FLIGHT_MAX {
            self.local_in_flight.push_back((seq, now));
        }
    }

    /// Every persist through `seq` is durable.
    pub(super) fn on_local_confirmed(&mut self, seq: u64, now: u64) {
        while let Some(&(issued_seq, issued_at)) = self.local_in_flight.front() {
            if issued_seq > seq {
                break;
            }
            self.local_in_flight.pop_front();
            self.local.sample(now.saturating_sub(issued_at), now);
            if let Some((_, samples)) = self.slow_since.as_mut() {
                *samples += 1;
            }
        }
    }

    /// An AppendRequest with entries through `last` was sent to `peer`.
    pub(super) fn on_sent(&mut self, peer: NodeId, last: LogIndex, now: u64) {
        let follower = self.followers.entry(peer).or_default();
        follower.in_flight.get_or_insert((last, now));
    }

    /// `peer` acknowledged its log through `match_index`.
    pub(super) fn on_acknowledged(&mut self, peer: NodeId, match_index: LogIndex, now: u64) {
        let Some(follower) = self.followers.get_mut(&peer) else {
            return;
        };
        if let Some((last, sent_at)) = follower.in_flight {
            if match_index >= last {
                follower.in_flight = None;
                follower.average.sample(now.saturating_sub(sent_at), now);
            }
        }
    }

    /// `peer` refused an append: the sample in flight will not be answered as sent.
    pub(super) fn on_refused(&mut self, peer: NodeId) {
        if let Some(follower) = self.followers.get_mut(&peer) {
            follower.in_flight = None;
        }
    }

    /// This leader's latency now: its average, or the age of its oldest persist still not
    /// confirmed when that is longer (a sync that hangs is the worst slowness and gives no
    /// samples); `None` without a sample within `window` ticks or a persist in flight.
    fn local_latency(&self, now: u64, window: u64) -> Option<u64> {
        let pending = (self.local_in_flight.front())
            .map(|&(_, issued)| now.saturating_sub(issued).saturating_mul(SCALE));
        let average = self.local.fresh(now, window);
        average.max(pending)
    }

    /// The voters among `followers` with a sample within `window` ticks, each with its
    /// average or the age of its sample in flight when that is longer, fastest first (ties by
    /// id).
    fn follower_latencies(
        &self,
        now: u64,
        window: u64,
        is_voter: impl Fn(NodeId) -> bool,
    ) -> Vec<(u64, NodeId)> {
        let mut latencies: Vec<(u64, NodeId)> = (self.followers.iter())
            .filter(|(id, _)| is_voter(**id))
            .filter_map(|(&id, f)| {
                let average = f.average.fresh(now, window)?;
                let pending =
                    (f.in_flight).map(|(_, sent)| now.saturating_sub(sent).saturating_mul(SCALE));
                Some((average.max(pending.unwrap_or(0)), id))
            })
            .collect();
        latencies.sort_unstable();
        latencies
    }

    /// Moves the slowness timer on with this tick's figures; returns the tick since which the
    /// leader has been slow when that is a whole window and it is slow now.
    fn slow_since_a_window(
        &mut self,
        config: &SelfDemotionConfig,
        local: u64,
        median: u64,
        now: u64,
    ) -> Option<u64> {
        let ratio = config.ratio.max(1);
        let floor = median.max(SCALE).saturating_mul(ratio);
        let gap = config.min_gap_ticks.saturating_mul(SCALE);
        let slow = local >= floor && local >= median.saturating_add(gap);
        // Hysteresis: once slow, half of either bound keeps it so.
        let still_slow = local.saturating_mul(2) >= floor
            && local.saturating_mul(2) >= median.saturating_mul(2).saturating_add(gap);
        let (since, samples) = match self.slow_since {
            None if slow => *self.slow_since.insert((now, 0)),
            Some(since) if still_slow => since,
            _ => {
                self.slow_since = None;
                return None;
            }
        };
        let hung = (self.local_in_flight.front())
            .is_some_and(|&(_, issued)| now.saturating_sub(issued) >= config.window_ticks);
        let sustained = samples >= SLOW_SAMPLES_MIN || hung;
        (slow && sustained && now.saturating_sub(since) >= config.window_ticks).then_some(since)
    }
}

impl Replica {
    /// Leader tick: hands leadership over when this leader's writes have been far slower than
    /// its followers' for the whole window (see the module header).
    pub(super) fn maybe_self_demote(&mut self) {
        let Some(config) = self.config.self_demotion else {
            return;
        };
        let now = self.now_ticks;
        let cooling = (self.last_self_demotion)
            .is_some_and(|at| now.saturating_sub(at) < config.cooldown_ticks);
        let committed = self.log.committed_index();
        let membership = &self.membership;
        let Some(state) = self.leader_state.as_mut().filter(|_| !cooling) else {
            return;
        };
        let watch = &mut state.latency;
        let local = watch.local_latency(now, config.window_ticks);
        let followers =
            watch.follower_latencies(now, config.window_ticks, |id| membership.is_voter(id));
        let (Some(local), Some(&(median, _))) = (local, followers.get(followers.len() / 2)) else {
            watch.slow_since = None;
            return;
        };
        let Some(since) = watch.slow_since_a_window(&config, local, median, now) else {
            return;
        };
        if state.transfer.is_some() {
            return;
        }
        // The fastest follower that holds every committed entry and is answering; the
        // transfer brings it up to the last index before it is told to campaign.
        let target = followers.iter().find(|(_, id)| {
            state.progress.get(id).is_some_and(|pr| {
                pr.recent_active
                    && pr.state == ProgressState::Replicate
                    && pr.match_index >= committed
            })
        });
        let Some(&(target_latency, target)) = target else {
            return;
        };
        let demotion = SelfDemotion {
            to: target,
            leader_milliticks: local,
            median_follower_milliticks: median,
            target_milliticks: target_latency,
            followers_measured: followers.len(),
            slow_for_ticks: now - since,
        };
        state.latency.slow_since = None;
        self.last_self_demotion = Some(now);
        self.actions.push(Action::SelfDemotion(demotion));
        self.on_transfer_leadership(target);
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::{CoreConfig, Input, SelfDemotionConfig};
    use super::super::testing::{from_peer_in, leader_of_three};
    use super::*;
    use rcraft_wire::{MessageBody, Term};

    const CONFIG: SelfDemotionConfig = SelfDemotionConfig {
        window_ticks: 50,
        ratio: 4,
        min_gap_ticks: 5,
        cooldown_ticks: 1_000,
    };

    /// What a run of the leader saw: its self-demotions (tick, figures) and the ticks at which
    /// it sent `TimeoutNow`, to whom.
    #[derive(Default)]
    struct Outcome {
        demotions: Vec<(u64, SelfDemotion)>,
        timeouts_sent: Vec<(u64, NodeId)>,
    }

    /// Node 1 leads nodes 1-3 and gets a proposal every tick for `ticks` ticks; its own
    /// persists are confirmed `local` ticks after they are issued, node 2's and node 3's
    /// acknowledgements arrive `followers` ticks after the append is sent. Nobody answers
    /// `TimeoutNow` (the leader stays, so cool-downs can be watched).
    fn run(
        demotion: Option<SelfDemotionConfig>,
        local: u64,
        followers: [u64; 2],
        ticks: u64,
    ) -> Outcome {
        let mut leader = leader_of_three(|c: &mut CoreConfig| c.self_demotion = demotion);
        leader.take_actions();
        let mut due: BTreeMap<(u64, u64), Input> = BTreeMap::new();
        let mut order = 0;
        let mut outcome = Outcome::default();
        for now in 0..ticks {
            while let Some(entry) = due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                leader.step(entry.remove());
            }
            leader.step(Input::Propose {
                id: now,
                session: None,
                data: b"x".to_vec(),
            });
            leader.step(Input::Tick);
            for action in leader.take_actions() {
                order += 1;
                match action {
                    Action::Persist { seq, .. } => {
                        due.insert((now + local, order), Input::Persisted { seq });
                    }
                    Action::Send(message) => match message.body {
                        MessageBody::AppendRequest {
                            prev_log_index,
                            entries,
                            ..
                        } => {
                            let delay = followers[message.to.0 as usize - 2];
                            let ack = MessageBody::AppendResponse {
                                success: true,
                                match_index: LogIndex(prev_log_index.0 + entries.len() as u64),
                                conflict: None,
                            };
                            let input = from_peer_in(message.term.0, message.to.0, ack);
                            due.insert((now + delay, order), input);
                        }
                        MessageBody::Heartbeat { read_context, .. } => {
                            let delay = followers[message.to.0 as usize - 2];
                            let answer = MessageBody::HeartbeatResponse { read_context };
                            let input = from_peer_in(message.term.0, message.to.0, answer);
                            due.insert((now + delay, order), input);
                        }
                        MessageBody::TimeoutNow => outcome.timeouts_sent.push((now, message.to)),
                        _ => {}
                    },
                    Action::SelfDemotion(demotion) => outcome.demotions.push((now, demotion)),
                    _ => {}
                }
            }
            assert!(leader.is_leader(), "still leading at tick {now}");
            assert_eq!(leader.hard_state().term, Term(1));
        }
        outcome
    }

    #[test]
    fn a_leader_with_a_slow_disk_hands_over_to_its_fastest_follower() {
        let outcome = run(Some(CONFIG), 20, [3, 1], 200);
        let [(at, demotion)] = outcome.demotions.as_slice() else {
            panic!("one self-demotion expected: {:?}", outcome.demotions);
        };
        assert_eq!(demotion.to, NodeId(3), "node 3 answers fastest");
        assert_eq!(demotion.followers_measured, 2);
        assert!(demotion.slow_for_ticks >= CONFIG.window_ticks);
        assert!(demotion.leader_milliticks >= 4 * demotion.median_follower_milliticks);
        // An answer delivered `n` ticks after the send is seen `n - 1` ticks after it (it
        // arrives before the tick of its own turn).
        let median = demotion.median_follower_milliticks;
        assert!((1_500..=2_000).contains(&median), "{demotion:?}");
        assert!(demotion.target_milliticks < 1_000, "{demotion:?}");
        assert!((18_000..=19_000).contains(&demotion.leader_milliticks));
        // A persist pending for long counts from the start, then the whole window passes.
        assert!(
            *at >= CONFIG.window_ticks && *at < 20 + 2 * CONFIG.window_ticks,
            "{at}"
        );
        // The transfer tells node 3 to campaign once it holds the whole log.
        assert!(
            (outcome.timeouts_sent.iter())
                .any(|&(t, to)| to == NodeId(3) && t >= *at && t < at + 5),
            "{:?}",
            outcome.timeouts_sent
        );
    }

    #[test]
    fn a_leader_whose_sync_hangs_hands_over_without_a_single_sample() {
        let outcome = run(Some(CONFIG), 100_000, [2, 1], 200);
        let [(at, demotion)] = outcome.demotions.as_slice() else {
            panic!("one self-demotion expected: {:?}", outcome.demotions);
        };
        assert_eq!(demotion.to, NodeId(3));
        assert!(demotion.leader_milliticks >= CONFIG.window_ticks * SCALE);
        assert!(
            *at >= CONFIG.window_ticks && *at < 2 * CONFIG.window_ticks,
            "{at}"
        );
    }

    #[test]
    fn equal_or_fast_disks_never_trigger_it() {
        for (local, followers) in [(5, [5, 5]), (3, [1, 1]), (1, [0, 0]), (4, [0, 0])] {
            let outcome = run(Some(CONFIG), local, followers, 600);
            assert!(
                outcome.demotions.is_empty(),
                "local {local}, followers {followers:?}: {:?}",
                outcome.demotions
            );
        }
    }

    #[test]
    fn a_leader_slower_than_one_follower_only_stays() {
        // The median of two followers is the slower one: a quorum is just as slow.
        let outcome = run(Some(CONFIG), 20, [1, 18], 600);
        assert!(outcome.demotions.is_empty(), "{:?}", outcome.demotions);
    }

    #[test]
    fn it_can_be_turned_off() {
        let outcome = run(None, 30, [1, 1], 600);
        assert!(outcome.demotions.is_empty());
        assert!(outcome.timeouts_sent.is_empty());
    }

    #[test]
    fn a_leader_tries_again_only_after_the_cool_down() {
        let config = SelfDemotionConfig {
            cooldown_ticks: 300,
            ..CONFIG
        };
        let outcome = run(Some(config), 20, [1, 2], 800);
        let ticks: Vec<u64> = outcome.demotions.iter().map(|(t, _)| *t).collect();
        assert!(ticks.len() >= 2, "{ticks:?}");
        for pair in ticks.windows(2) {
            assert!(pair[1] - pair[0] >= 300, "{ticks:?}");
        }
    }
}
