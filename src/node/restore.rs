//! `rcraft snapshot restore FILE`: seed a node of a new cluster from a backup.
//!
//! A backup (`rcraft snapshot save`) is a node snapshot file (storage/FORMAT.md §3): the
//! session table and the state machine's bytes at a committed index `I` of term `T`, with the
//! membership in force there. [`restore_backup`] checks the whole file first (header, footer,
//! data checksum), then builds a complete data directory for node `config.id`:
//! - `identity` and `initial_voters` as a first start would write them (the voters from the
//!   configuration, like any new cluster's: the backup's membership names the old cluster's
//!   nodes);
//! - `snapshots/snap-I-T.snap`: the backup's data under a header whose membership is the new
//!   voters, so every node restored with the same voters holds the same snapshot;
//! - `hard_state` with term `T` and no vote (a node's term is never below its last entry's);
//! - an empty `wal` that continues after `I`.
//!
//! A node started on it restores the state machine and the sessions from the snapshot and
//! elects a leader with its peers in term `T + 1`. Everything is built in a temporary
//! directory beside the target and renamed into place at the end (the parent synced), so a
//! crash or an error leaves either no data dir (or the empty one that was there) or a whole
//! one: never a half-restored directory a node could start on as a fresh, empty cluster. A
//! target that exists and is not an empty directory is refused. Runs on the calling thread.

use super::data_dir;
use super::entry_codec::{decode_payload, payload_bytes};
use super::error::Error;
use super::initial_voters;
use crate::Config;
use rcraft_storage::{
    Fs, HardState, HardStateStore, RealFs, SnapshotFileMeta, SnapshotStore, Wal, WalOptions,
    open_snapshot_file,
};
use rcraft_wire::{EntryPayload, Membership};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What [`restore_backup`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The data directory.
    pub data_dir: PathBuf,
    /// The new cluster's id, as recorded in the data dir's identity.
    pub cluster_id: u64,
    /// Last index the backup covers.
    pub index: u64,
    /// Its term.
    pub term: u64,
    /// Bytes of state (sessions and the state machine's snapshot).
    pub data_bytes: u64,
    /// The backup's membership (the old cluster's).
    pub old_membership: Membership,
    /// The new cluster's voters, recorded in the restored snapshot.
    pub membership: Membership,
}

/// Builds `config.data_dir` from the backup at `backup`. See the module docs. `Err` is
/// [`Error::Restore`]: what is wrong (the backup, the configuration or the target), and that
/// nothing was left behind.
pub fn restore_backup(config: &Config, backup: &Path) -> Result<Restored, Error> {
    if config.join {
        return Err(Error::restore(
            "a restored node is a voter of the new cluster: do not give --join",
        ));
    }
    let voters = config.initial_voter_ids();
    if !voters.contains(&config.id) {
        return Err(Error::restore(format!(
            "node {} is not one of the new cluster's voters ({}): a restored node is one",
            config.id,
            ids(&voters)
        )));
    }
    let target = &config.data_dir;
    if let Some(what) = not_empty(target)? {
        return Err(Error::restore(format!(
            "data dir {} {what}: restore only into a new or empty directory",
            target.display()
        )));
    }
    let fs: Arc<dyn Fs> = Arc::new(RealFs::default());
    let (index, term, data_bytes, old_membership) = check_backup(fs.as_ref(), backup)?;
    let temp = temp_dir_of(target)?;
    if temp.exists() {
        // Left by an earlier restore that crashed: ours to remove.
        std::fs::remove_dir_all(&temp).map_err(Error::restore_by(format!(
            "removing {} (an unfinished restore)",
            temp.display()
        )))?;
    }
    let membership = Membership::with_voters(voters);
    let mut in_temp = config.clone();
    in_temp.data_dir = temp.clone();
    let built = build(&in_temp, fs, backup, index, term, &membership)
        .and_then(|cluster_id| move_into_place(&temp, target).map(|()| cluster_id));
    let cluster_id = match built {
        Ok(cluster_id) => cluster_id,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&temp);
            return Err(e);
        }
    };
    Ok(Restored {
        data_dir: target.clone(),
        cluster_id,
        index,
        term,
        data_bytes,
        old_membership,
        membership,
    })
}

/// Why `dir` is not a place to restore into (`None`: it is).
fn not_empty(dir: &Path) -> Result<Option<&'static str>, Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().map(|_| "is not empty")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(Some("is not a directory")),
        Err(e) => Err(Error::restore_by(format!("reading {}", dir.display()))(e)),
    }
}

/// Reads the whole backup once: its point, size and membership, with every checksum verified.
fn check_backup(fs: &dyn Fs, backup: &Path) -> Result<(u64, u64, u64, Membership), Error> {
    let damaged =
        |why: String| Error::restore(format!("backup {} is damaged: {why}", backup.display()));
    let mut reader = open_snapshot_file(fs, backup).map_err(|e| match e {
        rcraft_storage::Error::Corruption { reason, .. } => damaged(reason),
        other => Error::restore_by(format!("reading backup {}", backup.display()))(other),
    })?;
    let info = reader.info().clone();
    let membership = match decode_payload(&info.meta.membership) {
        Ok(EntryPayload::Membership(m)) => m,
        Ok(_) => return Err(damaged("its membership field holds another payload".into())),
        Err(why) => return Err(damaged(format!("undecodable membership: {why}"))),
    };
    io::copy(&mut reader, &mut io::sink()).map_err(|e| damaged(e.to_string()))?;
    Ok((info.meta.index, info.meta.term, info.data_bytes, membership))
}

/// `<parent>/.<name>.restoring`, beside the target so that the rename stays in one file system.
fn temp_dir_of(target: &Path) -> Result<PathBuf, Error> {
    let name = target.file_name().ok_or_else(|| {
        Error::restore(format!("data dir {}: no directory name", target.display()))
    })?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(".restoring");
    Ok(target.with_file_name(temp))
}

/// Writes every file of the restored data dir into `config.data_dir` (the temporary one);
/// returns the cluster id recorded there.
fn build(
    config: &Config,
    fs: Arc<dyn Fs>,
    backup: &Path,
    index: u64,
    term: u64,
    membership: &Membership,
) -> Result<u64, Error> {
    let dir = &config.data_dir;
    let identity =
        data_dir::check_or_record(config).map_err(Error::restore_by("recording the identity"))?;
    initial_voters::load_or_store(config)
        .map_err(Error::restore_by("recording the initial voters"))?;
    let store = SnapshotStore::open(fs.clone(), &dir.join("snapshots"))
        .map_err(Error::restore_by("creating the snapshot directory"))?;
    let meta = SnapshotFileMeta {
        index,
        term,
        membership: payload_bytes(&EntryPayload::Membership(membership.clone())),
        // The new cluster's starting configuration: no entry of its log holds it.
        membership_entry: Some((0, 0)),
    };
    let mut reader = open_snapshot_file(fs.as_ref(), backup).map_err(Error::restore_by(
        format!("reading backup {}", backup.display()),
    ))?;
    let mut writer = store
        .begin(meta)
        .map_err(Error::restore_by("writing the snapshot"))?;
    io::copy(&mut reader, &mut writer).map_err(Error::restore_by(format!(
        "copying backup {}",
        backup.display()
    )))?;
    writer
        .finish()
        .map_err(Error::restore_by("writing the snapshot"))?;
    let mut hard_state = HardStateStore::open(fs.clone(), &dir.join("hard_state"))
        .map_err(Error::restore_by("creating the hard state"))?;
    let state = HardState {
        term,
        vote: None,
        commit: index,
        votes_unknown: false,
    };
    hard_state
        .save(&state)
        .map_err(Error::restore_by("saving the hard state"))?;
    let options = WalOptions {
        fs,
        ..WalOptions::default()
    };
    let mut wal =
        Wal::open(&dir.join("wal"), options).map_err(Error::restore_by("creating the log"))?;
    wal.reset(index + 1)
        .map_err(Error::restore_by(format!("starting the log after {index}")))?;
    Ok(identity.cluster_id)
}

/// Renames the finished `temp` to `target` (replacing an empty directory) and syncs the parent.
fn move_into_place(temp: &Path, target: &Path) -> Result<(), Error> {
    std::fs::rename(temp, target).map_err(Error::restore_by(format!(
        "renaming {} to {}",
        temp.display(),
        target.display()
    )))?;
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(Error::restore_by(format!("syncing {}", parent.display())))
}

fn ids(ids: &[rcraft_wire::NodeId]) -> String {
    let list: Vec<String> = ids.iter().map(ToString::to_string).collect();
    list.join(",")
}
