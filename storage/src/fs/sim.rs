//! [`SimFs`]: an in-memory file system that remembers what was made durable.
//!
//! For tests and the simulator. A `SimFs` is a cheap handle (`Arc` inside); clones share one
//! file system, so a test keeps a clone to crash it or inject faults while a `Wal` uses another.
//! Every file is an inode with its `current` bytes (what a reader sees) and its `durable` bytes
//! (what survives a power loss); directory entries likewise have a current and a durable view,
//! for files and for directories alike: a directory created by `create_dir_all` survives a
//! power loss only once `sync_dir` of its parent made its name durable (a root always exists),
//! and a directory lost that way takes every entry under it along.
//! Invariant: after [`SimFs::crash`] every handle opened before it fails with an error, so a
//! test cannot accidentally keep using pre-crash state.

use super::{DirLock, Fs, ReadFile, SegmentFile, WriteFile};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a crash does to data written but not yet synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss: every unsynced write and unsynced directory change is lost.
    LoseUnsynced,
    /// Process kill (`kill -9`): the page cache survives, so nothing is lost.
    KeepUnsynced,
    /// Power loss during write-back: for each file, a prefix (chosen by `seed`) of the bytes
    /// that differ from the durable copy reached the disk; unsynced directory changes are lost.
    TearUnsynced {
        /// Chooses how much of each file's unsynced bytes survives.
        seed: u64,
    },
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct SimState {
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    /// Directories whose name in their parent was synced. Invariant: a subset of `dirs`.
    durable_dirs: BTreeSet<PathBuf>,
    /// Bumped by every crash; handles from an older generation are dead.
    generation: u64,
    /// The write that fails: counts down on every write; fails when it reaches 1.
    fail_write_in: Option<u64>,
    /// The sync that fails: counts down on every sync; fails when it reaches 1.
    fail_sync_in: Option<u64>,
    writes: u64,
    syncs: u64,
    /// Byte ranges, by inode, that positional reads cannot read (an unreadable sector):
    /// a read touching one fails with `EIO` until a write covers the range again (a drive
    /// remaps a bad sector when it is written).
    unreadable: BTreeMap<usize, Vec<std::ops::Range<usize>>>,
}

/// An in-memory file system with crash and fault injection. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("simfs: no such file {}", path.display()),
    )
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("simfs: injected {what} failure"))
}

impl SimState {
    fn inode_of(&self, path: &Path) -> io::Result<usize> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn count_write(&mut self) -> io::Result<()> {
        self.writes += 1;
        count_down(&mut self.fail_write_in, "write")
    }

    fn count_sync(&mut self) -> io::Result<()> {
        self.syncs += 1;
        count_down(&mut self.fail_sync_in, "sync")
    }

    fn check_generation(&self, generation: u64) -> io::Result<()> {
        if generation == self.generation {
            Ok(())
        } else {
            Err(io::Error::other("simfs: handle opened before a crash"))
        }
    }

    /// After a power loss: a directory survives only if its name and every ancestor's name
    /// were synced into their parents; entries under a lost directory are lost with it.
    fn lose_unsynced_dirs(&mut self) {
        let durable = &self.durable_dirs;
        let survives = |dir: &Path| {
            dir.ancestors()
                .all(|a| a.parent().is_none() || durable.contains(a))
        };
        let lost: BTreeSet<PathBuf> = self
            .dirs
            .iter()
            .filter(|dir| !survives(dir))
            .cloned()
            .collect();
        let under_lost = |path: &Path| path.ancestors().skip(1).any(|a| lost.contains(a));
        self.names.retain(|path, _| !under_lost(path));
        self.durable_names.retain(|path, _| !under_lost(path));
        self.dirs.retain(|dir| !lost.contains(dir));
        self.durable_dirs.retain(|dir| !lost.contains(dir));
    }

    /// A write of `range` of inode `id` makes the unreadable ranges it covers readable.
    fn rewrite_unreadable(&mut self, id: usize, range: std::ops::Range<usize>) {
        if let Some(ranges) = self.unreadable.get_mut(&id) {
            ranges.retain(|bad| bad.start < range.start || bad.end > range.end);
        }
    }

    /// A positional read of inode `id`'s current bytes: `EIO` when it touches an unreadable
    /// range.
    fn read_inode(&self, id: usize, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = &self.inodes[id].current;
        let start = (offset as usize).min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        let read = start..start + n;
        let mut bad = self.unreadable.get(&id).into_iter().flatten();
        if bad.any(|b| b.start < read.end && read.start < b.end) {
            // EIO itself (its OS error number), as a real unreadable sector reads.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }

    fn new_inode(&mut self, path: &Path, bytes: Vec<u8>) -> usize {
        self.inodes.push(Inode {
            current: bytes,
            durable: Vec::new(),
        });
        let id = self.inodes.len() - 1;
        self.names.insert(path.to_path_buf(), id);
        id
    }
}

fn count_down(counter: &mut Option<u64>, what: &str) -> io::Result<()> {
    match counter {
        Some(1) => {
            *counter = None;
            Err(injected(what))
        }
        Some(n) => {
            *n -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

/// A small deterministic generator (SplitMix64) so crashes replay from a seed.
fn split_mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn tear(inode: &mut Inode, rng: &mut u64) {
    if inode.current.len() != inode.durable.len() {
        inode.current = inode.durable.clone();
        return;
    }
    let differing: Vec<usize> = (0..inode.current.len())
        .filter(|&i| inode.current[i] != inode.durable[i])
        .collect();
    let kept = (split_mix(rng) % (differing.len() as u64 + 1)) as usize;
    for &i in &differing[kept..] {
        inode.current[i] = inode.durable[i];
    }
    inode.durable = inode.current.clone();
}

impl SimFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Simulates a crash: see [`CrashMode`]. Every open handle becomes unusable.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.lock();
        state.generation += 1;
        match mode {
            CrashMode::KeepUnsynced => return,
            CrashMode::LoseUnsynced => {
                for inode in &mut state.inodes {
                    inode.current = inode.durable.clone();
                }
            }
            CrashMode::TearUnsynced { seed } => {
                let mut rng = seed;
                for inode in &mut state.inodes {
                    tear(inode, &mut rng);
                }
            }
        }
        state.names = state.durable_names.clone();
        state.lose_unsynced_dirs();
    }

    /// The `n`-th write from now (1 = the next one) fails with an I/O error and writes nothing.
    pub fn fail_nth_write(&self, n: u64) {
        self.lock().fail_write_in = Some(n.max(1));
    }

    /// The `n`-th sync from now (1 = the next one) fails with an I/O error and syncs nothing.
    pub fn fail_nth_sync(&self, n: u64) {
        self.lock().fail_sync_in = Some(n.max(1));
    }

    /// How many writes and syncs were issued so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.lock();
        (state.writes, state.syncs)
    }

    /// Flips bit `bit` (0..8) of byte `offset` of `path`, both in the current and durable copy.
    pub fn flip_bit(&self, path: &Path, offset: usize, bit: u8) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.inode_of(path)?;
        let inode = &mut state.inodes[id];
        for bytes in [&mut inode.current, &mut inode.durable] {
            if let Some(byte) = bytes.get_mut(offset) {
                *byte ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// The disk dropped a synced write: bytes `offset..offset + previous.len()` of `path`
    /// hold `previous` again (what was there before the write), in the current and the
    /// durable copy alike. Bytes past the end of the file are left out.
    pub fn revert_write(&self, path: &Path, offset: usize, previous: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.inode_of(path)?;
        let inode = &mut state.inodes[id];
        for bytes in [&mut inode.current, &mut inode.durable] {
            let end = (offset + previous.len()).min(bytes.len());
            if offset < end {
                bytes[offset..end].copy_from_slice(&previous[..end - offset]);
            }
        }
        Ok(())
    }

    /// Bytes `offset..offset + len` of `path` become an unreadable sector: a positional read
    /// ([`ReadFile::read_at`], [`SegmentFile::read_at`]) touching them fails with `EIO` until
    /// a write covers the whole range (a drive remaps a bad sector when it is written).
    /// Reads of a segment's map ([`SegmentFile::bytes`]) do not see it (a real map would
    /// raise `SIGBUS`).
    pub fn make_unreadable(&self, path: &Path, offset: usize, len: usize) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.inode_of(path)?;
        (state.unreadable.entry(id).or_default()).push(offset..offset + len);
        Ok(())
    }

    /// The current bytes of `path`.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock();
        let id = state.inode_of(path)?;
        Ok(state.inodes[id].current.clone())
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in dir.ancestors() {
            state.dirs.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let names = state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name())
            .map(|name| name.to_string_lossy().into_owned())
            .collect();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        Ok(state.names.contains_key(path) || state.dirs.contains(path))
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.lock();
        let id = state.inode_of(path)?;
        Ok(state.inodes[id].current.len() as u64)
    }

    fn create_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut state = self.lock();
        state.count_write()?;
        state.count_sync()?;
        let bytes = vec![0u8; len as usize];
        let id = state.new_inode(path, bytes.clone());
        state.inodes[id].durable = bytes.clone();
        Ok(Box::new(SimSegment {
            fs: self.clone(),
            inode: id,
            generation: state.generation,
            bytes,
        }))
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let state = self.lock();
        let id = state.inode_of(path)?;
        Ok(Box::new(SimSegment {
            fs: self.clone(),
            inode: id,
            generation: state.generation,
            bytes: state.inodes[id].current.clone(),
        }))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        let mut state = self.lock();
        let id = match state.names.get(path) {
            Some(&id) => id,
            None => state.new_inode(path, Vec::new()),
        };
        Ok(Box::new(SimWriteFile {
            fs: self.clone(),
            inode: id,
            generation: state.generation,
        }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        let state = self.lock();
        let id = state.inode_of(path)?;
        Ok(Box::new(SimReadFile {
            fs: self.clone(),
            inode: id,
            generation: state.generation,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.inode_of(from)?;
        state.names.remove(from);
        state.names.insert(to.to_path_buf(), id);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state
            .names
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.count_sync()?;
        let in_dir = |path: &PathBuf| path.parent() == Some(dir);
        state.durable_names.retain(|path, _| !in_dir(path));
        let current: Vec<(PathBuf, usize)> = state
            .names
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(path, id)| (path.clone(), *id))
            .collect();
        state.durable_names.extend(current);
        let subdirs: Vec<PathBuf> = state.dirs.iter().filter(|d| in_dir(d)).cloned().collect();
        state.durable_dirs.extend(subdirs);
        Ok(())
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<Box<dyn DirLock>> {
        Ok(Box::new(SimDirLock))
    }
}

/// One `SimFs` is used by one test at a time, so its directory lock holds nothing.
#[derive(Debug)]
struct SimDirLock;

impl DirLock for SimDirLock {}

#[derive(Debug)]
struct SimSegment {
    fs: SimFs,
    inode: usize,
    generation: u64,
    /// This handle's view; always equal to the inode's current bytes while the handle lives.
    bytes: Vec<u8>,
}

impl SegmentFile for SimSegment {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.count_write()?;
        let range = offset..offset + data.len();
        state.rewrite_unreadable(self.inode, range.clone());
        state.inodes[self.inode].current[range.clone()].copy_from_slice(data);
        self.bytes[range].copy_from_slice(data);
        Ok(())
    }

    fn sync_range(&mut self, offset: usize, len: usize) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.count_sync()?;
        let inode = &mut state.inodes[self.inode];
        let range = offset..offset + len;
        let Inode { current, durable } = inode;
        durable[range.clone()].copy_from_slice(&current[range]);
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.read_inode(self.inode, offset, buf)
    }
}

#[derive(Debug)]
struct SimWriteFile {
    fs: SimFs,
    inode: usize,
    generation: u64,
}

impl WriteFile for SimWriteFile {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.count_write()?;
        let end = offset as usize + data.len();
        state.rewrite_unreadable(self.inode, offset as usize..end);
        let bytes = &mut state.inodes[self.inode].current;
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.inodes[self.inode].current.resize(len as usize, 0);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.count_sync()?;
        let inode = &mut state.inodes[self.inode];
        inode.durable = inode.current.clone();
        Ok(())
    }
}

#[derive(Debug)]
struct SimReadFile {
    fs: SimFs,
    inode: usize,
    generation: u64,
}

impl ReadFile for SimReadFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let state = self.fs.lock();
        state.check_generation(self.generation)?;
        state.read_inode(self.inode, offset, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> &'static Path {
        Path::new("/d")
    }

    /// Creates the test directory and makes its name durable.
    fn durable_dir(fs: &SimFs) {
        fs.create_dir_all(dir()).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
    }

    #[test]
    fn power_loss_forgets_unsynced_bytes_and_names() {
        let fs = SimFs::new();
        durable_dir(&fs);
        let synced = dir().join("synced");
        let unsynced_name = dir().join("unsynced-name");
        let mut file = fs.open_write(&synced).unwrap();
        file.write_at(0, b"durable").unwrap();
        file.sync().unwrap();
        fs.sync_dir(dir()).unwrap();
        file.write_at(0, b"VOLATILE").unwrap();
        fs.open_write(&unsynced_name).unwrap().sync().unwrap();
        fs.crash(CrashMode::LoseUnsynced);
        assert_eq!(fs.contents(&synced).unwrap(), b"durable");
        assert!(
            !fs.exists(&unsynced_name).unwrap(),
            "the name was never made durable"
        );
        assert!(
            file.write_at(0, b"x").is_err(),
            "pre-crash handles are dead"
        );
    }

    #[test]
    fn an_unreadable_range_fails_reads_until_rewritten_and_a_reverted_write_is_durable() {
        let fs = SimFs::new();
        durable_dir(&fs);
        let path = dir().join("f");
        let mut file = fs.open_write(&path).unwrap();
        file.write_at(0, &[7u8; 16]).unwrap();
        file.sync().unwrap();
        fs.make_unreadable(&path, 4, 4).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(fs.read_at(&path, 0, &mut buf).unwrap(), 4);
        assert_eq!(fs.read_at(&path, 8, &mut buf).unwrap(), 4);
        let error = fs.read_at(&path, 6, &mut buf).unwrap_err();
        assert!(error.to_string().contains("os error 5"), "{error}");
        // A write over part of the range leaves it unreadable; one over all of it heals it.
        file.write_at(4, &[1, 2]).unwrap();
        assert!(fs.read_at(&path, 4, &mut buf).is_err());
        file.write_at(3, &[9u8; 6]).unwrap();
        assert_eq!(fs.read_at(&path, 4, &mut buf).unwrap(), 4);
        assert_eq!(buf, [9u8; 4]);

        file.sync().unwrap();
        fs.sync_dir(dir()).unwrap();
        fs.revert_write(&path, 14, &[0, 0, 0, 0]).unwrap();
        fs.crash(CrashMode::LoseUnsynced);
        let bytes = fs.contents(&path).unwrap();
        assert_eq!(bytes.len(), 16, "a reverted write never grows the file");
        assert_eq!(&bytes[12..], &[7, 7, 0, 0]);
    }

    #[test]
    fn process_kill_keeps_everything() {
        let fs = SimFs::new();
        fs.create_dir_all(dir()).unwrap();
        let path = dir().join("f");
        let mut seg = fs.create_segment(&path, 16).unwrap();
        seg.write_at(0, b"abc").unwrap();
        fs.crash(CrashMode::KeepUnsynced);
        assert_eq!(&fs.contents(&path).unwrap()[..3], b"abc");
    }

    #[test]
    fn segment_sync_range_is_exact_and_tear_keeps_a_prefix() {
        let fs = SimFs::new();
        durable_dir(&fs);
        let path = dir().join("seg");
        let mut seg = fs.create_segment(&path, 8).unwrap();
        fs.sync_dir(dir()).unwrap();
        seg.write_at(0, &[1; 8]).unwrap();
        seg.sync_range(0, 2).unwrap();
        fs.crash(CrashMode::LoseUnsynced);
        assert_eq!(fs.contents(&path).unwrap(), [1, 1, 0, 0, 0, 0, 0, 0]);
        let mut seg = fs.open_segment(&path).unwrap();
        seg.write_at(2, &[2; 6]).unwrap();
        fs.crash(CrashMode::TearUnsynced { seed: 3 });
        let torn = fs.contents(&path).unwrap();
        let kept = torn[2..].iter().take_while(|&&b| b == 2).count();
        assert!(
            torn[2 + kept..].iter().all(|&b| b == 0),
            "a prefix survives: {torn:?}"
        );
    }

    #[test]
    fn injected_failures_hit_the_nth_call_once() {
        let fs = SimFs::new();
        fs.create_dir_all(dir()).unwrap();
        let mut file = fs.open_write(&dir().join("f")).unwrap();
        fs.fail_nth_write(2);
        file.write_at(0, b"1").unwrap();
        assert!(file.write_at(1, b"2").is_err());
        file.write_at(1, b"3").unwrap();
        fs.fail_nth_sync(1);
        assert!(file.sync().is_err());
        file.sync().unwrap();
        assert_eq!(fs.contents(&dir().join("f")).unwrap(), b"13");
    }

    #[test]
    fn a_directory_survives_power_loss_only_once_its_parent_is_synced() {
        let fs = SimFs::new();
        let nested = dir().join("nested");
        fs.create_dir_all(&nested).unwrap();
        let file = nested.join("f");
        fs.open_write(&file).unwrap().sync().unwrap();
        fs.sync_dir(&nested).unwrap();
        // The file's name is durable in `nested`, but no parent was synced: both directories
        // and the file are gone after a power loss.
        fs.crash(CrashMode::LoseUnsynced);
        assert!(!fs.exists(dir()).unwrap());
        assert!(!fs.exists(&file).unwrap());
        assert!(fs.list_dir(&nested).is_err());

        // Syncing every parent keeps all of it; a process kill keeps everything anyway.
        fs.create_dir_all(&nested).unwrap();
        fs.open_write(&file).unwrap().sync().unwrap();
        fs.crash(CrashMode::KeepUnsynced);
        assert!(fs.exists(&file).unwrap());
        for synced in [&nested, dir(), Path::new("/")] {
            fs.sync_dir(synced).unwrap();
        }
        fs.crash(CrashMode::TearUnsynced { seed: 1 });
        assert_eq!(fs.list_dir(&nested).unwrap(), ["f"]);
    }
}
