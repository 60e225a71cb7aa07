//! `rcraft doctor`: what a data directory holds, read without changing it.
//!
//! [`inspect`] reads the identity and initial-voter files, both hard-state slots, the WAL and
//! the snapshots of a data directory, and judges whether a node would start on it as it is,
//! start after repairing something, or refuse. The WAL and snapshot stores are opened on a
//! [`ShadowFs`], so the recovery that runs is the node's own, and whatever it would change on
//! disk (a torn tail cut, segments removed after damage, unfinished files deleted) happens in
//! memory only and is reported. Nothing in the directory is written, created, removed or
//! locked; a node running on it is detected from `/proc/locks` and left alone.
//!
//! Runs on the calling thread; the binary renders the [`Report`] as text or JSON.

use super::data_dir::IdentityError;
use super::entry_codec::{PayloadError, decode_payload};
use super::initial_voters::InitialVotersError;
use super::storage_error::DecodeProblem;
use super::{data_dir, initial_voters};
use rcraft_storage::{
    HardState, HardStateSlot, Lost, ShadowFs, SnapshotStore, Wal, WalOptions, fs::lock_holder,
    read_hard_state_slots, snapshot_point_of_file,
};
use rcraft_wire::{EntryPayload, Membership, NodeId};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a part of the data directory could not be read (shared, so that a [`Report`] clones).
#[derive(Debug, Clone)]
pub enum PartError {
    /// The `identity` file.
    Identity(Arc<IdentityError>),
    /// The `initial_voters` file.
    InitialVoters(Arc<InitialVotersError>),
    /// The storage crate's error opening or reading the hard state, the WAL or the snapshots.
    Store(Arc<rcraft_storage::Error>),
    /// An I/O error outside the stores.
    Io {
        /// What was being done, e.g. "reading /proc/locks".
        doing: String,
        /// The cause.
        source: Arc<std::io::Error>,
    },
}

impl fmt::Display for PartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartError::Identity(e) => e.fmt(f),
            PartError::InitialVoters(e) => e.fmt(f),
            PartError::Store(e) => e.fmt(f),
            PartError::Io { doing, source } => write!(f, "{doing}: {source}"),
        }
    }
}

impl std::error::Error for PartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PartError::Identity(e) => Some(e.as_ref()),
            PartError::InitialVoters(e) => Some(e.as_ref()),
            PartError::Store(e) => Some(e.as_ref()),
            PartError::Io { source, .. } => Some(source.as_ref()),
        }
    }
}

impl From<rcraft_storage::Error> for PartError {
    fn from(e: rcraft_storage::Error) -> PartError {
        PartError::Store(Arc::new(e))
    }
}

fn io_error(doing: String) -> impl FnOnce(std::io::Error) -> PartError {
    move |source| PartError::Io {
        doing,
        source: Arc::new(source),
    }
}

/// What the data directory's `identity` file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The node the directory belongs to.
    pub node_id: u64,
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// The node's address when the file was written.
    pub address: String,
}

/// Both hard-state slots and what they add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardStateReport {
    /// Slot 0 and slot 1 as read.
    pub slots: [HardStateSlot; 2],
    /// The state of the valid slot with the higher sequence; `None` when neither is valid.
    pub current: Option<HardState>,
    /// Both slots valid and identical (what every mirrored save leaves).
    pub agree: bool,
}

/// A run of log entries of one term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermRun {
    /// The term.
    pub term: u64,
    /// First index of the run.
    pub first: u64,
    /// Last index of the run.
    pub last: u64,
}

/// One WAL segment after recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// The segment file.
    pub path: PathBuf,
    /// Index of its first record (its name).
    pub first_index: u64,
    /// Records it holds.
    pub records: u64,
}

/// The WAL as recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalReport {
    /// First index held (`last_index + 1` when empty).
    pub first_index: u64,
    /// Last index held (`first_index - 1` when empty).
    pub last_index: u64,
    /// Segments, oldest first.
    pub segments: Vec<SegmentReport>,
    /// Terms of the entries, as runs in index order.
    pub terms: Vec<TermRun>,
    /// One past the highest index the segment headers claim synced (0: none records one).
    pub synced_frontier: u64,
    /// Synced entries recovery found missing or damaged.
    pub lost: Option<Lost>,
    /// What recovery cuts off after the last good record when nothing synced was lost: an
    /// unsynced (torn) tail, never acknowledged. Each is a change from [`ShadowFs::changes`].
    pub torn_tail: Vec<String>,
    /// Membership entries in the log, in order.
    pub memberships: Vec<(u64, Membership)>,
    /// Entries whose payload does not decode: index and why.
    pub undecodable: Vec<(u64, PayloadError)>,
}

/// The newest complete snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    /// The file.
    pub path: PathBuf,
    /// Last index it covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Bytes of state-machine data.
    pub data_bytes: u64,
    /// The membership it records, or why it does not decode.
    pub membership: Result<Membership, DecodeProblem>,
    /// Whether the data checksum matched (`Err` names the mismatch).
    pub data_verified: Result<(), String>,
}

/// Everything about the snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotsReport {
    /// The newest complete snapshot, verified; `None` when there is none.
    pub latest: Option<SnapshotReport>,
    /// Names of every complete snapshot file (`snap-<index>-<term>.snap`).
    pub files: Vec<String>,
    /// A partially received snapshot is kept to resume.
    pub partial: bool,
}

/// What [`inspect`] found. Each part is `Err` (in words) when it could not be read, `None`
/// when the file or directory does not exist.
#[derive(Debug, Clone)]
pub struct Report {
    /// The data directory.
    pub dir: PathBuf,
    /// The pid of a process holding the WAL's lock (a node running on the directory).
    pub running_pid: Result<Option<u32>, PartError>,
    /// The `identity` file.
    pub identity: Result<Option<Identity>, PartError>,
    /// The `initial_voters` file (empty: the node joined a running cluster).
    pub initial_voters: Result<Option<Vec<NodeId>>, PartError>,
    /// The `hard_state` file.
    pub hard_state: Result<Option<HardStateReport>, PartError>,
    /// The `wal` directory.
    pub wal: Result<Option<WalReport>, PartError>,
    /// The `snapshots` directory.
    pub snapshots: Result<Option<SnapshotsReport>, PartError>,
    /// The `repair_claim` file: the range of entries a start after a damaged snapshot claimed
    /// lost and fetches again (storage/FORMAT.md §4.9), as (from, through); or why it does
    /// not read.
    pub repair_claim: Result<Option<(u64, u64)>, String>,
    /// What opening the stores would change on disk (from the shadow), in order.
    pub changes: Vec<String>,
}

/// Where the membership in force at the end of the log comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipSource {
    /// The last membership entry in the log, at this index.
    LogEntry(u64),
    /// The newest snapshot.
    Snapshot,
    /// The stored initial voters (no membership entry or snapshot yet).
    InitialVoters,
}

/// What a node started on the directory would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to repair.
    Healthy,
    /// Starts, after repairing what is listed.
    Repair(Vec<String>),
    /// Refuses to start, for the reasons listed.
    Refuse(Vec<String>),
}

impl Report {
    /// The membership in force at the end of the log and where it comes from; `None` when
    /// nothing records one.
    pub fn membership(&self) -> Option<(Membership, MembershipSource)> {
        if let Ok(Some(wal)) = &self.wal
            && let Some((index, m)) = wal.memberships.last()
        {
            return Some((m.clone(), MembershipSource::LogEntry(*index)));
        }
        if let Ok(Some(snapshots)) = &self.snapshots
            && let Some(latest) = &snapshots.latest
            && let Ok(m) = &latest.membership
        {
            return Some((m.clone(), MembershipSource::Snapshot));
        }
        match &self.initial_voters {
            Ok(Some(voters)) => Some((
                Membership::with_voters(voters.iter().copied()),
                MembershipSource::InitialVoters,
            )),
            _ => None,
        }
    }

    /// The synced entries the WAL lost that the newest snapshot does not cover (as the node
    /// computes them at start): those it must fetch again from a peer.
    pub fn lost_to_fetch(&self) -> Option<(u64, u64)> {
        let Ok(Some(wal)) = &self.wal else {
            return None;
        };
        let lost = wal.lost.as_ref()?;
        let after = match &self.snapshots {
            Ok(Some(s)) => s.latest.as_ref().map_or(0, |l| l.index),
            _ => 0,
        };
        (lost.through > after).then(|| (lost.from.max(after + 1), lost.through))
    }

    /// What a node started on the directory would do.
    pub fn verdict(&self) -> Verdict {
        let mut refuse = Vec::new();
        let mut repair = Vec::new();
        let none = matches!(self.hard_state, Ok(None))
            && matches!(self.wal, Ok(None))
            && matches!(self.snapshots, Ok(None));
        if none {
            refuse.push(format!(
                "{} holds no rcraft state (no hard_state, wal or snapshots): not a data dir, or \
                 one no node has run on",
                self.dir.display()
            ));
        }
        if let Err(e) = &self.identity {
            refuse.push(format!("identity: {e}"));
        }
        if let Err(e) = &self.initial_voters {
            refuse.push(format!("initial voters: {e}"));
        }
        let damaged = |hs: &HardStateReport| {
            hs.current.is_none()
                || hs
                    .slots
                    .iter()
                    .any(|slot| matches!(slot, HardStateSlot::Damaged(_)))
        };
        const VOTES_UNKNOWN: &str = "whom this node voted for is unknown: it starts, and \
                                     neither votes nor campaigns until every other voter has \
                                     told its current term";
        match &self.hard_state {
            Err(e) => refuse.push(format!("hard state: {e}")),
            Ok(Some(hs)) if damaged(hs) => repair.push(format!(
                "hard state: {}; both are rewritten, and {VOTES_UNKNOWN}",
                if hs.current.is_none() {
                    "no valid slot (both damaged or empty)"
                } else {
                    "a slot is damaged"
                }
            )),
            Ok(Some(hs)) if hs.current.is_some_and(|s| s.votes_unknown) => {
                repair.push(format!("hard state: marked votes unknown; {VOTES_UNKNOWN}"))
            }
            Ok(Some(hs)) if !hs.agree => repair.push(
                "hard state: the slots differ; both are rewritten with the newest state"
                    .to_string(),
            ),
            _ => {}
        }
        match &self.wal {
            Err(e) => refuse.push(format!("WAL: {e}")),
            Ok(Some(wal)) => {
                match self.lost_to_fetch() {
                    Some((from, through)) => repair.push(format!(
                        "WAL: entries {from}..={through} must be fetched again from a peer \
                         before this node votes or counts toward a commit"
                    )),
                    None if wal.lost.is_some() => repair.push(
                        "WAL: the lost entries are all in the snapshot; the log is cut there"
                            .to_string(),
                    ),
                    None => {}
                }
                if let Some((index, why)) = wal.undecodable.first() {
                    refuse.push(format!("WAL: entry {index} does not decode: {why}"));
                }
            }
            Ok(None) => {}
        }
        match (&self.repair_claim, self.claim_outstanding()) {
            (Ok(Some(_)), Some((from, through))) => repair.push(format!(
                "repair_claim: entries {from}..={through} were lost from this node's disk (a \
                 damaged snapshot, or a log reset before lost entries were fetched again); they \
                 are fetched from the leader, and until then the node votes only for a \
                 candidate whose log covers them"
            )),
            (Ok(Some((_, through))), None) => repair.push(format!(
                "repair_claim: entries through {through} are held again; the claim is removed"
            )),
            (Ok(None), _) => {}
            (Err(e), _) => refuse.push(e.clone()),
        }
        // A damaged snapshot is set aside and its state rebuilt from the log or fetched from
        // the leader (docs/ARCHITECTURE.md, "A damaged snapshot at start").
        if let Some(damage) = self.snapshot_damage() {
            repair.push(format!(
                "{damage}; the node moves the file aside (.damaged) and rebuilds the state from \
                 its log or fetches it from the leader (the only server of a cluster refuses)"
            ));
        }
        match &self.snapshots {
            Err(PartError::Store(e)) if e.is_corruption() => {}
            Err(e) => refuse.push(format!("snapshots: {e}")),
            Ok(Some(s)) => {
                if let Some(latest) = &s.latest {
                    if let Err(e) = &latest.membership {
                        refuse.push(format!(
                            "snapshot {}: membership does not decode: {e}",
                            latest.path.display()
                        ));
                    }
                }
            }
            Ok(None) => {}
        }
        for change in &self.changes {
            repair.push(format!("on open: {change}"));
        }
        if !refuse.is_empty() {
            Verdict::Refuse(refuse)
        } else if !repair.is_empty() {
            Verdict::Repair(repair)
        } else {
            Verdict::Healthy
        }
    }
}

/// Reads the data directory `dir` without changing it. See the module docs.
pub fn inspect(dir: &Path) -> Report {
    let shadow = ShadowFs::new();
    let wal_dir = dir.join("wal");
    let running_pid = lock_holder(&wal_dir).map_err(io_error("reading /proc/locks".to_string()));
    let identity = data_dir::read_recorded(dir)
        .map(|found| {
            found.map(|(node_id, cluster_id, address)| Identity {
                node_id,
                cluster_id,
                address,
            })
        })
        .map_err(|e| PartError::Identity(Arc::new(e)));
    let initial_voters =
        initial_voters::read_stored(dir).map_err(|e| PartError::InitialVoters(Arc::new(e)));
    let hard_state = inspect_hard_state(&shadow, &dir.join("hard_state"));
    let wal = inspect_wal(&shadow, &wal_dir);
    let snapshots = inspect_snapshots(&shadow, &dir.join("snapshots"));
    Report {
        dir: dir.to_path_buf(),
        running_pid,
        identity,
        initial_voters,
        hard_state,
        wal,
        snapshots,
        repair_claim: super::snapshot_damage::load_claim(&shadow, dir)
            .map(|claim| claim.map(|c| (c.from.0, c.through.0)))
            .map_err(|e| e.to_string()),
        changes: shadow.changes(),
    }
}

fn inspect_hard_state(
    shadow: &ShadowFs,
    path: &Path,
) -> Result<Option<HardStateReport>, PartError> {
    if !path.exists() {
        return Ok(None);
    }
    let slots = read_hard_state_slots(shadow, path)?;
    let current = slots
        .iter()
        .filter_map(|slot| match slot {
            HardStateSlot::Valid {
                sequence, state, ..
            } => Some((*sequence, *state)),
            _ => None,
        })
        .max_by_key(|(sequence, _)| *sequence)
        .map(|(_, state)| state);
    let agree = matches!(slots[0], HardStateSlot::Valid { .. }) && slots[0] == slots[1];
    Ok(Some(HardStateReport {
        slots,
        current,
        agree,
    }))
}

fn inspect_wal(shadow: &ShadowFs, dir: &Path) -> Result<Option<WalReport>, PartError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let options = WalOptions {
        fs: Arc::new(shadow.clone()),
        ..WalOptions::default()
    };
    let wal = Wal::open(dir, options)?;
    let mut terms: Vec<TermRun> = Vec::new();
    let mut memberships = Vec::new();
    let mut undecodable = Vec::new();
    let entries = wal.entries_from(wal.first_index())?;
    for record in entries {
        match terms.last_mut() {
            Some(run) if run.term == record.term => run.last = record.index,
            _ => terms.push(TermRun {
                term: record.term,
                first: record.index,
                last: record.index,
            }),
        }
        match decode_payload(record.payload) {
            Ok(EntryPayload::Membership(m)) => memberships.push((record.index, m)),
            Ok(_) => {}
            Err(why) => undecodable.push((record.index, why)),
        }
    }
    Ok(Some(WalReport {
        first_index: wal.first_index(),
        last_index: wal.last_index(),
        segments: wal
            .segment_ranges()
            .into_iter()
            .map(|(path, first_index, records)| SegmentReport {
                path,
                first_index,
                records,
            })
            .collect(),
        terms,
        synced_frontier: wal.opened_synced_frontier(),
        lost: wal.lost().cloned(),
        memberships,
        undecodable,
        torn_tail: if wal.lost().is_none() {
            shadow
                .changes()
                .into_iter()
                .filter(|change| change.starts_with("zero "))
                .collect()
        } else {
            Vec::new()
        },
    }))
}

fn inspect_snapshots(shadow: &ShadowFs, dir: &Path) -> Result<Option<SnapshotsReport>, PartError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let store = SnapshotStore::open(Arc::new(shadow.clone()), dir)?;
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_error(format!("listing {}", dir.display())))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| snapshot_point_of_file(path).is_some())
        .filter_map(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    files.sort();
    let partial = dir.join("partial.snap.recv").exists();
    let latest = match store.latest()? {
        None => None,
        Some(info) => Some(SnapshotReport {
            path: info.path.clone(),
            index: info.meta.index,
            term: info.meta.term,
            data_bytes: info.data_bytes,
            membership: match decode_payload(&info.meta.membership) {
                Ok(EntryPayload::Membership(m)) => Ok(m),
                Ok(_) => Err(DecodeProblem::NotAMembership),
                Err(why) => Err(why.into()),
            },
            data_verified: store.verify_data(&info).map_err(|e| e.to_string()),
        }),
    };
    Ok(Some(SnapshotsReport {
        latest,
        files,
        partial,
    }))
}

/// What `rcraft doctor force-new-cluster DATA_DIR --dry-run` says a forced new cluster made
/// from this data dir would keep and may lose; without `--dry-run`,
/// [`super::force_new_cluster::force_new_cluster`] keeps exactly that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForceNewClusterPlan {
    /// The node the data dir belongs to: the only voter of the new cluster.
    pub node_id: u64,
    /// The membership in force now, which the new cluster replaces.
    pub old_membership: Option<Membership>,
    /// Entries through this index are in the snapshot (committed, applied).
    pub snapshot: Option<(u64, u64)>,
    /// Entries the log holds beyond the snapshot, kept: first and last index.
    pub log_kept: Option<(u64, u64)>,
    /// Highest index known committed here: the snapshot's, or the commit hint, whichever is
    /// higher (0: none).
    pub known_committed: u64,
    /// Term of the last entry kept (0: none).
    pub last_term: u64,
    /// Synced entries this disk lost (from the WAL's recovery) that the snapshot does not
    /// cover: lost unless another node holds them.
    pub lost: Option<(u64, u64)>,
}

impl Report {
    /// The range of the repair claim the snapshot and log do not reach, as a start finds it.
    fn claim_outstanding(&self) -> Option<(u64, u64)> {
        let (from, through) = self.repair_claim.clone().ok()??;
        let snapshot = match &self.snapshots {
            Ok(Some(s)) => s.latest.as_ref().map_or(0, |l| l.index),
            _ => 0,
        };
        let held = match &self.wal {
            Ok(Some(wal)) => wal.last_index.max(snapshot),
            _ => snapshot,
        };
        (held < through).then_some((from.max(held + 1), through))
    }

    /// The newest snapshot's damage (a header or footer, or its data, failing its checksum).
    fn snapshot_damage(&self) -> Option<String> {
        match &self.snapshots {
            Err(PartError::Store(e)) if e.is_corruption() => Some(format!("snapshots: {e}")),
            Ok(Some(s)) => (s.latest.as_ref()).and_then(|latest| {
                let e = latest.data_verified.as_ref().err()?;
                Some(format!("snapshot {}: {e}", latest.path.display()))
            }),
            _ => None,
        }
    }

    /// The force-new-cluster plan, or why this data dir cannot seed a new cluster.
    pub fn force_new_cluster_plan(&self) -> Result<ForceNewClusterPlan, Vec<String>> {
        if let Verdict::Refuse(why) = self.verdict() {
            return Err(why);
        }
        // A new cluster seeded from here would have nobody to fetch the state from.
        if let Some(damage) = self.snapshot_damage() {
            return Err(vec![damage]);
        }
        if let Some((from, through)) = self.claim_outstanding() {
            return Err(vec![format!(
                "repair_claim: this node lost entries {from}..={through} (a damaged snapshot, \
                 or a log reset before they were fetched again) and has not fetched them \
                 again: seed from another node's data dir"
            )]);
        }
        let node_id = match &self.identity {
            Ok(Some(id)) => id.node_id,
            _ => {
                return Err(vec![
                    "no identity file: cannot tell which node this data dir belongs to".to_string(),
                ]);
            }
        };
        let snapshot = match &self.snapshots {
            Ok(Some(s)) => s.latest.as_ref().map(|l| (l.index, l.term)),
            _ => None,
        };
        let snapshot_index = snapshot.map_or(0, |(index, _)| index);
        let (log_kept, log_last_term, lost) = match &self.wal {
            Ok(Some(wal)) => {
                let first = wal.first_index.max(snapshot_index + 1);
                let kept = (wal.last_index >= first).then_some((first, wal.last_index));
                if wal.first_index > snapshot_index + 1 && wal.last_index >= wal.first_index {
                    return Err(vec![format!(
                        "the log starts at {} but the snapshot ends at {snapshot_index}: \
                         entries {}..={} are in neither",
                        wal.first_index,
                        snapshot_index + 1,
                        wal.first_index - 1
                    )]);
                }
                let last_term = wal.terms.last().map_or(0, |run| run.term);
                (kept, last_term, self.lost_to_fetch())
            }
            _ => (None, 0, None),
        };
        let commit_hint = match &self.hard_state {
            Ok(Some(hs)) => hs.current.map_or(0, |s| s.commit),
            _ => 0,
        };
        let last_index = log_kept.map_or(snapshot_index, |(_, last)| last);
        let last_term = match log_kept {
            Some(_) => log_last_term,
            None => snapshot.map_or(0, |(_, term)| term),
        };
        Ok(ForceNewClusterPlan {
            node_id,
            old_membership: self.membership().map(|(m, _)| m),
            snapshot,
            log_kept,
            known_committed: snapshot_index.max(commit_hint).min(last_index),
            last_term,
            lost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_unreadable_part_is_typed_and_named_in_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("identity"), "node_id = 0\n").unwrap();
        std::fs::write(dir.path().join("initial_voters"), "0,x\n").unwrap();
        let report = inspect(dir.path());
        let Err(identity) = &report.identity else {
            panic!("{:?}", report.identity);
        };
        assert!(matches!(identity, PartError::Identity(_)), "{identity:?}");
        assert!(identity.source().unwrap().source().is_some());
        assert!(matches!(
            &report.initial_voters,
            Err(PartError::InitialVoters(_))
        ));
        let Verdict::Refuse(reasons) = report.verdict() else {
            panic!("{:?}", report.verdict());
        };
        let path = dir.path().join("identity");
        let expected = format!(
            "identity: {}: expected node_id, cluster_id and address",
            path.display()
        );
        assert!(reasons.contains(&expected), "{reasons:?}");
    }
}
