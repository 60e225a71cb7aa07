//! Snapshot files: written under a temporary name, verified, renamed into place; read back
//! whole or in chunks; received from a leader in resumable chunks.
//!
//! Owned by the node's storage thread (a [`SnapshotWriter`] may be handed to the apply thread
//! while the state machine writes into it). File format: `storage/FORMAT.md`. Invariants:
//! - A file named `snap-<index>-<term>.snap` is complete: its header and footer checksums
//!   were verified and synced before the rename, and the directory was synced after it.
//! - Older snapshots are removed only after a newer one is durable. Once a caller has said
//!   which snapshots it uses ([`SnapshotStore::keep`]), only its next word removes any: a
//!   snapshot being sent to a follower, or that the caller has not heard of yet, stays.
//! - At most one partial (incoming) snapshot exists: `partial.snap.recv`, with its chunk
//!   table `partial.snap.chunks`; a table record is written only after its chunk's data is
//!   durable, and data is trusted on resume only as far as the table vouches for it.

use crate::error::{Error, Result};
use crate::fs::{self, Fs, ReadFile, WriteFile};
use crate::limits::{
    SNAPSHOT_BUFFER_BYTES, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_RECORD_BYTES,
    SNAPSHOT_CHUNK_RECORDS_PER_READ, SNAPSHOT_CHUNKS_HEADER_BYTES, SNAPSHOT_CHUNKS_MAGIC,
    SNAPSHOT_CHUNKS_VERSION, SNAPSHOT_FOOTER_BYTES, SNAPSHOT_FOOTER_MAGIC,
    SNAPSHOT_HEADER_FIXED_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_MEMBERSHIP_BYTES_MAX,
    SNAPSHOT_MEMBERSHIP_ENTRY_UNKNOWN, SNAPSHOT_V1_HEADER_FIXED_BYTES, SNAPSHOT_VERSION,
};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a snapshot stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFileMeta {
    /// Index of the last entry the snapshot includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The cluster configuration at `index`, encoded by the caller (opaque here).
    pub membership: Vec<u8>,
    /// The (index, term) of the log entry that configuration comes from, as the caller
    /// gave it; `None` when unknown (always for a version-1 file, which has no room for it).
    pub membership_entry: Option<(u64, u64)>,
}

/// A complete snapshot file on disk, as verified by [`SnapshotStore::latest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// What the snapshot stands for.
    pub meta: SnapshotFileMeta,
    /// Bytes of state-machine data (excluding header and footer).
    pub data_bytes: u64,
    /// CRC-32C of the data.
    pub data_crc32c: u32,
    /// The file.
    pub path: PathBuf,
    /// Bytes before the data: the header, whose length depends on the file's version.
    pub header_bytes: u64,
}

impl SnapshotInfo {
    fn header_bytes(&self) -> u64 {
        self.header_bytes
    }

    /// `Ok` when `crc32c`, computed over ALL of this file's data, is the CRC-32C its footer
    /// holds; otherwise [`Error::Corruption`] naming the file and both checksums. (A chunk
    /// read with [`SnapshotStore::read_chunk`] is not checked: a caller that reads the data
    /// in sequence can keep a running CRC and check it here at the end.)
    pub fn check_data_crc32c(&self, crc32c: u32) -> Result<()> {
        if crc32c == self.data_crc32c {
            return Ok(());
        }
        Err(Error::corruption(
            &self.path,
            self.header_bytes(),
            format!(
                "snapshot data has checksum {crc32c:#010x}, its footer says {:#010x}",
                self.data_crc32c
            ),
        ))
    }
}

/// Name of the incoming (partial) snapshot file.
const PARTIAL_FILE_NAME: &str = "partial.snap.recv";
/// Name of the chunk table beside the partial file.
const PARTIAL_CHUNKS_FILE_NAME: &str = "partial.snap.chunks";
/// Suffix of a snapshot being written locally.
const WRITING_SUFFIX: &str = ".snap.tmp";

fn final_file_name(meta: &SnapshotFileMeta) -> String {
    format!("snap-{:020}-{:020}.snap", meta.index, meta.term)
}

/// The (index, term) a complete snapshot file's name says it holds, whatever its contents
/// (a file whose header is damaged still names its snapshot); `None` for any other file.
pub fn snapshot_point_of_file(path: &Path) -> Option<(u64, u64)> {
    parse_final_file_name(path.file_name()?.to_str()?)
}

fn parse_final_file_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    let (index, term) = rest.split_once('-')?;
    if index.len() != 20 || term.len() != 20 {
        return None;
    }
    Some((index.parse().ok()?, term.parse().ok()?))
}

fn encode_header(meta: &SnapshotFileMeta) -> Result<Vec<u8>> {
    if meta.membership.len() > SNAPSHOT_MEMBERSHIP_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "membership of {} bytes exceeds {SNAPSHOT_MEMBERSHIP_BYTES_MAX}",
            meta.membership.len()
        )));
    }
    let (entry_index, entry_term) = match meta.membership_entry {
        Some((SNAPSHOT_MEMBERSHIP_ENTRY_UNKNOWN, _)) => {
            return Err(Error::InvalidArgument(format!(
                "configuration entry index {SNAPSHOT_MEMBERSHIP_ENTRY_UNKNOWN} is reserved \
                 (it stands for an unknown one)"
            )));
        }
        Some(entry) => entry,
        None => (SNAPSHOT_MEMBERSHIP_ENTRY_UNKNOWN, 0),
    };
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_FIXED_BYTES + meta.membership.len());
    header.extend_from_slice(&SNAPSHOT_MAGIC);
    header.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header.extend_from_slice(&(meta.membership.len() as u32).to_le_bytes());
    header.extend_from_slice(&meta.index.to_le_bytes());
    header.extend_from_slice(&meta.term.to_le_bytes());
    header.extend_from_slice(&entry_index.to_le_bytes());
    header.extend_from_slice(&entry_term.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), &meta.membership);
    header.extend_from_slice(&crc.to_le_bytes());
    header.extend_from_slice(&meta.membership);
    Ok(header)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn read_exact(fs: &dyn Fs, path: &Path, offset: u64, len: usize, what: &str) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    fs::read_exact_at(fs, path, offset, &mut buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::corruption(path, offset, format!("file too short for its {what}"))
        } else {
            Error::io("read snapshot", path, e)
        }
    })?;
    Ok(buf)
}

/// Reads and verifies a snapshot header of either version; returns it with its length in
/// bytes (where the data starts).
fn read_header(fs: &dyn Fs, path: &Path) -> Result<(SnapshotFileMeta, u64)> {
    let start = read_exact(fs, path, 0, SNAPSHOT_V1_HEADER_FIXED_BYTES, "header")?;
    if start[0..8] != SNAPSHOT_MAGIC {
        return Err(Error::corruption(path, 0, "bad snapshot magic"));
    }
    let version = le_u32(&start, 8);
    let fixed_bytes = match version {
        1 => SNAPSHOT_V1_HEADER_FIXED_BYTES,
        SNAPSHOT_VERSION => SNAPSHOT_HEADER_FIXED_BYTES,
        _ => {
            return Err(Error::corruption(
                path,
                8,
                format!("unsupported version {version}"),
            ));
        }
    };
    let fixed = match version {
        1 => start,
        _ => read_exact(fs, path, 0, fixed_bytes, "header")?,
    };
    let crc_at = fixed_bytes - 4;
    let membership_len = le_u32(&fixed, 12) as usize;
    if membership_len > SNAPSHOT_MEMBERSHIP_BYTES_MAX {
        return Err(Error::corruption(
            path,
            12,
            "membership length out of range",
        ));
    }
    let membership = read_exact(fs, path, fixed_bytes as u64, membership_len, "membership")?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&fixed[..crc_at]), &membership);
    if crc != le_u32(&fixed, crc_at) {
        return Err(Error::corruption(
            path,
            crc_at as u64,
            "snapshot header checksum mismatch",
        ));
    }
    let membership_entry = match version {
        1 => None,
        _ => Some((le_u64(&fixed, 32), le_u64(&fixed, 40)))
            .filter(|&(index, _)| index != SNAPSHOT_MEMBERSHIP_ENTRY_UNKNOWN),
    };
    let meta = SnapshotFileMeta {
        index: le_u64(&fixed, 16),
        term: le_u64(&fixed, 24),
        membership,
        membership_entry,
    };
    Ok((meta, (fixed_bytes + membership_len) as u64))
}

/// The `header_crc` of a header as written (the current version's).
fn header_crc(header: &[u8]) -> u32 {
    le_u32(header, SNAPSHOT_HEADER_FIXED_BYTES - 4)
}

fn encode_footer(data_bytes: u64, data_crc32c: u32) -> [u8; SNAPSHOT_FOOTER_BYTES] {
    let mut footer = [0u8; SNAPSHOT_FOOTER_BYTES];
    footer[0..8].copy_from_slice(&data_bytes.to_le_bytes());
    footer[8..12].copy_from_slice(&data_crc32c.to_le_bytes());
    let crc = crc32c::crc32c(&footer[0..12]);
    footer[12..16].copy_from_slice(&crc.to_le_bytes());
    footer[16..24].copy_from_slice(&SNAPSHOT_FOOTER_MAGIC);
    footer
}

/// Reads and verifies a complete snapshot's header, footer and size (not the data checksum:
/// that is checked by [`SnapshotReader`] as the data streams, and by `finish` before promotion).
fn verify_file(fs: &dyn Fs, path: &Path) -> Result<SnapshotInfo> {
    let (meta, header_bytes) = read_header(fs, path)?;
    let file_len = fs.file_len(path).map_err(|e| Error::io("stat", path, e))?;
    let Some(footer_at) = file_len.checked_sub(header_bytes + SNAPSHOT_FOOTER_BYTES as u64) else {
        return Err(Error::corruption(
            path,
            file_len,
            "file too short for its footer",
        ));
    };
    let footer_at = footer_at + header_bytes;
    let footer = read_exact(fs, path, footer_at, SNAPSHOT_FOOTER_BYTES, "footer")?;
    if footer[16..24] != SNAPSHOT_FOOTER_MAGIC {
        return Err(Error::corruption(path, footer_at + 16, "bad footer magic"));
    }
    if crc32c::crc32c(&footer[0..12]) != le_u32(&footer, 12) {
        return Err(Error::corruption(
            path,
            footer_at + 12,
            "footer checksum mismatch",
        ));
    }
    let data_bytes = le_u64(&footer, 0);
    if data_bytes != footer_at - header_bytes {
        return Err(Error::corruption(
            path,
            footer_at,
            format!(
                "footer says {data_bytes} data bytes, file holds {}",
                footer_at - header_bytes
            ),
        ));
    }
    Ok(SnapshotInfo {
        meta,
        data_bytes,
        data_crc32c: le_u32(&footer, 8),
        path: path.to_path_buf(),
        header_bytes,
    })
}

/// CRC-32C of `len` data bytes starting at `offset` of `path`.
fn data_crc(fs: &dyn Fs, path: &Path, offset: u64, len: u64) -> Result<u32> {
    let file = fs
        .open_read(path)
        .map_err(|e| Error::io("open snapshot", path, e))?;
    let mut buf = vec![0u8; SNAPSHOT_BUFFER_BYTES];
    range_crc(file.as_ref(), path, offset, len, &mut buf)
}

/// [`data_crc`] of a file read once more only to be checked: the cache of each piece is
/// dropped once it is checked ([`ReadFile::drop_cached`]), so checking a large received
/// snapshot neither fills memory with it nor needs fresh memory for all of it.
fn data_crc_dropping_behind(fs: &dyn Fs, path: &Path, offset: u64, len: u64) -> Result<u32> {
    let file = fs
        .open_read(path)
        .map_err(|e| Error::io("open snapshot", path, e))?;
    let mut buf = vec![0u8; SNAPSHOT_BUFFER_BYTES];
    let mut crc = 0;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64);
        let piece = range_crc(file.as_ref(), path, offset + done, n, &mut buf)?;
        crc = crc32c::crc32c_combine(crc, piece, n as usize);
        if let Err(e) = file.drop_cached(offset + done, n) {
            log::debug!("{}: dropping cached pages: {e}", path.display());
        }
        done += n;
    }
    Ok(crc)
}

/// Snapshot points, (index, term).
type Points = BTreeSet<(u64, u64)>;

/// The directory of snapshot files. See the module docs.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    /// Snapshots made current through any clone of this handle (see [`Self::generation`]).
    generation: Arc<AtomicU64>,
    /// (index, term) of the snapshots the caller uses ([`Self::keep`]), shared by every
    /// clone; `None` until it first says, while a snapshot made current removes the older
    /// ones. Held while files are removed.
    kept: Arc<Mutex<Option<Points>>>,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory, removing unfinished local writes.
    /// A partial incoming snapshot is kept, to be resumed.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path) -> Result<SnapshotStore> {
        fs::create_dir_durable(fs.as_ref(), dir)?;
        let names = fs
            .list_dir(dir)
            .map_err(|e| Error::io("list directory", dir, e))?;
        for name in names.iter().filter(|name| name.ends_with(WRITING_SUFFIX)) {
            let path = dir.join(name);
            log::info!("removing unfinished snapshot {}", path.display());
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove unfinished snapshot", &path, e))?;
        }
        // A snapshot renamed into place just before a crash may be visible without its name
        // being durable (the directory sync failed or never ran). The node is about to act
        // on what it sees here (restore it, reset its log after it), so make the names
        // durable first.
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync snapshot directory at open", dir, e))?;
        Ok(SnapshotStore {
            fs,
            dir: dir.to_path_buf(),
            generation: Arc::new(AtomicU64::new(0)),
            kept: Arc::default(),
        })
    }

    /// How many snapshots were made current through this handle or its clones since
    /// [`SnapshotStore::open`] (written locally or received). A snapshot written again at the
    /// same index and term replaces the file under the same name, so what was learned about a
    /// file's contents holds only while this number has not changed since it was read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Reads all data of a complete snapshot (in bounded pieces, through one open file) and
    /// checks it against the CRC-32C in its footer: [`Error::Corruption`] naming the file and
    /// both checksums when it does not match. Takes as long as reading the file: call it from
    /// a thread that may wait.
    pub fn verify_data(&self, info: &SnapshotInfo) -> Result<()> {
        let crc = data_crc(
            self.fs.as_ref(),
            &info.path,
            info.header_bytes(),
            info.data_bytes,
        )?;
        info.check_data_crc32c(crc)
    }

    /// The newest complete snapshot, verified (header and footer checksums, size); `None` if
    /// there is none. A damaged newest file is [`Error::Corruption`] naming it.
    pub fn latest(&self) -> Result<Option<SnapshotInfo>> {
        let newest = self.final_files()?.into_iter().max();
        let Some((point, name)) = newest else {
            return Ok(None);
        };
        self.verify_named(point, &name).map(Some)
    }

    /// The complete snapshot at `index` and `term`, verified as [`Self::latest`] verifies
    /// the newest (the newest itself or an older one still kept); `None` if there is no file
    /// of that point.
    pub fn find(&self, index: u64, term: u64) -> Result<Option<SnapshotInfo>> {
        let wanted = self
            .final_files()?
            .into_iter()
            .find(|(point, _)| *point == (index, term));
        let Some((point, name)) = wanted else {
            return Ok(None);
        };
        self.verify_named(point, &name).map(Some)
    }

    /// Verifies the complete snapshot file `name`, whose name says it holds `point` (index,
    /// term); a header that says otherwise is [`Error::Corruption`].
    fn verify_named(&self, point: (u64, u64), name: impl AsRef<Path>) -> Result<SnapshotInfo> {
        let path = self.dir.join(name);
        let info = verify_file(self.fs.as_ref(), &path)?;
        if (info.meta.index, info.meta.term) != point {
            return Err(Error::corruption(
                &path,
                16,
                "header index/term do not match the file name",
            ));
        }
        Ok(info)
    }

    /// Says which snapshots the caller uses (by (index, term): the one it takes as current
    /// and those it is sending to followers), instead of what it said before, and removes the
    /// complete files below the newest of them that it does not list. From the first call
    /// on, making a snapshot current removes nothing: only these calls do, so a file the
    /// caller uses is never removed under it, and one made current that it has not heard of
    /// yet (above every point listed) stays. In memory only: after a restart, the first call
    /// removes what an earlier life left.
    pub fn keep(&self, points: &[(u64, u64)]) -> Result<()> {
        let mut kept = self.lock_kept();
        let points: Points = points.iter().copied().collect();
        let below = points.last().copied();
        *kept = Some(points);
        let (Some(below), Some(kept)) = (below, kept.as_ref()) else {
            return Ok(());
        };
        self.remove_final_files(|point| point < below && !kept.contains(&point))
    }

    fn lock_kept(&self) -> MutexGuard<'_, Option<Points>> {
        // The set is replaced whole under the lock, so a panic elsewhere cannot leave it
        // half-changed: a poisoned lock still holds a consistent set.
        self.kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn final_files(&self) -> Result<Vec<((u64, u64), String)>> {
        let names = self
            .fs
            .list_dir(&self.dir)
            .map_err(|e| Error::io("list directory", &self.dir, e))?;
        Ok(names
            .into_iter()
            .filter_map(|name| parse_final_file_name(&name).map(|key| (key, name)))
            .collect())
    }

    /// Starts writing a new local snapshot; write the state machine's bytes into the returned
    /// writer, then call [`SnapshotWriter::finish`].
    pub fn begin(&self, meta: SnapshotFileMeta) -> Result<SnapshotWriter> {
        let header = encode_header(&meta)?;
        let path = self
            .dir
            .join(format!("{}{WRITING_SUFFIX}", final_file_name(&meta)));
        let mut file = self
            .fs
            .open_write(&path)
            .map_err(|e| Error::io("create snapshot", &path, e))?;
        file.set_len(0)
            .map_err(|e| Error::io("truncate snapshot", &path, e))?;
        Ok(SnapshotWriter {
            destination: Destination::Store(self.clone()),
            meta,
            path,
            file,
            written: 0,
            header_bytes: header.len() as u64,
            buffer: header,
            data_bytes: 0,
            data_crc32c: 0,
        })
    }

    /// A reader over the data of a complete snapshot; it fails with `InvalidData` at the end
    /// if the data does not match the footer's checksum.
    pub fn open_reader(&self, info: &SnapshotInfo) -> Result<SnapshotReader> {
        let file = self
            .fs
            .open_read(&info.path)
            .map_err(|e| Error::io("open snapshot", &info.path, e))?;
        Ok(SnapshotReader {
            file,
            info: info.clone(),
            position: 0,
            crc: 0,
        })
    }

    /// Up to `max_len` data bytes at `offset` of a complete snapshot (to send to a follower).
    /// An empty result means `offset` is the end of the data.
    pub fn read_chunk(&self, info: &SnapshotInfo, offset: u64, max_len: usize) -> Result<Vec<u8>> {
        if offset > info.data_bytes {
            return Err(Error::InvalidArgument(format!(
                "chunk offset {offset} past the snapshot's {} bytes",
                info.data_bytes
            )));
        }
        let len = (info.data_bytes - offset).min(max_len.min(SNAPSHOT_CHUNK_BYTES_MAX) as u64);
        let at = info.header_bytes() + offset;
        read_exact(self.fs.as_ref(), &info.path, at, len as usize, "data")
    }

    /// True when the partial file on disk was started for `meta` (its header names it), so
    /// [`SnapshotStore::resume_or_start`] for `meta` would try to resume it rather than
    /// empty it.
    pub fn partial_is_for(&self, meta: &SnapshotFileMeta) -> bool {
        let path = self.dir.join(PARTIAL_FILE_NAME);
        let written = encode_header(meta).map(|header| header.len() as u64);
        matches!((read_header(self.fs.as_ref(), &path), written),
            (Ok((existing, len)), Ok(written)) if existing == *meta && len == written)
    }

    /// Opens the incoming snapshot for `meta` whose data the sender announced with checksum
    /// `data_crc32c`: resumes the partial file if it is for the same snapshot and the same
    /// bytes (see [`PartialSnapshot::next_offset`]), otherwise starts a new one. Two nodes may
    /// hold the same snapshot point as different bytes (a state machine need not serialize
    /// deterministically), so index and term alone do not identify what was received.
    pub fn resume_or_start(
        &self,
        meta: SnapshotFileMeta,
        data_crc32c: u32,
    ) -> Result<PartialSnapshot> {
        PartialSnapshot::resume_or_start(self.clone(), meta, data_crc32c)
    }

    /// Syncs, verifies, renames into place and syncs the directory; then removes older
    /// snapshots. `tmp` holds header, `data_bytes` of data and the footer.
    fn promote(&self, tmp: &Path, meta: &SnapshotFileMeta) -> Result<SnapshotInfo> {
        let fs = self.fs.as_ref();
        let info = verify_file(fs, tmp)?;
        let crc = data_crc(fs, tmp, info.header_bytes(), info.data_bytes)?;
        self.promote_with_data_crc(tmp, meta, crc)
    }

    /// [`SnapshotStore::promote`] for a caller that has just read the data back from `tmp`
    /// and computed its CRC-32C, `crc`: header, footer and size are verified again, the data
    /// is not read a second time.
    fn promote_with_data_crc(
        &self,
        tmp: &Path,
        meta: &SnapshotFileMeta,
        crc: u32,
    ) -> Result<SnapshotInfo> {
        let fs = self.fs.as_ref();
        let info = verify_file(fs, tmp)?;
        if crc != info.data_crc32c || info.meta != *meta {
            return Err(Error::corruption(
                tmp,
                info.header_bytes(),
                "data checksum mismatch",
            ));
        }
        let path = self.dir.join(final_file_name(meta));
        fs.rename(tmp, &path)
            .map_err(|e| Error::io("rename snapshot", tmp, e))?;
        // Counted as soon as the name points at the new file (it may replace one of the same
        // name), before anything else can fail.
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.sync_dir()?;
        let kept = self.lock_kept();
        if kept.is_none() {
            self.remove_older_than(meta)?;
        }
        drop(kept);
        Ok(SnapshotInfo { path, ..info })
    }

    fn remove_older_than(&self, meta: &SnapshotFileMeta) -> Result<()> {
        let current = (meta.index, meta.term);
        self.remove_final_files(|(index, term)| index <= meta.index && (index, term) != current)
    }

    /// Removes every complete snapshot file whose point (index, term) `doomed` picks, then
    /// syncs the directory if any went.
    fn remove_final_files(&self, doomed: impl Fn((u64, u64)) -> bool) -> Result<()> {
        let mut removed = false;
        for (point, name) in self.final_files()? {
            if doomed(point) {
                let path = self.dir.join(name);
                self.fs
                    .remove_file(&path)
                    .map_err(|e| Error::io("remove old snapshot", &path, e))?;
                removed = true;
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("sync directory", &self.dir, e))
    }
}

/// Writes a snapshot file at `path`, outside any snapshot directory (a backup): the same
/// format, written to `<path>.tmp` until [`SnapshotWriter::finish`] syncs and verifies it,
/// renames it to `path` and syncs the directory. Dropping the writer unfinished leaves the
/// temporary file for the caller to remove.
pub fn create_snapshot_file(
    fs: Arc<dyn Fs>,
    path: &Path,
    meta: SnapshotFileMeta,
) -> Result<SnapshotWriter> {
    let header = encode_header(&meta)?;
    let mut name = path.as_os_str().to_os_string();
    name.push(".tmp");
    let tmp = PathBuf::from(name);
    let mut file = fs
        .open_write(&tmp)
        .map_err(|e| Error::io("create snapshot file", &tmp, e))?;
    file.set_len(0)
        .map_err(|e| Error::io("truncate snapshot file", &tmp, e))?;
    Ok(SnapshotWriter {
        destination: Destination::File {
            fs,
            path: path.to_path_buf(),
        },
        meta,
        path: tmp,
        file,
        written: 0,
        header_bytes: header.len() as u64,
        buffer: header,
        data_bytes: 0,
        data_crc32c: 0,
    })
}

/// A snapshot file anywhere (a backup), its header, footer and size verified: a reader over
/// its data that fails with `InvalidData` at the end if the data does not match the footer's
/// checksum. A damaged header or footer is [`Error::Corruption`] naming the file.
pub fn open_snapshot_file(fs: &dyn Fs, path: &Path) -> Result<SnapshotReader> {
    let info = verify_file(fs, path)?;
    let file = fs
        .open_read(path)
        .map_err(|e| Error::io("open snapshot file", path, e))?;
    Ok(SnapshotReader {
        file,
        info,
        position: 0,
        crc: 0,
    })
}

/// Where a finished [`SnapshotWriter`]'s file goes.
#[derive(Debug)]
enum Destination {
    /// Promoted into the store's directory.
    Store(SnapshotStore),
    /// Renamed to `path` (see [`create_snapshot_file`]).
    File { fs: Arc<dyn Fs>, path: PathBuf },
}

/// Writes a local snapshot; implements [`io::Write`]. Nothing is visible under the final name
/// until [`SnapshotWriter::finish`] returns `Ok`. Dropping it unfinished leaves a temporary
/// file that the next [`SnapshotStore::open`] removes.
#[derive(Debug)]
pub struct SnapshotWriter {
    destination: Destination,
    meta: SnapshotFileMeta,
    path: PathBuf,
    file: Box<dyn WriteFile>,
    /// Bytes of the file already written (header included).
    written: u64,
    header_bytes: u64,
    buffer: Vec<u8>,
    data_bytes: u64,
    data_crc32c: u32,
}

impl SnapshotWriter {
    fn flush_buffer(&mut self) -> io::Result<()> {
        self.file.write_at(self.written, &self.buffer)?;
        self.written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(())
    }

    /// Completes the snapshot: writes the footer, syncs, verifies size and checksum, renames
    /// it into place, syncs the directory and removes older snapshots.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        let footer = encode_footer(self.data_bytes, self.data_crc32c);
        self.buffer.extend_from_slice(&footer);
        let path = self.path.clone();
        self.flush_buffer()
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("write snapshot", &path, e))?;
        debug_assert_eq!(self.written, self.header_bytes + self.data_bytes + 24);
        match &self.destination {
            Destination::Store(store) => store.promote(&self.path, &self.meta),
            Destination::File { fs, path } => promote_file(fs.as_ref(), &self.path, path),
        }
    }

    /// Data bytes written so far.
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// CRC-32C of the data written so far.
    pub fn data_crc32c(&self) -> u32 {
        self.data_crc32c
    }
}

/// Verifies the written file `tmp` (header, footer, size, data checksum), renames it to
/// `path` and syncs the directory.
fn promote_file(fs: &dyn Fs, tmp: &Path, path: &Path) -> Result<SnapshotInfo> {
    let info = verify_file(fs, tmp)?;
    let crc = data_crc(fs, tmp, info.header_bytes(), info.data_bytes)?;
    info.check_data_crc32c(crc)?;
    fs.rename(tmp, path)
        .map_err(|e| Error::io("rename snapshot file", tmp, e))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))?;
    Ok(SnapshotInfo {
        path: path.to_path_buf(),
        ..info
    })
}

impl io::Write for SnapshotWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(data);
        self.data_bytes += data.len() as u64;
        self.data_crc32c = crc32c::crc32c_append(self.data_crc32c, data);
        if self.buffer.len() >= SNAPSHOT_BUFFER_BYTES {
            self.flush_buffer()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buffer()
    }
}

/// Streams a complete snapshot's data; implements [`io::Read`] and checks the data checksum
/// when it reaches the end.
#[derive(Debug)]
pub struct SnapshotReader {
    file: Box<dyn ReadFile>,
    info: SnapshotInfo,
    position: u64,
    crc: u32,
}

impl SnapshotReader {
    /// The snapshot being read.
    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }
}

impl io::Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.info.data_bytes - self.position;
        let n = (buf.len() as u64).min(left) as usize;
        if n > 0 {
            let at = self.info.header_bytes() + self.position;
            fs::read_exact_from(self.file.as_ref(), at, &mut buf[..n])?;
            self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
            self.position += n as u64;
        }
        if self.position == self.info.data_bytes && self.crc != self.info.data_crc32c {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {} data checksum mismatch",
                    self.info.path.display()
                ),
            ));
        }
        Ok(n)
    }
}

/// A snapshot being received from the leader in chunks, resumable after a restart. Every
/// chunk is synced before `write_chunk` returns, so `next_offset` is what is durably held.
///
/// Beside the partial file, a chunk table (`partial.snap.chunks`, `storage/FORMAT.md` §3)
/// records the offset, length and CRC-32C of every durable chunk. When the partial file is
/// resumed, or fails the whole-file checksum at the end, it is checked against the table chunk
/// by chunk and cut at the first damaged chunk, so only the data from there is received again.
#[derive(Debug)]
pub struct PartialSnapshot {
    store: SnapshotStore,
    meta: SnapshotFileMeta,
    path: PathBuf,
    file: Box<dyn WriteFile>,
    header: Vec<u8>,
    next_offset: u64,
    table_path: PathBuf,
    table: Box<dyn WriteFile>,
    /// Records in the chunk table; the next goes after them. Invariant: the records cover
    /// data `0..next_offset` back to back.
    records: u64,
    /// The data checksum the sender announced (kept in the chunk table's header), which ties
    /// the partial data to one version of the snapshot's bytes.
    data_crc32c: u32,
    /// Whether `finish` drops the page cache of the data it checks (see
    /// [`PartialSnapshot::drop_cache_when_checked`]).
    drop_cache_when_checked: bool,
}

/// What the end of a transfer came to.
#[derive(Debug)]
pub enum Finish {
    /// The snapshot was verified and promoted to a complete snapshot.
    Installed(SnapshotInfo),
    /// The data did not pass (or did not reach the announced size); the damaged part was cut
    /// off. Continue receiving at [`PartialSnapshot::next_offset`] (0 when nothing could be
    /// trusted).
    Continue(PartialSnapshot),
}

/// How a partial file compares with its chunk table.
enum TableCheck {
    /// The table itself cannot be trusted (missing, damaged, or for another snapshot).
    Damaged(String),
    /// The first `records` records check out, covering data `0..bytes`.
    Verified { records: u64, bytes: u64 },
}

fn encode_table_header(
    snapshot_header_crc: u32,
    data_crc32c: u32,
) -> [u8; SNAPSHOT_CHUNKS_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_CHUNKS_HEADER_BYTES];
    header[0..8].copy_from_slice(&SNAPSHOT_CHUNKS_MAGIC);
    header[8..12].copy_from_slice(&SNAPSHOT_CHUNKS_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&snapshot_header_crc.to_le_bytes());
    header[16..20].copy_from_slice(&data_crc32c.to_le_bytes());
    let crc = crc32c::crc32c(&header[0..20]);
    header[20..24].copy_from_slice(&crc.to_le_bytes());
    header
}

fn encode_chunk_record(offset: u64, len: u32, crc: u32) -> [u8; SNAPSHOT_CHUNK_RECORD_BYTES] {
    let mut record = [0u8; SNAPSHOT_CHUNK_RECORD_BYTES];
    record[0..8].copy_from_slice(&offset.to_le_bytes());
    record[8..12].copy_from_slice(&len.to_le_bytes());
    record[12..16].copy_from_slice(&crc.to_le_bytes());
    let record_crc = crc32c::crc32c(&record[0..20]);
    record[20..24].copy_from_slice(&record_crc.to_le_bytes());
    record
}

/// `(offset, len, crc)` of a chunk record, or why it is not one.
fn decode_chunk_record(record: &[u8]) -> std::result::Result<(u64, u64, u32), &'static str> {
    if crc32c::crc32c(&record[0..20]) != le_u32(record, 20) {
        return Err("record checksum mismatch");
    }
    if le_u32(record, 16) != 0 {
        return Err("reserved bytes are not zero");
    }
    Ok((
        le_u64(record, 0),
        u64::from(le_u32(record, 8)),
        le_u32(record, 12),
    ))
}

/// CRC-32C of `len` bytes at `at` of an open file, read in bounded pieces into `buf`.
fn range_crc(file: &dyn ReadFile, path: &Path, at: u64, len: u64, buf: &mut [u8]) -> Result<u32> {
    let mut crc = 0;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        fs::read_exact_from(file, at + done, &mut buf[..n])
            .map_err(|e| Error::io("read snapshot data", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        done += n as u64;
    }
    Ok(crc)
}

impl PartialSnapshot {
    fn resume_or_start(
        store: SnapshotStore,
        meta: SnapshotFileMeta,
        data_crc32c: u32,
    ) -> Result<PartialSnapshot> {
        let fs = store.fs.clone();
        let path = store.dir.join(PARTIAL_FILE_NAME);
        let table_path = store.dir.join(PARTIAL_CHUNKS_FILE_NAME);
        let header = encode_header(&meta)?;
        let file = fs
            .open_write(&path)
            .map_err(|e| Error::io("open partial snapshot", &path, e))?;
        let table = fs
            .open_write(&table_path)
            .map_err(|e| Error::io("open partial snapshot chunk table", &table_path, e))?;
        // An older version's header of the same snapshot is not resumed: the data would
        // start elsewhere.
        let same = matches!(read_header(fs.as_ref(), &path),
            Ok((existing, len)) if existing == meta && len == header.len() as u64);
        let mut partial = PartialSnapshot {
            store,
            meta,
            path,
            file,
            header,
            next_offset: 0,
            table_path,
            table,
            records: 0,
            data_crc32c,
            drop_cache_when_checked: false,
        };
        if same {
            match partial.check_against_table()? {
                TableCheck::Verified { records, bytes } => {
                    partial.keep_verified(records, bytes)?;
                    return Ok(partial);
                }
                TableCheck::Damaged(why) => log::warn!(
                    "{}: {why}; cannot trust {}, receiving snapshot {} again from offset 0",
                    partial.table_path.display(),
                    partial.path.display(),
                    partial.meta.index
                ),
            }
        }
        partial.start_over()?;
        Ok(partial)
    }

    /// Empties both files and writes their headers, durably.
    fn start_over(&mut self) -> Result<()> {
        let table_header = encode_table_header(header_crc(&self.header), self.data_crc32c);
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_at(0, &self.header))
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("start partial snapshot", &self.path, e))?;
        self.table
            .set_len(0)
            .and_then(|()| self.table.write_at(0, &table_header))
            .and_then(|()| self.table.sync())
            .map_err(|e| Error::io("start partial snapshot chunk table", &self.table_path, e))?;
        self.store.sync_dir()?;
        self.next_offset = 0;
        self.records = 0;
        Ok(())
    }

    /// Cuts the table after `records` records and the data after `bytes`, durably.
    fn keep_verified(&mut self, records: u64, bytes: u64) -> Result<()> {
        let table_len =
            (SNAPSHOT_CHUNKS_HEADER_BYTES + SNAPSHOT_CHUNK_RECORD_BYTES * records as usize) as u64;
        self.table
            .set_len(table_len)
            .and_then(|()| self.table.sync())
            .map_err(|e| Error::io("cut partial snapshot chunk table", &self.table_path, e))?;
        self.file
            .set_len(self.header.len() as u64 + bytes)
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("cut partial snapshot", &self.path, e))?;
        self.records = records;
        self.next_offset = bytes;
        Ok(())
    }

    /// Why the chunk table's header cannot be trusted, if it cannot.
    fn table_header_problem(&self, table_len: u64) -> Result<Option<&'static str>> {
        if table_len < SNAPSHOT_CHUNKS_HEADER_BYTES as u64 {
            return Ok(Some("the chunk table has no header"));
        }
        let fs = self.store.fs.as_ref();
        let head = read_exact(
            fs,
            &self.table_path,
            0,
            SNAPSHOT_CHUNKS_HEADER_BYTES,
            "chunk table header",
        )?;
        if head[0..8] != SNAPSHOT_CHUNKS_MAGIC
            || le_u32(&head, 8) != SNAPSHOT_CHUNKS_VERSION
            || crc32c::crc32c(&head[0..20]) != le_u32(&head, 20)
        {
            return Ok(Some("the chunk table header is damaged"));
        }
        if le_u32(&head, 12) != header_crc(&self.header) {
            return Ok(Some("the chunk table belongs to another snapshot"));
        }
        if le_u32(&head, 16) != self.data_crc32c {
            return Ok(Some(
                "the chunk table is for other bytes of this snapshot (the sender's data \
                 checksum differs)",
            ));
        }
        Ok(None)
    }

    /// Re-reads the partial data chunk by chunk (in bounded pieces) against the chunk table,
    /// up to the first record that is damaged, does not continue the previous one, reaches
    /// past the data, or whose data does not match its checksum (logged with the offset).
    fn check_against_table(&self) -> Result<TableCheck> {
        let fs = self.store.fs.as_ref();
        let table_len = fs
            .file_len(&self.table_path)
            .map_err(|e| Error::io("stat", &self.table_path, e))?;
        if let Some(why) = self.table_header_problem(table_len)? {
            return Ok(TableCheck::Damaged(why.to_string()));
        }
        let header_bytes = self.header.len() as u64;
        let data_len = fs
            .file_len(&self.path)
            .map_err(|e| Error::io("stat", &self.path, e))?
            .saturating_sub(header_bytes);
        let count =
            (table_len - SNAPSHOT_CHUNKS_HEADER_BYTES as u64) / SNAPSHOT_CHUNK_RECORD_BYTES as u64;
        let data = fs
            .open_read(&self.path)
            .map_err(|e| Error::io("open partial snapshot", &self.path, e))?;
        let mut buf = vec![0u8; SNAPSHOT_BUFFER_BYTES];
        let mut batch = vec![0u8; SNAPSHOT_CHUNK_RECORD_BYTES * SNAPSHOT_CHUNK_RECORDS_PER_READ];
        let (mut records, mut bytes) = (0u64, 0u64);
        while records < count {
            let n = (count - records).min(SNAPSHOT_CHUNK_RECORDS_PER_READ as u64) as usize;
            let at = (SNAPSHOT_CHUNKS_HEADER_BYTES + SNAPSHOT_CHUNK_RECORD_BYTES * records as usize)
                as u64;
            let batch = &mut batch[..n * SNAPSHOT_CHUNK_RECORD_BYTES];
            fs::read_exact_at(fs, &self.table_path, at, batch)
                .map_err(|e| Error::io("read partial snapshot chunk table", &self.table_path, e))?;
            for record in batch.chunks_exact(SNAPSHOT_CHUNK_RECORD_BYTES) {
                let (offset, len, crc) = match decode_chunk_record(record) {
                    Ok(fields) => fields,
                    Err(why) => {
                        let why = format!("chunk table record {records}: {why}");
                        return Ok(self.cut_at(records, bytes, why));
                    }
                };
                if offset != bytes || len == 0 {
                    let why = format!("record for offset {offset} does not continue {bytes}");
                    return Ok(self.cut_at(records, bytes, why));
                }
                if offset + len > data_len {
                    // The chunk's data never became durable (a crash before its sync).
                    return Ok(TableCheck::Verified { records, bytes });
                }
                let at = header_bytes + offset;
                let actual = range_crc(data.as_ref(), &self.path, at, len, &mut buf)?;
                if actual != crc {
                    let why = format!(
                        "chunk at offset {offset} ({len} bytes) has checksum {actual:#010x}, \
                         {crc:#010x} when it was received"
                    );
                    return Ok(self.cut_at(records, bytes, why));
                }
                records += 1;
                bytes += len;
            }
        }
        Ok(TableCheck::Verified { records, bytes })
    }

    /// Logs why the partial data is trusted only up to `bytes`.
    fn cut_at(&self, records: u64, bytes: u64, why: String) -> TableCheck {
        log::warn!(
            "{}: {why}; receiving snapshot {} again from offset {bytes}",
            self.path.display(),
            self.meta.index
        );
        TableCheck::Verified { records, bytes }
    }

    /// Data bytes durably held: the offset of the next chunk wanted.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The snapshot being received.
    pub fn meta(&self) -> &SnapshotFileMeta {
        &self.meta
    }

    /// The data checksum the sender announced for it.
    pub fn data_crc32c(&self) -> u32 {
        self.data_crc32c
    }

    /// Makes [`finish`](Self::finish) drop the page cache of each piece of data once it is
    /// checked: for a caller that reads the file as it arrives and has no use for it cached
    /// afterwards (a large file then needs no fresh memory for all of it). Off by default, so
    /// a restore that reads the installed file afterwards finds it cached.
    pub fn drop_cache_when_checked(&mut self, yes: bool) {
        self.drop_cache_when_checked = yes;
    }

    /// Bytes before the data in the partial file (the snapshot header).
    pub fn header_bytes(&self) -> u64 {
        self.header.len() as u64
    }

    /// A read handle on the partial file, to read its durable data while more arrives. The
    /// handle stays on the same file when [`PartialSnapshot::finish`] renames it into place.
    pub fn open_read(&self) -> Result<Box<dyn ReadFile>> {
        self.store
            .fs
            .open_read(&self.path)
            .map_err(|e| Error::io("open partial snapshot", &self.path, e))
    }

    /// Writes a chunk at data `offset`, whose CRC-32C the sender gave as `chunk_crc`, syncs it
    /// and records it in the chunk table; returns the new `next_offset`. A chunk wholly
    /// already held is accepted and ignored (retransmission). A gap, or data that does not
    /// match `chunk_crc`, is [`Error::InvalidArgument`] and nothing is written.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8], chunk_crc: u32) -> Result<u64> {
        if offset > self.next_offset {
            return Err(Error::InvalidArgument(format!(
                "snapshot chunk at {offset} leaves a gap after {}",
                self.next_offset
            )));
        }
        let actual = crc32c::crc32c(data);
        if actual != chunk_crc {
            return Err(Error::InvalidArgument(format!(
                "snapshot chunk at {offset} ({} bytes) has checksum {actual:#010x}, the sender \
                 said {chunk_crc:#010x}",
                data.len()
            )));
        }
        let end = offset + data.len() as u64;
        if end <= self.next_offset {
            return Ok(self.next_offset);
        }
        let skip = (self.next_offset - offset) as usize;
        let fresh = &data[skip..];
        let fresh_crc = if skip == 0 {
            chunk_crc
        } else {
            crc32c::crc32c(fresh)
        };
        let len = u32::try_from(fresh.len()).map_err(|_| {
            Error::InvalidArgument(format!("snapshot chunk of {} bytes", fresh.len()))
        })?;
        self.file
            .write_at(self.header.len() as u64 + self.next_offset, fresh)
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("write snapshot chunk", &self.path, e))?;
        let at = (SNAPSHOT_CHUNKS_HEADER_BYTES as u64)
            + self.records * SNAPSHOT_CHUNK_RECORD_BYTES as u64;
        let record = encode_chunk_record(self.next_offset, len, fresh_crc);
        self.table
            .write_at(at, &record)
            .and_then(|()| self.table.sync())
            .map_err(|e| Error::io("record snapshot chunk", &self.table_path, e))?;
        self.records += 1;
        self.next_offset = end;
        Ok(end)
    }

    /// Completes the transfer: checks that exactly `expected_bytes` with CRC-32C
    /// `expected_crc32c` were received, writes the footer, syncs and promotes the file to a
    /// complete snapshot (removing older ones and the chunk table).
    ///
    /// When the data falls short or does not match, nothing is promoted: the partial file is
    /// checked against the chunk table and cut at the first damaged chunk (or emptied, when
    /// every chunk is as received, so the data was wrong from the start, or the table is
    /// damaged) and returned to continue receiving at its `next_offset`.
    pub fn finish(mut self, expected_bytes: u64, expected_crc32c: u32) -> Result<Finish> {
        let fs = self.store.fs.clone();
        if self.next_offset < expected_bytes {
            log::warn!(
                "{}: snapshot finished at {} of {expected_bytes} bytes",
                self.path.display(),
                self.next_offset
            );
            return Ok(Finish::Continue(self));
        }
        let header_bytes = self.header.len() as u64;
        let crc = if self.drop_cache_when_checked {
            data_crc_dropping_behind(fs.as_ref(), &self.path, header_bytes, expected_bytes)?
        } else {
            data_crc(fs.as_ref(), &self.path, header_bytes, expected_bytes)?
        };
        if crc != expected_crc32c {
            log::warn!(
                "{}: received data checksum {crc:#010x}, expected {expected_crc32c:#010x}; \
                 checking it chunk by chunk",
                self.path.display()
            );
            match self.check_against_table()? {
                TableCheck::Verified { records, bytes } if bytes < self.next_offset => {
                    self.keep_verified(records, bytes)?;
                }
                TableCheck::Verified { .. } => {
                    log::warn!(
                        "{}: every chunk is as received, so the sender's data was wrong; \
                         receiving snapshot {} again from offset 0",
                        self.path.display(),
                        self.meta.index
                    );
                    self.start_over()?;
                }
                TableCheck::Damaged(why) => {
                    log::warn!(
                        "{}: {why}; receiving snapshot {} again from offset 0",
                        self.table_path.display(),
                        self.meta.index
                    );
                    self.start_over()?;
                }
            }
            return Ok(Finish::Continue(self));
        }
        let footer_at = header_bytes + expected_bytes;
        self.file
            .set_len(footer_at)
            .and_then(|()| {
                self.file
                    .write_at(footer_at, &encode_footer(expected_bytes, crc))
            })
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("finish partial snapshot", &self.path, e))?;
        // The data was just read back from the synced file for `crc`: not read again.
        let info = self
            .store
            .promote_with_data_crc(&self.path, &self.meta, crc)?;
        if let Err(e) = fs.remove_file(&self.table_path) {
            // Harmless: the next transfer finds no partial file and starts the table over.
            log::warn!("could not remove {}: {e}", self.table_path.display());
        }
        Ok(Finish::Installed(info))
    }
}
