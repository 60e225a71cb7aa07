//! What the leader knows about one follower's log, and how much it may send it
//! (etcd's `tracker` idea; Raft thesis §3.5 and §10.2 on pipelining).
//!
//! Owned by the leader's `Replica`, one per peer. States:
//! - `Probe`: the leader does not know where the follower's log matches; it sends one
//!   AppendRequest and waits for the answer (or the next heartbeat) before sending another.
//! - `Replicate`: the logs match through `match_index`; the leader streams entries optimistically,
//!   advancing `next_index` on send, bounded by an in-flight window in messages and bytes.
//! - `Snapshot`: the follower needs entries the leader compacted; it is sent the snapshot in
//!   chunks, a bounded window of them in flight, and nothing else until it answers that the
//!   snapshot is installed.
//!
//! Invariant: `match_index < next_index`.

use super::log::batch_len;
use rcraft_wire::{Entry, LogIndex, SnapshotMeta};
use std::collections::VecDeque;

/// Replication state of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Finding the match point, one message at a time.
    Probe,
    /// Streaming entries.
    Replicate,
    /// Sending a snapshot.
    Snapshot(SnapshotTransfer),
}

/// A snapshot being sent to one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTransfer {
    /// The snapshot.
    pub meta: SnapshotMeta,
    /// Where the follower's durable bytes end (as last acknowledged by it, or where it asked
    /// the transfer to restart).
    pub offset: u64,
    /// End of the bytes requested from storage for sending; chunks in `[offset,
    /// requested_through)` are in flight. Invariant: `offset <= requested_through`.
    pub requested_through: u64,
    /// Ticks without an answer while chunks are in flight (since the follower last answered
    /// or, when nothing was in flight, since a chunk was requested); a stalled transfer is
    /// resumed. Waiting for the byte budget does not count.
    pub idle_ticks: u64,
}

/// The leader's view of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// Next index to send. Invariant: `match_index < next_index`.
    pub next_index: LogIndex,
    /// Current state.
    pub state: ProgressState,
    /// In `Probe`: a message is outstanding, wait before sending another.
    pub probe_sent: bool,
    /// Last index and byte size of every AppendRequest in flight (in `Replicate`).
    inflight: VecDeque<(LogIndex, u64)>,
    /// Sum of the byte sizes in `inflight`.
    inflight_bytes: u64,
    /// Heard from since the last CheckQuorum round (thesis §6.2).
    pub recent_active: bool,
    /// Highest heartbeat round (`read_context`) this follower answered.
    /// Invariant: at most the leader's last round sent (`ReadQueue::acknowledged_round`).
    pub acked_round: u64,
    /// The id of the storage read (`StorageAction::ReadEntries`) of entries from `next_index` on,
    /// while one is outstanding: nothing else is sent meanwhile. Cleared by every state
    /// change, so an answer to a read of an earlier state is ignored.
    pub entries_read: Option<u64>,
    /// The entries the last storage read brought for this follower, contiguous, kept (at most
    /// one read's worth, itself at most the in-flight window) while it may still need them:
    /// a refusal after a lost message, or a probe, sends from here instead of reading again.
    /// Only entries of the leader's own log, which it never truncates while leading.
    read_back: VecDeque<Entry>,
}

impl Progress {
    /// A follower the leader knows nothing about yet; probing starts at `next_index`.
    pub fn new(next_index: LogIndex) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            recent_active: false,
            acked_round: 0,
            entries_read: None,
            read_back: VecDeque::new(),
        }
    }

    /// Switches to probing from `next_index`, forgetting anything in flight.
    pub fn become_probe(&mut self, next_index: LogIndex) {
        self.state = ProgressState::Probe;
        self.next_index = next_index.max(self.match_index.next());
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// The follower no longer holds entries it acknowledged (a damaged disk cut its log tail
    /// on restart): the match point falls back below `next_index`, so the leader probes and
    /// repairs the follower from there instead of probing above a point the follower lacks,
    /// forever (issue 14, finding 2). A lower match index never lowers the commit index,
    /// which only moves forward.
    pub fn forget_match_from(&mut self, next_index: LogIndex) {
        if next_index <= self.match_index {
            self.match_index = next_index.prev();
        }
    }

    /// Switches to streaming after the match point.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// Switches to sending `meta`, starting at offset 0.
    pub fn become_snapshot(&mut self, meta: SnapshotMeta) {
        self.state = ProgressState::Snapshot(SnapshotTransfer {
            meta,
            offset: 0,
            requested_through: 0,
            idle_ticks: 0,
        });
        self.probe_sent = false;
        self.read_back.clear();
        self.clear_inflight();
    }

    /// Keeps the entries a storage read brought (contiguous, of the leader's log).
    pub fn keep_read_back(&mut self, entries: Vec<Entry>) {
        self.read_back = entries.into();
    }

    /// A batch from `next_index` out of the entries read back, at most `max_append_bytes`
    /// (see `log::batch_len`); `None` when they do not hold `next_index` (they are then
    /// dropped). Entries the follower acknowledged are dropped first.
    pub fn batch_from_read_back(&mut self, max_append_bytes: u64) -> Option<Vec<Entry>> {
        while (self.read_back.front()).is_some_and(|e| e.index <= self.match_index) {
            self.read_back.pop_front();
        }
        let first = self.read_back.front()?.index;
        if self.next_index < first || self.next_index.0 - first.0 >= self.read_back.len() as u64 {
            self.read_back.clear();
            return None;
        }
        let from = self
            .read_back
            .range((self.next_index.0 - first.0) as usize..);
        let len = batch_len(from.clone(), max_append_bytes);
        Some(from.take(len).cloned().collect())
    }

    fn clear_inflight(&mut self) {
        self.entries_read = None;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// The follower acknowledged a match through `index`. Returns true when that is news.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        if index <= self.match_index {
            // Stale or duplicated: it must not re-arm a probe (see `on_append_accepted`).
            return false;
        }
        self.probe_sent = false;
        self.match_index = index;
        self.next_index = self.next_index.max(index.next());
        while self
            .inflight
            .front()
            .is_some_and(|(last, _)| *last <= index)
        {
            let (_, bytes) = self.inflight.pop_front().expect("checked non-empty");
            self.inflight_bytes -= bytes;
        }
        true
    }

    /// Whether a new AppendRequest may be sent now.
    pub fn can_send(&self, max_messages: usize, max_bytes: u64) -> bool {
        if self.entries_read.is_some() {
            return false;
        }
        match self.state {
            ProgressState::Probe => !self.probe_sent,
            ProgressState::Replicate => {
                self.inflight.len() < max_messages && self.inflight_bytes < max_bytes
            }
            ProgressState::Snapshot(_) => false,
        }
    }

    /// Records an AppendRequest carrying entries through `last` of `bytes` bytes.
    pub fn on_sent(&mut self, last: Option<LogIndex>, bytes: u64) {
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next_index = last.next();
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            ProgressState::Snapshot(_) => {}
        }
    }

    /// How many entry bytes to read from storage for this follower at once: what the
    /// in-flight window has room for (its free messages times `per_message`, at most its free
    /// bytes), at least one message's worth. While probing the whole window: the entries
    /// after the probe are kept (`read_back`) for the stream that follows once it matches.
    pub fn read_bytes(&self, max_messages: usize, max_bytes: u64, per_message: u64) -> u64 {
        let slots = max_messages.saturating_sub(self.inflight.len()) as u64;
        (slots.saturating_mul(per_message))
            .min(max_bytes.saturating_sub(self.inflight_bytes))
            .max(per_message)
    }

    /// True when the in-flight window is full.
    pub fn inflight_full(&self, max_messages: usize, max_bytes: u64) -> bool {
        self.inflight.len() >= max_messages || self.inflight_bytes >= max_bytes
    }

    /// Frees the oldest in-flight message (after a heartbeat answer with a full window, so a
    /// lost message cannot stall the stream forever).
    pub fn free_first_inflight(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    /// Number of AppendRequests in flight.
    pub fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut p = Progress::new(LogIndex(5));
        assert!(p.can_send(4, 100));
        p.on_sent(Some(LogIndex(7)), 10);
        assert!(!p.can_send(4, 100));
        // In probe, next_index does not move on send.
        assert_eq!(p.next_index, LogIndex(5));
        // A stale or duplicated acknowledgement does not re-arm the probe...
        assert!(!p.maybe_update(LogIndex(0)));
        assert!(!p.can_send(4, 100));
        // ...news does.
        assert!(p.maybe_update(LogIndex(6)));
        assert!(p.can_send(4, 100));
    }

    #[test]
    fn replicate_window_by_messages_and_bytes() {
        let mut p = Progress::new(LogIndex(1));
        p.maybe_update(LogIndex(3));
        p.become_replicate();
        assert_eq!(p.next_index, LogIndex(4));
        p.on_sent(Some(LogIndex(5)), 40);
        p.on_sent(Some(LogIndex(6)), 40);
        assert_eq!(p.next_index, LogIndex(7));
        assert!(p.can_send(3, 100));
        assert!(!p.can_send(2, 100));
        assert!(!p.can_send(3, 80));
        assert!(p.maybe_update(LogIndex(5)));
        assert_eq!(p.inflight_messages(), 1);
        assert!(p.can_send(2, 80));
        p.free_first_inflight();
        assert_eq!(p.inflight_messages(), 0);
    }

    #[test]
    fn probe_never_goes_below_match() {
        let mut p = Progress::new(LogIndex(1));
        p.maybe_update(LogIndex(8));
        p.become_probe(LogIndex(3));
        assert_eq!(p.next_index, LogIndex(9));
        assert!(p.match_index < p.next_index);
    }

    #[test]
    fn snapshot_state_blocks_appends() {
        let mut p = Progress::new(LogIndex(1));
        p.become_snapshot(SnapshotMeta::default());
        assert!(!p.can_send(10, 10));
    }
}
