//! Checks that the snapshot file a leader sends still holds the data its footer describes.
//!
//! Owned by the storage thread. It reads chunks for followers and for clients taking a backup
//! (`rcraft snapshot save`), who check the whole file's checksum themselves. Each chunk's CRC is computed over the bytes read, so a
//! follower accepts every chunk of a file damaged on the leader's disk and only its own
//! whole-file check at the end fails. Two checks here find the damage first:
//! - a running CRC-32C per reader (follower or client connection) over chunks read in
//!   sequence from offset 0, compared with
//!   the footer when a read reaches the end of the data (that last chunk is then not sent);
//! - once per file, the first time a transfer does not read it in sequence from 0 (one
//!   resumed mid-file never passes offset 0), a short-lived thread reads the whole data and
//!   compares it, so the storage thread, which also writes the log, never reads a whole file
//!   itself; its verdict is taken at the next chunk read. Dropping the checks (the storage
//!   thread ending) stops that thread within one 1 MiB piece and joins it.
//!
//! Invariants: everything kept is about the files being sent (the current snapshot and older
//! ones kept for transfers under way, each with its own verdict) as of one store generation;
//! when the generation changes (a snapshot was made current, perhaps a good one rewritten
//! under the damaged one's name) it is all forgotten and checked again. A file found damaged
//! is reported exactly once per generation (as a [`Damage`]) and no chunk of it is handed
//! out afterwards.

use super::limits::SNAPSHOT_READERS_TRACKED_MAX;
use super::net::ClientConnId;
use crossbeam_channel::{Receiver, TryRecvError, bounded};
use rcraft_storage::{Error as StoreError, SnapshotInfo, SnapshotStore};
use rcraft_wire::NodeId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A snapshot file found damaged: what to report and repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    /// Index of the snapshot.
    pub(crate) index: u64,
    /// Its term.
    pub(crate) term: u64,
    /// The file.
    pub(crate) path: PathBuf,
    /// What did not match.
    pub(crate) reason: String,
}

/// What is known of a file's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not checked yet, no check running.
    Unchecked,
    /// The whole-file check is running.
    Checking,
    /// The whole-file check could not read the file (logged); only running CRCs check it.
    Unverifiable,
    /// The data matches the footer.
    Intact,
    /// The data does not match the footer (reported).
    Damaged,
}

/// A file, by what names it (a rewrite keeps all three: see the generation).
type FileKey = (u64, u64, PathBuf);

fn key_of(info: &SnapshotInfo) -> FileKey {
    (info.meta.index, info.meta.term, info.path.clone())
}

/// Who reads the snapshot: a follower being sent it, or a client connection taking a backup
/// (`rcraft snapshot save`). Each has its own running CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Reader {
    /// A follower.
    Follower(NodeId),
    /// A client connection.
    Client(ClientConnId),
}

/// A reader's transfer read in sequence from offset 0 so far.
#[derive(Debug, Clone, Copy)]
struct RunningCrc {
    /// Data bytes covered.
    next_offset: u64,
    /// CRC-32C of data `0..next_offset`.
    crc: u32,
}

/// The whole-file check running on its own thread.
struct Verifier {
    generation: u64,
    /// The file it checks.
    info: SnapshotInfo,
    outcome: Receiver<Result<(), StoreError>>,
    /// Set to stop the check early (the storage thread is ending).
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Verifier {
    /// Stops the check within one piece and waits for its thread, so no thread of a stopped
    /// node goes on reading a large file.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bytes the whole-file check reads at a time (it looks for a cancel between two).
const VERIFY_PIECE_BYTES: usize = 1 << 20;

/// CRC-32C of the data of `info`, compared with its footer's; `Ok(None)` when cancelled.
pub(super) fn verify_until_cancelled(
    store: &SnapshotStore,
    info: &SnapshotInfo,
    cancel: &AtomicBool,
) -> Result<Option<()>, StoreError> {
    let (mut crc, mut offset) = (0, 0);
    while offset < info.data_bytes {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let piece = store.read_chunk(info, offset, VERIFY_PIECE_BYTES)?;
        if piece.is_empty() {
            break; // Cannot happen before the end; the comparison below then fails.
        }
        crc = crc32c::crc32c_append(crc, &piece);
        offset += piece.len() as u64;
    }
    info.check_data_crc32c(crc).map(Some)
}

/// The storage thread's checks of the snapshot it sends. See the module docs.
pub(crate) struct SendChecks {
    /// The store generation everything below belongs to.
    generation: u64,
    /// The files being sent and their verdicts (a file not listed is unchecked).
    files: HashMap<FileKey, Verdict>,
    /// Per reader, its transfer of a file while read in sequence from 0. Invariant: at most
    /// `SNAPSHOT_READERS_TRACKED_MAX` entries.
    running: HashMap<Reader, (FileKey, RunningCrc)>,
    /// At most one whole-file check at a time (possibly about an older generation).
    verifier: Option<Verifier>,
}

impl SendChecks {
    /// Nothing known yet about `store`'s files.
    pub(crate) fn new(store: &SnapshotStore) -> SendChecks {
        SendChecks {
            generation: store.generation(),
            files: HashMap::new(),
            running: HashMap::new(),
            verifier: None,
        }
    }

    /// Forgets everything when a snapshot was made current since; true if it did (cached
    /// file information must then be read again too).
    pub(crate) fn refresh(&mut self, store: &SnapshotStore) -> bool {
        let generation = store.generation();
        if generation == self.generation {
            return false;
        }
        self.generation = generation;
        self.files.clear();
        self.running.clear();
        true
    }

    /// Called before `to`'s chunk of `info` at `offset` is read: takes the whole-file check's
    /// verdict if it is in, starts that check the first time a transfer of the file does not
    /// read it in sequence from 0 (a transfer that does is checked by its running CRC, so a
    /// fresh follower's catch-up costs no second read of the file), and says whether the file
    /// may be read (`Err` when it is damaged). Either way, a [`Damage`] found right now (in
    /// this file or another one being sent) comes with the answer, to be reported.
    pub(crate) fn before_read(
        &mut self,
        store: &SnapshotStore,
        info: &SnapshotInfo,
        to: Reader,
        offset: u64,
    ) -> Result<Option<Damage>, Option<Damage>> {
        let key = key_of(info);
        let found = self.take_verifier_outcome();
        let in_sequence = offset == 0
            || self
                .running
                .get(&to)
                .is_some_and(|(file, running)| *file == key && running.next_offset == offset);
        match self.verdict(&key) {
            Verdict::Damaged => return Err(found),
            Verdict::Unchecked if self.verifier.is_none() && !in_sequence => {
                self.start_verifier(store, info)
            }
            _ => {}
        }
        // Damage found now in another file (the one checked in the background) is reported
        // all the same; this one may be read.
        Ok(found)
    }

    /// Called with the chunk of `info` read at `offset` for `to`: keeps `to`'s running CRC
    /// while its reads follow each other from 0; when one reaches the end and the CRC is not
    /// the footer's, the file is damaged and the chunk must not be sent (`Err`, with the
    /// [`Damage`] unless it was already reported).
    pub(crate) fn after_read(
        &mut self,
        to: Reader,
        info: &SnapshotInfo,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Option<Damage>> {
        let key = key_of(info);
        let previous = self.running.remove(&to);
        let running = match previous {
            _ if offset == 0 => RunningCrc {
                next_offset: 0,
                crc: 0,
            },
            Some((file, running)) if file == key && running.next_offset == offset => running,
            // A rewound or resumed transfer: the whole-file check covers it.
            _ => return Ok(()),
        };
        let running = RunningCrc {
            next_offset: offset + data.len() as u64,
            crc: crc32c::crc32c_append(running.crc, data),
        };
        if running.next_offset < info.data_bytes {
            // Beyond the bound, the reader's next chunk is not "in sequence" and starts the
            // whole-file check: still checked, by the other way.
            if self.running.len() < SNAPSHOT_READERS_TRACKED_MAX {
                self.running.insert(to, (key, running));
            }
            return Ok(());
        }
        match info.check_data_crc32c(running.crc) {
            Ok(()) => {
                self.files.insert(key, Verdict::Intact);
                Ok(())
            }
            Err(e) => Err(self.found_damaged(info, e)),
        }
    }

    /// The current snapshot could not even be opened for `index`/`term` (`error`, a
    /// corruption such as a damaged header or footer): the [`Damage`] the first time in this
    /// generation, `None` after (or for an error that is not a corruption).
    pub(crate) fn unreadable(
        &mut self,
        index: u64,
        term: u64,
        error: &StoreError,
    ) -> Option<Damage> {
        let StoreError::Corruption { file, reason, .. } = error else {
            return None;
        };
        // The damaged file's own point, not the request's: a stale request for an older
        // snapshot must not report the newest file as that older one (whose replacement the
        // apply thread would then skip as already done).
        let (index, term) = rcraft_storage::snapshot_point_of_file(file).unwrap_or((index, term));
        let key = (index, term, file.clone());
        if self.verdict(&key) == Verdict::Damaged {
            return None;
        }
        self.forget_running(&key);
        self.files.insert(key, Verdict::Damaged);
        Some(Damage {
            index,
            term,
            path: file.clone(),
            reason: reason.clone(),
        })
    }

    fn verdict(&self, key: &FileKey) -> Verdict {
        self.files.get(key).copied().unwrap_or(Verdict::Unchecked)
    }

    /// Drops the running CRCs of transfers of `key`.
    fn forget_running(&mut self, key: &FileKey) {
        self.running.retain(|_, (file, _)| file != key);
    }

    /// Records that `info` is damaged; the report the first time only.
    fn found_damaged(&mut self, info: &SnapshotInfo, error: StoreError) -> Option<Damage> {
        let key = key_of(info);
        if self.verdict(&key) == Verdict::Damaged {
            return None;
        }
        self.forget_running(&key);
        self.files.insert(key, Verdict::Damaged);
        let reason = match error {
            StoreError::Corruption { reason, .. } => reason,
            other => other.to_string(),
        };
        Some(Damage {
            index: info.meta.index,
            term: info.meta.term,
            path: info.path.clone(),
            reason,
        })
    }

    fn start_verifier(&mut self, store: &SnapshotStore, info: &SnapshotInfo) {
        let (done, outcome) = bounded(1);
        let (store, checked) = (store.clone(), info.clone());
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name("snapshot-verify".to_string())
            .spawn(move || {
                match verify_until_cancelled(&store, &checked, &cancelled) {
                    Ok(None) => {} // Nobody needs the answer: the storage thread is ending.
                    Ok(Some(())) => drop(done.send(Ok(()))),
                    Err(e) => drop(done.send(Err(e))),
                }
            });
        match spawned {
            Ok(thread) => {
                self.verifier = Some(Verifier {
                    generation: self.generation,
                    info: info.clone(),
                    outcome,
                    cancel,
                    thread: Some(thread),
                });
                self.files.insert(key_of(info), Verdict::Checking);
            }
            Err(e) => {
                log::warn!(
                    "cannot start checking {} in the background ({e}); only transfers read \
                     from its start check it",
                    info.path.display()
                );
                self.files.insert(key_of(info), Verdict::Unverifiable);
            }
        }
    }

    /// Takes the whole-file check's outcome if it is in; a damage report when it found the
    /// file it checked damaged.
    fn take_verifier_outcome(&mut self) -> Option<Damage> {
        let verifier = self.verifier.as_ref()?;
        let outcome = match verifier.outcome.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err(StoreError::InvalidArgument(
                "the check stopped without an answer".to_string(),
            )),
        };
        let verifier = self.verifier.take()?;
        let (info, key) = (&verifier.info, key_of(&verifier.info));
        if verifier.generation != self.generation {
            return None; // About a file perhaps since replaced; it is checked again.
        }
        match outcome {
            Ok(()) => {
                if self.verdict(&key) == Verdict::Checking {
                    self.files.insert(key, Verdict::Intact);
                }
                None
            }
            Err(e @ StoreError::Corruption { .. }) => self.found_damaged(info, e),
            Err(e) => {
                log::warn!("could not check snapshot {}: {e}", info.path.display());
                if self.verdict(&key) == Verdict::Checking {
                    self.files.insert(key, Verdict::Unverifiable);
                }
                None
            }
        }
    }
}
