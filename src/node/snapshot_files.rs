//! Where the apply thread writes and reads whole snapshots.
//!
//! The apply thread owns the state machine, so it writes local snapshots and reads the one to
//! restore itself, through this seam, without ever blocking the consensus thread. The storage
//! crate's snapshot store sits behind it in a running node.

use super::entry_codec::{decode_payload, payload_bytes};
use super::storage_error::{DecodeProblem, Decoded, StorageError};
use rcraft_storage::{SnapshotFileMeta, SnapshotInfo, SnapshotStore};
use rcraft_wire::{EntryPayload, LogIndex, SnapshotMeta, Term};
use std::fmt;
use std::io::{Read, Write};

/// Fills a snapshot's data.
pub(crate) type SnapshotWriteFn<'a> = &'a mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>;

/// A snapshot opened for reading: its metadata and its data.
pub(crate) type OpenSnapshot = (SnapshotMeta, Box<dyn Read + Send>);

/// Why a snapshot could not be saved or opened. The apply thread wraps it into
/// [`Error::Apply`](super::Error::Apply) naming the snapshot's index.
#[derive(Debug)]
pub enum SnapshotFileError {
    /// The snapshot store failed (I/O naming the file and the operation, a damaged file).
    Store(rcraft_storage::Error),
    /// The snapshot's description is wrong: it does not decode, or it does not match the
    /// data written.
    Meta(StorageError),
    /// The state machine failed writing its snapshot.
    StateMachine(std::io::Error),
}

impl fmt::Display for SnapshotFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotFileError::Store(e) => e.fmt(f),
            SnapshotFileError::Meta(e) => e.fmt(f),
            SnapshotFileError::StateMachine(e) => {
                write!(f, "the state machine's snapshot failed: {e}")
            }
        }
    }
}

impl std::error::Error for SnapshotFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotFileError::Store(e) => Some(e),
            SnapshotFileError::Meta(e) => Some(e),
            SnapshotFileError::StateMachine(e) => Some(e),
        }
    }
}

/// Durable snapshot files, as seen by the apply thread.
pub(crate) trait SnapshotFiles: Send {
    /// Writes a new snapshot described by `meta` (its `size_bytes` and `checksum` are filled
    /// in here) with the bytes `write` produces, makes it durable and current, and returns
    /// the complete metadata.
    fn save(
        &mut self,
        meta: SnapshotMeta,
        write: SnapshotWriteFn<'_>,
    ) -> Result<SnapshotMeta, SnapshotFileError>;

    /// Opens the current snapshot, if there is one.
    fn open_current(&mut self) -> Result<Option<OpenSnapshot>, SnapshotFileError>;
}

/// The storage crate's snapshot store, as used by the apply thread. The store is a cheap
/// handle on the snapshot directory; the storage thread holds another one for chunk reads
/// and received snapshots.
pub(crate) struct StoreSnapshots {
    store: SnapshotStore,
}

impl StoreSnapshots {
    /// Wraps a handle on the snapshot directory.
    pub(crate) fn new(store: SnapshotStore) -> StoreSnapshots {
        StoreSnapshots { store }
    }
}

impl SnapshotFiles for StoreSnapshots {
    fn save(
        &mut self,
        meta: SnapshotMeta,
        write: SnapshotWriteFn<'_>,
    ) -> Result<SnapshotMeta, SnapshotFileError> {
        let file_meta = file_meta(&meta);
        let mut writer = self
            .store
            .begin(file_meta)
            .map_err(SnapshotFileError::Store)?;
        write(&mut writer).map_err(SnapshotFileError::StateMachine)?;
        let info = writer.finish().map_err(SnapshotFileError::Store)?;
        Ok(SnapshotMeta {
            size_bytes: info.data_bytes,
            checksum: info.data_crc32c,
            ..meta
        })
    }

    fn open_current(&mut self) -> Result<Option<OpenSnapshot>, SnapshotFileError> {
        let Some(info) = self.store.latest().map_err(SnapshotFileError::Store)? else {
            return Ok(None);
        };
        let meta = snapshot_meta(&info).map_err(SnapshotFileError::Meta)?;
        let reader = self
            .store
            .open_reader(&info)
            .map_err(SnapshotFileError::Store)?;
        let reader: Box<dyn Read + Send> = Box::new(reader);
        Ok(Some((meta, reader)))
    }
}

/// The storage crate's description of a snapshot (membership as opaque bytes).
pub(crate) fn file_meta(meta: &SnapshotMeta) -> SnapshotFileMeta {
    let membership = EntryPayload::Membership(meta.membership.clone());
    SnapshotFileMeta {
        index: meta.index.0,
        term: meta.term.0,
        membership: payload_bytes(&membership),
        membership_entry: (meta.membership_entry).map(|(index, term)| (index.0, term.0)),
    }
}

/// The core's description of a complete snapshot file; a membership field that does not
/// decode is [`StorageError::Undecodable`] naming the file.
pub(crate) fn snapshot_meta(info: &SnapshotInfo) -> Result<SnapshotMeta, StorageError> {
    let undecodable = |reason| StorageError::Undecodable {
        what: Decoded::SnapshotMembership(info.path.clone()),
        reason,
    };
    let membership = match decode_payload(&info.meta.membership) {
        Ok(EntryPayload::Membership(membership)) => membership,
        Ok(_) => return Err(undecodable(DecodeProblem::NotAMembership)),
        Err(e) => return Err(undecodable(e.into())),
    };
    Ok(SnapshotMeta {
        index: LogIndex(info.meta.index),
        term: Term(info.meta.term),
        membership,
        membership_entry: (info.meta.membership_entry)
            .map(|(index, term)| (LogIndex(index), Term(term))),
        size_bytes: info.data_bytes,
        checksum: info.data_crc32c,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use std::path::PathBuf;

    #[test]
    fn a_snapshot_whose_membership_does_not_decode_is_named_by_its_path() {
        let info = |membership: Vec<u8>| SnapshotInfo {
            meta: SnapshotFileMeta {
                index: 7,
                term: 2,
                membership,
                membership_entry: None,
            },
            data_bytes: 0,
            data_crc32c: 0,
            path: PathBuf::from("/data/snapshots/snap-7-2.snap"),
            header_bytes: 0,
        };
        let garbage = snapshot_meta(&info(vec![9])).unwrap_err();
        assert_eq!(
            garbage.to_string(),
            "the membership of snapshot /data/snapshots/snap-7-2.snap is undecodable: unknown \
             payload tag 9"
        );
        assert!(garbage.source().unwrap().source().is_some(), "{garbage:?}");
        let noop = snapshot_meta(&info(payload_bytes(&EntryPayload::Noop))).unwrap_err();
        assert!(
            matches!(
                &noop,
                StorageError::Undecodable {
                    what: Decoded::SnapshotMembership(path),
                    reason: DecodeProblem::NotAMembership,
                } if path.ends_with("snap-7-2.snap")
            ),
            "{noop:?}"
        );
    }

    #[test]
    fn a_failing_state_machine_is_named_and_kept_as_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let fs: std::sync::Arc<dyn rcraft_storage::Fs> =
            std::sync::Arc::new(rcraft_storage::RealFs::default());
        let store = SnapshotStore::open(fs, dir.path()).unwrap();
        let mut files = StoreSnapshots::new(store);
        let meta = SnapshotMeta {
            index: LogIndex(5),
            term: Term(1),
            membership: Default::default(),
            membership_entry: None,
            size_bytes: 0,
            checksum: 0,
        };
        let mut failing = |_: &mut dyn Write| Err(std::io::Error::other("disk full"));
        let error = files.save(meta, &mut failing).unwrap_err();
        assert!(
            matches!(error, SnapshotFileError::StateMachine(_)),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the state machine's snapshot failed: disk full"
        );
        assert_eq!(error.source().unwrap().to_string(), "disk full");
        assert!(
            files.open_current().unwrap().is_none(),
            "nothing was made current"
        );
    }
}
