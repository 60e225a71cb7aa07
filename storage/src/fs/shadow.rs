//! [`ShadowFs`]: the real file system, read-only, with every change kept in memory.
//!
//! For inspecting a data directory without touching it (`rcraft doctor`): the stores open on a
//! `ShadowFs` run their usual recovery, and what that recovery would change on disk (a torn
//! tail zeroed, segments removed after damage, unfinished files deleted) happens only in this
//! process and is listed by [`ShadowFs::changes`]. Nothing is ever opened for writing: a
//! segment is mapped private and copy-on-write (writes stay in this process's memory), a
//! removal or rename only hides or moves a name in the shadow, a sync does nothing, and
//! `lock_dir` takes no lock (a node running on the directory keeps it, and a node starting
//! meanwhile is not refused). Whether a node holds a directory's lock is a separate question:
//! [`lock_holder`]. Files cannot be created (recovery never creates one).
//! Invariant: no method opens a real file other than read-only.

use super::{DirLock, Fs, ReadFile, SegmentFile, WriteFile};
use crate::limits::SEGMENT_HEADER_BYTES;
use memmap2::{MmapMut, MmapOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct Shadow {
    /// Real files hidden by a removal (or the source of a rename).
    removed: BTreeSet<PathBuf>,
    /// Names that a rename made refer to another real file: shadow name -> real file.
    renamed: BTreeMap<PathBuf, PathBuf>,
    /// What recovery would have changed on disk, in words, in order.
    changes: Vec<String>,
}

/// A read-only view of the real file system that keeps changes in memory. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct ShadowFs {
    shadow: Arc<Mutex<Shadow>>,
}

fn read_only(what: &str, path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{what} {}: read-only inspection", path.display()),
    )
}

impl ShadowFs {
    /// A shadow of the whole real file system with no changes yet.
    pub fn new() -> ShadowFs {
        ShadowFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, Shadow> {
        self.shadow.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the stores opened on this shadow would have changed on disk, in order.
    pub fn changes(&self) -> Vec<String> {
        self.lock().changes.clone()
    }

    /// The real file behind `path` in the shadow, or `NotFound`.
    fn real(&self, path: &Path) -> io::Result<PathBuf> {
        let shadow = self.lock();
        if let Some(real) = shadow.renamed.get(path) {
            return Ok(real.clone());
        }
        if shadow.removed.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} (removed in the shadow)", path.display()),
            ));
        }
        Ok(path.to_path_buf())
    }
}

impl Fs for ShadowFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            Ok(())
        } else {
            Err(read_only("create directory", dir))
        }
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = BTreeSet::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        let shadow = self.lock();
        names.retain(|name| !shadow.removed.contains(&dir.join(name)));
        for name in shadow.renamed.keys() {
            if name.parent() == Some(dir)
                && let Some(file) = name.file_name()
            {
                names.insert(file.to_string_lossy().into_owned());
            }
        }
        Ok(names.into_iter().collect())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match self.real(path) {
            Ok(real) => real.try_exists(),
            Err(_) => Ok(false),
        }
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(self.real(path)?)?.len())
    }

    fn create_segment(&self, path: &Path, _len: u64) -> io::Result<Box<dyn SegmentFile>> {
        Err(read_only("create segment", path))
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = File::open(self.real(path)?)?;
        // SAFETY: a private copy-on-write map of a file opened read-only: this process's writes
        // never reach the file. Another process (a running node) may still change the file
        // under the map; the bytes read are then a mix, which a checksum catches like any
        // damage, and the map never shrinks since WAL segments are never truncated while
        // a node has them mapped.
        let map = unsafe { MmapOptions::new().map_copy(&file)? };
        Ok(Box::new(ShadowSegment {
            path: path.to_path_buf(),
            map,
            shadow: self.clone(),
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Err(read_only("open for writing", path))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(ShadowReadFile {
            file: File::open(self.real(path)?)?,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let real = self.real(from)?;
        let mut shadow = self.lock();
        shadow.removed.insert(from.to_path_buf());
        shadow.renamed.remove(from);
        shadow.renamed.insert(to.to_path_buf(), real);
        shadow
            .changes
            .push(format!("rename {} to {}", from.display(), to.display()));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.real(path)?;
        let mut shadow = self.lock();
        shadow.renamed.remove(path);
        shadow.removed.insert(path.to_path_buf());
        shadow.changes.push(format!("remove {}", path.display()));
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<Box<dyn DirLock>> {
        Ok(Box::new(NoLock))
    }
}

/// The lock a [`ShadowFs`] hands out: none.
#[derive(Debug)]
struct NoLock;

impl DirLock for NoLock {}

#[derive(Debug)]
struct ShadowSegment {
    path: PathBuf,
    map: MmapMut,
    shadow: ShadowFs,
}

impl SegmentFile for ShadowSegment {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        if self.map[offset..offset + data.len()] == *data {
            return Ok(());
        }
        let path = self.path.display();
        let change = if offset == 0 {
            format!("rewrite the damaged or older header of {path} (version 3)")
        } else if offset < SEGMENT_HEADER_BYTES {
            format!("rewrite the synced count in the header of {path}")
        } else if data.iter().all(|&b| b == 0) {
            format!(
                "zero {path} from offset {offset} ({} bytes): the records there are cut off",
                data.len()
            )
        } else {
            format!("write {path} at offset {offset} ({} bytes)", data.len())
        };
        self.shadow.lock().changes.push(change);
        self.map[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn sync_range(&mut self, _offset: usize, _len: usize) -> io::Result<()> {
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        // The shadow's view of the file is its private map (the changes recovery made live
        // only there), so it is read from the map. An inspection reads right after opening,
        // whose positional pre-read found every unreadable page (storage/FORMAT.md §4.1).
        let start = usize::try_from(offset).map_or(self.map.len(), |o| o.min(self.map.len()));
        let n = buf.len().min(self.map.len() - start);
        buf[..n].copy_from_slice(&self.map[start..start + n]);
        Ok(n)
    }
}

#[derive(Debug)]
struct ShadowReadFile {
    file: File,
}

impl ReadFile for ShadowReadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

/// The process holding the `flock` on `dir`'s lock file ([`super::LOCK_FILE_NAME`]), if any,
/// found in `/proc/locks` without opening the lock file (so a node starting meanwhile is not
/// refused). `Ok(None)` when no lock file exists or nobody holds it; an error when
/// `/proc/locks` cannot be read.
pub fn lock_holder(dir: &Path) -> io::Result<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(dir.join(super::LOCK_FILE_NAME)) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(locks
        .lines()
        .find_map(|line| flock_holder(line, major, minor, meta.ino())))
}

/// The pid of a `/proc/locks` line (`1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF`) that
/// is an flock on the file `major:minor:inode` (device numbers in hex); `None` otherwise.
fn flock_holder(line: &str, major: u32, minor: u32, inode: u64) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // A lock someone waits for is shown as `1: -> FLOCK ...`: not a holder.
    if fields.get(1) != Some(&"FLOCK") {
        return None;
    }
    let pid = fields.get(4)?.parse().ok()?;
    let mut file = fields.get(5)?.split(':');
    let line_major = u32::from_str_radix(file.next()?, 16).ok()?;
    let line_minor = u32::from_str_radix(file.next()?, 16).ok()?;
    let line_inode: u64 = file.next()?.parse().ok()?;
    ((line_major, line_minor, line_inode) == (major, minor, inode)).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RealFs, Record, Wal, WalOptions};

    fn hashes(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn recovery_on_a_shadow_cuts_a_torn_tail_in_memory_only() {
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_bytes: crate::limits::SEGMENT_BYTES_MIN,
            fs: Arc::new(RealFs::default()),
        };
        let mut wal = Wal::open(dir.path(), options.clone()).unwrap();
        let records: Vec<Record<'_>> = (1..=5)
            .map(|index| Record {
                index,
                term: 2,
                payload: b"entry",
            })
            .collect();
        wal.append(&records).unwrap();
        wal.sync().unwrap();
        let segment = wal.segment_paths()[0].clone();
        drop(wal);
        // Garbage after the synced records: a torn write recovery would zero.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        let end = 32 + 5 * (24 + 5);
        file.write_all_at(&[0xAB; 40], end as u64).unwrap();
        drop(file);
        let before = hashes(dir.path());

        let shadow = ShadowFs::new();
        let seen = Wal::open(
            dir.path(),
            WalOptions {
                fs: Arc::new(shadow.clone()),
                ..options
            },
        )
        .unwrap();
        assert_eq!((seen.first_index(), seen.last_index()), (1, 5));
        assert!(seen.lost().is_none());
        let changes = shadow.changes();
        assert_eq!(
            changes,
            [format!(
                "zero {} from offset {end} (40 bytes): the records there are cut off",
                segment.display()
            )]
        );
        drop(seen);
        assert_eq!(
            hashes(dir.path()),
            before,
            "the shadow changed the directory"
        );
    }

    #[test]
    fn the_holder_of_a_wal_lock_is_found_and_a_free_lock_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
        assert_eq!(lock_holder(dir.path()).unwrap(), Some(std::process::id()));
        drop(wal);
        assert_eq!(lock_holder(dir.path()).unwrap(), None);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(empty.path()).unwrap(), None);
    }

    #[test]
    fn proc_locks_lines_are_read_by_device_and_inode() {
        let line = "3: FLOCK  ADVISORY  WRITE 4242 fd:01:123456 0 EOF";
        assert_eq!(flock_holder(line, 0xfd, 1, 123456), Some(4242));
        assert_eq!(flock_holder(line, 0xfd, 1, 123457), None);
        assert_eq!(flock_holder(line, 8, 1, 123456), None);
        let waiting = "3: -> FLOCK  ADVISORY  WRITE 4243 fd:01:123456 0 EOF";
        assert_eq!(flock_holder(waiting, 0xfd, 1, 123456), None);
        let posix = "1: POSIX  ADVISORY  WRITE 99 fd:01:123456 0 EOF";
        assert_eq!(flock_holder(posix, 0xfd, 1, 123456), None);
    }
}
