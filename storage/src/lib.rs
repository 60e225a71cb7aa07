//! `rcraft-storage`: everything rcraft keeps on disk.
//!
//! - [`Wal`]: the segmented, memory-mapped write-ahead log of Raft entries (opaque payloads).
//! - [`HardStateStore`]: current term, vote and commit hint, saved atomically.
//! - [`SnapshotStore`]: snapshot files written, verified and received in chunks.
//! - [`fs`]: the file-system seam ([`RealFs`], and [`SimFs`] for crash and fault tests).
//!
//! All of it is owned by one thread (the node's storage thread); nothing here locks or spawns.
//! Every byte on disk is described in `storage/FORMAT.md`. This crate depends on no other
//! rcraft crate.
//!
//! ```
//! use rcraft_storage::{Record, Wal, WalOptions};
//! # let dir = tempfile::tempdir().unwrap();
//! let mut wal = Wal::open(dir.path(), WalOptions::default())?;
//! wal.append(&[
//!     Record { index: 1, term: 1, payload: b"first" },
//!     Record { index: 2, term: 1, payload: b"second" },
//! ])?;
//! wal.sync()?; // one sync for the whole batch
//! assert_eq!(wal.last_index(), 2);
//! assert_eq!(wal.read(2..3)?[0].payload, b"second");
//! # Ok::<(), rcraft_storage::Error>(())
//! ```

mod error;
pub mod fs;
mod hard_state;
pub mod limits;
mod snapshot;
mod wal;

pub use error::{Error, Result};
pub use fs::{CrashMode, Fs, RealFs, ShadowFs, SimFs, create_dir_durable};
pub use hard_state::{HardState, HardStateSlot, HardStateStore, read_hard_state_slots};
pub use snapshot::{
    Finish, PartialSnapshot, SnapshotFileMeta, SnapshotInfo, SnapshotReader, SnapshotStore,
    SnapshotWriter, create_snapshot_file, open_snapshot_file, snapshot_point_of_file,
};
pub use wal::{Lost, Record, RecordCopies, RecordRef, Wal, WalOptions};
