//! The hard state of a Raft node (current term, vote, commit hint), saved atomically.
//!
//! Owned by the node's storage thread. The file holds two 512-byte slots, each in its own
//! disk sector, each with a sequence number and a CRC-32C. A save writes the new state into
//! both slots, one after the other, syncing after each: a crash mid-save damages at most the
//! slot being written while the other holds the previous or the new state, and once a save
//! returned both slots hold it, so bit rot in either one loses nothing (the vote a node
//! promised stays known; storage/FORMAT.md §4.6). Invariants: `sequence` is the largest valid
//! sequence on disk; after a failed write or sync the store is stopped (fail-stop, like the
//! WAL).

use crate::error::{Error, Result};
use crate::fs::{self, Fs, WriteFile};
use crate::limits::{HARD_STATE_FILE_BYTES, HARD_STATE_MAGIC, HARD_STATE_SLOT_BYTES};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What Raft must remember across restarts before answering a vote or append (§5.1, fig. 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<u64>,
    /// Highest index known committed (a hint: recovery may start applying from here).
    pub commit: u64,
}

/// Bytes of a slot that carry data; the CRC-32C covering them follows.
const SLOT_CRC_AT: usize = 44;
/// Offset of the flags byte; bit 0 says the slot was written by a mirrored save (both slots).
const SLOT_FLAGS_AT: usize = 41;
/// Flag: written by a save that writes both slots.
const FLAG_MIRRORED: u8 = 1;

fn encode_slot(sequence: u64, state: &HardState) -> [u8; HARD_STATE_SLOT_BYTES] {
    let mut slot = [0u8; HARD_STATE_SLOT_BYTES];
    slot[0..8].copy_from_slice(&HARD_STATE_MAGIC);
    slot[8..16].copy_from_slice(&sequence.to_le_bytes());
    slot[16..24].copy_from_slice(&state.term.to_le_bytes());
    slot[24..32].copy_from_slice(&state.vote.unwrap_or(0).to_le_bytes());
    slot[32..40].copy_from_slice(&state.commit.to_le_bytes());
    slot[40] = u8::from(state.vote.is_some());
    slot[SLOT_FLAGS_AT] = FLAG_MIRRORED;
    let crc = crc32c::crc32c(&slot[..SLOT_CRC_AT]);
    slot[SLOT_CRC_AT..SLOT_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// A slot's content: never written (all zero), valid (sequence, state, written by a
/// mirrored save), or damaged.
enum SlotContent {
    Empty,
    Valid(u64, HardState, bool),
    Damaged(&'static str),
}

fn decode_slot(slot: &[u8]) -> SlotContent {
    if slot.iter().all(|&b| b == 0) {
        return SlotContent::Empty;
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&slot[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&slot[SLOT_CRC_AT..SLOT_CRC_AT + 4]);
    if crc32c::crc32c(&slot[..SLOT_CRC_AT]) != u32::from_le_bytes(crc) {
        return SlotContent::Damaged("checksum mismatch");
    }
    if slot[0..8] != HARD_STATE_MAGIC
        || slot[SLOT_FLAGS_AT] > FLAG_MIRRORED
        || slot[42..44] != [0; 2]
        || slot[40] > 1
    {
        return SlotContent::Damaged("bad magic or reserved bytes");
    }
    let vote = (slot[40] == 1).then(|| word(24));
    let state = HardState {
        term: word(16),
        vote,
        commit: word(32),
    };
    SlotContent::Valid(word(8), state, slot[SLOT_FLAGS_AT] == FLAG_MIRRORED)
}

/// One slot of a hard-state file as read, for inspection (`rcraft doctor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardStateSlot {
    /// All zeroes: never written.
    Empty,
    /// A valid slot: its save sequence number, the state, and whether a mirrored save (one
    /// that writes both slots) wrote it.
    Valid {
        /// The save that wrote it; the valid slot with the larger one is current.
        sequence: u64,
        /// The state it holds.
        state: HardState,
        /// Written by a save that writes both slots.
        mirrored: bool,
    },
    /// Not a valid slot; why, in words.
    Damaged(&'static str),
}

/// Reads both slots of the hard-state file at `path` without changing anything (no create, no
/// sync, no repair): what [`HardStateStore::open`] would judge. An error when the file cannot
/// be read or is shorter than two slots.
pub fn read_hard_state_slots(fs: &dyn Fs, path: &Path) -> Result<[HardStateSlot; 2]> {
    let mut bytes = vec![0u8; HARD_STATE_FILE_BYTES];
    fs::read_exact_at(fs, path, 0, &mut bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corruption(path, 0, "hard-state file is shorter than two slots")
        } else {
            Error::io("read hard state", path, e)
        }
    })?;
    let slot = |n: usize| match decode_slot(
        &bytes[n * HARD_STATE_SLOT_BYTES..][..HARD_STATE_SLOT_BYTES],
    ) {
        SlotContent::Empty => HardStateSlot::Empty,
        SlotContent::Valid(sequence, state, mirrored) => HardStateSlot::Valid {
            sequence,
            state,
            mirrored,
        },
        SlotContent::Damaged(reason) => HardStateSlot::Damaged(reason),
    };
    Ok([slot(0), slot(1)])
}

/// The hard-state file. See the module docs.
#[derive(Debug)]
pub struct HardStateStore {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    file: Box<dyn WriteFile>,
    /// Invariant: the sequence number of the newest valid slot on disk.
    sequence: u64,
    current: HardState,
    stopped: Option<String>,
}

impl HardStateStore {
    /// Opens the hard-state file at `path`, creating it (durably, holding the default state)
    /// if missing. A file with no valid slot is [`Error::Corruption`].
    pub fn open(fs: Arc<dyn Fs>, path: &Path) -> Result<HardStateStore> {
        if !fs.exists(path).map_err(|e| Error::io("stat", path, e))? {
            create(fs.as_ref(), path)?;
        }
        let newest = read_newest(fs.as_ref(), path)?;
        let mut file = fs
            .open_write(path)
            .map_err(|e| Error::io("open hard state", path, e))?;
        // What was read may never have been synced (a save whose sync failed, then a process
        // crash that left the write in the page cache). The node acts on it from now on (it
        // may vote in that term), so it must survive a power loss: sync it before use.
        file.sync()
            .map_err(|e| Error::io("sync hard state at open", path, e))?;
        let mut store = HardStateStore {
            fs,
            path: path.to_path_buf(),
            file,
            sequence: newest.sequence,
            current: newest.state,
            stopped: None,
        };
        if newest.slots_differ {
            // Write the state into both slots again: a damaged slot is repaired, and a file
            // from an older rcraft (one slot per save) becomes mirrored.
            store.save(&newest.state)?;
        }
        Ok(store)
    }

    /// The newest saved hard state (as read at open or last saved).
    pub fn current(&self) -> HardState {
        self.current
    }

    /// Reads and verifies the file again, returning the newest valid state.
    pub fn load(&self) -> Result<HardState> {
        read_newest(self.fs.as_ref(), &self.path).map(|newest| newest.state)
    }

    /// Saves `state`; durable when this returns `Ok`. After an error the store is stopped.
    pub fn save(&mut self, state: &HardState) -> Result<()> {
        if let Some(cause) = &self.stopped {
            return Err(Error::Stopped {
                cause: cause.clone(),
            });
        }
        // Both slots, one at a time, each synced before the next is touched: a crash leaves
        // at most the slot being written damaged, the other whole (see the module docs).
        let sequence = self.sequence + 1;
        let slot = encode_slot(sequence, state);
        let written = self
            .file
            .write_at(0, &slot)
            .and_then(|()| self.file.sync())
            .and_then(|()| self.file.write_at(HARD_STATE_SLOT_BYTES as u64, &slot))
            .and_then(|()| self.file.sync())
            .map_err(|e| Error::io("save hard state", &self.path, e));
        if let Err(err) = &written {
            log::error!("hard state store stopped: {err}");
            self.stopped = Some(err.to_string());
            return written;
        }
        self.sequence = sequence;
        self.current = *state;
        Ok(())
    }
}

/// Creates the file under a temporary name with the default state in slot 1, syncs it,
/// renames it into place and syncs the directory.
fn create(fs: &dyn Fs, path: &Path) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut bytes = vec![0u8; HARD_STATE_FILE_BYTES];
    let slot = encode_slot(1, &HardState::default());
    bytes[..HARD_STATE_SLOT_BYTES].copy_from_slice(&slot);
    bytes[HARD_STATE_SLOT_BYTES..].copy_from_slice(&slot);
    let mut file = fs
        .open_write(&tmp)
        .map_err(|e| Error::io("create hard state", &tmp, e))?;
    file.set_len(0)
        .and_then(|()| file.write_at(0, &bytes))
        .and_then(|()| file.sync())
        .map_err(|e| Error::io("write hard state", &tmp, e))?;
    fs.rename(&tmp, path)
        .map_err(|e| Error::io("rename hard state", &tmp, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs.sync_dir(dir)
        .map_err(|e| Error::io("sync directory", dir, e))
}

/// The newest valid state in the file and what the other slot held.
struct Newest {
    sequence: u64,
    state: HardState,
    /// The slots do not both hold this state (one damaged, older, or empty).
    slots_differ: bool,
}

fn read_newest(fs: &dyn Fs, path: &Path) -> Result<Newest> {
    let mut bytes = vec![0u8; HARD_STATE_FILE_BYTES];
    fs::read_exact_at(fs, path, 0, &mut bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corruption(path, 0, "hard-state file is shorter than two slots")
        } else {
            Error::io("read hard state", path, e)
        }
    })?;
    let mut newest: Option<(u64, HardState, bool)> = None;
    let mut damage = Vec::new();
    let mut valid = 0;
    for (slot_number, slot) in bytes.chunks_exact(HARD_STATE_SLOT_BYTES).enumerate() {
        match decode_slot(slot) {
            SlotContent::Valid(seq, state, mirrored) => {
                valid += 1;
                if newest.is_none_or(|(best, _, _)| seq > best) {
                    newest = Some((seq, state, mirrored));
                }
            }
            SlotContent::Empty => {}
            SlotContent::Damaged(reason) => damage.push((slot_number, reason)),
        }
    }
    let Some((sequence, state, mirrored)) = newest else {
        return Err(Error::corruption(
            path,
            0,
            "no valid hard-state slot (both damaged or empty)",
        ));
    };
    for (slot_number, reason) in &damage {
        if mirrored {
            // Written by a mirrored save: the damaged slot held this state or the one
            // before a save that never returned. Nothing promised is lost.
            log::warn!(
                "{}: slot {slot_number} damaged ({reason}); the other slot holds the state, \
                 rewriting both",
                path.display()
            );
        } else {
            log::warn!(
                "{}: slot {slot_number} damaged ({reason}), written by an older rcraft (one \
                 slot per save): a torn save, or bit rot in the newest state; using the other \
                 slot",
                path.display()
            );
        }
    }
    let same = bytes[..HARD_STATE_SLOT_BYTES] == bytes[HARD_STATE_SLOT_BYTES..];
    Ok(Newest {
        sequence,
        state,
        slots_differ: !(same && valid == 2),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimFs;

    #[test]
    fn reading_the_slots_shows_a_damaged_one_and_changes_nothing() {
        let sim = SimFs::new();
        let fs: Arc<dyn Fs> = Arc::new(sim.clone());
        let path = Path::new("/d/hard_state");
        fs.create_dir_all(Path::new("/d")).unwrap();
        let mut store = HardStateStore::open(fs.clone(), path).unwrap();
        let state = HardState {
            term: 7,
            vote: Some(2),
            commit: 40,
        };
        store.save(&state).unwrap();
        let valid = HardStateSlot::Valid {
            sequence: 2,
            state,
            mirrored: true,
        };
        assert_eq!(
            read_hard_state_slots(fs.as_ref(), path).unwrap(),
            [valid.clone(), valid.clone()]
        );
        sim.flip_bit(path, HARD_STATE_SLOT_BYTES + 20, 3).unwrap();
        let before = sim.contents(path).unwrap();
        let slots = read_hard_state_slots(fs.as_ref(), path).unwrap();
        assert_eq!(slots[0], valid);
        assert_eq!(slots[1], HardStateSlot::Damaged("checksum mismatch"));
        assert_eq!(sim.contents(path).unwrap(), before);
    }
}
