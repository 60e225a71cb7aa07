//! The client session table: at-most-once application of retried writes (Raft thesis §6.3).
//!
//! Owned by the apply thread and saved inside every snapshot next to the user's state, so
//! every replica makes the same dedup decisions whatever it restored from. For each client it
//! remembers the highest applied sequence number and that write's response.
//!
//! A session exists only once registered: a committed registration entry creates it, with
//! the entry's index as its client id (so a registration applied twice, e.g. a retried one,
//! makes two different sessions and never revives a forgotten one). A write from a client
//! the table does not hold is refused, never applied: the table cannot tell a new client
//! from one it forgot, and the forgotten one's write may have been applied already.
//!
//! Invariants: `by_recency` holds exactly one `(last_index, client_id)` key per entry of
//! `clients`; the table never holds more than `capacity` clients ([`SESSIONS_MAX`] in a
//! node), and when it must forget one it forgets the client whose last registration or write
//! is oldest in the log, which every replica agrees on.

use super::limits::SESSIONS_MAX;
use rcraft_wire::{LogIndex, SESSION_EXPIRED_PREFIX, Session};
use std::collections::{BTreeSet, HashMap};

/// What the table remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionRecord {
    /// Highest sequence number applied for this client (0: registered, no write yet).
    pub(crate) sequence: u64,
    /// Log index of that write (or of the registration).
    pub(crate) last_index: LogIndex,
    /// The state machine's response to that write, returned again to a retry.
    pub(crate) response: Vec<u8>,
}

/// What to do with a command carrying a session.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SessionCheck {
    /// A registration ([`Session::REGISTER`]): create a session, apply nothing.
    Register,
    /// First time this sequence is seen from a registered client: apply it.
    Apply,
    /// A retry of the last applied write: answer with its saved response, do not apply.
    Duplicate(Vec<u8>),
    /// Older than the last applied write: already applied, its response is gone.
    Stale,
    /// The client is not in the table (never registered, or forgotten): do not apply.
    Expired,
    /// Sequence 0 from a client other than 0: neither a registration nor a write.
    ReservedSequence,
}

/// client_id -> last applied write.
#[derive(Debug)]
pub(crate) struct SessionTable {
    /// Most clients remembered. Invariant: at least 1, and the same on every replica.
    capacity: usize,
    clients: HashMap<u64, SessionRecord>,
    by_recency: BTreeSet<(LogIndex, u64)>,
}

impl Default for SessionTable {
    /// An empty table of the node's capacity, [`SESSIONS_MAX`].
    fn default() -> SessionTable {
        SessionTable::with_capacity(SESSIONS_MAX)
    }
}

impl SessionTable {
    /// An empty table that remembers at most `capacity` clients.
    pub(crate) fn with_capacity(capacity: usize) -> SessionTable {
        assert!(
            capacity >= 1,
            "a session table must hold at least one client"
        );
        SessionTable {
            capacity,
            clients: HashMap::new(),
            by_recency: BTreeSet::new(),
        }
    }

    /// Most clients remembered.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the capacity, forgetting the least recent clients past it.
    #[cfg(test)]
    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        assert!(
            capacity >= 1,
            "a session table must hold at least one client"
        );
        self.capacity = capacity;
        self.forget_past_capacity();
    }

    /// Decides what to do with `session`'s command.
    pub(crate) fn check(&self, session: Session) -> SessionCheck {
        if session == Session::REGISTER {
            return SessionCheck::Register;
        }
        if session.sequence == 0 {
            return SessionCheck::ReservedSequence;
        }
        // Planted bug for `make mutants`: every write is treated as new, so a retry applies
        // again.
        if cfg!(feature = "bug-session-dedup-off") {
            return SessionCheck::Apply;
        }
        match self.clients.get(&session.client_id) {
            None => SessionCheck::Expired,
            Some(record) if session.sequence == record.sequence => {
                SessionCheck::Duplicate(record.response.clone())
            }
            Some(record) if session.sequence < record.sequence => SessionCheck::Stale,
            Some(_) => SessionCheck::Apply,
        }
    }

    /// Creates the session of the registration entry at `index` and returns its client id
    /// (the index itself, unique in the log).
    pub(crate) fn register(&mut self, index: LogIndex) -> u64 {
        let client_id = index.0;
        let record = SessionRecord {
            sequence: 0,
            last_index: index,
            response: Vec::new(),
        };
        self.insert(client_id, record);
        self.forget_past_capacity();
        client_id
    }

    /// Records that `session`'s command was applied at `index` with `response`.
    pub(crate) fn record(&mut self, session: Session, index: LogIndex, response: Vec<u8>) {
        let record = SessionRecord {
            sequence: session.sequence,
            last_index: index,
            response,
        };
        self.insert(session.client_id, record);
        self.forget_past_capacity();
    }

    /// Inserts or replaces one client's record (also used when restoring a snapshot).
    pub(crate) fn insert(&mut self, client_id: u64, record: SessionRecord) {
        self.by_recency.insert((record.last_index, client_id));
        if let Some(old) = self.clients.insert(client_id, record) {
            self.by_recency.remove(&(old.last_index, client_id));
        }
    }

    fn forget_past_capacity(&mut self) {
        while self.clients.len() > self.capacity {
            self.forget_oldest();
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

/// The refusal of a write whose client the table does not hold.
pub(crate) fn expired_message(client_id: u64) -> String {
    format!(
        "{SESSION_EXPIRED_PREFIX} client {client_id} is unknown (evicted or never registered); \
         register a new session"
    )
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
        assert_eq!(table.check(Session::REGISTER), SessionCheck::Register);
        let client = table.register(LogIndex(2));
        assert_eq!(client, 2);
        assert_eq!(table.check(session(client, 1)), SessionCheck::Apply);
        table.record(session(client, 1), LogIndex(3), b"r1".to_vec());
        assert_eq!(
            table.check(session(client, 1)),
            SessionCheck::Duplicate(b"r1".to_vec())
        );
        assert_eq!(table.check(session(client, 2)), SessionCheck::Apply);
        table.record(session(client, 2), LogIndex(4), b"r2".to_vec());
        assert_eq!(table.check(session(client, 1)), SessionCheck::Stale);
    }

    #[test]
    fn an_unknown_client_is_expired_not_new() {
        let mut table = SessionTable::default();
        assert_eq!(table.check(session(8, 1)), SessionCheck::Expired);
        assert_eq!(table.check(session(8, 5)), SessionCheck::Expired);
        table.register(LogIndex(8));
        assert_eq!(table.check(session(8, 0)), SessionCheck::ReservedSequence);
        assert_eq!(table.check(session(8, 1)), SessionCheck::Apply);
    }

    #[test]
    fn forgets_the_least_recent_client_past_the_capacity() {
        let mut table = SessionTable::with_capacity(3);
        for index in 1..=3 {
            table.register(LogIndex(index));
        }
        // Client 1 writes: now client 2 is the least recent.
        table.record(session(1, 1), LogIndex(4), Vec::new());
        table.register(LogIndex(5));
        assert_eq!(table.len(), 3);
        assert_eq!(table.check(session(2, 1)), SessionCheck::Expired);
        assert!(matches!(
            table.check(session(1, 1)),
            SessionCheck::Duplicate(_)
        ));
        assert_eq!(table.check(session(3, 1)), SessionCheck::Apply);
        assert_eq!(table.check(session(5, 1)), SessionCheck::Apply);
    }

    #[test]
    fn the_node_table_holds_sessions_max_clients() {
        let mut table = SessionTable::default();
        assert_eq!(table.capacity(), SESSIONS_MAX);
        for index in 1..=SESSIONS_MAX as u64 + 1 {
            table.register(LogIndex(index));
        }
        assert_eq!(table.len(), SESSIONS_MAX);
        assert_eq!(table.check(session(1, 1)), SessionCheck::Expired);
        assert_eq!(table.check(session(2, 1)), SessionCheck::Apply);
    }

    #[test]
    fn a_smaller_capacity_forgets_the_least_recent_at_once() {
        let mut table = SessionTable::default();
        for index in 1..=4 {
            table.register(LogIndex(index));
        }
        table.set_capacity(2);
        assert_eq!(table.len(), 2);
        assert_eq!(table.check(session(2, 1)), SessionCheck::Expired);
        assert_eq!(table.check(session(3, 1)), SessionCheck::Apply);
    }
}
