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
use rcraft_wire::{EntryPayload, SnapshotChunk, SnapshotMeta};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    pub fn create(path: &Path, meta: &SnapshotMeta) -> Result<BackupFile, String> {
        let file_meta = SnapshotFileMeta {
            index: meta.index.0,
            term: meta.term.0,
            membership: payload_bytes(&EntryPayload::Membership(meta.membership.clone())),
        };
        let writer = create_snapshot_file(Arc::new(RealFs::default()), path, file_meta)
            .map_err(|e| e.to_string())?;
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
    pub fn append(&mut self, chunk: &SnapshotChunk) -> Result<(), String> {
        if chunk.meta != self.meta {
            return Err(format!(
                "the node's snapshot changed during the backup (index {} checksum {:#010x}, \
                 now index {} checksum {:#010x})",
                self.meta.index, self.meta.checksum, chunk.meta.index, chunk.meta.checksum
            ));
        }
        let expected = self.next_offset();
        if chunk.offset != expected {
            return Err(format!(
                "chunk at offset {} where {expected} was expected",
                chunk.offset
            ));
        }
        let crc = crc32c::crc32c(&chunk.data);
        if crc != chunk.chunk_crc {
            return Err(format!(
                "chunk at offset {} has checksum {crc:#010x}, the node sent {:#010x}",
                chunk.offset, chunk.chunk_crc
            ));
        }
        let writer = self.writer.as_mut().ok_or("the backup is finished")?;
        writer
            .write_all(&chunk.data)
            .map_err(|e| format!("writing {}: {e}", self.temp.display()))
    }

    /// Checks that all the data arrived with the checksum the node announced, then makes the
    /// file durable under its name.
    pub fn finish(mut self) -> Result<(), String> {
        let writer = self.writer.take().ok_or("the backup is finished")?;
        let (bytes, crc) = (writer.data_bytes(), writer.data_crc32c());
        if (bytes, crc) != (self.meta.size_bytes, self.meta.checksum) {
            let _ = std::fs::remove_file(&self.temp);
            return Err(format!(
                "received {bytes} bytes with checksum {crc:#010x}; the node's snapshot has {} \
                 bytes with checksum {:#010x}",
                self.meta.size_bytes, self.meta.checksum
            ));
        }
        writer.finish().map(|_| ()).map_err(|e| {
            let _ = std::fs::remove_file(&self.temp);
            format!("finishing {}: {e}", self.path.display())
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
