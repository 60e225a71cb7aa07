//! Every size limit and on-disk constant of `rcraft-storage`, in one place.
//!
//! Plain constants, no owner. Relations between them are checked at compile time below.

/// Default size of one WAL segment file (preallocated at creation). The active segment is
/// written through its map, so up to this much of it is resident in the node's process until
/// it is sealed (sealed segments let go of their pages): 16 MiB keeps a node within 100 MiB
/// at 256 clients (docs/BENCHMARKS.md, "Memory per node at 256 clients"); a roll every few
/// seconds at full write rate costs nothing measurable.
pub const SEGMENT_BYTES_DEFAULT: u64 = 16 * 1024 * 1024;
/// Smallest segment size accepted (tests use small segments to exercise rollover).
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// Largest segment size accepted: record offsets inside a segment are kept as `u32`.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 31;

/// Bytes of the segment header at the start of every segment file.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes of a record header: `len u32 | crc32c u32 | index u64 | term u64`.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Largest payload of one record. A record larger than a configured segment gets a segment of
/// its own, sized to fit.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Magic number at offset 0 of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RCWALSEG";
/// Segment format version written: version 3 records the synced frontier in the header with
/// the term of the record at it (storage/FORMAT.md §1.1).
pub const SEGMENT_VERSION: u32 = 3;
/// The second segment format (a synced count without its record's term), still read; a
/// version-2 header is written again as version 3 when its count next changes.
pub const SEGMENT_VERSION_V2: u32 = 2;
/// The first segment format (no synced frontier), still read; its segments are never
/// rewritten, and new segments are always written in [`SEGMENT_VERSION`].
pub const SEGMENT_VERSION_V1: u32 = 1;

/// Bytes of one hard-state slot; two slots per file, each in its own 512-byte sector.
pub const HARD_STATE_SLOT_BYTES: usize = 512;
/// Bytes of the hard-state file (two slots).
pub const HARD_STATE_FILE_BYTES: usize = 2 * HARD_STATE_SLOT_BYTES;
/// Magic number at the start of each hard-state slot.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"RCHRDST1";

/// Magic number at offset 0 of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RCSNAP01";
/// Magic number at the end of every complete snapshot file.
pub const SNAPSHOT_FOOTER_MAGIC: [u8; 8] = *b"RCSNAPOK";
/// Snapshot format version written (version 1 is still read: storage/FORMAT.md §3).
pub const SNAPSHOT_VERSION: u32 = 2;
/// Largest opaque membership blob in a snapshot header.
pub const SNAPSHOT_MEMBERSHIP_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of the fixed part of a snapshot header (before the membership blob), as written.
pub const SNAPSHOT_HEADER_FIXED_BYTES: usize = 52;
/// Bytes of the fixed part of a version-1 snapshot header (no configuration entry point).
pub const SNAPSHOT_V1_HEADER_FIXED_BYTES: usize = 36;
/// The configuration entry index a version-2 header holds when it is unknown.
pub const SNAPSHOT_MEMBERSHIP_ENTRY_UNKNOWN: u64 = u64::MAX;
/// Bytes of the snapshot footer.
pub const SNAPSHOT_FOOTER_BYTES: usize = 24;
/// Write buffer of a [`crate::SnapshotWriter`] and read buffer when verifying a snapshot.
pub const SNAPSHOT_BUFFER_BYTES: usize = 256 * 1024;
/// Magic number at offset 0 of the chunk table of an incoming snapshot.
pub const SNAPSHOT_CHUNKS_MAGIC: [u8; 8] = *b"RCSNAPCK";
/// Chunk table format version written and accepted.
pub const SNAPSHOT_CHUNKS_VERSION: u32 = 1;
/// Bytes of the chunk table's header.
pub const SNAPSHOT_CHUNKS_HEADER_BYTES: usize = 24;
/// Bytes of one chunk table record: `offset u64 | len u32 | crc u32 | reserved u32 | record crc u32`.
pub const SNAPSHOT_CHUNK_RECORD_BYTES: usize = 24;
/// Chunk table records read at once when re-checking a partial snapshot.
pub const SNAPSHOT_CHUNK_RECORDS_PER_READ: usize = 4096;
/// Largest chunk [`crate::SnapshotStore::read_chunk`] returns.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 16 * 1024 * 1024;

const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
const _: () = assert!(SEGMENT_BYTES_MAX <= u32::MAX as u64 + 1);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(8));
const _: () = assert!(
    ((SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + RECORD_PAYLOAD_BYTES_MAX) as u64)
        < SEGMENT_BYTES_MAX
);
const _: () = assert!(HARD_STATE_SLOT_BYTES >= 64);
