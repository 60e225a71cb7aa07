//! A backup file written from the snapshot chunks a node streams (`rcraft snapshot save`).
//!
//! The file is a node snapshot file (storage/FORMAT.md §3, "Backups"): the header holds the
//! snapshot's index, term and membership in the node's encoding, the data is the node's
//! snapshot (session table and state machine, `snapshot_format.rs`), the footer its size and
//! CRC-32C. [`BackupFile`] takes the chunks in order, checks each against the CRC-32C the node
//! computed from what it read and against the snapshot's metadata, and at the end checks the
//! whole data against the checksum the node announced before the file gets its name: written
//! to `FILE.tmp`, synced, verified, renamed to `FILE`, the directory synced. An unfinished
//! file is removed when the [`BackupFile`] is dropped. Runs on the caller's thread.

use super::entry_codec::payload_bytes;
use rcraft_storage::{RealFs, SnapshotFileMeta, SnapshotWriter, create_snapshot_file};
use rcraft_wire::{EntryPayload, LogIndex, SnapshotChunk, SnapshotMeta};
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a backup could not be written. The chunk and checksum variants mean the copy did not
/// match what the node sent (start again); the others are failures of the local file.
#[derive(Debug)]
pub enum BackupError {
    /// The backup file could not be created.
    Create {
        /// The backup's path.
        path: PathBuf,
        /// The storage crate's error.
        source: rcraft_storage::Error,
    },
    /// A chunk belongs to another snapshot than the first one did.
    SnapshotChanged {
        /// Index and data checksum of the snapshot being saved.
        was: (LogIndex, u32),
        /// Index and data checksum of the chunk's snapshot.
        now: (LogIndex, u32),
    },
    /// A chunk does not start where the previous one ended.
    WrongOffset {
        /// Where the chunk starts.
        offset: u64,
        /// Where it should.
        expected: u64,
    },
    /// A chunk's bytes do not match the checksum the node sent with them.
    ChunkChecksum {
        /// Where the chunk starts.
        offset: u64,
        /// The checksum of the bytes received.
        computed: u32,
        /// The node's.
        sent: u32,
    },
    /// The whole data does not match what the node announced.
    DataMismatch {
        /// Bytes received.
        bytes: u64,
        /// Their checksum.
        crc: u32,
        /// Bytes of the node's snapshot.
        expected_bytes: u64,
        /// Its checksum.
        expected_crc: u32,
    },
    /// The backup was already finished.
    Finished,
    /// Writing the temporary file failed.
    Write {
        /// The temporary file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Syncing, verifying or renaming the file into place failed.
    Finish {
        /// The backup's path.
        path: PathBuf,
        /// The storage crate's error.
        source: rcraft_storage::Error,
    },
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Create { path, source } => {
                write!(f, "creating {}: {source}", path.display())
            }
            BackupError::SnapshotChanged { was, now } => write!(
                f,
                "the node's snapshot changed during the backup (index {} checksum {:#010x}, now \
                 index {} checksum {:#010x})",
                was.0, was.1, now.0, now.1
            ),
            BackupError::WrongOffset { offset, expected } => {
                write!(f, "chunk at offset {offset} where {expected} was expected")
            }
            BackupError::ChunkChecksum {
                offset,
                computed,
                sent,
            } => write!(
                f,
                "chunk at offset {offset} has checksum {computed:#010x}, the node sent \
                 {sent:#010x}"
            ),
            BackupError::DataMismatch {
                bytes,
                crc,
                expected_bytes,
                expected_crc,
            } => write!(
                f,
                "received {bytes} bytes with checksum {crc:#010x}; the node's snapshot has \
                 {expected_bytes} bytes with checksum {expected_crc:#010x}"
            ),
            BackupError::Finished => f.write_str("the backup is finished"),
            BackupError::Write { path, source } => {
                write!(f, "writing {}: {source}", path.display())
            }
            BackupError::Finish { path, source } => {
                write!(f, "finishing {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for BackupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::Create { source, .. } | BackupError::Finish { source, .. } => Some(source),
            BackupError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A backup being written. See the module docs.
pub struct BackupFile {
    /// `None` once finished.
    writer: Option<SnapshotWriter>,
    /// The snapshot being saved, as the node described it in its first chunk.
    meta: SnapshotMeta,
    /// The final name.
    path: PathBuf,
    /// The temporary file, removed on drop unless finished.
    temp: PathBuf,
}

impl BackupFile {
    /// Starts the backup of the snapshot `meta` at `path`.
    pub fn create(path: &Path, meta: &SnapshotMeta) -> Result<BackupFile, BackupError> {
        let file_meta = SnapshotFileMeta {
            index: meta.index.0,
            term: meta.term.0,
            membership: payload_bytes(&EntryPayload::Membership(meta.membership.clone())),
            membership_entry: (meta.membership_entry).map(|(index, term)| (index.0, term.0)),
        };
        let writer = create_snapshot_file(Arc::new(RealFs::default()), path, file_meta).map_err(
            |source| BackupError::Create {
                path: path.to_path_buf(),
                source,
            },
        )?;
        let mut temp = path.as_os_str().to_os_string();
        temp.push(".tmp");
        Ok(BackupFile {
            writer: Some(writer),
            meta: meta.clone(),
            path: path.to_path_buf(),
            temp: PathBuf::from(temp),
        })
    }

    /// Data bytes written so far: the offset of the next chunk.
    pub fn next_offset(&self) -> u64 {
        self.writer.as_ref().map_or(0, SnapshotWriter::data_bytes)
    }

    /// Appends `chunk`, which must be of the same snapshot, start at [`Self::next_offset`]
    /// and match its CRC-32C.
    pub fn append(&mut self, chunk: &SnapshotChunk) -> Result<(), BackupError> {
        if chunk.meta != self.meta {
            return Err(BackupError::SnapshotChanged {
                was: (self.meta.index, self.meta.checksum),
                now: (chunk.meta.index, chunk.meta.checksum),
            });
        }
        let expected = self.next_offset();
        if chunk.offset != expected {
            return Err(BackupError::WrongOffset {
                offset: chunk.offset,
                expected,
            });
        }
        let crc = crc32c::crc32c(&chunk.data);
        if crc != chunk.chunk_crc {
            return Err(BackupError::ChunkChecksum {
                offset: chunk.offset,
                computed: crc,
                sent: chunk.chunk_crc,
            });
        }
        let writer = self.writer.as_mut().ok_or(BackupError::Finished)?;
        writer
            .write_all(&chunk.data)
            .map_err(|source| BackupError::Write {
                path: self.temp.clone(),
                source,
            })
    }

    /// Checks that all the data arrived with the checksum the node announced, then makes the
    /// file durable under its name.
    pub fn finish(mut self) -> Result<(), BackupError> {
        let writer = self.writer.take().ok_or(BackupError::Finished)?;
        let (bytes, crc) = (writer.data_bytes(), writer.data_crc32c());
        if (bytes, crc) != (self.meta.size_bytes, self.meta.checksum) {
            let _ = std::fs::remove_file(&self.temp);
            return Err(BackupError::DataMismatch {
                bytes,
                crc,
                expected_bytes: self.meta.size_bytes,
                expected_crc: self.meta.checksum,
            });
        }
        writer.finish().map(|_| ()).map_err(|source| {
            let _ = std::fs::remove_file(&self.temp);
            BackupError::Finish {
                path: self.path.clone(),
                source,
            }
        })
    }
}

impl Drop for BackupFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_wire::{Membership, NodeId, Term};
    use std::error::Error as _;

    fn chunk(meta: &SnapshotMeta, offset: u64, data: &[u8]) -> SnapshotChunk {
        SnapshotChunk {
            meta: meta.clone(),
            offset,
            data: data.to_vec(),
            chunk_crc: crc32c::crc32c(data),
            done: false,
        }
    }

    #[test]
    fn a_chunk_out_of_place_or_damaged_is_refused_and_a_bad_path_named() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"the snapshot's data";
        let meta = SnapshotMeta {
            index: LogIndex(9),
            term: Term(2),
            membership: Membership::with_voters([NodeId(0)]),
            membership_entry: None,
            size_bytes: data.len() as u64,
            checksum: crc32c::crc32c(data),
        };
        let mut backup = BackupFile::create(&dir.path().join("b.snap"), &meta).unwrap();
        let late = backup.append(&chunk(&meta, 4, data)).unwrap_err();
        assert!(matches!(
            late,
            BackupError::WrongOffset {
                offset: 4,
                expected: 0
            }
        ));
        assert_eq!(late.to_string(), "chunk at offset 4 where 0 was expected");
        let mut damaged = chunk(&meta, 0, data);
        damaged.chunk_crc ^= 1;
        assert!(matches!(
            backup.append(&damaged),
            Err(BackupError::ChunkChecksum { offset: 0, .. })
        ));
        backup.append(&chunk(&meta, 0, &data[..4])).unwrap();
        let short = backup.finish().unwrap_err();
        assert!(
            short
                .to_string()
                .starts_with("received 4 bytes with checksum "),
            "{short}"
        );

        let nowhere = dir.path().join("missing").join("b.snap");
        let refused = BackupFile::create(&nowhere, &meta).err().unwrap();
        assert!(
            refused
                .to_string()
                .starts_with(&format!("creating {}: ", nowhere.display())),
            "{refused}"
        );
        assert!(refused.source().is_some());
    }
}
