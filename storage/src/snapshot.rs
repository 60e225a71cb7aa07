//! Snapshot files: written under a temporary name, verified, renamed into place; read back
//! whole or in chunks; received from a leader in resumable chunks.
//!
//! Owned by the node's storage thread (a [`SnapshotWriter`] may be handed to the apply thread
//! while the state machine writes into it). File format: `storage/FORMAT.md`. Invariants:
//! - A file named `snap-<index>-<term>.snap` is complete: its header and footer checksums
//!   were verified and synced before the rename, and the directory was synced after it.
//! - Older snapshots are removed only after a newer one is durable.
//! - At most one partial (incoming) snapshot exists: `partial.snap.recv`.

use crate::error::{Error, Result};
use crate::fs::{self, Fs, ReadFile, WriteFile};
use crate::limits::{
    SNAPSHOT_BUFFER_BYTES, SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_FOOTER_BYTES, SNAPSHOT_FOOTER_MAGIC,
    SNAPSHOT_HEADER_FIXED_BYTES, SNAPSHOT_MAGIC, SNAPSHOT_MEMBERSHIP_BYTES_MAX, SNAPSHOT_VERSION,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a snapshot stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFileMeta {
    /// Index of the last entry the snapshot includes.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The cluster configuration at `index`, encoded by the caller (opaque here).
    pub membership: Vec<u8>,
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
}

impl SnapshotInfo {
    fn header_bytes(&self) -> u64 {
        (SNAPSHOT_HEADER_FIXED_BYTES + self.meta.membership.len()) as u64
    }
}

/// Name of the incoming (partial) snapshot file.
const PARTIAL_FILE_NAME: &str = "partial.snap.recv";
/// Suffix of a snapshot being written locally.
const WRITING_SUFFIX: &str = ".snap.tmp";

fn final_file_name(meta: &SnapshotFileMeta) -> String {
    format!("snap-{:020}-{:020}.snap", meta.index, meta.term)
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
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_FIXED_BYTES + meta.membership.len());
    header.extend_from_slice(&SNAPSHOT_MAGIC);
    header.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    header.extend_from_slice(&(meta.membership.len() as u32).to_le_bytes());
    header.extend_from_slice(&meta.index.to_le_bytes());
    header.extend_from_slice(&meta.term.to_le_bytes());
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

/// Reads and verifies a snapshot header.
fn read_header(fs: &dyn Fs, path: &Path) -> Result<SnapshotFileMeta> {
    let fixed = read_exact(fs, path, 0, SNAPSHOT_HEADER_FIXED_BYTES, "header")?;
    if fixed[0..8] != SNAPSHOT_MAGIC {
        return Err(Error::corruption(path, 0, "bad snapshot magic"));
    }
    let version = le_u32(&fixed, 8);
    if version != SNAPSHOT_VERSION {
        return Err(Error::corruption(
            path,
            8,
            format!("unsupported version {version}"),
        ));
    }
    let membership_len = le_u32(&fixed, 12) as usize;
    if membership_len > SNAPSHOT_MEMBERSHIP_BYTES_MAX {
        return Err(Error::corruption(
            path,
            12,
            "membership length out of range",
        ));
    }
    let membership = read_exact(
        fs,
        path,
        SNAPSHOT_HEADER_FIXED_BYTES as u64,
        membership_len,
        "membership",
    )?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&fixed[..32]), &membership);
    if crc != le_u32(&fixed, 32) {
        return Err(Error::corruption(
            path,
            32,
            "snapshot header checksum mismatch",
        ));
    }
    Ok(SnapshotFileMeta {
        index: le_u64(&fixed, 16),
        term: le_u64(&fixed, 24),
        membership,
    })
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
    let meta = read_header(fs, path)?;
    let header_bytes = (SNAPSHOT_HEADER_FIXED_BYTES + meta.membership.len()) as u64;
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
    })
}

/// CRC-32C of `len` data bytes starting at `offset` of `path`.
fn data_crc(fs: &dyn Fs, path: &Path, offset: u64, len: u64) -> Result<u32> {
    let file = fs
        .open_read(path)
        .map_err(|e| Error::io("open snapshot", path, e))?;
    let mut buf = vec![0u8; SNAPSHOT_BUFFER_BYTES];
    let mut crc = 0;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        fs::read_exact_from(file.as_ref(), offset + done, &mut buf[..n])
            .map_err(|e| Error::io("read snapshot data", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        done += n as u64;
    }
    Ok(crc)
}

/// The directory of snapshot files. See the module docs.
#[derive(Debug, Clone)]
pub struct SnapshotStore {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot directory, removing unfinished local writes.
    /// A partial incoming snapshot is kept, to be resumed.
    pub fn open(fs: Arc<dyn Fs>, dir: &Path) -> Result<SnapshotStore> {
        fs.create_dir_all(dir)
            .map_err(|e| Error::io("create directory", dir, e))?;
        let names = fs
            .list_dir(dir)
            .map_err(|e| Error::io("list directory", dir, e))?;
        for name in names.iter().filter(|name| name.ends_with(WRITING_SUFFIX)) {
            let path = dir.join(name);
            log::info!("removing unfinished snapshot {}", path.display());
            fs.remove_file(&path)
                .map_err(|e| Error::io("remove unfinished snapshot", &path, e))?;
        }
        Ok(SnapshotStore {
            fs,
            dir: dir.to_path_buf(),
        })
    }

    /// The newest complete snapshot, verified (header and footer checksums, size); `None` if
    /// there is none. A damaged newest file is [`Error::Corruption`] naming it.
    pub fn latest(&self) -> Result<Option<SnapshotInfo>> {
        let newest = self.final_files()?.into_iter().max();
        let Some(((index, term), name)) = newest else {
            return Ok(None);
        };
        let path = self.dir.join(name);
        let info = verify_file(self.fs.as_ref(), &path)?;
        if (info.meta.index, info.meta.term) != (index, term) {
            return Err(Error::corruption(
                &path,
                16,
                "header index/term do not match the file name",
            ));
        }
        Ok(Some(info))
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
            store: self.clone(),
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

    /// Opens the incoming snapshot for `meta`: resumes the partial file if it is for the same
    /// snapshot (see [`PartialSnapshot::next_offset`]), otherwise starts a new one.
    pub fn resume_or_start(&self, meta: SnapshotFileMeta) -> Result<PartialSnapshot> {
        PartialSnapshot::resume_or_start(self.clone(), meta)
    }

    /// Syncs, verifies, renames into place and syncs the directory; then removes older
    /// snapshots. `tmp` holds header, `data_bytes` of data and the footer.
    fn promote(&self, tmp: &Path, meta: &SnapshotFileMeta) -> Result<SnapshotInfo> {
        let fs = self.fs.as_ref();
        let info = verify_file(fs, tmp)?;
        let crc = data_crc(fs, tmp, info.header_bytes(), info.data_bytes)?;
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
        self.sync_dir()?;
        self.remove_older_than(meta)?;
        Ok(SnapshotInfo { path, ..info })
    }

    fn remove_older_than(&self, meta: &SnapshotFileMeta) -> Result<()> {
        let mut removed = false;
        for ((index, term), name) in self.final_files()? {
            if index <= meta.index && (index, term) != (meta.index, meta.term) {
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

/// Writes a local snapshot; implements [`io::Write`]. Nothing is visible under the final name
/// until [`SnapshotWriter::finish`] returns `Ok`. Dropping it unfinished leaves a temporary
/// file that the next [`SnapshotStore::open`] removes.
#[derive(Debug)]
pub struct SnapshotWriter {
    store: SnapshotStore,
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
        self.store.promote(&self.path, &self.meta)
    }
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
#[derive(Debug)]
pub struct PartialSnapshot {
    store: SnapshotStore,
    meta: SnapshotFileMeta,
    path: PathBuf,
    file: Box<dyn WriteFile>,
    header_bytes: u64,
    next_offset: u64,
}

impl PartialSnapshot {
    fn resume_or_start(store: SnapshotStore, meta: SnapshotFileMeta) -> Result<PartialSnapshot> {
        let fs = store.fs.clone();
        let path = store.dir.join(PARTIAL_FILE_NAME);
        let header = encode_header(&meta)?;
        let header_bytes = header.len() as u64;
        let mut file = fs
            .open_write(&path)
            .map_err(|e| Error::io("open partial snapshot", &path, e))?;
        let held = match read_header(fs.as_ref(), &path) {
            Ok(existing) if existing == meta => {
                let len = fs
                    .file_len(&path)
                    .map_err(|e| Error::io("stat", &path, e))?;
                len.checked_sub(header_bytes)
            }
            _ => None,
        };
        let next_offset = match held {
            Some(next_offset) => next_offset,
            None => {
                file.set_len(0)
                    .and_then(|()| file.write_at(0, &header))
                    .and_then(|()| file.sync())
                    .map_err(|e| Error::io("start partial snapshot", &path, e))?;
                store.sync_dir()?;
                0
            }
        };
        Ok(PartialSnapshot {
            store,
            meta,
            path,
            file,
            header_bytes,
            next_offset,
        })
    }

    /// Data bytes durably held: the offset of the next chunk wanted.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// The snapshot being received.
    pub fn meta(&self) -> &SnapshotFileMeta {
        &self.meta
    }

    /// Writes a chunk at data `offset` and syncs it; returns the new `next_offset`. A chunk
    /// wholly already held is accepted and ignored (retransmission); a gap is an error.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<u64> {
        if offset > self.next_offset {
            return Err(Error::InvalidArgument(format!(
                "snapshot chunk at {offset} leaves a gap after {}",
                self.next_offset
            )));
        }
        let end = offset + data.len() as u64;
        if end <= self.next_offset {
            return Ok(self.next_offset);
        }
        let fresh = &data[(self.next_offset - offset) as usize..];
        self.file
            .write_at(self.header_bytes + self.next_offset, fresh)
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("write snapshot chunk", &self.path, e))?;
        self.next_offset = end;
        Ok(end)
    }

    /// Completes the transfer: checks that exactly `expected_bytes` with CRC-32C
    /// `expected_crc32c` were received, writes the footer, syncs and promotes the file to a
    /// complete snapshot (removing older ones). On a mismatch the partial file is discarded
    /// and [`Error::Corruption`] returned: the transfer must start over.
    pub fn finish(mut self, expected_bytes: u64, expected_crc32c: u32) -> Result<SnapshotInfo> {
        let fs = self.store.fs.clone();
        if self.next_offset < expected_bytes {
            return Err(Error::InvalidArgument(format!(
                "snapshot finished at {} of {expected_bytes} bytes",
                self.next_offset
            )));
        }
        let crc = data_crc(fs.as_ref(), &self.path, self.header_bytes, expected_bytes)?;
        if crc != expected_crc32c {
            if let Err(err) = fs.remove_file(&self.path) {
                log::warn!("could not remove bad partial snapshot: {err}");
            }
            return Err(Error::corruption(
                &self.path,
                self.header_bytes,
                format!("received data checksum {crc:#010x}, expected {expected_crc32c:#010x}"),
            ));
        }
        let footer_at = self.header_bytes + expected_bytes;
        self.file
            .set_len(footer_at)
            .and_then(|()| {
                self.file
                    .write_at(footer_at, &encode_footer(expected_bytes, crc))
            })
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("finish partial snapshot", &self.path, e))?;
        self.store.promote(&self.path, &self.meta)
    }
}
