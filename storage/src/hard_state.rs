//! The hard state of a Raft node (current term, vote, commit hint), saved atomically.
//!
//! Owned by the node's storage thread. The file holds two 512-byte slots, each in its own
//! disk sector, each with a sequence number and a CRC-32C. A save writes the new state into
//! both slots, one after the other, syncing after each: a crash mid-save damages at most the
//! slot being written while the other holds the previous or the new state, and once a save
//! returned both slots hold it. A damaged slot (bit rot, an unreadable sector, a short file)
//! still opens, but the node can no longer prove whom it voted for in the newest term (rot in
//! the slot holding the newest state cannot be told from rot that met an older one after a
//! lost write): the state read is marked [`HardState::votes_unknown`] and the node votes
//! again only once it has learned a term above every term it may have voted in
//! (storage/FORMAT.md §4.6, docs/ARCHITECTURE.md "Protocol-aware recovery"). Invariants:
//! `sequence` is the largest valid sequence on disk; after a failed write or sync the store
//! is stopped (fail-stop, like the WAL).

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
    /// The node lost the record of its votes (a damaged hard-state file) and has not yet
    /// learned a term above every term it may have voted in: `term` is only a lower bound
    /// of the term it had, and it votes in no term until it has learned one. Saved as bit 1
    /// of the slot's flags byte, so the node stays in that state across restarts.
    pub votes_unknown: bool,
}

/// Bytes of a slot that carry data; the CRC-32C covering them follows.
const SLOT_CRC_AT: usize = 44;
/// Offset of the flags byte; bit 0 says the slot was written by a mirrored save (both slots).
const SLOT_FLAGS_AT: usize = 41;
/// Flag: written by a save that writes both slots.
const FLAG_MIRRORED: u8 = 1;
/// Flag: [`HardState::votes_unknown`].
const FLAG_VOTES_UNKNOWN: u8 = 2;

fn encode_slot(sequence: u64, state: &HardState) -> [u8; HARD_STATE_SLOT_BYTES] {
    let mut slot = [0u8; HARD_STATE_SLOT_BYTES];
    slot[0..8].copy_from_slice(&HARD_STATE_MAGIC);
    slot[8..16].copy_from_slice(&sequence.to_le_bytes());
    slot[16..24].copy_from_slice(&state.term.to_le_bytes());
    slot[24..32].copy_from_slice(&state.vote.unwrap_or(0).to_le_bytes());
    slot[32..40].copy_from_slice(&state.commit.to_le_bytes());
    slot[40] = u8::from(state.vote.is_some());
    slot[SLOT_FLAGS_AT] = FLAG_MIRRORED
        | if state.votes_unknown {
            FLAG_VOTES_UNKNOWN
        } else {
            0
        };
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
        || slot[SLOT_FLAGS_AT] & !(FLAG_MIRRORED | FLAG_VOTES_UNKNOWN) != 0
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
        votes_unknown: slot[SLOT_FLAGS_AT] & FLAG_VOTES_UNKNOWN != 0,
    };
    SlotContent::Valid(word(8), state, slot[SLOT_FLAGS_AT] & FLAG_MIRRORED != 0)
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
/// sync, no repair): what [`HardStateStore::open`] would judge. A slot that cannot be read, or
/// that lies beyond the end of a short file, is [`HardStateSlot::Damaged`]; an error only
/// when the file cannot be opened.
pub fn read_hard_state_slots(fs: &dyn Fs, path: &Path) -> Result<[HardStateSlot; 2]> {
    let slots = read_slots(fs, path)?;
    let slot = |content: &SlotContent| match content {
        SlotContent::Empty => HardStateSlot::Empty,
        SlotContent::Valid(sequence, state, mirrored) => HardStateSlot::Valid {
            sequence: *sequence,
            state: *state,
            mirrored: *mirrored,
        },
        SlotContent::Damaged(reason) => HardStateSlot::Damaged(reason),
    };
    Ok([slot(&slots[0].0), slot(&slots[1].0)])
}

/// Both slots as decoded, each with its bytes (`None` when it could not be read).
fn read_slots(fs: &dyn Fs, path: &Path) -> Result<[(SlotContent, Option<Vec<u8>>); 2]> {
    let file = fs
        .open_read(path)
        .map_err(|e| Error::io("open hard state", path, e))?;
    let read = |n: usize| {
        let mut bytes = vec![0u8; HARD_STATE_SLOT_BYTES];
        let offset = (n * HARD_STATE_SLOT_BYTES) as u64;
        match fs::read_exact_from(file.as_ref(), offset, &mut bytes) {
            Ok(()) => (decode_slot(&bytes), Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => (
                SlotContent::Damaged("missing: the file is shorter than two slots"),
                None,
            ),
            Err(e) => {
                log::warn!("{}: slot {n} cannot be read: {e}", path.display());
                (SlotContent::Damaged("unreadable"), None)
            }
        }
    };
    Ok([read(0), read(1)])
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
    /// What `open` found damaged, in words.
    damage: Option<String>,
    /// `open` created the file.
    created: bool,
}

impl HardStateStore {
    /// Opens the hard-state file at `path`, creating it (durably, holding the default state)
    /// if missing. A damaged slot (either one, or both) does not stop it: the state read is
    /// the newest valid slot's (the default when none is valid), marked
    /// [`HardState::votes_unknown`], and [`HardStateStore::damage`] says what was found.
    /// Both slots are then rewritten with it, so the mark is durable.
    pub fn open(fs: Arc<dyn Fs>, path: &Path) -> Result<HardStateStore> {
        let created = !fs.exists(path).map_err(|e| Error::io("stat", path, e))?;
        if created {
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
            damage: newest.damage,
            created,
        };
        if newest.slots_differ {
            // Write the state into both slots again: a damaged slot is repaired (the state
            // then says the votes are unknown), and a file from an older rcraft (one slot
            // per save) becomes mirrored.
            store.save(&newest.state)?;
        }
        Ok(store)
    }

    /// What was damaged in the file when it was opened, in words (`None` when both slots
    /// were whole). When set, [`HardStateStore::current`] has `votes_unknown`.
    pub fn damage(&self) -> Option<&str> {
        self.damage.as_deref()
    }

    /// True when `open` found no file and created it (holding the default state).
    pub fn created(&self) -> bool {
        self.created
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
    /// What was damaged, in words; then `state.votes_unknown` is set.
    damage: Option<String>,
}

fn read_newest(fs: &dyn Fs, path: &Path) -> Result<Newest> {
    let slots = read_slots(fs, path)?;
    let mut newest: Option<(u64, HardState)> = None;
    let mut damage = Vec::new();
    let mut valid = 0;
    for (slot_number, (content, _)) in slots.iter().enumerate() {
        match content {
            SlotContent::Valid(seq, state, _) => {
                valid += 1;
                if newest.is_none_or(|(best, _)| *seq > best) {
                    newest = Some((*seq, *state));
                }
            }
            SlotContent::Empty => {}
            SlotContent::Damaged(reason) => damage.push(format!("slot {slot_number} {reason}")),
        }
    }
    if valid == 0 && damage.is_empty() {
        // The file is created holding a state in both slots: two empty slots are lost data.
        damage.push("both slots are zeroes".to_string());
    }
    let (sequence, mut state) = newest.unwrap_or_default();
    let damage = (!damage.is_empty()).then(|| {
        // Rot in the slot holding the newest state cannot be told from rot that met an
        // older state in the other slot after a lost write (or, in an older rcraft's file,
        // from a torn save): whom this node voted for in the newest term is unknown.
        state.votes_unknown = true;
        let read = match newest {
            Some((_, state)) => format!("the newest valid slot holds term {}", state.term),
            None => "no slot is valid".to_string(),
        };
        let what = format!("{}; {read}", damage.join(", "));
        log::warn!(
            "{}: damaged hard state: {what}. Whom this node voted for is unknown: it votes \
             again once it has learned a term above every term it may have voted in",
            path.display()
        );
        what
    });
    let same = matches!((&slots[0].1, &slots[1].1), (Some(a), Some(b)) if a == b);
    Ok(Newest {
        sequence,
        state,
        slots_differ: !(same && valid == 2),
        damage,
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
            votes_unknown: false,
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
