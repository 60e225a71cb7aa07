//! The simulated state machine: an append-only list of write ids, applied by the node's own
//! apply thread handler, with snapshots.
//!
//! [`NodeStateMachine`] is what a simulated node runs: `rcraft::node::testing::SimApply` (the
//! apply thread's `ApplyHandler`: the session table, proposals answered, snapshots written and
//! restored in the node's format) over the write list. Rebuilt from the durable snapshot on
//! restart. A registration creates a session, a retried write is answered from the table and
//! not applied again, a write of an unknown client is refused, as in a node. Invariant: the
//! list holds, in log order, the write id of every command entry through the applied index that
//! the session table let apply (so each write id at most once, which the list checks).
//!
//! [`AppendList`] is the checker's model of the same state (over the node's session table,
//! `SimSessions`): it replays the committed prefix to judge every restored snapshot. Both make
//! linearizability easy to check: every read returns a prefix of the one committed sequence.

use crate::disk::StoredSnapshot;
use rcraft::core::ApplyOutcome;
use rcraft::node::testing::{SimAnswer, SimApply, SimSessionCheck, SimSessions};
use rcraft::wire::{
    ClientResponseBody, Entry, EntryPayload, LogIndex, Membership, Session, SnapshotMeta, Term,
};
use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};

/// Bytes of a write id at the start of every command.
const WRITE_ID_BYTES: usize = 8;

/// What applying one entry did, for the client waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Not a client command (a no-op or a configuration).
    Other,
    /// A registration: the session's client id.
    Registered(u64),
    /// The write was applied now.
    Write,
    /// A retry of a write already applied: answered, not applied again.
    Duplicate,
    /// Refused for good (unknown client, reserved sequence): never applied.
    RefusedDefinite,
    /// Refused, the outcome unknown to the client (an older sequence than the last applied).
    RefusedUnknown,
}

/// The append-list state machine of one node.
#[derive(Debug)]
pub(crate) struct AppendList {
    /// Highest applied index.
    pub(crate) applied_index: LogIndex,
    /// Term of the entry at `applied_index`.
    pub(crate) applied_term: Term,
    /// Write ids in application order.
    pub(crate) writes: Vec<u64>,
    /// The configuration in force at `applied_index`.
    pub(crate) membership: Membership,
    /// The node's session table, saved in every snapshot with `writes`.
    sessions: SimSessions,
    /// The ids in `writes`, to find a write applied twice.
    applied_ids: BTreeSet<u64>,
}

/// A command carrying `write_id`, padded with `filler_bytes` bytes so entry sizes vary.
pub(crate) fn encode_write(write_id: u64, filler_bytes: usize) -> Vec<u8> {
    let mut data = write_id.to_le_bytes().to_vec();
    data.resize(WRITE_ID_BYTES + filler_bytes, 0xAB);
    data
}

/// The write id a command carries, if it is one of ours.
pub(crate) fn decode_write(data: &[u8]) -> Option<u64> {
    let head: [u8; WRITE_ID_BYTES] = data.get(..WRITE_ID_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// FNV-1a, 32 bits: the snapshot checksum. Any deterministic checksum does for the sim.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    // CRC-32C, as the storage crate verifies a received snapshot's data against it.
    crc32c::crc32c(bytes)
}

impl AppendList {
    /// An empty state machine of a cluster that starts with `initial` configuration, whose
    /// session table remembers at most `sessions_max` clients.
    pub(crate) fn new(initial: &Membership, sessions_max: usize) -> AppendList {
        AppendList {
            applied_index: LogIndex(0),
            applied_term: Term(0),
            writes: Vec::new(),
            membership: initial.clone(),
            sessions: SimSessions::with_capacity(sessions_max),
            applied_ids: BTreeSet::new(),
        }
    }

    /// Applies one committed entry, as the apply thread does (sessions first); the caller has
    /// checked it is the next one. Errs when a write would take effect a second time.
    pub(crate) fn apply(&mut self, entry: &Entry) -> Result<Applied, String> {
        let applied = match &entry.payload {
            EntryPayload::Command {
                session: Some(Session::REGISTER),
                ..
            } => Applied::Registered(self.sessions.register(entry.index)),
            EntryPayload::Command { session, data } => {
                let write_id = decode_write(data).ok_or_else(|| {
                    format!("entry {} carries a command no client sent", entry.index)
                })?;
                let check = session.map_or(SimSessionCheck::Apply, |s| self.sessions.check(s));
                match check {
                    SimSessionCheck::Apply => {
                        if !self.applied_ids.insert(write_id) {
                            return Err(format!(
                                "exactly-once: write {write_id} (session {session:?}) is applied \
                                 a second time, at index {}",
                                entry.index
                            ));
                        }
                        self.writes.push(write_id);
                        if let Some(session) = session {
                            let response = write_id.to_le_bytes().to_vec();
                            self.sessions.record(*session, entry.index, response);
                        }
                        Applied::Write
                    }
                    SimSessionCheck::Duplicate(_) => Applied::Duplicate,
                    SimSessionCheck::Stale => Applied::RefusedUnknown,
                    SimSessionCheck::Expired | SimSessionCheck::ReservedSequence => {
                        Applied::RefusedDefinite
                    }
                    SimSessionCheck::Register => {
                        unreachable!("registrations are matched above")
                    }
                }
            }
            EntryPayload::Membership(membership) => {
                self.membership = membership.clone();
                Applied::Other
            }
            _ => Applied::Other,
        };
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        Ok(applied)
    }

    /// The snapshot bytes, in the node's format: the session table, then every write id,
    /// little-endian.
    pub(crate) fn snapshot_bytes(&self) -> Vec<u8> {
        let state: Vec<u8> = self.writes.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.sessions.snapshot_bytes(&state)
    }

    /// Rebuilds a state machine from snapshot bytes, verifying size and checksum.
    pub(crate) fn restore(
        meta: &SnapshotMeta,
        bytes: &[u8],
        sessions_max: usize,
    ) -> Result<AppendList, String> {
        if bytes.len() as u64 != meta.size_bytes || checksum(bytes) != meta.checksum {
            return Err(format!(
                "snapshot at {} does not match its meta (size {} vs {}, checksum)",
                meta.index,
                bytes.len(),
                meta.size_bytes
            ));
        }
        let (sessions, state) = SimSessions::restore(bytes, sessions_max)
            .map_err(|e| format!("snapshot at {}: {e}", meta.index))?;
        let writes: Vec<u64> = state
            .chunks_exact(WRITE_ID_BYTES)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; WRITE_ID_BYTES])))
            .collect();
        let applied_ids: BTreeSet<u64> = writes.iter().copied().collect();
        if applied_ids.len() != writes.len() {
            return Err(format!(
                "exactly-once: the snapshot at {} holds a write id twice",
                meta.index
            ));
        }
        Ok(AppendList {
            applied_index: meta.index,
            applied_term: meta.term,
            writes,
            membership: meta.membership.clone(),
            sessions,
            applied_ids,
        })
    }
}

/// The write list as a node's `StateMachine`, shared with the simulator that reads it.
#[derive(Debug, Default)]
struct ListState {
    /// Write ids in application order.
    writes: Vec<u64>,
    /// The ids in `writes`.
    ids: BTreeSet<u64>,
    /// The indexes of the commands the state machine itself applied since the simulator last
    /// took them (a session's duplicate is answered without reaching it).
    applied_now: BTreeSet<LogIndex>,
    /// What went wrong inside `apply` (which cannot fail), for the simulator to report.
    violation: Option<String>,
}

/// The state machine a simulated node's apply handler runs.
struct SharedList(Arc<Mutex<ListState>>);

fn lock(list: &Mutex<ListState>) -> std::sync::MutexGuard<'_, ListState> {
    list.lock().unwrap_or_else(|e| e.into_inner())
}

impl rcraft::StateMachine for SharedList {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Vec<u8> {
        let mut list = lock(&self.0);
        let Some(write_id) = decode_write(command) else {
            list.violation
                .get_or_insert(format!("entry {index} carries a command no client sent"));
            return Vec::new();
        };
        if !list.ids.insert(write_id) {
            list.violation.get_or_insert(format!(
                "exactly-once: write {write_id} is applied a second time, at index {index}"
            ));
        }
        list.writes.push(write_id);
        list.applied_now.insert(index);
        write_id.to_le_bytes().to_vec()
    }

    fn query(&self, _query: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn snapshot(&self, out: &mut dyn io::Write) -> io::Result<()> {
        let list = lock(&self.0);
        let state: Vec<u8> = list.writes.iter().flat_map(|w| w.to_le_bytes()).collect();
        out.write_all(&state)
    }

    fn restore(&mut self, input: &mut dyn io::Read) -> io::Result<()> {
        let mut state = Vec::new();
        input.read_to_end(&mut state)?;
        let writes: Vec<u64> = state
            .chunks_exact(WRITE_ID_BYTES)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; WRITE_ID_BYTES])))
            .collect();
        let ids: BTreeSet<u64> = writes.iter().copied().collect();
        if ids.len() != writes.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "exactly-once: the snapshot holds a write id twice",
            ));
        }
        *lock(&self.0) = ListState {
            writes,
            ids,
            applied_now: BTreeSet::new(),
            violation: None,
        };
        Ok(())
    }
}

/// A simulated node's applying side: the node's own apply handler
/// (`rcraft::node::testing::SimApply`: sessions, proposals answered, snapshots written and
/// restored) over the write list.
pub(crate) struct NodeStateMachine {
    apply: SimApply,
    list: Arc<Mutex<ListState>>,
    /// The apply handler's replies to the entries of the last batch, in order.
    replies: Vec<ClientResponseBody>,
}

impl NodeStateMachine {
    /// A node's state machine restored from `durable` (its disk's snapshot), if any; its
    /// core keeps `retain_entries` entries behind each snapshot it takes.
    pub(crate) fn new(
        initial: &Membership,
        sessions_max: usize,
        durable: Option<&StoredSnapshot>,
        retain_entries: u64,
    ) -> Result<NodeStateMachine, String> {
        let list = Arc::new(Mutex::new(ListState::default()));
        let current = durable.map(|s| (s.meta.clone(), s.bytes.clone()));
        let apply = SimApply::new(
            Box::new(SharedList(list.clone())),
            current,
            initial.clone(),
            sessions_max,
            retain_entries,
        )?;
        Ok(NodeStateMachine {
            apply,
            list,
            replies: Vec::new(),
        })
    }

    /// Highest applied index.
    pub(crate) fn applied_index(&self) -> LogIndex {
        self.apply.applied().0
    }

    /// The write ids applied, in order.
    /// The apply handler's replies to the entries of the last batch, in order (what a
    /// client waiting on each would be sent).
    pub(crate) fn take_replies(&mut self) -> Vec<ClientResponseBody> {
        std::mem::take(&mut self.replies)
    }

    pub(crate) fn writes(&self) -> Vec<u64> {
        lock(&self.list).writes.clone()
    }

    /// Applies committed `entries` through the node's apply handler as one batch (the caller
    /// checked they follow the applied index) and says what it answered for each, in order,
    /// and what the handler reports to the core for the batch (`ApplyOutcome::Applied`).
    /// Errs when a write takes effect twice.
    pub(crate) fn apply_batch(
        &mut self,
        entries: &[Entry],
    ) -> Result<(Vec<Applied>, Option<ApplyOutcome>), String> {
        let batch = self.apply.apply_batch(entries.to_vec())?;
        self.replies = batch.replies;
        let mut list = lock(&self.list);
        if let Some(violation) = &list.violation {
            return Err(violation.clone());
        }
        let applied_now = std::mem::take(&mut list.applied_now);
        let register = Some(Session::REGISTER);
        let mut applied = Vec::with_capacity(entries.len());
        for (entry, (_, answer)) in entries.iter().zip(batch.answers) {
            applied.push(match (&entry.payload, answer) {
                (EntryPayload::Command { session, .. }, SimAnswer::Ok(result))
                    if *session == register =>
                {
                    let id: [u8; 8] = result
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or("a registration answered no client id")?;
                    Applied::Registered(u64::from_le_bytes(id))
                }
                (EntryPayload::Command { .. }, SimAnswer::Ok(_)) => {
                    if applied_now.contains(&entry.index) {
                        Applied::Write
                    } else {
                        Applied::Duplicate
                    }
                }
                (EntryPayload::Command { .. }, SimAnswer::Refused { definite: true, .. }) => {
                    Applied::RefusedDefinite
                }
                (
                    EntryPayload::Command { .. },
                    SimAnswer::Refused {
                        definite: false, ..
                    },
                ) => Applied::RefusedUnknown,
                (_, SimAnswer::Ok(_)) => Applied::Other,
                (_, SimAnswer::Refused { message, .. }) => {
                    return Err(format!("entry {} was refused: {message}", entry.index));
                }
            });
        }
        Ok((applied, batch.reported))
    }

    /// A snapshot of every applied entry, written by the node's apply handler, and what the
    /// handler reports to the core about it; `None` when its latest snapshot already covers
    /// them.
    pub(crate) fn snapshot(&mut self) -> Result<Option<(StoredSnapshot, ApplyOutcome)>, String> {
        Ok(self
            .apply
            .take_snapshot()?
            .map(|((meta, bytes), taken)| (StoredSnapshot { meta, bytes }, taken)))
    }

    /// Restores the installed snapshot `meta` from `current` (storage's current snapshot) as
    /// the node's apply handler does.
    pub(crate) fn restore(
        &mut self,
        meta: &SnapshotMeta,
        current: &StoredSnapshot,
    ) -> Result<(), String> {
        self.apply
            .restore(meta.clone(), (current.meta.clone(), current.bytes.clone()))?;
        let restored = self.applied_index();
        if restored < current.meta.index.min(meta.index) {
            return Err(format!(
                "restoring snapshot {} left the state machine at {restored}",
                meta.index
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft::wire::NodeId;

    impl NodeStateMachine {
        /// Applies one committed entry as a batch of its own.
        fn apply(&mut self, entry: &Entry) -> Result<Applied, String> {
            let (mut applied, _) = self.apply_batch(std::slice::from_ref(entry))?;
            applied.pop().ok_or_else(|| "no answer".to_string())
        }
    }

    fn command(index: u64, session: Option<Session>, data: Vec<u8>) -> Entry {
        Entry::new(
            Term(1),
            LogIndex(index),
            EntryPayload::Command {
                session,
                data: data.into(),
            },
        )
    }

    #[test]
    fn a_retried_write_is_applied_once_and_the_table_survives_a_snapshot() {
        let initial = Membership::with_voters([NodeId(0)]);
        let mut sm = AppendList::new(&initial, 4);
        let register = command(1, Some(Session::REGISTER), Vec::new());
        assert_eq!(sm.apply(&register), Ok(Applied::Registered(1)));
        let session = Some(Session {
            client_id: 1,
            sequence: 1,
        });
        let write = command(2, session, encode_write(7, 3));
        assert_eq!(sm.apply(&write), Ok(Applied::Write));
        let bytes = sm.snapshot_bytes();
        let meta = SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
            membership: initial.clone(),
            membership_entry: None,
            size_bytes: bytes.len() as u64,
            checksum: checksum(&bytes),
        };
        let mut restored = AppendList::restore(&meta, &bytes, 4).unwrap();
        // The retry, at a later index, after a restart from the snapshot.
        let retry = command(3, session, encode_write(7, 0));
        assert_eq!(restored.apply(&retry), Ok(Applied::Duplicate));
        assert_eq!(restored.writes, vec![7]);
        // A client the table does not hold is refused.
        let unknown = Some(Session {
            client_id: 9,
            sequence: 1,
        });
        let refused = command(4, unknown, encode_write(8, 0));
        assert_eq!(restored.apply(&refused), Ok(Applied::RefusedDefinite));
        assert_eq!(restored.writes, vec![7]);
    }

    #[test]
    fn the_nodes_apply_handler_dedups_a_retry_across_a_snapshot_restore() {
        let initial = Membership::with_voters([NodeId(0)]);
        let mut node = NodeStateMachine::new(&initial, 4, None, 0).unwrap();
        let register = command(1, Some(Session::REGISTER), Vec::new());
        assert_eq!(node.apply(&register), Ok(Applied::Registered(1)));
        let session = Some(Session {
            client_id: 1,
            sequence: 1,
        });
        assert_eq!(
            node.apply(&command(2, session, encode_write(7, 3))),
            Ok(Applied::Write)
        );
        let (snapshot, _) = node.snapshot().unwrap().expect("a snapshot of index 2");
        assert_eq!(snapshot.meta.index, LogIndex(2));
        assert!(
            node.snapshot().unwrap().is_none(),
            "it covers every applied entry"
        );
        // Another node installs it and gets the retry.
        let mut other = NodeStateMachine::new(&initial, 4, None, 0).unwrap();
        other.restore(&snapshot.meta, &snapshot).unwrap();
        assert_eq!(other.applied_index(), LogIndex(2));
        let retry = command(3, session, encode_write(7, 0));
        assert_eq!(other.apply(&retry), Ok(Applied::Duplicate));
        assert_eq!(other.writes(), vec![7]);
        let unknown = Some(Session {
            client_id: 9,
            sequence: 1,
        });
        let refused = command(4, unknown, encode_write(8, 0));
        assert_eq!(other.apply(&refused), Ok(Applied::RefusedDefinite));
        // Without a session nothing dedups a repeated write: the handler's state machine
        // reports it applied twice.
        let again = other.apply(&command(5, None, encode_write(7, 0)));
        assert!(again.unwrap_err().contains("exactly-once"));
    }

    /// A batch goes through the handler at once: each entry gets its own answer (a retry
    /// in the same batch as its first application is a duplicate), and the report to the core
    /// is the handler's, through the batch's last entry.
    #[test]
    fn a_batch_is_answered_per_entry_and_reported_by_the_handler() {
        let initial = Membership::with_voters([NodeId(0)]);
        let mut node = NodeStateMachine::new(&initial, 4, None, 0).unwrap();
        let session = Some(Session {
            client_id: 1,
            sequence: 1,
        });
        let batch = [
            command(1, Some(Session::REGISTER), Vec::new()),
            command(2, session, encode_write(7, 3)),
            command(3, session, encode_write(7, 0)),
            Entry::new(Term(1), LogIndex(4), EntryPayload::Noop),
        ];
        let (applied, reported) = node.apply_batch(&batch).unwrap();
        assert_eq!(
            applied,
            vec![
                Applied::Registered(1),
                Applied::Write,
                Applied::Duplicate,
                Applied::Other
            ]
        );
        assert_eq!(reported, Some(ApplyOutcome::Applied { index: LogIndex(4) }));
        assert_eq!(node.writes(), vec![7]);
        assert_eq!(node.applied_index(), LogIndex(4));
    }

    /// The checker's model refuses a snapshot whose bytes do not match its description, and
    /// one whose state holds a write twice (the write applied twice before it was taken).
    #[test]
    fn a_snapshot_unlike_its_meta_or_holding_a_write_twice_is_rejected() {
        let initial = Membership::with_voters([NodeId(0)]);
        let meta_of = |bytes: &[u8]| SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
            membership: initial.clone(),
            membership_entry: None,
            size_bytes: bytes.len() as u64,
            checksum: checksum(bytes),
        };
        let mut sm = AppendList::new(&initial, 4);
        sm.apply(&command(1, None, encode_write(5, 0))).unwrap();
        sm.apply(&command(2, None, encode_write(6, 0))).unwrap();
        let bytes = sm.snapshot_bytes();
        assert!(AppendList::restore(&meta_of(&bytes), &bytes, 4).is_ok());
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = AppendList::restore(&meta_of(&bytes), &flipped, 4).unwrap_err();
        assert!(err.contains("does not match its meta"), "{err}");
        // The same write id twice in the state, as a node that applied it twice would save.
        sm.writes.push(5);
        let twice = sm.snapshot_bytes();
        let err = AppendList::restore(&meta_of(&twice), &twice, 4).unwrap_err();
        assert!(err.starts_with("exactly-once"), "{err}");
    }

    #[test]
    fn a_write_applied_twice_is_rejected() {
        let mut sm = AppendList::new(&Membership::with_voters([NodeId(0)]), 4);
        // Without a session nothing dedups it: the second application must be caught.
        assert!(sm.apply(&command(1, None, encode_write(5, 0))).is_ok());
        let again = sm.apply(&command(2, None, encode_write(5, 0)));
        assert!(again.unwrap_err().contains("exactly-once"));
    }
}
