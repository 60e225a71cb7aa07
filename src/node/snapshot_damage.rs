//! A damaged snapshot file found at start: set aside, and the state it held fetched again
//! from the leader (issue 15; docs/ARCHITECTURE.md, "Protocol-aware recovery", "A damaged
//! snapshot at start").
//!
//! Runs on the thread that calls `Node::start`, inside `open_storage`, before the core and
//! the apply thread exist. [`usable_snapshot`] checks the snapshot files newest first, each
//! whole (header, footer and every data byte against the footer's CRC-32C, the check the
//! restore would make only after the state machine had read the bytes), and renames a
//! damaged one to `<name>.damaged` (kept for the operator, never deleted; a name that is not
//! a snapshot's, so nothing reads it again). The newest intact one is the node's base.
//!
//! When the base and the log no longer reach as far as the damaged file did, the node holds
//! less than it synced: the snapshot covers only committed entries, but the log behind it
//! was compacted, so the state cannot be rebuilt here. The caller then restarts the log after
//! the base and claims the range up to where the damaged file and the old log reached as
//! lost (`LostEntries`): the core starts repairing (it neither campaigns nor counts toward
//! a commit of that range, and votes only for a candidate whose log covers it) and the
//! leader, whose log the node does not match, sends its snapshot. The claim must outlive a
//! restart in the middle of the repair, and the log that held it is gone: it is kept in
//! `<data_dir>/repair_claim` (storage/FORMAT.md §4.9) until the durable log reaches its end
//! again, as the WAL keeps claiming its own synced frontier (§4.1).

use super::log_store::LogStore;
use super::snapshot_files::snapshot_meta;
use super::storage_error::{StorageError, StorageResult};
use super::storage_thread::reconcile_log_with_snapshot;
use crate::core::LostEntries;
use rcraft_storage::{
    Error as StoreError, Fs, SnapshotInfo, SnapshotStore, snapshot_point_of_file,
};
use rcraft_wire::{LogIndex, SnapshotMeta, Term};
use std::path::{Path, PathBuf};

/// Name of the claim file in the data directory.
pub(crate) const CLAIM_FILE: &str = "repair_claim";
/// First bytes of the claim file.
const CLAIM_MAGIC: [u8; 8] = *b"RCCLAIM1";
/// Magic, from, through, through term (0: unknown), CRC-32C of the 32 bytes before it.
const CLAIM_BYTES: usize = 36;
/// Suffix of a damaged snapshot file set aside.
pub(crate) const DAMAGED_SUFFIX: &str = ".damaged";

/// A damaged snapshot file renamed aside at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetAside {
    /// The (index, term) its name says it held.
    pub(crate) point: (u64, u64),
    /// Where it is now.
    pub(crate) path: PathBuf,
}

/// The newest snapshot file that is whole (header, footer and data checksums), after moving
/// every newer, damaged one aside (to `<name>.damaged`, the directory synced). Each damage is
/// logged at error level, naming the file, the problem and where the file went. An I/O error,
/// or damage when `set_aside_allowed` is false (the only server of a cluster, which has no
/// peer to fetch the state from), stops the start as before, naming the file.
pub(crate) fn usable_snapshot(
    fs: &dyn Fs,
    dir: &Path,
    store: &SnapshotStore,
    set_aside_allowed: bool,
) -> StorageResult<(Option<SnapshotInfo>, Vec<SetAside>)> {
    let mut points: Vec<(u64, u64)> = fs
        .list_dir(dir)
        .map_err(|e| io_error("listing the snapshots", dir, e))?
        .iter()
        .filter_map(|name| snapshot_point_of_file(Path::new(name)))
        .collect();
    points.sort_unstable();
    let mut set_aside = Vec::new();
    while let Some((index, term)) = points.pop() {
        let checked = store.find(index, term).and_then(|found| match found {
            Some(info) => store.verify_data(&info).map(|()| Some(info)),
            None => Ok(None),
        });
        let problem = match checked {
            Ok(Some(info)) => return Ok((Some(info), set_aside)),
            Ok(None) => continue, // gone since the listing: nothing to set aside

            Err(e @ StoreError::Corruption { .. }) if set_aside_allowed => e,
            // An unreadable sector (EIO) is damage too; other I/O errors stop the start.
            Err(e @ StoreError::Io { .. }) if set_aside_allowed && unreadable(&e) => e,
            Err(e) => {
                return Err(StorageError::store(format!(
                    "reading snapshot {index} in {}",
                    dir.display()
                ))(e));
            }
        };
        let path = dir.join(format!("snap-{index:020}-{term:020}.snap"));
        let aside = free_name(fs, &path)?;
        fs.rename(&path, &aside)
            .map_err(|e| io_error("setting a damaged snapshot aside", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| io_error("syncing the snapshot directory", dir, e))?;
        log::error!(
            "snapshot file {} is damaged: {problem}; moved aside to {} (kept for inspection); \
             this node does not use it",
            path.display(),
            aside.display()
        );
        set_aside.push(SetAside {
            point: (index, term),
            path: aside,
        });
    }
    Ok((None, set_aside))
}

/// Whether a snapshot read failed on an unreadable sector (`EIO`).
fn unreadable(e: &StoreError) -> bool {
    matches!(e, StoreError::Io { source, .. } if rcraft_storage::fs::is_unreadable_sector(source))
}

/// `<path>.damaged`, or `<path>.damaged.N` for the first N free (a file damaged again at the
/// same point keeps the earlier one too).
fn free_name(fs: &dyn Fs, path: &Path) -> StorageResult<PathBuf> {
    let base = format!("{}{DAMAGED_SUFFIX}", path.display());
    for n in 0u32.. {
        let candidate = match n {
            0 => PathBuf::from(&base),
            n => PathBuf::from(format!("{base}.{n}")),
        };
        let taken = fs
            .exists(&candidate)
            .map_err(|e| io_error("looking for a free name", &candidate, e))?;
        if !taken {
            return Ok(candidate);
        }
    }
    unreachable!("u32 names run out only after 4 billion damaged copies of one snapshot")
}

fn io_error(doing: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Store {
        doing: doing.to_string(),
        source: StoreError::Io {
            path: path.to_path_buf(),
            op: doing,
            source: e,
        },
    }
}

/// The range this node claims lost: entries it synced (through `through`, the entry there of
/// `through_term` when known) that its disk no longer holds.
type Claim = LostEntries;

/// The claim that reaches further (on a tie, the one that knows the term at its end),
/// starting at the earlier start.
pub(crate) fn merge(a: Claim, b: Claim) -> Claim {
    let end = match a.through.cmp(&b.through) {
        std::cmp::Ordering::Less => b,
        std::cmp::Ordering::Greater => a,
        std::cmp::Ordering::Equal if a.through_term.is_some() => a,
        std::cmp::Ordering::Equal => b,
    };
    Claim {
        from: a.from.min(b.from),
        ..end
    }
}

fn encode(claim: Claim) -> [u8; CLAIM_BYTES] {
    let mut bytes = [0u8; CLAIM_BYTES];
    bytes[..8].copy_from_slice(&CLAIM_MAGIC);
    bytes[8..16].copy_from_slice(&claim.from.0.to_le_bytes());
    bytes[16..24].copy_from_slice(&claim.through.0.to_le_bytes());
    let term = claim.through_term.map_or(0, |t| t.0);
    bytes[24..32].copy_from_slice(&term.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..32]);
    bytes[32..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<Claim, String> {
    if bytes.len() != CLAIM_BYTES {
        return Err(format!("{} bytes, not {CLAIM_BYTES}", bytes.len()));
    }
    if bytes[..8] != CLAIM_MAGIC {
        return Err("bad magic".to_string());
    }
    let stored = u32::from_le_bytes(bytes[32..].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c(&bytes[..32]);
    if stored != crc {
        return Err(format!(
            "checksum {crc:#010x}, the file says {stored:#010x}"
        ));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let (from, through, term) = (word(8), word(16), word(24));
    if from == 0 || from > through {
        return Err(format!("range {from}..={through} is empty or starts at 0"));
    }
    Ok(Claim {
        from: LogIndex(from),
        through: LogIndex(through),
        through_term: (term != 0).then_some(Term(term)),
    })
}

/// The claim saved in `data_dir`, if any. A damaged file is an error naming it: the range it
/// held is unknown, and starting without it could count this node for entries it lost.
pub(crate) fn load_claim(fs: &dyn Fs, data_dir: &Path) -> StorageResult<Option<Claim>> {
    let path = data_dir.join(CLAIM_FILE);
    let exists = fs
        .exists(&path)
        .map_err(|e| io_error("looking for the repair claim", &path, e))?;
    if !exists {
        return Ok(None);
    }
    let mut bytes = vec![0u8; CLAIM_BYTES + 1];
    let read = fs
        .read_at(&path, 0, &mut bytes)
        .map_err(|e| io_error("reading the repair claim", &path, e))?;
    bytes.truncate(read);
    decode(&bytes)
        .map(Some)
        .map_err(|reason| StorageError::Store {
            doing: "reading the repair claim (the range of entries this node lost and \
                    fetches again)"
                .to_string(),
            source: StoreError::corruption(
                &path,
                0,
                format!(
                    "{reason}; the range it held is unknown, so the node does not start \
                     (docs/OPERATIONS.md §7: replace the node)"
                ),
            ),
        })
}

/// Saves `claim` durably (temporary file, sync, rename, directory sync).
pub(crate) fn save_claim(fs: &dyn Fs, data_dir: &Path, claim: Claim) -> StorageResult<()> {
    let path = data_dir.join(CLAIM_FILE);
    let temp = data_dir.join(format!("{CLAIM_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = fs.open_write(&temp)?;
        file.set_len(0)?;
        file.write_at(0, &encode(claim))?;
        file.sync()?;
        drop(file);
        fs.rename(&temp, &path)?;
        fs.sync_dir(data_dir)
    };
    write().map_err(|e| io_error("saving the repair claim", &path, e))
}

/// Removes the claim file once the log holds its range again.
pub(crate) fn remove_claim(fs: &dyn Fs, data_dir: &Path) -> StorageResult<()> {
    let path = data_dir.join(CLAIM_FILE);
    fs.remove_file(&path)
        .and_then(|()| fs.sync_dir(data_dir))
        .map_err(|e| io_error("removing the repair claim", &path, e))
}

/// What the node starts from: the newest whole snapshot, and the range it claims lost.
///
/// Finds the usable snapshot ([`usable_snapshot`]), tells the store it is the one in use,
/// and makes the log continue it. When a damaged file was set aside, or the log starts after
/// the snapshot's next index (a newer snapshot it continued is gone), whatever the old log
/// and the damaged files reached beyond what is still held is claimed lost, saved in the
/// claim file before the log is restarted, and merged with a claim saved by an earlier start.
/// A saved claim whose end the log reaches again is removed. Without damage and with a log
/// that continues the snapshot, this is what the node always did.
pub(crate) fn recover_base(
    fs: &dyn Fs,
    data_dir: &Path,
    snapshots: &SnapshotStore,
    log: &mut LogStore,
    repair_from_peers: bool,
) -> StorageResult<(Option<SnapshotMeta>, Option<LostEntries>)> {
    let dir = data_dir.join("snapshots");
    let (usable, set_aside) = usable_snapshot(fs, &dir, snapshots, repair_from_peers)?;
    let snapshot = usable.as_ref().map(snapshot_meta).transpose()?;
    // From now on only the core's `KeepSnapshots` removes snapshot files: the one it starts
    // from stays while the apply thread makes newer ones current (a transfer of it may
    // begin before the core hears of them).
    let in_use: Vec<(u64, u64)> = (snapshot.iter())
        .map(|meta| (meta.index.0, meta.term.0))
        .collect();
    snapshots
        .keep(&in_use)
        .map_err(StorageError::store(format!(
            "removing older snapshots in {}",
            dir.display()
        )))?;

    let base = snapshot.as_ref().map_or(LogIndex(0), |meta| meta.index);
    let (first, old_last) = (log.first_index(), log.last_index());
    let gap = first > base.next();
    if gap && !repair_from_peers {
        return Err(StorageError::Inconsistent(format!(
            "the log in {} starts at {first} but the snapshot ends at {base}: entries are \
             missing, and this only server has no peer to fetch them from",
            data_dir.display()
        )));
    }
    let continues = snapshot.as_ref().is_none_or(|meta| {
        log.term_at(meta.index) == Some(meta.term) || first == meta.index.next()
    });
    let restart_log = gap || !continues;
    let held_end = if restart_log {
        base
    } else {
        old_last.max(base)
    };

    let mut claim = load_claim(fs, data_dir)?;
    let saved = claim;
    if gap || !set_aside.is_empty() {
        let old_end = (old_last >= first).then(|| (old_last, log.term_at(old_last)));
        let aside_end = (set_aside.iter().map(|a| a.point).max())
            .map(|(index, term)| (LogIndex(index), Some(Term(term))));
        let ends = [old_end, aside_end];
        let reach = ends.into_iter().flatten().max_by_key(|(index, _)| *index);
        if let Some((through, through_term)) = reach.filter(|(through, _)| *through > held_end) {
            let new = Claim {
                from: held_end.next(),
                through,
                through_term,
            };
            claim = Some(claim.map_or(new, |c| merge(c, new)));
        }
    }
    let claim = claim.filter(|c| c.through > held_end).map(|c| Claim {
        from: held_end.next(),
        ..c
    });
    match (saved, claim) {
        (Some(_), None) => {
            log::info!(
                "the log holds again the entries of the repair claim in {}; claim removed",
                data_dir.display()
            );
            remove_claim(fs, data_dir)?;
        }
        (_, Some(c)) if saved.map(|s| s.through) != Some(c.through) => save_claim(fs, data_dir, c)?,
        _ => {}
    }
    // What the file holds now (a saved claim with the same end keeps its own start).
    log.note_file_claim(match (saved, claim) {
        (Some(s), Some(c)) if s.through == c.through => Some(s),
        (_, c) => c,
    });
    if restart_log {
        // The claim, if any, is durable: the log that held part of it may go.
        match &snapshot {
            Some(meta) => reconcile_log_with_snapshot(log, meta)?,
            None => log.reset_after(LogIndex(0))?,
        }
    }
    if let Some(c) = claim {
        let held = match (&snapshot, held_end) {
            (None, LogIndex(0)) => "an empty state and log".to_string(),
            (None, end) => format!("its log through {end}"),
            (Some(meta), end) => {
                format!("the snapshot at index {} and log through {end}", meta.index)
            }
        };
        log::error!(
            "this node's disk no longer holds everything it synced (a damaged snapshot file, \
             or a log that no longer continues its snapshot): it starts from {held}, while it \
             held entries through {}; entries {}..={} were synced and are lost from this \
             node's disk; it fetches the rest from the leader, and until then stands for no \
             election and votes only for a candidate whose log covers them",
            c.through,
            c.from,
            c.through
        );
    }
    Ok((snapshot, claim))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_storage::SimFs;
    use std::sync::Arc;

    fn claim(from: u64, through: u64, term: Option<u64>) -> Claim {
        Claim {
            from: LogIndex(from),
            through: LogIndex(through),
            through_term: term.map(Term),
        }
    }

    #[test]
    fn a_claim_survives_its_file_and_damage_to_it_is_refused() {
        let fs = SimFs::new();
        let dir = Path::new("/data");
        fs.create_dir_all(dir).unwrap();
        assert_eq!(load_claim(&fs, dir).unwrap(), None);
        save_claim(&fs, dir, claim(1, 40, Some(3))).unwrap();
        assert_eq!(load_claim(&fs, dir).unwrap(), Some(claim(1, 40, Some(3))));
        save_claim(&fs, dir, claim(5, 41, None)).unwrap();
        assert_eq!(load_claim(&fs, dir).unwrap(), Some(claim(5, 41, None)));

        let path = dir.join(CLAIM_FILE);
        let mut file = fs.open_write(&path).unwrap();
        file.write_at(17, &[0xff]).unwrap();
        file.sync().unwrap();
        drop(file);
        let error = load_claim(&fs, dir).unwrap_err().to_string();
        assert!(error.contains("repair_claim"), "{error}");
        assert!(error.contains("checksum"), "{error}");

        remove_claim(&fs, dir).unwrap();
        assert_eq!(load_claim(&fs, dir).unwrap(), None);
    }

    /// Through `open_storage`: a snapshot at 10 (the log restarted after it, as after an
    /// install) is damaged; the start claims 1..=10 and restarts the log empty, the next start
    /// finds the claim in its file alone, and a start whose log reaches 10 removes it.
    #[test]
    fn a_claim_is_found_again_by_later_starts_until_the_log_reaches_it() {
        use crate::node::snapshot_files::file_meta;
        use crate::node::storage_thread::open_storage_with;
        use rcraft_wire::{Entry, Membership, NodeId};
        let fs = SimFs::new();
        let data_dir = Path::new("/data");
        let membership = Membership::with_voters([NodeId(0), NodeId(1), NodeId(2)]);
        let segment_bytes = rcraft_storage::WalOptions::default().segment_bytes;
        let open = || {
            open_storage_with(
                Arc::new(fs.clone()),
                data_dir,
                membership.clone(),
                segment_bytes,
            )
            .unwrap()
        };
        let opened = open();
        let meta = SnapshotMeta {
            index: LogIndex(10),
            term: Term(2),
            membership: membership.clone(),
            membership_entry: Some((LogIndex(0), Term(0))),
            size_bytes: 0,
            checksum: 0,
        };
        let mut writer = opened.snapshots.begin(file_meta(&meta)).unwrap();
        std::io::Write::write_all(&mut writer, b"the state at 10").unwrap();
        let info = writer.finish().unwrap();
        drop(opened);
        let opened = open(); // restarts the log after 10
        assert_eq!(opened.recovered.lost, None);
        assert_eq!(
            opened.recovered.snapshot.as_ref().map(|m| m.index),
            Some(LogIndex(10))
        );
        drop(opened);

        let mut file = fs.open_write(&info.path).unwrap();
        file.write_at(info.header_bytes + 3, b"?").unwrap();
        file.sync().unwrap();
        drop(file);
        let lost = Some(claim(1, 10, Some(2)));
        let opened = open();
        assert_eq!(opened.recovered.snapshot, None);
        assert!(opened.recovered.entries.is_empty());
        assert_eq!(opened.recovered.lost, lost);
        assert_eq!(load_claim(&fs, data_dir).unwrap(), lost);
        drop(opened);
        // Nothing of the damage is left in view (the file is aside, the log empty from 1):
        // only the claim file knows the range.
        let opened = open();
        assert_eq!(opened.recovered.lost, lost);
        drop(opened);
        // The leader's entries arrive (as the storage thread would write them).
        let options = rcraft_storage::WalOptions {
            fs: Arc::new(fs.clone()),
            segment_bytes,
        };
        let mut wal = rcraft_storage::Wal::open(&data_dir.join("wal"), options).unwrap();
        let entries: Vec<Entry> = (1..=10)
            .map(|i| Entry::command(Term(2), LogIndex(i), None, b"x"))
            .collect();
        let records: Vec<&[u8]> = entries.iter().map(Entry::record).collect();
        wal.append_encoded(&records).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let opened = open();
        assert_eq!(opened.recovered.lost, None);
        assert_eq!(opened.recovered.entries.len(), 10);
        assert_eq!(load_claim(&fs, data_dir).unwrap(), None);
    }

    #[test]
    fn merged_claims_reach_the_furthest_end_from_the_earliest_start() {
        assert_eq!(
            merge(claim(5, 9, Some(2)), claim(3, 12, None)),
            claim(3, 12, None)
        );
        assert_eq!(
            merge(claim(3, 12, None), claim(5, 12, Some(4))),
            claim(3, 12, Some(4))
        );
        assert_eq!(
            merge(claim(7, 20, Some(4)), claim(7, 12, Some(3))),
            claim(7, 20, Some(4))
        );
    }

    /// A snapshot store in `/data/snapshots` on a fresh SimFs holding snapshots at (10, 2)
    /// and (20, 2) with these bytes; both files stay (the node names (10, 2) in use).
    fn two_snapshots(older: &[u8], newest: &[u8]) -> (Arc<SimFs>, PathBuf, SnapshotStore) {
        let fs = Arc::new(SimFs::new());
        let dir = PathBuf::from("/data/snapshots");
        let store = SnapshotStore::open(fs.clone(), &dir).unwrap();
        store.keep(&[(10, 2)]).unwrap();
        for (index, data) in [(10u64, older), (20, newest)] {
            let meta = rcraft_storage::SnapshotFileMeta {
                index,
                term: 2,
                membership: vec![1],
                membership_entry: Some((0, 0)),
            };
            let mut writer = store.begin(meta).unwrap();
            std::io::Write::write_all(&mut writer, data).unwrap();
            writer.finish().unwrap();
        }
        (fs, dir, store)
    }

    #[test]
    fn a_damaged_newest_snapshot_is_set_aside_and_the_older_one_used() {
        let (fs, dir, store) = two_snapshots(b"old", b"newer state");
        let dir = dir.as_path();
        let newest = store.find(20, 2).unwrap().unwrap();
        let mut file = fs.open_write(&newest.path).unwrap();
        file.write_at(newest.header_bytes + 2, b"X").unwrap();
        file.sync().unwrap();
        drop(file);

        // The only server of a cluster has nobody to fetch from: it refuses, moving nothing.
        let refused = usable_snapshot(fs.as_ref(), dir, &store, false).unwrap_err();
        let refused = refused.to_string();
        assert!(refused.contains("snapshot 20"), "{refused}");
        assert!(fs.exists(&newest.path).unwrap());

        let (usable, aside) = usable_snapshot(fs.as_ref(), dir, &store, true).unwrap();
        assert_eq!(usable.map(|info| info.meta.index), Some(10));
        let expected = PathBuf::from(format!("{}.damaged", newest.path.display()));
        assert_eq!(
            aside,
            vec![SetAside {
                point: (20, 2),
                path: expected.clone()
            }]
        );
        assert!(fs.exists(&expected).unwrap());
        assert_eq!(
            store.latest().unwrap().map(|info| info.meta.index),
            Some(10)
        );
    }

    /// A sector of the newest snapshot that no longer reads (EIO) is damage like a flipped
    /// bit: the file is set aside and the older one used.
    #[test]
    fn an_unreadable_sector_in_the_newest_snapshot_sets_it_aside() {
        let (fs, dir, store) = two_snapshots(&[1u8; 100], &[2u8; 9000]);
        let dir = dir.as_path();
        let newest = store.find(20, 2).unwrap().unwrap();
        fs.make_unreadable(&newest.path, 4096, 512).unwrap();

        let (usable, aside) = usable_snapshot(fs.as_ref(), dir, &store, true).unwrap();
        assert_eq!(usable.map(|info| info.meta.index), Some(10));
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(aside[0].point, (20, 2));
        assert!(fs.exists(&aside[0].path).unwrap());
        assert!(!fs.exists(&newest.path).unwrap());
    }
}
