//! The client session table: at-most-once application of retried writes (Raft thesis §6.3).
//!
//! Owned by the apply thread and saved inside every snapshot next to the user's state, so
//! every replica makes the same dedup decisions whatever it restored from. For each client it
//! remembers the highest applied sequence number and that write's response.
//!
//! Invariants: `by_recency` holds exactly one `(last_index, client_id)` key per entry of
//! `clients`; the table never holds more than [`SESSIONS_MAX`] clients, and when it must
//! forget one it forgets the client whose last write is oldest in the log, which every
//! replica agrees on.

use super::limits::SESSIONS_MAX;
use rcraft_wire::{LogIndex, Session};
use std::collections::{BTreeSet, HashMap};

/// What the table remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// Highest sequence number applied for this client.
    pub(crate) sequence: u64,
    /// Log index of that write.
    pub(crate) last_index: LogIndex,
    /// The state machine's response to that write, returned again to a retry.
    pub(crate) response: Vec<u8>,
}

/// What to do with a command carrying a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// First time this sequence is seen: apply it.
    Apply,
    /// A retry of the last applied write: answer with its saved response, do not apply.
    Duplicate(Vec<u8>),
    /// Older than the last applied write: already applied, its response is gone.
    Stale,
}

/// client_id -> last applied write.
#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    clients: HashMap<u64, SessionRecord>,
    by_recency: BTreeSet<(LogIndex, u64)>,
}

impl SessionTable {
    /// Decides whether `session`'s command should be applied.
    pub(crate) fn check(&self, session: Session) -> SessionCheck {
        match self.clients.get(&session.client_id) {
            Some(record) if session.sequence == record.sequence => {
                SessionCheck::Duplicate(record.response.clone())
            }
            Some(record) if session.sequence < record.sequence => SessionCheck::Stale,
            _ => SessionCheck::Apply,
        }
    }

    /// Records that `session`'s command was applied at `index` with `response`.
    pub(crate) fn record(&mut self, session: Session, index: LogIndex, response: Vec<u8>) {
        let record = SessionRecord {
            sequence: session.sequence,
            last_index: index,
            response,
        };
        self.insert(session.client_id, record);
        while self.clients.len() > SESSIONS_MAX {
            self.forget_oldest();
        }
    }

    /// Inserts or replaces one client's record (also used when restoring a snapshot).
    pub(crate) fn insert(&mut self, client_id: u64, record: SessionRecord) {
        self.by_recency.insert((record.last_index, client_id));
        if let Some(old) = self.clients.insert(client_id, record) {
            self.by_recency.remove(&(old.last_index, client_id));
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, client_id)) = self.by_recency.pop_first() {
            self.clients.remove(&client_id);
        }
    }

    /// Every record, in client id order (a stable order for snapshots).
    pub(crate) fn records_sorted(&self) -> Vec<(u64, &SessionRecord)> {
        let mut records: Vec<_> = self.clients.iter().map(|(id, r)| (*id, r)).collect();
        records.sort_unstable_by_key(|(id, _)| *id);
        records
    }

    /// Number of clients remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(client_id: u64, sequence: u64) -> Session {
        Session {
            client_id,
            sequence,
        }
    }

    #[test]
    fn retry_of_last_write_is_a_duplicate_with_its_response() {
        let mut table = SessionTable::default();
        assert_eq!(table.check(session(7, 1)), SessionCheck::Apply);
        table.record(session(7, 1), LogIndex(3), b"r1".to_vec());
        assert_eq!(
            table.check(session(7, 1)),
            SessionCheck::Duplicate(b"r1".to_vec())
        );
        assert_eq!(table.check(session(7, 2)), SessionCheck::Apply);
        table.record(session(7, 2), LogIndex(4), b"r2".to_vec());
        assert_eq!(table.check(session(7, 1)), SessionCheck::Stale);
        assert_eq!(table.check(session(8, 1)), SessionCheck::Apply);
    }

    #[test]
    fn forgets_the_least_recent_client_past_the_limit() {
        let mut table = SessionTable::default();
        for client in 0..=SESSIONS_MAX as u64 {
            table.record(session(client, 1), LogIndex(client + 1), Vec::new());
        }
        assert_eq!(table.len(), SESSIONS_MAX);
        assert_eq!(table.check(session(0, 1)), SessionCheck::Apply);
        assert!(matches!(
            table.check(session(1, 1)),
            SessionCheck::Duplicate(_)
        ));
    }
}
