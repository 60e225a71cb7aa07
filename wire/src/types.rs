//! Vocabulary types: node ids, terms, log indexes, log entries and membership configurations.
//!
//! These are plain values shared by the consensus core, the storage glue and the network
//! thread. All derive rkyv's `Archive` so messages that contain them can be framed.

use crate::limits::{
    ENTRY_FIXED_BYTES_MAX, MEMBERSHIP_ID_BYTES_MAX, MEMBERSHIP_SET_FIXED_BYTES_MAX,
};
use crate::record::{command_view, encode_command_record, encode_record};
use crate::shared_bytes::SharedBytes;
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// Identifies one server of the cluster. With a cRaft `craft.conf`, node `i` is the `i`-th
/// `servers =` line, counting from 0.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct NodeId(pub u64);

/// A Raft term (Raft paper §5.1). Terms only grow on every server.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty prefix; the first entry is index 1.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct LogIndex(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl LogIndex {
    /// The index after this one.
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one, saturating at 0.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
}

/// A client session reference carried by a command so the state machine side can apply a
/// retried command at most once (Raft thesis §6.3).
///
/// A session is registered before use: a command carrying [`Session::REGISTER`] (and no
/// data) creates one, whose `client_id` is the log index of that registration entry. Writes
/// then carry that id with sequence 1, 2, ... A write whose client id is not in the
/// cluster's session table (never registered, or forgotten to make room for newer sessions)
/// is refused, never applied: an earlier attempt of it may have been.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq), attr(allow(missing_docs)))]
pub struct Session {
    /// Assigned by the cluster at registration (the registration entry's log index, so never
    /// 0 for a registered session); 0 in the registration itself.
    pub client_id: u64,
    /// Grows by one per new write of that client, from 1; a retry repeats it. The apply side
    /// remembers the highest applied. 0 is reserved for the registration.
    pub sequence: u64,
}

impl Session {
    /// The session carried by a registration: a command with no data that asks for a new
    /// session. Its answer's `result` is the new client id (u64 little-endian), equal to
    /// the entry's index.
    pub const REGISTER: Session = Session {
        client_id: 0,
        sequence: 0,
    };
}

/// How the message of a write refused for an unknown session starts (an `Error` answer
/// with `definite: true`: that attempt was not applied). When the write was a retry, an
/// earlier attempt may have been applied: its outcome is unknown. The client registers a
/// new session for its next writes.
pub const SESSION_EXPIRED_PREFIX: &str = "session expired:";

/// True when `message` (of an `Error` answer to a write) says the write's session expired.
pub fn is_session_expired(message: &str) -> bool {
    message.starts_with(SESSION_EXPIRED_PREFIX)
}

/// What an entry carries. Entries travel and are stored as their records
/// (`crate::record`), so a payload is never archived on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by a new leader at the start of its term so it can commit (Raft thesis §6.4,
    /// paper §8). Never given to the state machine.
    Noop,
    /// An opaque command for the user's state machine, with an optional client session.
    Command {
        /// Session for at-most-once application of retried writes.
        session: Option<Session>,
        /// The command bytes, as submitted. In an entry, a view of the entry's record (no copy
        /// of its own); `Vec<u8>` and `&[u8]` convert into it (`.into()`, one copy).
        data: SharedBytes,
    },
    /// A new membership configuration; takes effect when appended (Raft thesis §4.1).
    Membership(Membership),
}

/// One log entry, with its record bytes (`crate::record`): the WAL record that the leader's
/// WAL stores, the AppendRequest carries and a follower's WAL stores, encoded once when the
/// entry is made and shared by its clones.
///
/// Invariant: the record holds exactly `term`, `index` and `payload`. Make entries with
/// [`Entry::new`] or decode them from records; never change the fields of an existing entry
/// (make a new one).
#[derive(Clone)]
pub struct Entry {
    /// The leader's term when the entry was created.
    pub term: Term,
    /// Position in the log.
    pub index: LogIndex,
    /// The content.
    pub payload: EntryPayload,
    /// Invariant: a command's `data` is a view of this record's last bytes.
    record: SharedBytes,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        self.term == other.term && self.index == other.index && self.payload == other.payload
    }
}

impl Eq for Entry {}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("term", &self.term)
            .field("index", &self.index)
            .field("payload", &self.payload)
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// Makes an entry and encodes its record. A command's bytes are copied into the record
    /// and the entry's command becomes a view of them there (the payload's own buffer is
    /// dropped), so the entry holds one buffer.
    pub fn new(term: Term, index: LogIndex, mut payload: EntryPayload) -> Entry {
        let record = encode_record(index, term, &payload);
        if let EntryPayload::Command { data, .. } = &mut payload {
            *data = command_view(&record, data.len());
        }
        Entry::with_record(term, index, payload, record)
    }

    /// Makes a command entry from borrowed command bytes: the bytes are copied once, into the
    /// record, and the entry's command is a view of them. Equal to [`Entry::new`] with an
    /// [`EntryPayload::Command`].
    pub fn command(term: Term, index: LogIndex, session: Option<Session>, data: &[u8]) -> Entry {
        let record = encode_command_record(index, term, &session, data);
        let payload = EntryPayload::Command {
            session,
            data: command_view(&record, data.len()),
        };
        Entry::with_record(term, index, payload, record)
    }

    pub(crate) fn with_record(
        term: Term,
        index: LogIndex,
        payload: EntryPayload,
        record: SharedBytes,
    ) -> Entry {
        Entry {
            term,
            index,
            payload,
            record,
        }
    }

    /// The entry's record bytes (storage/FORMAT.md §1.2), as the WAL stores them.
    pub fn record(&self) -> &[u8] {
        self.record.as_slice()
    }

    /// An upper bound on the bytes this entry adds to an archived message (an AppendRequest
    /// frame): what a leader counts so that no batch of entries overruns the frame limit
    /// ([`crate::APPEND_ENTRIES_BYTES_MAX`]). Larger than [`Entry::size_bytes`].
    pub fn wire_bytes_max(&self) -> u64 {
        let variable = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command { data, .. } => data.len(),
            EntryPayload::Membership(m) => {
                let ids = m.voters.len() + m.voters_outgoing.len() + m.learners.len();
                3 * MEMBERSHIP_SET_FIXED_BYTES_MAX + ids * MEMBERSHIP_ID_BYTES_MAX
            }
        };
        (ENTRY_FIXED_BYTES_MAX + variable) as u64
    }

    /// A rough size in bytes used for batching and in-flight limits.
    pub fn size_bytes(&self) -> u64 {
        let body = match &self.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command { data, .. } => data.len() + 16,
            EntryPayload::Membership(m) => {
                8 * (m.voters.len() + m.learners.len() + m.voters_outgoing.len())
            }
        };
        (24 + body) as u64
    }
}

/// A cluster configuration: who votes and who only receives the log.
///
/// Invariant: `voters`, `learners` are disjoint. When `voters_outgoing` is non-empty the
/// configuration is joint (Raft thesis §4.3): decisions need a majority of `voters` *and* of
/// `voters_outgoing`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct Membership {
    /// Voting members (of the new configuration when joint).
    pub voters: BTreeSet<NodeId>,
    /// Voting members of the old configuration while joint; empty otherwise.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Non-voting members that receive the log.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// A simple (non-joint) configuration of the given voters.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// True while a joint configuration is in force.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Every member that receives the log, voters first, in id order, without repeats.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.voters
            .iter()
            .chain(self.voters_outgoing.iter())
            .chain(self.learners.iter())
            .copied()
            .collect()
    }

    /// True when `id` votes in this configuration (in either half when joint).
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }
}

/// Describes a snapshot: the log prefix it replaces and the configuration at that point.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[rkyv(derive(Debug), attr(allow(missing_docs)))]
pub struct SnapshotMeta {
    /// Last log index covered by the snapshot.
    pub index: LogIndex,
    /// Term of the entry at `index`.
    pub term: Term,
    /// Membership in force at `index`.
    pub membership: Membership,
    /// Where `membership` comes from: the log index and term of the configuration entry in
    /// force at `index` (the last one at or before it; `(0, 0)` for the configuration the
    /// cluster started with, never appended as an entry). `None` when unknown (a snapshot
    /// file of an older rcraft). With it known, the compacted prefix is known to hold no
    /// configuration entry after it (docs/ARCHITECTURE.md, "Protocol-aware recovery").
    pub membership_entry: Option<(LogIndex, Term)>,
    /// Size of the snapshot data in bytes.
    pub size_bytes: u64,
    /// CRC-32C of the whole snapshot data, checked by the receiver before installing.
    pub checksum: u32,
}
