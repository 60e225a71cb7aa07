//! One WAL segment: a preallocated, memory-mapped file holding a header and a run of records.
//!
//! Owned by the [`crate::Wal`] (the node's storage thread). Invariants:
//! - `offsets[i]` is the byte offset of the record with index `first_index + i`; records are
//!   contiguous, start right after the header and end at `write_end`.
//! - Every byte from `write_end` to the end of the file is zero in the map (so the record
//!   length at `write_end` reads 0, "end of data", and no stale record can follow).
//! - `dirty` covers every byte changed since the last successful sync.
//! - In a version-2 or -3 segment, the header's synced count never counts a record before a sync
//!   that made the record durable has returned: a sync carries the count of the records the
//!   syncs before it made durable, and the count of its own records is written into the map
//!   when it returns, for the next sync (or [`Segment::confirm`]) to carry (more, while a
//!   loss is being repaired: `claim_records`).

use crate::error::{Error, Result};
use crate::fs::{Fs, SegmentFile};
use crate::limits::{
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_VERSION_V1,
    SEGMENT_VERSION_V2,
};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A record as stored in the log, borrowed from the segment's map (no copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Log index.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// The opaque payload.
    pub payload: &'a [u8],
    /// The whole encoded record (header and payload), e.g. to ship it to a follower as is.
    pub encoded: &'a [u8],
}

impl RecordRef<'_> {
    /// True when the record's checksum still matches its bytes (it is checked when the WAL is
    /// opened; this checks again before the bytes leave the node, e.g. to a follower).
    pub fn checksum_matches(&self) -> bool {
        let record = self.encoded;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..]);
        crc == read_u32(record, 4)
    }
}

/// Copies of records read from the log with positional reads ([`crate::Wal::read_copies`]),
/// held in one buffer, each checked as recovery checks it (length, checksum, index).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordCopies {
    /// The records' bytes, back to back.
    bytes: Vec<u8>,
    /// Each record's index and byte range in `bytes`, in index order.
    records: Vec<(u64, Range<usize>)>,
}

impl RecordCopies {
    /// How many records are held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, in index order, borrowed from this copy.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        self.records.iter().map(|(index, range)| {
            let encoded = &self.bytes[range.clone()];
            RecordRef {
                index: *index,
                term: read_u64(encoded, 16),
                payload: &encoded[RECORD_HEADER_BYTES..],
                encoded,
            }
        })
    }
}

/// A record to append: log index, term and opaque payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Log index; a batch's indexes must continue the log without gaps.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// The opaque payload.
    pub payload: &'a [u8],
}

/// Encodes the 32-byte version-3 segment header for a segment whose first record has
/// `first_index`, with a synced count of `synced_records` whose last record has term
/// `frontier_term` (0: none, or not known).
pub(crate) fn encode_header(
    first_index: u64,
    synced_records: u32,
    frontier_term: u64,
) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    let crc = v3_header_crc(&header, first_index);
    header[12..32].copy_from_slice(&encode_synced_count(
        first_index,
        synced_records,
        frontier_term,
        crc,
    ));
    header
}

/// The fixed fields' checksum of a version-3 header: magic and version, then the first index,
/// which the file name holds (the header does not, to make room for the frontier's term).
fn v3_header_crc(header: &[u8], first_index: u64) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), &first_index.to_le_bytes())
}

/// Bytes 12..32 of a version-3 header: the synced count (12..16), the term of the record at
/// the frontier (16..24), the header checksum unchanged (24..28), and the checksum of bytes
/// 12..24 followed by the first index (28..32).
fn encode_synced_count(
    first_index: u64,
    synced_records: u32,
    frontier_term: u64,
    header_crc: u32,
) -> [u8; 20] {
    let mut bytes = [0u8; 20];
    bytes[0..4].copy_from_slice(&synced_records.to_le_bytes());
    bytes[4..12].copy_from_slice(&frontier_term.to_le_bytes());
    bytes[12..16].copy_from_slice(&header_crc.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..12]), &first_index.to_le_bytes());
    bytes[16..20].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// How many of a segment's records its header says were synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncedCount {
    /// A version-1 segment: it does not say.
    Unrecorded,
    /// The count's checksum does not match (bit rot in the header, or a torn header write).
    Damaged,
    /// This many records (from the first) were durable after the last sync that returned,
    /// the last of them of the given term (`None`: a version-2 header, which does not say,
    /// or no record counted).
    Records(u32, Option<u64>),
}

/// What a segment header says, or why it cannot be read.
#[derive(Debug)]
enum Header {
    /// The header verifies: its version, the first index it names and its synced count.
    Intact(u32, u64, SyncedCount),
    /// Its checksum does not match (bit rot, an unreadable sector read as garbage): nothing
    /// in it can be trusted, but nothing in it is needed either (storage/FORMAT.md §4.1).
    Damaged(String),
}

/// Checks a segment header; `named_first_index` is the index the file name gives (a
/// version-3 header's checksums cover it). A header that verifies but is not one this crate
/// can read (a newer version, another file's magic) is an error: rebuilding it would guess.
fn decode_header(path: &Path, bytes: &[u8], named_first_index: u64) -> Result<Header> {
    let bad = |offset: u64, reason: String| Err(Error::corruption(path, offset, reason));
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return bad(0, format!("file of {} bytes has no header", bytes.len()));
    }
    let stored_crc = read_u32(bytes, 24);
    let v1_crc = crc32c::crc32c(&bytes[0..24]);
    let v2_crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..12]), &bytes[16..24]);
    let v3_crc = v3_header_crc(bytes, named_first_index);
    let version = match read_u32(bytes, 8) {
        SEGMENT_VERSION_V1 if v1_crc == stored_crc => SEGMENT_VERSION_V1,
        SEGMENT_VERSION_V2 if v2_crc == stored_crc => SEGMENT_VERSION_V2,
        SEGMENT_VERSION if v3_crc == stored_crc => SEGMENT_VERSION,
        _ if stored_crc != v1_crc && stored_crc != v2_crc => {
            return Ok(Header::Damaged("segment header checksum mismatch".into()));
        }
        version => return bad(8, format!("unsupported segment version {version}")),
    };
    if bytes[0..8] != SEGMENT_MAGIC {
        return bad(0, "bad segment magic".into());
    }
    if version == SEGMENT_VERSION {
        let synced = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[12..24]),
            &named_first_index.to_le_bytes(),
        );
        let count = if synced == read_u32(bytes, 28) {
            let records = read_u32(bytes, 12);
            let term = read_u64(bytes, 16);
            SyncedCount::Records(records, (records > 0 && term > 0).then_some(term))
        } else {
            SyncedCount::Damaged
        };
        return Ok(Header::Intact(version, named_first_index, count));
    }
    let first_index = read_u64(bytes, 16);
    if version == SEGMENT_VERSION_V1 {
        if bytes[28..32] != [0; 4] || read_u32(bytes, 12) != 0 {
            return Ok(Header::Damaged(
                "reserved bytes of a version-1 header are not zero".into(),
            ));
        }
        return Ok(Header::Intact(
            version,
            first_index,
            SyncedCount::Unrecorded,
        ));
    }
    let count = if crc32c::crc32c(&bytes[12..24]) == read_u32(bytes, 28) {
        SyncedCount::Records(read_u32(bytes, 12), None)
    } else {
        SyncedCount::Damaged
    };
    Ok(Header::Intact(version, first_index, count))
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Encodes a record header. The checksum covers the length field, index, term and payload:
/// every byte of the record except the checksum itself.
pub(crate) fn encode_record_header(
    index: u64,
    term: u64,
    payload: &[u8],
) -> [u8; RECORD_HEADER_BYTES] {
    let len = (RECORD_HEADER_BYTES + payload.len()) as u32;
    let mut header = [0u8; RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[8..16].copy_from_slice(&index.to_le_bytes());
    header[16..24].copy_from_slice(&term.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..4]), &header[8..24]);
    let crc = crc32c::crc32c_append(crc, payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

/// What is wrong with the bytes at a record position, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A zero length field: the segment's data ends here.
    End,
    /// A whole record with a matching checksum: its length, index and term.
    Valid { len: usize, index: u64, term: u64 },
    /// Not a valid record.
    Bad(String),
}

/// Decodes the record at `pos` of a segment's bytes, checking length bounds and checksum.
pub(crate) fn decode_slot(bytes: &[u8], pos: usize) -> Slot {
    if pos + 4 > bytes.len() {
        return Slot::End;
    }
    let len = read_u32(bytes, pos) as usize;
    if len == 0 {
        return Slot::End;
    }
    if len < RECORD_HEADER_BYTES || len > bytes.len() - pos {
        return Slot::Bad(format!("record length {len} out of range"));
    }
    let record = &bytes[pos..pos + len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&record[0..4]), &record[8..]);
    if crc != read_u32(record, 4) {
        return Slot::Bad("record checksum mismatch".into());
    }
    Slot::Valid {
        len,
        index: read_u64(record, 8),
        term: read_u64(record, 16),
    }
}

/// Checks the framing of one whole encoded record handed to [`crate::Wal::append_encoded`]:
/// its length bounds, as [`decode_slot`] does, but not its checksum, which the caller vouches
/// for (checked in debug builds).
pub(crate) fn check_encoded(bytes: &[u8]) -> Slot {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Slot::Bad(format!("truncated record of {} bytes", bytes.len()));
    }
    let len = read_u32(bytes, 0) as usize;
    if len < RECORD_HEADER_BYTES || len > bytes.len() {
        return Slot::Bad(format!("record length {len} out of range"));
    }
    debug_assert!(
        decode_slot(bytes, 0) != Slot::Bad("record checksum mismatch".into()),
        "an encoded record with a bad checksum reached the WAL"
    );
    Slot::Valid {
        len,
        index: read_u64(bytes, 8),
        term: read_u64(bytes, 16),
    }
}

/// The result of scanning a segment's records.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Offsets of the valid, contiguous records from the start.
    pub offsets: Vec<u32>,
    /// Where the valid records end.
    pub end: usize,
    /// Why scanning stopped before a clean end, if it did.
    pub bad: Option<String>,
    /// What follows `end` is the remains of an interrupted truncation (recovery sets this
    /// from a truncation marker), never evidence of damage.
    pub truncation_remains: bool,
}

/// Scans records from the header on, stopping at the end marker or the first bad record.
pub(crate) fn scan(bytes: &[u8], first_index: u64) -> Scan {
    scan_at(bytes, SEGMENT_HEADER_BYTES, first_index)
}

/// Scans records from byte `pos`, the first expected to carry `first_index`.
pub(crate) fn scan_at(bytes: &[u8], pos: usize, first_index: u64) -> Scan {
    let mut offsets = Vec::new();
    let mut pos = pos;
    let mut expected = first_index;
    let bad = loop {
        match decode_slot(bytes, pos) {
            Slot::End => break None,
            Slot::Bad(reason) => break Some(reason),
            Slot::Valid { index, .. } if index != expected => {
                break Some(format!("expected index {expected}, found {index}"));
            }
            Slot::Valid { len, .. } => {
                offsets.push(pos as u32);
                pos += len;
                expected += 1;
            }
        }
    };
    Scan {
        offsets,
        end: pos,
        bad,
        truncation_remains: false,
    }
}

/// An open segment. See the module docs for its invariants.
#[derive(Debug)]
pub(crate) struct Segment {
    pub path: PathBuf,
    pub first_index: u64,
    file: Box<dyn SegmentFile>,
    offsets: Vec<u32>,
    write_end: usize,
    dirty: Option<Range<usize>>,
    /// The header's format version (1: no synced count, never rewritten; 2: a count without
    /// its record's term, written again as version 3 when the count next changes).
    version: u32,
    /// The synced count the header held when the segment was opened or created.
    pub opened_count: SyncedCount,
    /// The synced count and frontier term the header holds now, when known to be intact
    /// (versions 2 and 3; 0 for a term not written).
    header_count: Option<(u32, u64)>,
    /// The whole header is written again at the next sync (as version 3): it was damaged,
    /// or it is an older header whose count must change (a claim, a sync).
    header_rewrite: bool,
    /// Records this segment must claim as synced even while it holds fewer: the end of a
    /// range lost and not yet repaired, so a crash before the repair does not forget it.
    pub claim_records: u32,
    /// The term of the last record the claim covers (0: not known), written with it.
    pub claim_term: u64,
    /// Records known durable: held when a sync returned (or, at open, what the header's
    /// intact count vouches for). Only these are ever counted in the header.
    durable_records: u32,
}

impl Segment {
    /// Creates a new segment durably: temporary name, zero-filled, header synced, renamed.
    /// The caller syncs the directory.
    pub fn create(fs: &dyn Fs, dir: &Path, first_index: u64, len: u64) -> Result<Segment> {
        let path = dir.join(segment_file_name(first_index));
        let tmp = dir.join(format!("{}.tmp", segment_file_name(first_index)));
        let mut file = fs
            .create_segment(&tmp, len)
            .map_err(|e| Error::io("create segment", &tmp, e))?;
        file.write_at(0, &encode_header(first_index, 0, 0))
            .map_err(|e| Error::io("write segment header", &tmp, e))?;
        file.sync_range(0, SEGMENT_HEADER_BYTES)
            .map_err(|e| Error::io("sync segment header", &tmp, e))?;
        fs.rename(&tmp, &path)
            .map_err(|e| Error::io("rename segment", &tmp, e))?;
        Ok(Segment {
            path,
            first_index,
            file,
            offsets: Vec::new(),
            write_end: SEGMENT_HEADER_BYTES,
            dirty: None,
            version: SEGMENT_VERSION,
            opened_count: SyncedCount::Records(0, None),
            header_count: Some((0, 0)),
            header_rewrite: false,
            claim_records: 0,
            claim_term: 0,
            durable_records: 0,
        })
    }

    /// Opens an existing segment and checks its header against the index in its name.
    /// Records are not scanned yet: see [`scan`]. A damaged header is rebuilt from the file
    /// name (the only thing it holds that records do not: the synced count is then unknown,
    /// [`SyncedCount::Damaged`]); it is written again at the next sync.
    pub fn open(fs: &dyn Fs, path: PathBuf, named_first_index: u64) -> Result<Segment> {
        // Unreadable sectors are found before the file is mapped (a mapped read of one would
        // kill the process with SIGBUS) and become zeroes: damage that recovery then judges
        // by the synced count like any other. Not the header's page: without the count it
        // holds, entries synced there could not be told from a torn write.
        let unreadable = crate::fs::find_unreadable_blocks(fs, &path)
            .map_err(|e| Error::io("read segment", &path, e))?;
        if unreadable.first() == Some(&0) {
            return Err(Error::corruption(
                &path,
                0,
                format!(
                    "bytes 0..{} (the segment header and its synced count) cannot be read (I/O \
                     error: an unreadable sector); which entries of this segment were synced \
                     is unknown, so the node cannot judge what it lost: replace this node \
                     (docs/OPERATIONS.md §7)",
                    crate::fs::UNREADABLE_BLOCK_BYTES
                ),
            ));
        }
        if !unreadable.is_empty() {
            for &block in &unreadable {
                log::warn!(
                    "{}: bytes {block}..{} could not be read (I/O error: an unreadable sector); \
                     rewritten with zeroes, the records there count as damaged",
                    path.display(),
                    block + crate::fs::UNREADABLE_BLOCK_BYTES
                );
            }
            crate::fs::rewrite_blocks_with_zeroes(fs, &path, &unreadable)
                .map_err(|e| Error::io("rewrite unreadable sectors", &path, e))?;
        }
        let file = fs
            .open_segment(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let decoded = decode_header(&path, file.bytes(), named_first_index)?;
        let (version, first_index, opened_count, header_rewrite) = match decoded {
            Header::Intact(version, first_index, count) => (version, first_index, count, false),
            Header::Damaged(reason) => {
                // A version-3 header's checksums cover the index of the file name, so a
                // segment renamed by hand reads as a damaged header: its first record says.
                if let Slot::Valid { index, .. } = decode_slot(file.bytes(), SEGMENT_HEADER_BYTES)
                    && index != named_first_index
                {
                    return Err(Error::corruption(
                        &path,
                        SEGMENT_HEADER_BYTES as u64,
                        format!(
                            "the first record has index {index} but the file name says \
                             {named_first_index}: a file renamed by hand?"
                        ),
                    ));
                }
                log::error!(
                    "{}: {reason}; rebuilding the header from the file name (first index \
                     {named_first_index}); the records are judged by their own checksums",
                    path.display()
                );
                (
                    SEGMENT_VERSION,
                    named_first_index,
                    SyncedCount::Damaged,
                    true,
                )
            }
        };
        if first_index != named_first_index {
            return Err(Error::corruption(
                &path,
                16,
                format!(
                    "header first index {first_index} does not match the file name (index \
                     {named_first_index}): a file renamed by hand?"
                ),
            ));
        }
        Ok(Segment {
            path,
            first_index,
            file,
            offsets: Vec::new(),
            write_end: SEGMENT_HEADER_BYTES,
            dirty: None,
            version,
            opened_count,
            header_count: match opened_count {
                SyncedCount::Records(count, term) => Some((count, term.unwrap_or(0))),
                SyncedCount::Unrecorded | SyncedCount::Damaged => None,
            },
            header_rewrite,
            claim_records: 0,
            claim_term: 0,
            durable_records: match opened_count {
                SyncedCount::Records(count, _) => count,
                SyncedCount::Unrecorded | SyncedCount::Damaged => 0,
            },
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.file.bytes()
    }

    /// Adopts the result of a scan as this segment's records.
    pub fn set_records(&mut self, offsets: Vec<u32>, end: usize) {
        self.offsets = offsets;
        self.write_end = end;
        self.durable_records = self.durable_records.min(self.held());
    }

    fn held(&self) -> u32 {
        u32::try_from(self.offsets.len()).expect("offsets are u32, so are counts")
    }

    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Index one past this segment's last record.
    pub fn next_index(&self) -> u64 {
        self.first_index + self.len()
    }

    /// Whether a record with this payload length fits after the current records.
    pub fn fits(&self, payload_len: usize) -> bool {
        self.bytes().len() - self.write_end >= RECORD_HEADER_BYTES + payload_len
    }

    /// Writes one record into the map at `write_end`. The caller checked `fits` and the index.
    pub fn append(&mut self, record: &Record<'_>) -> Result<()> {
        debug_assert_eq!(record.index, self.next_index());
        let header = encode_record_header(record.index, record.term, record.payload);
        let start = self.write_end;
        let io = |e| Error::io("write record", &self.path, e);
        self.file.write_at(start, &header).map_err(io)?;
        let io = |e| Error::io("write record", &self.path, e);
        self.file
            .write_at(start + RECORD_HEADER_BYTES, record.payload)
            .map_err(io)?;
        let end = start + RECORD_HEADER_BYTES + record.payload.len();
        self.offsets.push(start as u32);
        self.write_end = end;
        self.mark_dirty(start..end);
        Ok(())
    }

    /// Writes one whole encoded record (checked by the caller: length, checksum, index) into
    /// the map at `write_end`. The caller checked `fits`.
    pub fn append_encoded(&mut self, record: &[u8]) -> Result<()> {
        debug_assert_eq!(read_u64(record, 8), self.next_index());
        let start = self.write_end;
        let io = |e| Error::io("write record", &self.path, e);
        self.file.write_at(start, record).map_err(io)?;
        let end = start + record.len();
        self.offsets.push(start as u32);
        self.write_end = end;
        self.mark_dirty(start..end);
        Ok(())
    }

    pub fn mark_dirty(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        self.dirty = Some(match self.dirty.take() {
            Some(old) => old.start.min(range.start)..old.end.max(range.end),
            None => range,
        });
    }

    /// Zeroes `range` of the map (marking it dirty); used to cut records off.
    pub fn zero(&mut self, range: Range<usize>) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let zeroes = vec![0u8; range.len()];
        self.file
            .write_at(range.start, &zeroes)
            .map_err(|e| Error::io("zero segment tail", &self.path, e))?;
        self.mark_dirty(range);
        Ok(())
    }

    /// Removes the records from `index` on (zeroing their bytes). Durable after `sync`.
    pub fn truncate_from(&mut self, index: u64) -> Result<()> {
        if index >= self.next_index() || self.offsets.is_empty() {
            return Ok(());
        }
        let keep = index.saturating_sub(self.first_index) as usize;
        let cut = self.offsets[keep] as usize;
        self.zero(cut..self.write_end)?;
        self.offsets.truncate(keep);
        self.write_end = cut;
        self.durable_records = self.durable_records.min(self.held());
        Ok(())
    }

    /// Makes every change since the last sync durable. In a version-2 segment the header's
    /// synced count goes with it, but only as far as earlier syncs made records durable: a
    /// disk may persist the header's page before the records' pages, so a count written for
    /// this sync's own records could reach the disk without them (a power loss during the
    /// sync) and read as a loss at the next start (SIM_FINDINGS S4). When the sync returns,
    /// the count of its records is written into the map, and the next sync, or
    /// [`Segment::confirm`] when no other comes, makes it durable: cheap, one more page (the
    /// header's) in a call made anyway.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty.is_some() {
            self.raise_claim_term();
            self.update_synced_count()?;
        }
        if let Some(range) = self.dirty.clone() {
            let held = self.held();
            self.file
                .sync_range(range.start, range.len())
                .map_err(|e| Error::io("sync segment", &self.path, e))?;
            self.dirty = None;
            self.durable_records = held;
            self.update_synced_count()?;
        }
        Ok(())
    }

    /// Whether the header's count of durable records is not durable yet (see [`Self::sync`]).
    pub fn count_pending(&self) -> bool {
        self.dirty.is_some()
    }

    /// Makes the header's count of the records the last sync made durable durable too, with
    /// whatever else is dirty: a sync, which after one that returned holds the header's page
    /// alone. Called when no other sync follows soon (the storage thread idle, a segment
    /// sealed), so that a later loss of those records is known as one.
    pub fn confirm(&mut self) -> Result<()> {
        self.sync()
    }

    /// Lets go of the process's resident copy of this segment's pages (they are read back on
    /// the next access; see `SegmentFile::release_pages`).
    pub fn release_pages(&mut self) -> Result<()> {
        self.file
            .release_pages()
            .map_err(|e| Error::io("release segment pages", &self.path, e))
    }

    /// While this segment claims a lost range beyond its durable records, a record synced
    /// inside that range (a leader's entry taken during the repair) may be acknowledged: if
    /// it is lost again, the claim must carry its term, not the older one it had, or the node
    /// would judge candidates against a term below what it acknowledged (SIM_FINDINGS 60).
    /// Called before a sync, so the raised term reaches the disk with the records themselves
    /// (only ever raising it is safe if that sync is torn: the claim then asks more of a
    /// candidate, never less). A claim whose term is not known (0) stays so: that is stricter.
    fn raise_claim_term(&mut self) {
        if self.claim_term == 0 || self.claim_records <= self.durable_records {
            return;
        }
        let last_claimed = self.held().min(self.claim_records);
        if last_claimed > 0 {
            let term = self.term_at(self.first_index + u64::from(last_claimed) - 1);
            self.claim_term = self.claim_term.max(term);
        }
    }

    /// Writes the synced count the next sync will make durable: every record held, or the
    /// claim of a loss being repaired when that is more.
    /// With the count goes the term of the last record it counts (the claim's term when the
    /// claim is further than the records held).
    fn update_synced_count(&mut self) -> Result<()> {
        if self.version == SEGMENT_VERSION_V1 {
            return Ok(());
        }
        let count = self.durable_records.max(self.claim_records);
        let term = if self.claim_records > self.durable_records {
            self.claim_term
        } else if count > 0 {
            self.term_at(self.first_index + u64::from(count) - 1)
        } else {
            0
        };
        if self.header_count == Some((count, term)) && !self.header_rewrite {
            return Ok(());
        }
        if self.header_rewrite || self.version == SEGMENT_VERSION_V2 {
            // One sector: the fixed fields are those the file name gives. A version-2 header
            // is written again whole as version 3, which has room for the term.
            let header = encode_header(self.first_index, count, term);
            self.file
                .write_at(0, &header)
                .map_err(|e| Error::io("rewrite segment header", &self.path, e))?;
            self.mark_dirty(0..SEGMENT_HEADER_BYTES);
            self.header_count = Some((count, term));
            self.header_rewrite = false;
            self.version = SEGMENT_VERSION;
            return Ok(());
        }
        let header_crc = read_u32(self.bytes(), 24);
        let bytes = encode_synced_count(self.first_index, count, term, header_crc);
        self.file
            .write_at(12, &bytes)
            .map_err(|e| Error::io("write segment synced count", &self.path, e))?;
        self.mark_dirty(12..SEGMENT_HEADER_BYTES);
        self.header_count = Some((count, term));
        Ok(())
    }

    /// Marks the header for rewriting at the next sync (recovery found it stale or damaged).
    pub fn rewrite_synced_count(&mut self) {
        self.header_count = None;
        self.mark_dirty(12..SEGMENT_HEADER_BYTES);
    }

    /// Makes the next sync write `claim_records` as the synced count (at least), with
    /// `claim_term` as its last record's term (0: not known), so a lost range stays claimed
    /// across a crash. An older header is written again whole as version 3.
    pub fn hold_claim(&mut self, claim_records: u32, claim_term: u64) {
        self.claim_records = claim_records;
        self.claim_term = claim_term;
        if self.version != SEGMENT_VERSION {
            self.version = SEGMENT_VERSION;
            self.header_rewrite = true;
        }
        self.rewrite_synced_count();
    }

    /// Whether the header will be written whole at the next sync (it was damaged).
    pub fn header_needs_rewrite(&self) -> bool {
        self.header_rewrite
    }

    /// The record with `index`, which must be in this segment.
    pub fn record(&self, index: u64) -> RecordRef<'_> {
        let slot = (index - self.first_index) as usize;
        let start = self.offsets[slot] as usize;
        let bytes = self.bytes();
        let len = read_u32(bytes, start) as usize;
        let encoded = &bytes[start..start + len];
        RecordRef {
            index,
            term: read_u64(encoded, 16),
            payload: &encoded[RECORD_HEADER_BYTES..],
            encoded,
        }
    }

    /// Byte range of the record with `index`, which must be in this segment (from the
    /// offsets recovery and appends recorded; the map is not read).
    fn record_span(&self, index: u64) -> Range<usize> {
        let slot = (index - self.first_index) as usize;
        let end = match self.offsets.get(slot + 1) {
            Some(&next) => next as usize,
            None => self.write_end,
        };
        self.offsets[slot] as usize..end
    }

    /// How many records from `index` on, up to `end` (exclusive; both in this segment), a
    /// read taking at least one and stopping after the one that brings their encoded size to
    /// `max_bytes` or more takes.
    pub fn records_within(&self, index: u64, end: u64, max_bytes: u64) -> u64 {
        let mut bytes = 0u64;
        let mut count = 0;
        while index + count < end {
            bytes += self.record_span(index + count).len() as u64;
            count += 1;
            if bytes >= max_bytes {
                break;
            }
        }
        count
    }

    /// Copies the records `index..end` (in this segment) into `out` with one positional read
    /// ([`SegmentFile::read_at`]), never through the map, and checks each one as recovery
    /// does (length, checksum, index). An unreadable sector or a record that fails its check
    /// is [`Error::DamagedRecords`] naming this file, the offset and the indexes; nothing is
    /// added to `out` then.
    pub fn read_copies(&self, index: u64, end: u64, out: &mut RecordCopies) -> Result<()> {
        if index >= end {
            return Ok(());
        }
        let start = self.record_span(index).start;
        let stop = self.record_span(end - 1).end;
        let base = out.bytes.len();
        out.bytes.resize(base + (stop - start), 0);
        let read = crate::fs::read_exact_from_segment(
            self.file.as_ref(),
            start as u64,
            &mut out.bytes[base..],
        );
        if let Err(e) = read {
            out.bytes.truncate(base);
            return Err(self.read_failure(index, end, e));
        }
        for at in index..end {
            let span = self.record_span(at);
            let pos = base + span.start - start;
            let damaged = |reason: String| Error::DamagedRecords {
                file: self.path.clone(),
                offset: span.start as u64,
                first: at,
                last: at,
                reason,
            };
            let problem = match decode_slot(&out.bytes[..base + span.end - start], pos) {
                Slot::Valid { len, index, .. } if len == span.len() && index == at => None,
                Slot::Valid { len, index, .. } => Some(format!(
                    "a record of {len} bytes with index {index} where one of {} bytes with index \
                     {at} was",
                    span.len()
                )),
                Slot::End => Some("zeroes where the record was".to_string()),
                Slot::Bad(reason) => Some(reason),
            };
            if let Some(reason) = problem {
                out.bytes.truncate(base);
                out.records
                    .truncate(out.records.len() - (at - index) as usize);
                return Err(damaged(reason));
            }
            out.records.push((at, pos..pos + span.len()));
        }
        Ok(())
    }

    /// The error of a failed read of the records `index..end`: for an unreadable sector,
    /// which records it erased, found by reading them one by one (the first run of them).
    fn read_failure(&self, index: u64, end: u64, e: std::io::Error) -> Error {
        if !crate::fs::is_unreadable_sector(&e) {
            return Error::io("read segment", &self.path, e);
        }
        let unreadable = |at: u64| {
            let span = self.record_span(at);
            let mut buf = vec![0u8; span.len()];
            let read =
                crate::fs::read_exact_from_segment(self.file.as_ref(), span.start as u64, &mut buf);
            read.is_err_and(|e| crate::fs::is_unreadable_sector(&e))
        };
        let (first, last) = match (index..end).find(|&at| unreadable(at)) {
            Some(first) => {
                let after = (first + 1..end).find(|&at| !unreadable(at)).unwrap_or(end);
                (first, after - 1)
            }
            // Read whole, then each alone, and only the first failed: the records read were
            // whole, yet the sector is bad; name them all.
            None => (index, end - 1),
        };
        Error::DamagedRecords {
            file: self.path.clone(),
            offset: self.record_span(first).start as u64,
            first,
            last,
            reason: format!("{e} (an unreadable sector)"),
        }
    }

    pub fn term_at(&self, index: u64) -> u64 {
        let start = self.offsets[(index - self.first_index) as usize] as usize;
        read_u64(self.bytes(), start + 16)
    }
}

/// File name of the segment whose first record has `first_index`.
pub(crate) fn segment_file_name(first_index: u64) -> String {
    format!("{first_index:020}{SEGMENT_SUFFIX}")
}

/// Suffix of every segment file name.
pub(crate) const SEGMENT_SUFFIX: &str = ".wal";

/// Parses a segment file name back into its first index.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(index: u64, term: u64, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES];
        bytes.extend_from_slice(&encode_record_header(index, term, payload));
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(&[0; 8]);
        bytes
    }

    #[test]
    fn record_round_trips_and_every_bit_flip_is_caught() {
        let bytes = encoded(7, 3, b"payload");
        let at = SEGMENT_HEADER_BYTES;
        let whole = RECORD_HEADER_BYTES + 7;
        assert_eq!(
            decode_slot(&bytes, at),
            Slot::Valid {
                len: whole,
                index: 7,
                term: 3
            }
        );
        assert_eq!(decode_slot(&bytes, at + whole), Slot::End);
        for byte in at..at + whole {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                let slot = decode_slot(&damaged, at);
                assert!(
                    matches!(slot, Slot::Bad(_)),
                    "byte {byte} bit {bit}: {slot:?}"
                );
            }
        }
    }

    #[test]
    fn a_record_read_back_checks_its_checksum_again() {
        let bytes = encoded(7, 3, b"payload");
        let at = SEGMENT_HEADER_BYTES;
        let whole = RECORD_HEADER_BYTES + 7;
        let record = |bytes: &[u8]| {
            let encoded = bytes[at..at + whole].to_vec();
            RecordRef {
                index: 7,
                term: 3,
                payload: &encoded[RECORD_HEADER_BYTES..],
                encoded: &encoded,
            }
            .checksum_matches()
        };
        assert!(record(&bytes));
        for byte in at..at + whole {
            let mut damaged = bytes.clone();
            damaged[byte] ^= 0x10;
            assert!(!record(&damaged), "byte {byte}");
        }
    }

    #[test]
    fn empty_payload_is_not_the_end_marker() {
        let bytes = encoded(1, 1, b"");
        let scanned = scan(&bytes, 1);
        assert_eq!(scanned.offsets, vec![SEGMENT_HEADER_BYTES as u32]);
        assert_eq!(scanned.bad, None);
    }

    #[test]
    fn header_round_trips_and_names_parse() {
        let decoded =
            |bytes: &[u8], name: u64| match decode_header(Path::new("x"), bytes, name).unwrap() {
                Header::Intact(version, first, count) => Ok((version, first, count)),
                Header::Damaged(reason) => Err(reason),
            };
        assert_eq!(
            decoded(&encode_header(42, 7, 5), 42),
            Ok((SEGMENT_VERSION, 42, SyncedCount::Records(7, Some(5))))
        );
        assert_eq!(
            decoded(&encode_header(42, 0, 0), 42),
            Ok((SEGMENT_VERSION, 42, SyncedCount::Records(0, None)))
        );
        // The count and the term are checked together, and with the name's index.
        for byte in [12, 17] {
            let mut damaged = encode_header(42, 7, 5);
            damaged[byte] ^= 1;
            assert_eq!(
                decoded(&damaged, 42),
                Ok((SEGMENT_VERSION, 42, SyncedCount::Damaged))
            );
        }
        let mut damaged = encode_header(42, 7, 5);
        damaged[9] ^= 1;
        assert!(
            decoded(&damaged, 42).is_err(),
            "the fixed fields are checked"
        );
        assert!(
            decoded(&encode_header(42, 7, 5), 43).is_err(),
            "another file's header does not verify"
        );
        // A version-2 header (count without a term) still reads.
        let mut v2 = [0u8; SEGMENT_HEADER_BYTES];
        v2[0..8].copy_from_slice(&SEGMENT_MAGIC);
        v2[8..12].copy_from_slice(&SEGMENT_VERSION_V2.to_le_bytes());
        v2[12..16].copy_from_slice(&7u32.to_le_bytes());
        v2[16..24].copy_from_slice(&42u64.to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&v2[0..12]), &v2[16..24]);
        v2[24..28].copy_from_slice(&crc.to_le_bytes());
        let crc = crc32c::crc32c(&v2[12..24]);
        v2[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decoded(&v2, 42),
            Ok((SEGMENT_VERSION_V2, 42, SyncedCount::Records(7, None)))
        );
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        assert_eq!(parse_segment_file_name("42.wal"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.wal.tmp"),
            None
        );
    }
}
