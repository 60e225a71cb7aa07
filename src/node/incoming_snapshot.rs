//! The snapshot a follower is receiving, shared so the apply thread can restore it while its
//! chunks still arrive.
//!
//! The storage thread is the only writer: after every chunk it makes durable it publishes the
//! new durable length of the partial file; whenever bytes it already published may change
//! (the transfer starts over, is cut back at a damaged chunk, another snapshot starts, or the
//! end of a transfer fails its check) it bumps the generation first, and when the transfer is
//! abandoned (log entries or a new term arrive meanwhile) it withdraws what it published, so
//! no reader waits for bytes that will not come. The apply thread reads
//! through a [`TailingReader`], which hands out only durable bytes, waits for more, and fails
//! when the generation changes, when the node stops, when nothing new arrives for the stall
//! limit, or when the data does not end with the checksum the leader announced.
//!
//! Invariants: a published length only grows within one generation; every published byte of
//! a generation stays as it was until the generation changes (the storage thread bumps it
//! before it rewrites published bytes, except inside the storage crate's `finish`, whose
//! rewrites follow a failed whole-data checksum that the reader's own end-of-data check fails
//! on too); the stop flag, once set, stays set.

use super::error::Error;
use super::limits::SNAPSHOT_DROP_BEHIND_BYTES;
use parking_lot::{Condvar, Mutex};
use rcraft_storage::fs::ReadFile;
use rcraft_wire::{LogIndex, SnapshotMeta, Term};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One open handle on the partial file, shared by the readers of a generation. A read handle
/// keeps working after the file is renamed into place (same inode), so a restore that is
/// behind the transfer reads on after the snapshot was installed.
type SharedFile = Arc<Mutex<Box<dyn ReadFile>>>;

/// The snapshot being received and how much of it is durable.
struct Arrival {
    index: LogIndex,
    term: Term,
    data_crc32c: u32,
    size_bytes: u64,
    /// Bytes before the data in the partial file.
    header_bytes: u64,
    /// Data bytes durable so far.
    durable: u64,
    /// `None` once the snapshot is installed: readers keep their own handle, and the file
    /// (later removed by a newer snapshot) is not held open for nobody.
    file: Option<SharedFile>,
}

struct Progress {
    generation: u64,
    arrival: Option<Arrival>,
    stopping: bool,
    /// Readers open now (restores running while the snapshot arrives).
    readers: usize,
}

struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// What the storage thread publishes when it starts (or restarts) receiving a snapshot.
pub(crate) struct ArrivalStart {
    /// The snapshot, as the leader announced it (size and data checksum included).
    pub(crate) meta: SnapshotMeta,
    /// Bytes before the data in the partial file.
    pub(crate) header_bytes: u64,
    /// Data bytes already durable (a resumed transfer).
    pub(crate) durable: u64,
    /// A read handle on the partial file.
    pub(crate) file: Box<dyn ReadFile>,
}

/// Progress of the incoming snapshot; cheap to clone (one shared state).
#[derive(Clone)]
pub(crate) struct IncomingSnapshot {
    shared: Arc<Shared>,
}

impl Default for IncomingSnapshot {
    fn default() -> Self {
        IncomingSnapshot::new()
    }
}

impl IncomingSnapshot {
    /// Nothing is being received.
    pub(crate) fn new() -> IncomingSnapshot {
        let progress = Progress {
            generation: 0,
            arrival: None,
            stopping: false,
            readers: 0,
        };
        IncomingSnapshot {
            shared: Arc::new(Shared {
                progress: Mutex::new(progress),
                changed: Condvar::new(),
            }),
        }
    }

    /// Storage thread: bytes published so far may change; their readers fail.
    pub(crate) fn invalidate(&self) {
        let mut progress = self.shared.progress.lock();
        progress.generation += 1;
        progress.arrival = None;
        self.shared.changed.notify_all();
    }

    /// Storage thread: the transfer being received was abandoned (the log is replicated
    /// instead, or a new term began). Like [`IncomingSnapshot::invalidate`], but does nothing
    /// when nothing is published, so calling it for every such persist costs a lock.
    pub(crate) fn abandon(&self) {
        let mut progress = self.shared.progress.lock();
        if progress.arrival.is_some() {
            progress.generation += 1;
            progress.arrival = None;
            self.shared.changed.notify_all();
        }
    }

    /// Storage thread: a partial file (new, resumed or cut back) holds `start.durable` bytes;
    /// a new generation begins.
    pub(crate) fn begin(&self, start: ArrivalStart) {
        let arrival = Arrival {
            index: start.meta.index,
            term: start.meta.term,
            data_crc32c: start.meta.checksum,
            size_bytes: start.meta.size_bytes,
            header_bytes: start.header_bytes,
            durable: start.durable,
            file: Some(Arc::new(Mutex::new(start.file))),
        };
        let mut progress = self.shared.progress.lock();
        progress.generation += 1;
        progress.arrival = Some(arrival);
        self.shared.changed.notify_all();
    }

    /// Storage thread: `durable` data bytes of the current generation are durable.
    pub(crate) fn advance(&self, durable: u64) {
        let mut progress = self.shared.progress.lock();
        if let Some(arrival) = progress.arrival.as_mut() {
            arrival.durable = arrival.durable.max(durable);
            self.shared.changed.notify_all();
        }
    }

    /// Storage thread: the snapshot was installed. Readers go on with their own handle on
    /// the (renamed) file; no new reader opens, and the handle kept here is closed, so a
    /// newer snapshot removing the file later frees its space.
    pub(crate) fn installed(&self) {
        if let Some(arrival) = self.shared.progress.lock().arrival.as_mut() {
            arrival.file = None;
        }
    }

    /// True while a restore reads the snapshot as it arrives.
    pub(crate) fn is_read(&self) -> bool {
        self.shared.progress.lock().readers > 0
    }

    /// The node is stopping: every reader fails now and no new one starts.
    pub(crate) fn stop(&self) {
        self.shared.progress.lock().stopping = true;
        self.shared.changed.notify_all();
    }

    /// A reader over the data of `meta` as it arrives, if `meta` is what is being received.
    /// `stall_limit`: longest it waits for a new byte.
    pub(crate) fn open_reader(
        &self,
        meta: &SnapshotMeta,
        stall_limit: Duration,
    ) -> Result<TailingReader, Error> {
        let mut progress = self.shared.progress.lock();
        if progress.stopping {
            return Err(Error::NotArriving("the node is stopping".to_string()));
        }
        let Some(arrival) = progress.arrival.as_ref() else {
            return Err(Error::NotArriving(
                "no snapshot is being received".to_string(),
            ));
        };
        let same = (
            arrival.index,
            arrival.term,
            arrival.data_crc32c,
            arrival.size_bytes,
        ) == (meta.index, meta.term, meta.checksum, meta.size_bytes);
        if !same {
            return Err(Error::NotArriving(format!(
                "snapshot {} (term {}) is being received instead",
                arrival.index, arrival.term
            )));
        }
        let Some(file) = arrival.file.clone() else {
            return Err(Error::NotArriving(format!(
                "snapshot {} is installed already",
                arrival.index
            )));
        };
        let (header_bytes, seen_durable) = (arrival.header_bytes, arrival.durable);
        progress.readers += 1;
        Ok(TailingReader {
            shared: self.shared.clone(),
            generation: progress.generation,
            file,
            header_bytes,
            index: meta.index,
            size: meta.size_bytes,
            expected_crc32c: meta.checksum,
            position: 0,
            crc32c: 0,
            stall_limit,
            seen_durable,
            last_growth: Instant::now(),
            dropped_through: 0,
        })
    }
}

/// Reads the data of the snapshot being received, waiting for bytes that are not durable
/// yet. Implements [`io::Read`]; see the module docs for when it fails.
pub(crate) struct TailingReader {
    shared: Arc<Shared>,
    generation: u64,
    file: SharedFile,
    header_bytes: u64,
    index: LogIndex,
    size: u64,
    expected_crc32c: u32,
    /// Data bytes handed out so far, and their CRC-32C.
    position: u64,
    crc32c: u32,
    stall_limit: Duration,
    /// The highest durable length seen, and when it last grew.
    seen_durable: u64,
    last_growth: Instant,
    /// Data bytes whose cached pages were dropped (read once, not needed again).
    dropped_through: u64,
}

impl TailingReader {
    /// Reads whatever the caller left unread, so the whole data is checked against the
    /// announced checksum; an error means it did not (or could not) arrive whole and right.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink())?;
        Ok(())
    }

    /// At the end of the data: fails unless its checksum is the announced one.
    fn check_end(&self) -> io::Result<()> {
        if self.crc32c == self.expected_crc32c {
            return Ok(());
        }
        let why = format!(
            "the data's checksum is {:#010x}, the leader announced {:#010x}",
            self.crc32c, self.expected_crc32c
        );
        Err(self.failure(io::ErrorKind::InvalidData, &why))
    }

    /// Lets the system reuse the memory caching what was read: the partial file is read
    /// once here, and holding all of a large snapshot in the page cache while the restored
    /// state also grows would need fresh memory for both (see docs/BENCHMARKS.md, run M).
    fn drop_read_pages(&mut self) {
        let behind = self.position - self.dropped_through;
        if behind < SNAPSHOT_DROP_BEHIND_BYTES && self.position < self.size {
            return;
        }
        let at = self.header_bytes + self.dropped_through;
        if let Err(e) = self.file.lock().drop_cached(at, behind) {
            log::debug!("snapshot {}: dropping cached pages: {e}", self.index);
        }
        self.dropped_through = self.position;
    }

    fn failure(&self, kind: io::ErrorKind, why: &str) -> io::Error {
        io::Error::new(
            kind,
            format!(
                "snapshot {} read while it arrived, at byte {} of {}: {why}",
                self.index, self.position, self.size
            ),
        )
    }

    /// Waits until a byte past `position` is durable; returns how many are.
    fn wait_for_data(&mut self) -> io::Result<u64> {
        let mut progress = self.shared.progress.lock();
        loop {
            self.check(&progress)?;
            let durable = progress
                .arrival
                .as_ref()
                .map_or(0, |arrival| arrival.durable.min(self.size));
            if durable > self.seen_durable {
                self.seen_durable = durable;
                self.last_growth = Instant::now();
            }
            if durable > self.position {
                return Ok(durable - self.position);
            }
            let waited = self.last_growth.elapsed();
            if waited >= self.stall_limit {
                let why = format!(
                    "no new byte arrived for {:.1} s: the transfer was abandoned",
                    waited.as_secs_f64()
                );
                return Err(self.failure(io::ErrorKind::TimedOut, &why));
            }
            self.shared
                .changed
                .wait_for(&mut progress, self.stall_limit - waited);
        }
    }

    /// Fails when the node stops or the published bytes changed.
    fn check(&self, progress: &Progress) -> io::Result<()> {
        if progress.stopping {
            // Not `Interrupted`: `read_to_end` and `io::copy` retry those.
            return Err(self.failure(io::ErrorKind::BrokenPipe, "the node is stopping"));
        }
        if progress.generation != self.generation {
            let why = "the transfer started over or changed (the bytes read so far may no \
                       longer be the snapshot's)";
            return Err(self.failure(io::ErrorKind::Other, why));
        }
        Ok(())
    }
}

impl Drop for TailingReader {
    fn drop(&mut self) {
        let mut progress = self.shared.progress.lock();
        progress.readers = progress.readers.saturating_sub(1);
    }
}

impl Read for TailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position == self.size {
            // Every call at the end repeats the verdict: a caller that ignored the error of
            // the last read must not see a clean end of data afterwards.
            return self.check_end().map(|()| 0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let available = self.wait_for_data()?;
        let want = available.min(buf.len() as u64) as usize;
        let at = self.header_bytes + self.position;
        let n = self.file.lock().read_at(at, &mut buf[..want])?;
        if n == 0 {
            let why = "the partial file is shorter than its durable length";
            return Err(self.failure(io::ErrorKind::UnexpectedEof, why));
        }
        // The bytes just read count only if their generation still stands.
        self.check(&self.shared.progress.lock())?;
        self.crc32c = crc32c::crc32c_append(self.crc32c, &buf[..n]);
        self.position += n as u64;
        self.drop_read_pages();
        if self.position == self.size {
            self.check_end()?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcraft_storage::{Fs, SimFs};
    use rcraft_wire::{Membership, NodeId};
    use std::path::Path;

    const PATH: &str = "/incoming/partial";
    const HEADER: usize = 7;

    fn meta_of(data: &[u8]) -> SnapshotMeta {
        SnapshotMeta {
            index: LogIndex(40),
            term: Term(3),
            membership: Membership::with_voters([NodeId(0)]),
            membership_entry: None,
            size_bytes: data.len() as u64,
            checksum: crc32c::crc32c(data),
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// A partial file holding a header and `held` of `data`, published with `held` durable.
    fn publish(fs: &SimFs, incoming: &IncomingSnapshot, meta: &SnapshotMeta, data: &[u8]) {
        let path = Path::new(PATH);
        fs.create_dir_all(Path::new("/incoming")).unwrap();
        let mut file = fs.open_write(path).unwrap();
        file.write_at(0, &[0xAA; HEADER]).unwrap();
        file.write_at(HEADER as u64, data).unwrap();
        incoming.begin(ArrivalStart {
            meta: meta.clone(),
            header_bytes: HEADER as u64,
            durable: data.len() as u64,
            file: fs.open_read(path).unwrap(),
        });
    }

    /// Appends `more` to the partial file and publishes the new durable length.
    fn append(fs: &SimFs, incoming: &IncomingSnapshot, at: usize, more: &[u8]) {
        let mut file = fs.open_write(Path::new(PATH)).unwrap();
        file.write_at((HEADER + at) as u64, more).unwrap();
        incoming.advance((at + more.len()) as u64);
    }

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn bytes_arriving_in_pieces_from_another_thread_are_read_whole() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(10_000);
        let meta = meta_of(&bytes);
        publish(&fs, &incoming, &meta, &bytes[..100]);
        let mut reader = incoming.open_reader(&meta, LONG).unwrap();
        let writer = {
            let (fs, incoming, bytes) = (fs.clone(), incoming.clone(), bytes.clone());
            std::thread::spawn(move || {
                for at in (100..bytes.len()).step_by(997) {
                    let end = (at + 997).min(bytes.len());
                    append(&fs, &incoming, at, &bytes[at..end]);
                    std::thread::yield_now();
                }
            })
        };
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        writer.join().unwrap();
        assert_eq!(read, bytes);
        reader.finish().unwrap();
    }

    /// A read handle that records the ranges whose cache it was asked to drop.
    #[derive(Debug)]
    struct RecordingFile {
        inner: Box<dyn ReadFile>,
        dropped: Arc<Mutex<Vec<(u64, u64)>>>,
    }

    impl ReadFile for RecordingFile {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.inner.read_at(offset, buf)
        }

        fn drop_cached(&self, offset: u64, len: u64) -> io::Result<()> {
            self.dropped.lock().push((offset, len));
            Ok(())
        }
    }

    #[test]
    fn the_cache_of_what_was_read_is_dropped_behind_the_reader_in_steps() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(2 * SNAPSHOT_DROP_BEHIND_BYTES as usize + 12_345);
        let meta = meta_of(&bytes);
        publish(&fs, &incoming, &meta, &bytes);
        let dropped = Arc::new(Mutex::new(Vec::new()));
        let file = RecordingFile {
            inner: fs.open_read(Path::new(PATH)).unwrap(),
            dropped: dropped.clone(),
        };
        incoming.begin(ArrivalStart {
            meta: meta.clone(),
            header_bytes: HEADER as u64,
            durable: bytes.len() as u64,
            file: Box::new(file),
        });
        let mut reader = incoming.open_reader(&meta, LONG).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut read = 0;
        while reader.read(&mut buf).unwrap() > 0 {
            read += 1;
            // Never more than a step (plus the last read) behind.
            let covered: u64 = dropped.lock().iter().map(|(_, len)| len).sum();
            assert!(reader.position - covered < SNAPSHOT_DROP_BEHIND_BYTES + (1 << 20));
        }
        assert!(read > 2);
        // Three steps: two whole ones and the rest at the end, contiguous from the data's start.
        let dropped = dropped.lock().clone();
        assert_eq!(dropped.len(), 3, "{dropped:?}");
        let mut next = HEADER as u64;
        for (offset, len) in dropped {
            assert_eq!(offset, next);
            next += len;
        }
        assert_eq!(next, (HEADER + bytes.len()) as u64);
    }

    #[test]
    fn a_new_generation_fails_the_reader() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(1000);
        let meta = meta_of(&bytes);
        publish(&fs, &incoming, &meta, &bytes[..500]);
        let mut reader = incoming.open_reader(&meta, LONG).unwrap();
        let mut first = vec![0u8; 500];
        reader.read_exact(&mut first).unwrap();
        let restart = {
            let (fs, incoming, meta, bytes) =
                (fs.clone(), incoming.clone(), meta.clone(), bytes.clone());
            // Started over: the same snapshot, from byte 0 again.
            std::thread::spawn(move || publish(&fs, &incoming, &meta, &bytes[..10]))
        };
        let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
        restart.join().unwrap();
        assert!(error.to_string().contains("started over"), "{error}");
        // A reader opened in the new generation reads it.
        let mut again = incoming.open_reader(&meta, LONG).unwrap();
        append(&fs, &incoming, 10, &bytes[10..]);
        let mut read = Vec::new();
        again.read_to_end(&mut read).unwrap();
        assert_eq!(read, bytes);
    }

    #[test]
    fn a_stalled_transfer_fails_the_reader() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(1000);
        let meta = meta_of(&bytes);
        publish(&fs, &incoming, &meta, &bytes[..300]);
        let mut reader = incoming
            .open_reader(&meta, Duration::from_millis(20))
            .unwrap();
        let mut read = Vec::new();
        let error = reader.read_to_end(&mut read).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut, "{error}");
        assert_eq!(read, &bytes[..300]);
    }

    #[test]
    fn data_that_does_not_match_the_announced_checksum_fails_at_its_end() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(1000);
        let mut meta = meta_of(&bytes);
        meta.checksum ^= 1;
        publish(&fs, &incoming, &meta, &bytes);
        let mut reader = incoming.open_reader(&meta, LONG).unwrap();
        let mut read = Vec::new();
        let error = reader.read_to_end(&mut read).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        // The last piece, which would complete the bad data, is never handed out.
        assert!(read.len() < bytes.len());
        // A caller that ignored the error never sees a clean end afterwards.
        assert_eq!(
            reader.read(&mut [0u8; 8]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        assert_eq!(
            reader.finish().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn an_installed_snapshot_keeps_its_readers_but_no_handle_of_its_own() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(1000);
        let meta = meta_of(&bytes);
        publish(&fs, &incoming, &meta, &bytes);
        assert!(!incoming.is_read());
        let mut reader = incoming.open_reader(&meta, LONG).unwrap();
        assert!(incoming.is_read());
        incoming.installed();
        let held = |incoming: &IncomingSnapshot| {
            let progress = incoming.shared.progress.lock();
            progress.arrival.as_ref().is_some_and(|a| a.file.is_some())
        };
        assert!(!held(&incoming));
        // The reader goes on with its own handle; no new one opens.
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!(read, bytes);
        let refused = incoming.open_reader(&meta, LONG).err().unwrap();
        assert!(
            refused.to_string().contains("installed already"),
            "{refused}"
        );
        drop(reader);
        assert!(!incoming.is_read());
    }

    #[test]
    fn stopping_fails_a_waiting_reader_and_refuses_new_ones() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(1000);
        let meta = meta_of(&bytes);
        publish(&fs, &incoming, &meta, &bytes[..10]);
        let mut reader = incoming.open_reader(&meta, LONG).unwrap();
        let stopper = {
            let incoming = incoming.clone();
            std::thread::spawn(move || incoming.stop())
        };
        let error = reader.read_to_end(&mut Vec::new()).unwrap_err();
        stopper.join().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
        assert!(incoming.open_reader(&meta, LONG).is_err());
    }

    #[test]
    fn only_the_snapshot_being_received_can_be_read() {
        let (fs, incoming) = (SimFs::new(), IncomingSnapshot::new());
        let bytes = data(100);
        let meta = meta_of(&bytes);
        assert!(incoming.open_reader(&meta, LONG).is_err());
        publish(&fs, &incoming, &meta, &bytes);
        let other = SnapshotMeta {
            index: LogIndex(41),
            ..meta.clone()
        };
        assert!(incoming.open_reader(&other, LONG).is_err());
        incoming.invalidate();
        assert!(incoming.open_reader(&meta, LONG).is_err());
    }
}
