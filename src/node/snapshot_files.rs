//! Where the apply thread writes and reads whole snapshots.
//!
//! The apply thread owns the state machine, so it writes local snapshots and reads the one to
//! restore itself, through this seam, without ever blocking the consensus thread. The storage
//! crate's snapshot store sits behind it in a running node.

use rcraft_wire::SnapshotMeta;
use std::io::{Read, Write};

/// Fills a snapshot's data.
pub(crate) type SnapshotWriteFn<'a> = &'a mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>;

/// A snapshot opened for reading: its metadata and its data.
pub(crate) type OpenSnapshot = (SnapshotMeta, Box<dyn Read + Send>);

/// Durable snapshot files, as seen by the apply thread.
pub(crate) trait SnapshotFiles: Send {
    /// Writes a new snapshot described by `meta` (its `size_bytes` and `checksum` are filled
    /// in here) with the bytes `write` produces, makes it durable and current, and returns
    /// the complete metadata.
    fn save(
        &mut self,
        meta: SnapshotMeta,
        write: SnapshotWriteFn<'_>,
    ) -> Result<SnapshotMeta, String>;

    /// Opens the current snapshot, if there is one.
    fn open_current(&mut self) -> Result<Option<OpenSnapshot>, String>;
}
