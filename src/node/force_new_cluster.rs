//! `rcraft doctor force-new-cluster DATA_DIR`: turn a stopped survivor's data directory into
//! a one-node cluster that keeps everything the dry run says it keeps.
//!
//! After a quorum is lost for good, no entry can commit again: the survivors' membership
//! still counts the lost nodes. This rewrites the membership of one survivor so that it is
//! the only voter, the way a membership change would, by appending one membership entry to
//! its log (Raft thesis §4.1: the newest configuration in a log is the one in force, committed
//! or not). The node then elects itself at its next start, and its first commit (the new
//! leader's no-op) commits every entry it holds, the new membership entry included. Other
//! nodes are added back with `rcraft members add` and `rcraft serve --join` on fresh data
//! dirs.
//!
//! The new entry gets a term `N` higher than any this node has seen (its hard state's, its
//! last entry's, its snapshot's), so it cannot collide with an entry another node wrote at
//! the same index: no leader of term `N` ever existed. Synced entries the WAL lost (and the
//! snapshot does not cover) cannot be fetched from a peer any more: empty entries of term `N`
//! take their indexes, so the log has no hole and the node stops waiting to repair it. What
//! the snapshot holds and what the log holds before the loss are kept as they are.
//!
//! Crash safety, in the order of the writes (each durable before the next starts):
//! 1. the hard state is saved with term `N` and a vote for this node (storage/FORMAT.md §4.6,
//!    two slots, atomic): a crash here leaves the old membership and the old log with a
//!    higher term, which any node may reach by itself; running the command again continues;
//! 2. the entries are appended to the WAL and synced once (FORMAT.md §4.1): a crash before the
//!    sync leaves an unsynced tail that recovery cuts, so the log holds either none of the
//!    new entries or all of them (the membership entry is the last one written).
//!
//! The term is saved first because a log entry of a term above the node's current term would
//! let the node lead an older term with a newer entry in its log. The WAL's lock is held from
//! before the plan is checked until the end, so no node can start on the directory meanwhile;
//! a directory a node runs on is refused. Runs on the calling thread (the `rcraft` binary).

use super::doctor::{ForceNewClusterPlan, inspect};
use super::entry_codec::payload_bytes;
use rcraft_storage::{HardState, HardStateStore, RealFs, Record, Wal, WalOptions};
use rcraft_wire::{EntryPayload, Membership, NodeId};
use std::path::Path;
use std::sync::Arc;

/// What [`force_new_cluster`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    /// What was kept, as the dry run describes it.
    pub plan: ForceNewClusterPlan,
    /// The term of the new entries, saved as the node's term.
    pub term: u64,
    /// The hard state's term before.
    pub old_term: u64,
    /// Index of the membership entry that makes this node the only voter.
    pub membership_index: u64,
    /// Indexes of lost entries replaced by empty ones, both ends included.
    pub filled: Option<(u64, u64)>,
}

/// Makes the stopped node of `dir` the only voter of a new cluster. See the module docs.
/// `Err` lists why it refused; nothing was changed then, unless the error names a failed
/// write (the directory then holds the old state, or the old state with a higher term).
pub fn force_new_cluster(dir: &Path) -> Result<Forced, Vec<String>> {
    let before = inspect(dir);
    if let Ok(Some(pid)) = before.running_pid {
        return Err(vec![format!(
            "process {pid} holds the WAL lock of {}: stop the node first",
            dir.display()
        )]);
    }
    let plan = before.force_new_cluster_plan()?;
    // Holding the lock from here on, no node can start on the directory. Opening runs the
    // recovery the inspection simulated (a torn tail cut), nothing more.
    let fs = Arc::new(RealFs::default());
    let options = WalOptions {
        fs: fs.clone(),
        ..WalOptions::default()
    };
    let mut wal = Wal::open(&dir.join("wal"), options).map_err(|e| vec![e.to_string()])?;
    let snapshot_index = plan.snapshot.map_or(0, |(index, _)| index);
    let kept_last = plan.log_kept.map_or(snapshot_index, |(_, last)| last);
    let mut next = wal.last_index() + 1;
    if wal.last_index() < snapshot_index {
        // The log ends before the snapshot: a node would restart it after the snapshot.
        wal.reset(snapshot_index + 1)
            .map_err(|e| vec![format!("restarting the log after the snapshot: {e}")])?;
        next = snapshot_index + 1;
    }
    if next != kept_last + 1 {
        return Err(vec![format!(
            "the log ends at {} but the plan keeps entries through {kept_last}: did the data \
             dir change meanwhile? Nothing was changed",
            next - 1
        )]);
    }
    let mut hard_state = HardStateStore::open(fs, &dir.join("hard_state"))
        .map_err(|e| vec![format!("opening the hard state: {e}")])?;
    let old = hard_state.current();
    let snapshot_term = plan.snapshot.map_or(0, |(_, term)| term);
    let term = old.term.max(plan.last_term).max(snapshot_term) + 1;
    let filled = plan.lost.map(|(_, through)| (next, through));
    let membership_index = filled.map_or(next, |(_, through)| through + 1);
    hard_state
        .save(&HardState {
            term,
            vote: Some(plan.node_id),
            commit: old.commit,
            // The old cluster's votes no longer matter: this node alone is the new one.
            votes_unknown: false,
        })
        .map_err(|e| vec![format!("saving the hard state (term {term}): {e}")])?;
    let noop = payload_bytes(&EntryPayload::Noop);
    let alone = Membership::with_voters([NodeId(plan.node_id)]);
    let membership = payload_bytes(&EntryPayload::Membership(alone));
    let mut records: Vec<Record<'_>> = (next..membership_index)
        .map(|index| Record {
            index,
            term,
            payload: &noop,
        })
        .collect();
    records.push(Record {
        index: membership_index,
        term,
        payload: &membership,
    });
    wal.append(&records)
        .and_then(|()| wal.sync())
        .and_then(|()| wal.confirm())
        .map_err(|e| {
            vec![format!(
                "writing the membership entry at {membership_index}: {e} (the hard state \
                 already has term {term}: run the command again)"
            )]
        })?;
    Ok(Forced {
        plan,
        term,
        old_term: old.term,
        membership_index,
        filled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::doctor::{MembershipSource, Verdict};
    use crate::node::entry_codec::decode_payload;

    /// A stopped node 1's data dir: identity, initial voters 0,1,2, hard state term 3 and
    /// entries 1..=4 of term 3.
    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let identity = "node_id = 1\ncluster_id = 0x7\naddress = 127.0.0.1:4001\n";
        std::fs::write(path.join("identity"), identity).unwrap();
        std::fs::write(path.join("initial_voters"), "0,1,2\n").unwrap();
        let fs = Arc::new(RealFs::default());
        let mut hard_state = HardStateStore::open(fs, &path.join("hard_state")).unwrap();
        let state = HardState {
            term: 3,
            vote: Some(0),
            commit: 2,
            votes_unknown: false,
        };
        hard_state.save(&state).unwrap();
        let mut wal = Wal::open(&path.join("wal"), WalOptions::default()).unwrap();
        let noop = payload_bytes(&EntryPayload::Noop);
        let records: Vec<Record<'_>> = (1..=4)
            .map(|index| Record {
                index,
                term: 3,
                payload: &noop,
            })
            .collect();
        wal.append(&records).unwrap();
        wal.sync().unwrap();
        dir
    }

    /// The last entry of the log (index, term, payload) and the hard state.
    fn last_entry_and_hard_state(dir: &Path) -> ((u64, u64, EntryPayload), HardState) {
        let wal = Wal::open(&dir.join("wal"), WalOptions::default()).unwrap();
        let last = wal.last_index();
        let record = wal.read(last..last + 1).unwrap().remove(0);
        let payload = decode_payload(record.payload).unwrap();
        let fs = Arc::new(RealFs::default());
        let hard_state = HardStateStore::open(fs, &dir.join("hard_state"))
            .unwrap()
            .current();
        ((last, record.term, payload), hard_state)
    }

    #[test]
    fn the_node_becomes_the_only_voter_after_a_term_above_any_seen() {
        let dir = data_dir();
        let forced = force_new_cluster(dir.path()).unwrap();
        assert_eq!((forced.term, forced.old_term), (4, 3));
        assert_eq!((forced.membership_index, forced.filled), (5, None));
        assert_eq!(forced.plan.log_kept, Some((1, 4)));
        let ((index, term, payload), hard_state) = last_entry_and_hard_state(dir.path());
        let alone = Membership::with_voters([NodeId(1)]);
        assert_eq!((index, term), (5, 4));
        assert_eq!(payload, EntryPayload::Membership(alone.clone()));
        assert_eq!((hard_state.term, hard_state.vote), (4, Some(1)));
        let report = inspect(dir.path());
        assert_eq!(report.verdict(), Verdict::Healthy);
        assert_eq!(
            report.membership(),
            Some((alone, MembershipSource::LogEntry(5)))
        );
    }

    #[test]
    fn a_run_stopped_after_saving_the_term_is_completed_by_the_next_one() {
        let dir = data_dir();
        // What a crash after the first write leaves: the old log, a higher term.
        let fs = Arc::new(RealFs::default());
        let mut hard_state = HardStateStore::open(fs, &dir.path().join("hard_state")).unwrap();
        let state = HardState {
            term: 4,
            vote: Some(1),
            commit: 2,
            votes_unknown: false,
        };
        hard_state.save(&state).unwrap();
        drop(hard_state);
        let report = inspect(dir.path());
        let old = Membership::with_voters([NodeId(0), NodeId(1), NodeId(2)]);
        assert_eq!(
            report.membership().map(|(m, _)| m),
            Some(old),
            "the old state"
        );
        let forced = force_new_cluster(dir.path()).unwrap();
        assert_eq!((forced.term, forced.membership_index), (5, 5));
        let ((_, term, payload), hard_state) = last_entry_and_hard_state(dir.path());
        let alone = Membership::with_voters([NodeId(1)]);
        assert_eq!((term, payload), (5, EntryPayload::Membership(alone)));
        assert_eq!(hard_state.term, 5);
    }

    #[test]
    fn synced_entries_the_disk_lost_are_replaced_by_empty_ones_before_the_membership() {
        let dir = data_dir();
        // Bit rot in entry 3 of the segment: entries 3..=4 were synced and are lost.
        let segment = dir.path().join("wal").join(format!("{:020}.wal", 1));
        let mut bytes = std::fs::read(&segment).unwrap();
        let mut at = 32; // The segment header, then records led by their whole length.
        for _ in 0..2 {
            at += u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        }
        bytes[at + 16] ^= 0x04; // The term field of entry 3.
        std::fs::write(&segment, &bytes).unwrap();
        let report = inspect(dir.path());
        assert_eq!(report.lost_to_fetch(), Some((3, 4)), "{:?}", report.wal);

        let forced = force_new_cluster(dir.path()).unwrap();
        assert_eq!(forced.plan.log_kept, Some((1, 2)));
        assert_eq!((forced.filled, forced.membership_index), (Some((3, 4)), 5));
        let wal = Wal::open(&dir.path().join("wal"), WalOptions::default()).unwrap();
        assert!(wal.lost().is_none(), "nothing is claimed lost any more");
        let records = wal.read(3..6).unwrap();
        let decoded: Vec<(u64, EntryPayload)> = records
            .iter()
            .map(|r| (r.term, decode_payload(r.payload).unwrap()))
            .collect();
        let alone = Membership::with_voters([NodeId(1)]);
        let expected = [
            (4, EntryPayload::Noop),
            (4, EntryPayload::Noop),
            (4, EntryPayload::Membership(alone)),
        ];
        assert_eq!(decoded, expected);
        drop(wal);
        assert_eq!(inspect(dir.path()).verdict(), Verdict::Healthy);
    }

    #[test]
    fn a_dir_without_identity_is_refused_unchanged() {
        let dir = data_dir();
        std::fs::remove_file(dir.path().join("identity")).unwrap();
        let why = force_new_cluster(dir.path()).unwrap_err();
        assert!(why[0].contains("no identity file"), "{why:?}");
        let ((index, term, _), hard_state) = last_entry_and_hard_state(dir.path());
        assert_eq!((index, term, hard_state.term), (4, 3, 3));
    }
}
