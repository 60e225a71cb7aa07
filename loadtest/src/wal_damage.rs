//! Damage to a stopped node's log, as a disk or a crash could do it (`storage/FORMAT.md` §1):
//! the last record of the newest segment torn (zeroed from a point inside it to its end) or
//! with a flipped byte, or a byte flipped in a record that is followed by a valid one. Each
//! damage remembers the bytes it overwrote so it can be undone exactly.
//!
//! Called by the fault thread only while the node is stopped (the node holds `wal/LOCK`
//! while it runs; this code never writes a running node's files).

use crate::error::{Error, Result};
use rcraft::core::rng::SplitMix64;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of a segment header.
const SEGMENT_HEADER_BYTES: u64 = 32;
/// Bytes of a record header (len, crc, index, term).
const RECORD_HEADER_BYTES: u64 = 24;

/// Where the damage goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The log's last record.
    Tail,
    /// A record before the last one.
    Record,
}

/// Damage done to one file, with what it overwrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Byte offset of the first overwritten byte.
    pub offset: u64,
    /// The bytes that were there.
    pub original: Vec<u8>,
    /// What was done, for the report.
    pub text: String,
}

/// A record's place in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    offset: u64,
    len: u64,
    index: u64,
}

fn read_u32(file: &std::fs::File, at: u64) -> Option<u32> {
    let mut bytes = [0u8; 4];
    file.read_exact_at(&mut bytes, at).ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn read_u64(file: &std::fs::File, at: u64) -> Option<u64> {
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, at).ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The newest segment of the log in `wal_dir` (names are first indexes, zero-padded).
fn newest_segment(wal_dir: &Path) -> Result<PathBuf> {
    let entries = std::fs::read_dir(wal_dir)
        .map_err(|e| Error::io(format!("listing {}", wal_dir.display()), e))?;
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max()
        .ok_or_else(|| Error::Cluster(format!("no segment in {}", wal_dir.display())))
}

/// The records of one segment, walked by their length fields up to the first zero length.
fn records(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let size = file
        .metadata()
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    let mut found = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset + RECORD_HEADER_BYTES <= size {
        let len = u64::from(read_u32(&file, offset).unwrap_or(0));
        if len < RECORD_HEADER_BYTES || offset + len > size {
            break;
        }
        let index = read_u64(&file, offset + 8).unwrap_or(0);
        found.push(Record { offset, len, index });
        offset += len;
    }
    Ok(found)
}

/// Damages the log in `wal_dir` at `target`, choosing the record and bytes from `draw`.
pub fn damage(wal_dir: &Path, target: Target, draw: u64) -> Result<Damage> {
    let path = newest_segment(wal_dir)?;
    let records = records(&path)?;
    let mut rng = SplitMix64::new(draw);
    let record = match target {
        Target::Tail => records.last().copied(),
        Target::Record if records.len() >= 2 => {
            Some(records[rng.in_range(0, records.len() as u64 - 1) as usize])
        }
        Target::Record => None,
    }
    .ok_or_else(|| {
        Error::Cluster(format!(
            "{} holds {} records, too few to damage",
            path.display(),
            records.len()
        ))
    })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    // Skip the length field so the walk above stays the same; everything else is covered
    // by the record's checksum.
    let torn = target == Target::Tail && rng.next_u64() & 1 == 0;
    let (offset, new, text) = if torn {
        let from = record.offset + rng.in_range(4, record.len);
        let bytes = (record.offset + record.len - from) as usize;
        (
            from,
            vec![0u8; bytes],
            format!(
                "torn: last record (index {}) zeroed from byte {} of {}",
                record.index,
                from - record.offset,
                record.len
            ),
        )
    } else {
        let at = record.offset + rng.in_range(4, record.len);
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let which = if target == Target::Tail {
            "last record"
        } else {
            "record"
        };
        (
            at,
            vec![byte[0] ^ 0x10],
            format!(
                "bit flipped in {which} (index {}) at byte {} of {}",
                record.index,
                at - record.offset,
                record.len
            ),
        )
    };
    let mut original = vec![0u8; new.len()];
    file.read_exact_at(&mut original, offset)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    file.write_all_at(&new, offset)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(Damage {
        path,
        offset,
        original,
        text,
    })
}

/// Writes back the bytes `damage` overwrote.
pub fn undo(damage: &Damage) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .open(&damage.path)
        .map_err(|e| Error::io(format!("opening {}", damage.path.display()), e))?;
    file.write_all_at(&damage.original, damage.offset)
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(format!("restoring {}", damage.path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment with `n` records of 40 bytes (indexes 1..=n) and zeroes after them.
    fn segment(dir: &Path, n: u64) -> PathBuf {
        let mut bytes = vec![0u8; SEGMENT_HEADER_BYTES as usize];
        bytes[..8].copy_from_slice(b"RCWALSEG");
        for index in 1..=n {
            let mut record = vec![0xAB; 40];
            record[..4].copy_from_slice(&40u32.to_le_bytes());
            record[8..16].copy_from_slice(&index.to_le_bytes());
            bytes.extend(record);
        }
        bytes.extend(vec![0u8; 100]);
        let path = dir.join("00000000000000000001.wal");
        std::fs::write(&path, bytes).unwrap();
        std::fs::write(dir.join("LOCK"), b"").unwrap();
        path
    }

    #[test]
    fn the_tail_or_an_inner_record_is_damaged_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment(dir.path(), 4);
        let clean = std::fs::read(&path).unwrap();
        assert_eq!(records(&path).unwrap().len(), 4);
        for draw in 0..20 {
            let tail = damage(dir.path(), Target::Tail, draw).unwrap();
            assert!(tail.offset >= 32 + 3 * 40 + 4, "{tail:?}");
            assert_ne!(std::fs::read(&path).unwrap(), clean);
            undo(&tail).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), clean);

            let inner = damage(dir.path(), Target::Record, draw).unwrap();
            assert!(inner.offset < 32 + 3 * 40, "{inner:?}");
            assert!(inner.text.contains("bit flipped in record"));
            assert_eq!(records(&path).unwrap().len(), 4, "lengths stay intact");
            undo(&inner).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), clean);
        }
    }

    #[test]
    fn too_short_a_log_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        segment(dir.path(), 1);
        let err = damage(dir.path(), Target::Record, 0).unwrap_err();
        assert!(err.to_string().contains("too few"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = damage(empty.path(), Target::Tail, 0).unwrap_err();
        assert!(err.to_string().contains("no segment"), "{err}");
    }
}
