//! The file-system seam: every byte `rcraft-storage` reads or writes goes through [`Fs`].
//!
//! [`RealFs`] is the operating system (memory maps from memmap2, `fdatasync`, directory
//! fsync). [`SimFs`] is an in-memory file system for tests that remembers what was synced,
//! so a test can crash it (losing unsynced writes, or tearing them), fail the n-th write or
//! sync, and flip bits. Handles are owned by the storage thread that opened them.
//!
//! Contract every implementation keeps:
//! - `create_segment` returns a zero-filled file of the asked length whose length and zeroes
//!   are already durable; the caller still syncs the directory to make the name durable.
//! - A write is durable only after a `sync`/`sync_range` covering it returned `Ok`.
//! - A name created, renamed or removed is durable only after `sync_dir` of its directory;
//!   that holds for a directory created by `create_dir_all` too (its name lives in its parent),
//!   hence [`create_dir_durable`].

mod real;
mod shadow;
mod sim;

pub use real::{LOCK_FILE_NAME, Preallocate, RealFs, SyncMethod, mapped_resident_bytes};
pub use shadow::{ShadowFs, lock_holder};
pub use sim::{CrashMode, SimFs};

use crate::error::{Error, Result};
use std::io;
use std::path::Path;

/// A file system as seen by the storage crate. See the module docs for the contract.
pub trait Fs: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files in `dir`, sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Length of the file at `path`.
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// Creates (or replaces) a zero-filled file of `len` bytes with durable length and maps it.
    fn create_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Maps an existing file for reading and writing.
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// Opens `path` for positional writes, creating it (empty) if missing.
    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>>;
    /// Reads up to `buf.len()` bytes at `offset` of `path`; returns how many were read
    /// (fewer only at the end of the file).
    fn read_at(&self, path: &Path, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.open_read(path)?.read_at(offset, buf)
    }
    /// Opens `path` for positional reads (a long sequential read keeps one handle).
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>>;
    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive advisory lock on `dir` (held until the returned guard is dropped),
    /// failing if another process holds it: two writers on one WAL would corrupt it.
    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// A held directory lock; dropping it releases the lock.
pub trait DirLock: Send + std::fmt::Debug {}

/// A WAL segment: a fixed-length file mapped into memory.
pub trait SegmentFile: Send + std::fmt::Debug {
    /// The whole file's current contents (what a reader sees, synced or not).
    fn bytes(&self) -> &[u8];
    /// Copies `data` into the file at `offset`. Panics if out of bounds (a caller bug).
    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()>;
    /// Makes `len` bytes at `offset` durable (msync of the range on [`RealFs`]).
    fn sync_range(&mut self, offset: usize, len: usize) -> io::Result<()>;
    /// Reads up to `buf.len()` bytes at `offset` with a positional read, not through the map
    /// (`pread` on [`RealFs`]; it sees the map's writes, which share the page cache): an
    /// unreadable sector then fails the read with `EIO` instead of raising `SIGBUS` in the
    /// process. Returns how many bytes were read (fewer only at the end of the file).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Lets go of this process's copy of the file's pages: on [`RealFs`] the map's pages
    /// leave the process's resident set (`MADV_DONTNEED` on the shared file mapping) and are
    /// read back from the page cache or the disk on the next access. The contents do not
    /// change. The WAL calls it for a sealed segment it has synced, so a long log does not
    /// keep every segment resident. Does nothing by default (in-memory file systems).
    fn release_pages(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file read at explicit offsets (snapshot data).
pub trait ReadFile: Send + std::fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (fewer only at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Tells the system that the `len` bytes at `offset` will not be read again soon, so the
    /// memory caching them can be reused (a snapshot file read once, front to back). Only a
    /// hint: the file is unchanged, a later read gets the same bytes (from the disk), and
    /// written bytes not yet synced stay cached. Does nothing unless the file system has a
    /// cache to drop.
    fn drop_cached(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
}

/// A file written at explicit offsets (hard state, snapshots).
pub trait WriteFile: Send + std::fmt::Debug {
    /// Writes all of `data` at `offset`, extending the file if needed.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Sets the file's length (truncating or zero-extending).
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Makes all writes so far durable (`fdatasync` on [`RealFs`]).
    fn sync(&mut self) -> io::Result<()>;
}

/// Creates `dir` and its missing parents so that they survive a power loss: syncs the parent
/// of every directory created, and `dir`'s own parent even when `dir` already existed (a run
/// that created it, or a tool that did, may have stopped before that sync). Parents that
/// existed before are not synced: their names are not ours to make durable.
pub fn create_dir_durable(fs: &dyn Fs, dir: &Path) -> Result<()> {
    // Missing directories, innermost first; just `dir` when it exists already.
    let mut to_sync = Vec::new();
    for ancestor in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        let exists = fs
            .exists(ancestor)
            .map_err(|e| Error::io("look for directory", ancestor, e))?;
        if exists {
            break;
        }
        to_sync.push(ancestor);
    }
    if to_sync.is_empty() {
        to_sync.push(dir);
    }
    fs.create_dir_all(dir)
        .map_err(|e| Error::io("create directory", dir, e))?;
    // Outermost first: each name is synced into a directory that is already durable.
    for made in to_sync.into_iter().rev() {
        let Some(parent) = made.parent() else {
            continue; // A root has no name to sync.
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        fs.sync_dir(parent)
            .map_err(|e| Error::io("sync directory", parent, e))?;
    }
    Ok(())
}

/// The unit an unreadable sector is rewritten in: a page, what a read through a mapping faults
/// on as a whole.
pub(crate) const UNREADABLE_BLOCK_BYTES: u64 = 4096;

/// Reads all of `path` once with positional reads and returns the offsets of the
/// [`UNREADABLE_BLOCK_BYTES`] blocks whose read fails with `EIO` (an unreadable sector). For
/// files that are then mapped (WAL segments): a mapped read of an unreadable page raises
/// `SIGBUS` and kills the process, where a positional read returns an error the caller can
/// judge. Any other read error is returned as it is.
pub(crate) fn find_unreadable_blocks(fs: &dyn Fs, path: &Path) -> io::Result<Vec<u64>> {
    const CHUNK: u64 = 1 << 20;
    let len = fs.file_len(path)?;
    let reader = fs.open_read(path)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut bad = Vec::new();
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(CHUNK);
        match read_exact_from(reader.as_ref(), offset, &mut buf[..n as usize]) {
            Ok(()) => {}
            Err(e) if is_eio(&e) => {
                let mut block = offset;
                while block < offset + n {
                    let m = (offset + n - block).min(UNREADABLE_BLOCK_BYTES);
                    match read_exact_from(reader.as_ref(), block, &mut buf[..m as usize]) {
                        Ok(()) => {}
                        Err(e) if is_eio(&e) => bad.push(block),
                        Err(e) => return Err(e),
                    }
                    block += m;
                }
            }
            Err(e) => return Err(e),
        }
        offset += n;
    }
    Ok(bad)
}

/// Rewrites the [`UNREADABLE_BLOCK_BYTES`] blocks of `path` at `blocks` with zeroes and syncs
/// them (a write lets the disk remap an unreadable sector).
pub(crate) fn rewrite_blocks_with_zeroes(
    fs: &dyn Fs,
    path: &Path,
    blocks: &[u64],
) -> io::Result<()> {
    let len = fs.file_len(path)?;
    let zeroes = [0u8; UNREADABLE_BLOCK_BYTES as usize];
    let mut file = fs.open_write(path)?;
    for &block in blocks {
        let m = len.saturating_sub(block).min(UNREADABLE_BLOCK_BYTES) as usize;
        file.write_at(block, &zeroes[..m])?;
    }
    file.sync()
}

fn is_eio(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EIO)
}

/// Reads exactly `buf.len()` bytes at `offset`, failing with `UnexpectedEof` if the file is shorter.
pub(crate) fn read_exact_at(
    fs: &dyn Fs,
    path: &Path,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    read_exact_from(fs.open_read(path)?.as_ref(), offset, buf)
}

/// Reads exactly `buf.len()` bytes at `offset` of an open file (`UnexpectedEof` if shorter).
pub(crate) fn read_exact_from(file: &dyn ReadFile, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    read_exact_with(|at, buf| file.read_at(at, buf), offset, buf)
}

/// Reads exactly `buf.len()` bytes at `offset` of a segment with positional reads
/// ([`SegmentFile::read_at`]; `UnexpectedEof` if shorter).
pub(crate) fn read_exact_from_segment(
    file: &dyn SegmentFile,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    read_exact_with(|at, buf| file.read_at(at, buf), offset, buf)
}

/// Whether `e` is the error of an unreadable sector (`EIO`).
pub fn is_unreadable_sector(e: &io::Error) -> bool {
    is_eio(e)
}

fn read_exact_with(
    read_at: impl Fn(u64, &mut [u8]) -> io::Result<usize>,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shorter than expected",
            ));
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_made_durable_survives_power_loss_also_when_it_existed() {
        let fs = SimFs::new();
        // Created by someone else (the binary's `create_dir_all`), never synced into "/".
        let data = Path::new("/data");
        fs.create_dir_all(data).unwrap();
        create_dir_durable(&fs, data).unwrap();
        // Created here, with a missing parent: both names are synced.
        let nested = Path::new("/other/wal");
        create_dir_durable(&fs, nested).unwrap();
        fs.crash(CrashMode::LoseUnsynced);
        assert!(fs.exists(data).unwrap());
        assert!(fs.exists(nested).unwrap());
    }
}
