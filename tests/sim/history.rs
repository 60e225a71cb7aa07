//! The clients' history: when each write and read was invoked and how it completed, and the
//! linearizability check over the append-list state machine.
//!
//! Owned by one simulated world. Because every read returns a prefix of the single committed
//! sequence of writes (state machine safety checks that), a history is linearizable when
//! each read, served at state index `a`, satisfies: `a` is at least the index of every write
//! acknowledged before the read was invoked, and at least the state index of every read that
//! completed before it was invoked. A read can never contain a write invoked after it
//! completed, since such a write did not exist yet; the check asserts it anyway.

use crate::checker::Verdict;
use rcraft::wire::LogIndex;
use std::collections::BTreeMap;

/// How a write ended, as far as its client knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// No answer yet.
    Pending,
    /// Applied at `index` by the node it was proposed to.
    Acked {
        /// Sim time of the acknowledgement.
        at: u64,
        /// Log index of the write.
        index: LogIndex,
    },
    /// Refused or overwritten: it will never apply.
    Failed,
    /// The node crashed or lost track; it may or may not apply.
    Unknown,
}

/// One write of the history.
#[derive(Clone, Debug)]
pub(crate) struct WriteRecord {
    /// Sim time the client invoked it.
    pub(crate) invoked_at: u64,
    /// How it ended.
    pub(crate) outcome: WriteOutcome,
}

/// A read in flight: what it must observe, fixed when it was invoked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadRecord {
    /// Sim time the client invoked it.
    pub(crate) invoked_at: u64,
    /// Highest index of a write acknowledged before the invocation.
    pub(crate) acked_before: LogIndex,
    /// Highest state index returned by a read completed before the invocation.
    pub(crate) read_before: LogIndex,
}

/// Every client operation of one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct History {
    writes: BTreeMap<u64, WriteRecord>,
    max_acked_index: LogIndex,
    max_read_index: LogIndex,
    reads_completed: u64,
}

impl History {
    /// A client invokes write `write_id` at `now`.
    pub(crate) fn invoke_write(&mut self, write_id: u64, now: u64) {
        self.writes.insert(
            write_id,
            WriteRecord {
                invoked_at: now,
                outcome: WriteOutcome::Pending,
            },
        );
    }

    /// The outcome of write `write_id` becomes known.
    pub(crate) fn complete_write(&mut self, write_id: u64, outcome: WriteOutcome) -> Verdict {
        let record = self
            .writes
            .get_mut(&write_id)
            .ok_or_else(|| format!("history: write {write_id} was never invoked"))?;
        if record.outcome != WriteOutcome::Pending && record.outcome != WriteOutcome::Unknown {
            return Err(format!(
                "history: write {write_id} completed twice ({:?}, then {outcome:?})",
                record.outcome
            ));
        }
        if let WriteOutcome::Acked { index, .. } = outcome {
            self.max_acked_index = self.max_acked_index.max(index);
        }
        record.outcome = outcome;
        Ok(())
    }

    /// A client invokes a read at `now`.
    pub(crate) fn invoke_read(&self, now: u64) -> ReadRecord {
        ReadRecord {
            invoked_at: now,
            acked_before: self.max_acked_index,
            read_before: self.max_read_index,
        }
    }

    /// The leader confirmed read point `read_index` for `read`. A leader that committed an
    /// entry of its term knows every earlier commit, so its read index covers every write
    /// acknowledged before the read began (thesis §6.4).
    pub(crate) fn check_read_index(&self, read: &ReadRecord, read_index: LogIndex) -> Verdict {
        if read_index < read.acked_before {
            return Err(format!(
                "linearizability: read invoked at t={} got read index {read_index}, below the \
                 acknowledged write at index {}",
                read.invoked_at, read.acked_before
            ));
        }
        Ok(())
    }

    /// `read` completed at `now`, observing the writes in `writes` (state through `index`).
    pub(crate) fn complete_read(
        &mut self,
        read: &ReadRecord,
        index: LogIndex,
        writes: &[u64],
        now: u64,
    ) -> Verdict {
        if index < read.acked_before || index < read.read_before {
            return Err(format!(
                "linearizability: read invoked at t={} returned state index {index}, but a \
                 write was acknowledged at index {} and a read returned index {} before it \
                 began",
                read.invoked_at, read.acked_before, read.read_before
            ));
        }
        for write_id in writes {
            let invoked = self.writes.get(write_id).map(|w| w.invoked_at);
            if invoked.is_none_or(|at| at > now) {
                return Err(format!(
                    "linearizability: read completed at t={now} contains write {write_id}, \
                     which no client had invoked by then"
                ));
            }
        }
        self.max_read_index = self.max_read_index.max(index);
        self.reads_completed += 1;
        Ok(())
    }

    /// True when some write invoked at or after `since` was acknowledged.
    pub(crate) fn acked_since(&self, since: u64) -> bool {
        self.writes.values().any(|w| {
            w.invoked_at >= since
                && matches!(w.outcome, WriteOutcome::Acked { at, .. } if at >= since)
        })
    }

    /// Counts of acknowledged writes and completed reads, for the run summary.
    pub(crate) fn counts(&self) -> (usize, u64) {
        let acked = self
            .writes
            .values()
            .filter(|w| matches!(w.outcome, WriteOutcome::Acked { .. }))
            .count();
        (acked, self.reads_completed)
    }
}
