//! Reads of old records while the log runs (`Wal::read_copies`, a follower's catch-up): they
//! go through positional reads, so a sector that turns unreadable after the log was opened is
//! a typed error naming the file, the offset and the entries, never a `SIGBUS`; bytes damaged
//! after the open are caught by the record checks; and the next open reports the range lost.

use rcraft_storage::{CrashMode, Error, Record, SimFs, Wal, WalOptions};
use std::path::Path;
use std::sync::Arc;

const SEGMENT_BYTES: u64 = 16 * 1024;
const PAGE_BYTES: usize = 4096;

fn options(fs: &SimFs) -> WalOptions {
    WalOptions {
        segment_bytes: SEGMENT_BYTES,
        fs: Arc::new(fs.clone()),
    }
}

fn dir() -> &'static Path {
    Path::new("/data/wal")
}

fn payload(index: u64) -> Vec<u8> {
    (0..100)
        .map(|i| (index as u8).wrapping_mul(31).wrapping_add(i))
        .collect()
}

/// Appends records `from..=to` (100-byte payloads, term = index / 10 + 1).
fn append(wal: &mut Wal, from: u64, to: u64) {
    let payloads: Vec<Vec<u8>> = (from..=to).map(payload).collect();
    let batch: Vec<Record<'_>> = (from..=to)
        .zip(&payloads)
        .map(|(index, payload)| Record {
            index,
            term: index / 10 + 1,
            payload,
        })
        .collect();
    wal.append(&batch).unwrap();
}

/// A log of records `1..=count` on a fresh SimFs, synced, spanning several 16 KiB segments
/// (about 130 records each).
fn log_of(count: u64) -> (SimFs, Wal) {
    let fs = SimFs::new();
    let mut wal = Wal::open(dir(), options(&fs)).unwrap();
    append(&mut wal, 1, count);
    wal.sync().unwrap();
    wal.confirm().unwrap();
    (fs, wal)
}

/// The parts of a `DamagedRecords` error: (file, byte offset, first and last damaged
/// entry, reason); any other error fails the test.
fn damaged_records(error: &Error) -> (&Path, u64, u64, u64, &str) {
    let Error::DamagedRecords {
        file,
        offset,
        first,
        last,
        reason,
    } = error
    else {
        panic!("expected damaged records, got {error:?}");
    };
    (file, *offset, *first, *last, reason)
}

/// (index, term, payload) of what a read copied.
fn copied(wal: &Wal, range: std::ops::Range<u64>, max_bytes: u64) -> Vec<(u64, u64, Vec<u8>)> {
    let copies = wal.read_copies(range, max_bytes).unwrap();
    (copies.iter())
        .map(|r| {
            assert!(r.checksum_matches());
            assert_eq!(r.payload, &r.encoded[24..]);
            (r.index, r.term, r.payload.to_vec())
        })
        .collect()
}

#[test]
fn copies_read_what_the_map_holds_across_segments_and_stop_at_max_bytes() {
    let (_fs, mut wal) = log_of(400);
    assert!(wal.segment_paths().len() > 3);
    let record_bytes = 124;
    let all = copied(&wal, 1..401, u64::MAX);
    assert_eq!(all.len(), 400);
    let mapped: Vec<(u64, u64, Vec<u8>)> = (wal.read(1..401).unwrap().iter())
        .map(|r| (r.index, r.term, r.payload.to_vec()))
        .collect();
    assert_eq!(all, mapped);
    for (index, term, bytes) in &all {
        assert_eq!((*term, bytes), (index / 10 + 1, &payload(*index)));
    }
    // Stops after the record that reaches max_bytes; at least one; across a segment's end.
    assert_eq!(copied(&wal, 5..101, 1).len(), 1);
    assert_eq!(copied(&wal, 5..101, 0).len(), 1);
    assert_eq!(copied(&wal, 5..101, record_bytes).len(), 1);
    assert_eq!(copied(&wal, 5..101, record_bytes + 1).len(), 2);
    let many = copied(&wal, 100..401, 200 * record_bytes);
    assert_eq!(many.first().unwrap().0, 100);
    assert_eq!(many.len(), 200);
    assert_eq!(copied(&wal, 395..397, u64::MAX).len(), 2);
    assert!(wal.read_copies(401..401, 10).unwrap().is_empty());
    assert!(matches!(
        wal.read_copies(0..3, 10),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        wal.read_copies(399..402, 10),
        Err(Error::InvalidArgument(_))
    ));
    // Records appended and not yet synced are read too (the map's writes and positional
    // reads share the page cache; here, the file's current bytes).
    append(&mut wal, 401, 405);
    assert_eq!(copied(&wal, 399..406, u64::MAX).len(), 7);
}

/// Offset of the record `index` in `path` (its bytes found with a positional scan of the
/// file, as the test cannot see the WAL's offsets).
fn record_offset(fs: &SimFs, path: &Path, index: u64) -> usize {
    let bytes = fs.contents(path).unwrap();
    let mut at = 32;
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        assert!(len > 0, "record {index} not in {}", path.display());
        if u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) == index {
            return at;
        }
        at += len;
    }
}

/// The sealed segment holding `index`, and its first index.
fn segment_of(wal: &Wal, index: u64) -> (std::path::PathBuf, u64) {
    let ranges = wal.segment_ranges();
    let (path, first, _) = (ranges.iter())
        .find(|(_, first, len)| (*first..first + len).contains(&index))
        .unwrap();
    assert_ne!(path, &ranges.last().unwrap().0, "a sealed segment");
    (path.clone(), *first)
}

#[test]
fn a_sector_unreadable_after_the_open_is_an_error_naming_file_offset_and_entries() {
    let (fs, wal) = log_of(400);
    let (path, first) = segment_of(&wal, 200);
    let at = record_offset(&fs, &path, first + 10);
    // 16 bytes inside that record only: that record alone is unreadable.
    fs.make_unreadable(&path, at + 40, 16).unwrap();
    // The map still reads it (SimFs maps do not fault); the positional read does not.
    assert!(wal.read(first + 10..first + 11).is_ok());
    let error = wal.read_copies(first..401, u64::MAX).unwrap_err();
    let (file, offset, bad_first, bad_last, reason) = damaged_records(&error);
    assert_eq!(file, path);
    assert_eq!(offset, at as u64);
    assert_eq!((bad_first, bad_last), (first + 10, first + 10));
    assert!(reason.contains("os error 5"), "{reason}");
    let message = error.to_string();
    assert!(
        message.contains(&format!("entries {0}..={0}", first + 10))
            && message.contains(&path.display().to_string())
            && message.contains(&format!("byte offset {at}")),
        "{message}"
    );
    // What lies before it and after it still reads; the log is not stopped by a read.
    assert_eq!(copied(&wal, first..first + 10, u64::MAX).len(), 10);
    assert_eq!(
        copied(&wal, first + 11..401, u64::MAX).len() as u64,
        400 - first - 10
    );
    assert!(!wal.is_stopped());

    // A whole page: every record it touches is named, from the first, with its offset.
    fs.make_unreadable(&path, 2 * PAGE_BYTES, PAGE_BYTES)
        .unwrap();
    // (Read from after the record above, still unreadable.)
    let touching: Vec<u64> = (first + 11..first + 100)
        .filter(|&index| {
            let at = record_offset(&fs, &path, index);
            at < 3 * PAGE_BYTES && at + 124 > 2 * PAGE_BYTES
        })
        .collect();
    let error = wal
        .read_copies(first + 11..first + 100, u64::MAX)
        .unwrap_err();
    let (_, offset, bad_first, bad_last, _) = damaged_records(&error);
    assert_eq!(
        (bad_first, bad_last),
        (touching[0], *touching.last().unwrap())
    );
    assert_eq!(offset as usize, record_offset(&fs, &path, bad_first));
}

#[test]
fn a_record_damaged_after_the_open_is_an_error_and_nothing_of_it_is_returned() {
    let (fs, wal) = log_of(400);
    let (path, first) = segment_of(&wal, 200);
    let at = record_offset(&fs, &path, first + 3);
    fs.flip_bit(&path, at + 50, 2).unwrap();
    let error = wal.read_copies(first + 1..401, u64::MAX).unwrap_err();
    let (file, offset, bad_first, bad_last, reason) = damaged_records(&error);
    assert_eq!((file, offset), (path.as_path(), at as u64));
    assert_eq!((bad_first, bad_last), (first + 3, first + 3));
    assert!(reason.contains("checksum"), "{reason}");
    // A record moved under the log (another record's bytes where it should be).
    let (fs, wal) = log_of(400);
    let (path, first) = segment_of(&wal, 200);
    let at = record_offset(&fs, &path, first + 2);
    let bytes = fs.contents(&path).unwrap();
    let other = record_offset(&fs, &path, first + 1);
    fs.revert_write(&path, at, &bytes[other..other + 124])
        .unwrap();
    let error = wal.read_copies(first..401, u64::MAX).unwrap_err();
    assert!(
        matches!(&error, Error::DamagedRecords { first: f, reason, .. }
            if *f == first + 2 && reason.contains("index")),
        "{error:?}"
    );
}

#[test]
fn after_an_unreadable_read_the_next_open_rewrites_the_page_and_reports_the_range_lost() {
    let (fs, wal) = log_of(400);
    let (path, first) = segment_of(&wal, 200);
    // A record past the segment's first page (which holds the header: FORMAT §4.1).
    let index = (first..)
        .find(|&i| record_offset(&fs, &path, i) > PAGE_BYTES)
        .unwrap();
    let at = record_offset(&fs, &path, index);
    fs.make_unreadable(&path, at + 30, 8).unwrap();
    let Err(Error::DamagedRecords { first: bad, .. }) = wal.read_copies(first..401, 1 << 20) else {
        panic!("the unreadable record is found");
    };
    assert_eq!(bad, index);
    // The node stops (a process kill: nothing unsynced here anyway) and starts again.
    drop(wal);
    fs.crash(CrashMode::KeepUnsynced);
    let wal = Wal::open(dir(), options(&fs)).unwrap();
    let lost = wal
        .lost()
        .expect("the synced records on the page are reported lost");
    assert!(lost.from <= bad && lost.through >= 400, "{lost}");
    assert_eq!(
        wal.last_index() + 1,
        lost.from,
        "the log is cut at the loss"
    );
    // The page was rewritten: what the log holds now reads whole.
    let held = wal.last_index();
    assert_eq!(copied(&wal, 1..held + 1, u64::MAX).len() as u64, held);
}
