//! [`RealFs`]: the operating system's file system, with segments mapped by memmap2.
//!
//! Handles are owned by the storage thread. Invariant: a mapped segment file is never
//! truncated or shrunk while mapped (that would turn reads of the map into SIGBUS); segments
//! are only created at full length, written through the map and unlinked after unmapping.

use super::{DirLock, Fs, ReadFile, SegmentFile, WriteFile};
use memmap2::MmapMut;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How a new segment file gets its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preallocate {
    /// `fallocate(2)`: instant, but blocks stay "unwritten" extents, so the first sync of each
    /// block also commits a metadata change in the file-system journal.
    Fallocate,
    /// Write zeroes over the whole file once: slower creation, but later syncs only write data.
    ZeroFill,
}

/// Which system call makes a segment's range durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMethod {
    /// `msync(MS_SYNC)` on the dirty page range of the map.
    Msync,
    /// `fdatasync(2)` of the whole file.
    Fdatasync,
}

/// The real file system. See [`Preallocate`] and [`SyncMethod`] for the two tuning choices;
/// `RealFs::default()` uses the ones measured fastest (see docs/BENCHMARKS.md).
#[derive(Debug, Clone, Copy)]
pub struct RealFs {
    /// How new segments get their blocks.
    pub preallocate: Preallocate,
    /// How segment writes are made durable.
    pub sync_method: SyncMethod,
}

impl Default for RealFs {
    /// `fallocate` + `fdatasync`: syncs measured as fast as with zero-filled segments (the
    /// device flush dominates), while creating a segment is about 3x faster and recovery's scan
    /// of the unused tail reads no disk blocks. See docs/BENCHMARKS.md.
    fn default() -> Self {
        RealFs {
            preallocate: Preallocate::Fallocate,
            sync_method: SyncMethod::Fdatasync,
        }
    }
}

/// Bytes written per call when zero-filling a new segment.
const ZERO_FILL_CHUNK_BYTES: usize = 1024 * 1024;

impl RealFs {
    fn preallocate(&self, file: &mut File, len: u64) -> io::Result<()> {
        if self.preallocate == Preallocate::Fallocate {
            match fallocate(file, len) {
                // A file system without fallocate (some network ones) gets zeroes written.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
                other => return other,
            }
        }
        let zeroes = vec![0u8; ZERO_FILL_CHUNK_BYTES];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeroes.len() as u64) as usize;
            file.write_all(&zeroes[..n])?;
            left -= n as u64;
        }
        Ok(())
    }
}

fn fallocate(file: &File, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: `fallocate` only reads its integer arguments; the descriptor is open and owned
    // by `file` for the duration of the call.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Fs for RealFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }

    fn create_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        self.preallocate(&mut file, len)?;
        file.sync_all()?;
        map_segment(file, self.sync_method)
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        map_segment(file, self.sync_method)
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Box::new(RealWriteFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(RealReadFile {
            file: File::open(path)?,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<Box<dyn DirLock>> {
        use std::os::fd::AsRawFd;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE_NAME))?;
        // SAFETY: `flock` only reads its integer arguments; the descriptor is open and owned by
        // `file`, which the returned guard keeps open for as long as the lock is held.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Box::new(RealDirLock { _file: file }))
    }
}

/// Name of the lock file `lock_dir` creates inside a locked directory.
pub const LOCK_FILE_NAME: &str = "LOCK";

/// Holds the open, `flock`ed lock file; closing it releases the lock.
#[derive(Debug)]
struct RealDirLock {
    _file: File,
}

impl DirLock for RealDirLock {}

fn map_segment(file: File, sync_method: SyncMethod) -> io::Result<Box<dyn SegmentFile>> {
    // SAFETY: the map is only sound while nobody else truncates or rewrites the file. The
    // segment files live in the WAL directory, which one `Wal` owns exclusively (it holds an
    // advisory lock on the directory); this crate never shrinks a mapped file and unmaps a
    // segment before unlinking it.
    let map = unsafe { MmapMut::map_mut(&file)? };
    Ok(Box::new(RealSegment {
        file,
        map,
        sync_method,
    }))
}

#[derive(Debug)]
struct RealSegment {
    file: File,
    map: MmapMut,
    sync_method: SyncMethod,
}

impl SegmentFile for RealSegment {
    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        self.map[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn sync_range(&mut self, offset: usize, len: usize) -> io::Result<()> {
        match self.sync_method {
            SyncMethod::Msync => self.map.flush_range(offset, len),
            SyncMethod::Fdatasync => self.file.sync_data(),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn release_pages(&mut self) -> io::Result<()> {
        // SAFETY: `&mut self` means no borrow of the map is alive while the pages go. The map
        // is a shared mapping of the file (`map_mut`), so MADV_DONTNEED only drops this
        // process's page-table entries: a later access reads the same bytes back from the
        // page cache (dirty pages stay there until written back), never zeros.
        unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        }
    }
}

#[derive(Debug)]
struct RealWriteFile {
    file: File,
}

impl WriteFile for RealWriteFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[derive(Debug)]
struct RealReadFile {
    file: File,
}

impl ReadFile for RealReadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn drop_cached(&self, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "range past 2^63 bytes");
        let offset = libc::off_t::try_from(offset).map_err(|_| too_large())?;
        let len = libc::off_t::try_from(len).map_err(|_| too_large())?;
        // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open and
        // owned by `self.file` for the duration of the call.
        let rc = unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::POSIX_FADV_DONTNEED,
            )
        };
        // Unlike most calls it returns the error number instead of setting errno.
        match rc {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Bytes of the file at `path` resident in this process through its mappings (the `Rss` of
/// its entries in `/proc/self/smaps`, summed; 0 when it is not mapped). What a WAL segment's
/// map adds to the process's resident set, for tests and diagnostics of
/// [`SegmentFile::release_pages`]. Linux only: an error where `/proc/self/smaps` cannot be read.
pub fn mapped_resident_bytes(path: &Path) -> io::Result<u64> {
    let smaps = fs::read_to_string("/proc/self/smaps")?;
    let mut total_kb = 0;
    let mut this_file = false;
    for line in smaps.lines() {
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        if !first.ends_with(':') {
            // A mapping's header: address, permissions, offset, device, inode, then the path.
            let mut rest = line;
            for _ in 0..5 {
                rest = rest.trim_start();
                rest = &rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..];
            }
            this_file = Path::new(rest.trim_start()) == path;
        } else if this_file && first == "Rss:" {
            let kb = line[4..].trim().trim_end_matches("kB").trim();
            total_kb += kb.parse::<u64>().map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("smaps Rss {kb:?}: {e}"))
            })?;
        }
    }
    Ok(total_kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_cached_pages_keeps_the_bytes_and_refuses_impossible_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let fs = RealFs::default();
        let data: Vec<u8> = (0..3 * 4096 + 17).map(|i| (i % 251) as u8).collect();
        let mut file = fs.open_write(&path).unwrap();
        file.write_at(0, &data).unwrap();
        file.sync().unwrap();
        let reader = fs.open_read(&path).unwrap();
        reader.drop_cached(0, 2 * 4096).unwrap();
        reader.drop_cached(4096, data.len() as u64).unwrap();
        let mut back = vec![0u8; data.len()];
        super::super::read_exact_from(reader.as_ref(), 0, &mut back).unwrap();
        assert_eq!(back, data);
        let e = reader.drop_cached(u64::MAX, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    /// Resident kB of this process's mapping of `path`.
    fn mapped_resident_kb(path: &Path) -> u64 {
        mapped_resident_bytes(path).unwrap() / 1024
    }

    #[test]
    fn a_positional_read_of_a_segment_sees_what_was_written_through_its_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        let mut seg = RealFs::default().create_segment(&path, 8192).unwrap();
        seg.write_at(5000, b"written, not synced").unwrap();
        let mut back = [0u8; 19];
        super::super::read_exact_from_segment(seg.as_ref(), 5000, &mut back).unwrap();
        assert_eq!(&back, b"written, not synced");
        let mut tail = [1u8; 8];
        assert_eq!(seg.read_at(8190, &mut tail).unwrap(), 2, "short at the end");
        assert_eq!(seg.read_at(9000, &mut tail).unwrap(), 0);
    }

    #[test]
    fn releasing_a_segment_drops_its_resident_pages_and_keeps_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.wal");
        let fs = RealFs::default();
        let len = 2 << 20;
        let mut segment = fs.create_segment(&path, len as u64).unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        // Written through the map and never synced: the release must not lose it.
        segment.write_at(0, &data).unwrap();
        assert!(
            mapped_resident_kb(&path) >= 2048,
            "the written pages are resident"
        );
        segment.release_pages().unwrap();
        assert_eq!(mapped_resident_kb(&path), 0, "no page left in the process");
        assert_eq!(segment.bytes(), &data[..], "the same bytes, mapped back");
        drop(segment);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "the file holds them too"
        );
    }

    /// A lagging follower's catch-up reads old records back through the sealed segments'
    /// maps, which puts their pages back in the process; releasing the range read drops them
    /// again, in every segment the read touched and only there.
    #[test]
    fn releasing_what_a_catch_up_read_mapped_back() {
        use crate::{Record, Wal, WalOptions};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_bytes: 64 << 10,
            fs: Arc::new(RealFs::default()),
        };
        let mut wal = Wal::open(dir.path(), options).unwrap();
        let payload = vec![7u8; 1000];
        let records: Vec<Record<'_>> = (1..=400)
            .map(|index| Record {
                index,
                term: 1,
                payload: &payload,
            })
            .collect();
        wal.append(&records).unwrap();
        wal.sync().unwrap();
        let ranges = wal.segment_ranges();
        assert!(ranges.len() >= 5, "several sealed segments: {ranges:?}");
        let resident = |ranges: &[(std::path::PathBuf, u64, u64)]| -> Vec<u64> {
            let sealed = &ranges[..ranges.len() - 1];
            (sealed.iter())
                .map(|(path, ..)| mapped_resident_bytes(path).unwrap())
                .collect()
        };
        assert!(
            resident(&ranges).iter().all(|&bytes| bytes == 0),
            "sealed segments let go of their pages when sealed: {:?}",
            resident(&ranges)
        );
        // A read from the middle of the first segment to the middle of the third.
        let (_, first, count) = &ranges[0];
        let (_, third, _) = &ranges[2];
        let read = first + count / 2..third + 3;
        let before: Vec<Vec<u8>> = (wal.read(read.clone()).unwrap().iter())
            .map(|record| record.encoded.to_vec())
            .collect();
        let after_read = resident(&ranges);
        assert!(
            after_read[..3].iter().all(|&bytes| bytes > 0)
                && after_read[3..].iter().all(|&b| b == 0),
            "the read mapped back the pages of the segments it read: {after_read:?}"
        );
        wal.release_sealed_pages_of(read.clone());
        assert_eq!(resident(&ranges), vec![0; ranges.len() - 1], "none left");
        let again: Vec<Vec<u8>> = (wal.read(read.clone()).unwrap().iter())
            .map(|record| record.encoded.to_vec())
            .collect();
        assert_eq!(again, before, "the same records, mapped back");
        // Ranges past either end of the log, or empty, release what they can and no more.
        wal.release_sealed_pages_of(0..2);
        wal.release_sealed_pages_of(5..5);
        wal.release_sealed_pages_of(390..1000);
        wal.release_sealed_pages_of(0..u64::MAX);
        assert_eq!(resident(&ranges), vec![0; ranges.len() - 1]);
        assert_eq!(wal.read(1..401).unwrap().len(), 400);
    }
}
