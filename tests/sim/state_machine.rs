//! The simulated state machine: an append-only list of write ids, with snapshots.
//!
//! Owned by one simulated node; rebuilt from the durable snapshot on restart. Invariant:
//! `writes` holds, in log order, the write id of every command entry through
//! `applied_index`, and `membership` is the configuration in force at `applied_index` (the
//! last membership entry applied, else the snapshot's, else the initial one), which every
//! snapshot it takes carries. The list makes linearizability easy to check: every read returns a prefix
//! of the one committed sequence.

use rcraft::wire::{Entry, EntryPayload, LogIndex, Membership, SnapshotMeta, Term};

/// Bytes of a write id at the start of every command.
const WRITE_ID_BYTES: usize = 8;

/// The append-list state machine of one node.
#[derive(Clone, Debug)]
pub(crate) struct AppendList {
    /// Highest applied index.
    pub(crate) applied_index: LogIndex,
    /// Term of the entry at `applied_index`.
    pub(crate) applied_term: Term,
    /// Write ids in application order.
    pub(crate) writes: Vec<u64>,
    /// The configuration in force at `applied_index`.
    pub(crate) membership: Membership,
}

/// A command carrying `write_id`, padded with `filler_bytes` bytes so entry sizes vary.
pub(crate) fn encode_write(write_id: u64, filler_bytes: usize) -> Vec<u8> {
    let mut data = write_id.to_le_bytes().to_vec();
    data.resize(WRITE_ID_BYTES + filler_bytes, 0xAB);
    data
}

/// The write id a command carries, if it is one of ours.
pub(crate) fn decode_write(data: &[u8]) -> Option<u64> {
    let head: [u8; WRITE_ID_BYTES] = data.get(..WRITE_ID_BYTES)?.try_into().ok()?;
    Some(u64::from_le_bytes(head))
}

/// FNV-1a, 32 bits: the snapshot checksum. Any deterministic checksum does for the sim.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    // CRC-32C, as the storage crate verifies a received snapshot's data against it.
    crc32c::crc32c(bytes)
}

impl AppendList {
    /// An empty state machine of a cluster that starts with `initial` configuration.
    pub(crate) fn new(initial: &Membership) -> AppendList {
        AppendList {
            applied_index: LogIndex(0),
            applied_term: Term(0),
            writes: Vec::new(),
            membership: initial.clone(),
        }
    }

    /// Applies one committed entry; the caller has checked it is the next one.
    pub(crate) fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        if let EntryPayload::Command { data, .. } = &entry.payload {
            let write_id = decode_write(data)
                .ok_or_else(|| format!("entry {} carries a command no client sent", entry.index))?;
            self.writes.push(write_id);
        }
        if let EntryPayload::Membership(membership) = &entry.payload {
            self.membership = membership.clone();
        }
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        Ok(())
    }

    /// The snapshot bytes: every write id, little-endian.
    pub(crate) fn snapshot_bytes(&self) -> Vec<u8> {
        self.writes.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Rebuilds a state machine from snapshot bytes, verifying size and checksum.
    pub(crate) fn restore(meta: &SnapshotMeta, bytes: &[u8]) -> Result<AppendList, String> {
        if bytes.len() as u64 != meta.size_bytes || checksum(bytes) != meta.checksum {
            return Err(format!(
                "snapshot at {} does not match its meta (size {} vs {}, checksum)",
                meta.index,
                bytes.len(),
                meta.size_bytes
            ));
        }
        let writes = bytes
            .chunks_exact(WRITE_ID_BYTES)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; WRITE_ID_BYTES])))
            .collect();
        Ok(AppendList {
            applied_index: meta.index,
            applied_term: meta.term,
            writes,
            membership: meta.membership.clone(),
        })
    }
}
