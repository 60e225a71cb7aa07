//! Crash and damage tests of the WAL on the real file system (plus fault injection on SimFs):
//! torn tails at every byte offset, single-bit flips in every region, failed syncs and writes.

use rcraft_storage::{CrashMode, Error, Record, SimFs, Wal, WalOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SEGMENT_BYTES: u64 = 4096;
const HEADER_BYTES: usize = 32;
const RECORD_HEADER_BYTES: usize = 24;

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: SEGMENT_BYTES,
        ..WalOptions::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    (0..100)
        .map(|i| (index as u8).wrapping_mul(13).wrapping_add(i))
        .collect()
}

/// Appends records `range` (100-byte payloads, term = index / 10 + 1) and syncs them.
fn append_synced(wal: &mut Wal, range: std::ops::RangeInclusive<u64>) {
    let payloads: Vec<Vec<u8>> = range.clone().map(payload).collect();
    let batch: Vec<Record<'_>> = range
        .zip(&payloads)
        .map(|(index, payload)| Record {
            index,
            term: index / 10 + 1,
            payload,
        })
        .collect();
    wal.append(&batch).unwrap();
    wal.sync().unwrap();
}

/// Writes records `1..=count` (100-byte payloads, term = index / 10 + 1), synced.
fn write_log(dir: &Path, count: u64) -> Vec<PathBuf> {
    let mut wal = Wal::open(dir, options()).unwrap();
    append_synced(&mut wal, 1..=count);
    wal.segment_paths()
}

/// Checks that the log holds exactly records `1..=count` as written by `write_log`.
fn check_log(wal: &Wal, count: u64) {
    assert_eq!(wal.first_index(), 1);
    assert_eq!(wal.last_index(), count);
    for record in wal.entries_from(1).unwrap() {
        assert_eq!(record.term, record.index / 10 + 1);
        assert_eq!(record.payload, &payload(record.index)[..]);
    }
}

/// Byte offsets of the records in a segment file's bytes.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = HEADER_BYTES;
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            return offsets;
        }
        offsets.push(at);
        at += len;
    }
}

/// Sealed segments let go of their resident pages (when rolled, and on request after old
/// records were read): what is read afterwards, and after a reopen, is unchanged, and the
/// log goes on appending.
#[test]
fn released_segment_pages_read_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 120);
    assert!(paths.len() > 3, "the log spans several segments: {paths:?}");
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    check_log(&wal, 120);
    wal.release_sealed_pages();
    check_log(&wal, 120);
    append_synced(&mut wal, 121..=130);
    wal.release_sealed_pages();
    check_log(&wal, 130);
    drop(wal);
    check_log(&Wal::open(dir.path(), options()).unwrap(), 130);
}

#[test]
fn torn_tail_at_every_byte_offset_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 50);
    assert_eq!(
        paths.len(),
        2,
        "the test wants a sealed segment and an active one"
    );
    let last = paths.last().unwrap();
    let original = fs::read(last).unwrap();
    let offsets = record_offsets(&original);
    let first_in_last = 50 - offsets.len() as u64 + 1;
    let from = offsets[offsets.len() - 2];
    let to = offsets[offsets.len() - 1] + RECORD_HEADER_BYTES + 100;
    for cut in from..=to {
        let whole_records = offsets.iter().filter(|&&at| at + 124 <= cut).count() as u64;
        let expected_last = first_in_last - 1 + whole_records;
        for shorten_file in [false, true] {
            let mut damaged = original.clone();
            if shorten_file {
                damaged.truncate(cut);
            } else {
                damaged[cut..].fill(0);
            }
            fs::write(last, &damaged).unwrap();
            let wal = Wal::open(dir.path(), options())
                .unwrap_or_else(|e| panic!("cut at {cut} (shorten {shorten_file}): {e}"));
            check_log(&wal, expected_last);
            // Every record was synced: whatever the cut took is reported lost, never
            // taken for a torn write.
            let lost = wal.lost().map(|lost| (lost.from, lost.through));
            let expected = (expected_last < 50).then_some((expected_last + 1, 50));
            assert_eq!(lost, expected, "cut at {cut} (shorten {shorten_file})");
        }
    }
    // After a cut the log keeps working: append, sync, reopen.
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    let next = wal.last_index() + 1;
    let p = payload(next);
    wal.append(&[Record {
        index: next,
        term: next / 10 + 1,
        payload: &p,
    }])
    .unwrap();
    wal.sync().unwrap();
    drop(wal);
    check_log(&Wal::open(dir.path(), options()).unwrap(), next);
}

#[test]
fn torn_tail_with_garbage_after_it_is_cut_off_and_zeroed() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10);
    let last = paths.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    let offsets = record_offsets(&bytes);
    // Half of record 10 made it to disk, and then some unrelated garbage further on.
    let tenth = offsets[9];
    bytes[tenth + 60..tenth + 124].fill(0);
    bytes[3000..3010].fill(0xAB);
    fs::write(last, &bytes).unwrap();
    let wal = Wal::open(dir.path(), options()).unwrap();
    check_log(&wal, 9);
    let lost = wal.lost().expect("record 10 was synced");
    assert_eq!((lost.from, lost.through), (10, 10));
    assert_eq!(lost.offset, tenth as u64);
    let after = fs::read(last).unwrap();
    assert!(
        after[tenth..].iter().all(|&b| b == 0),
        "the damaged tail must be zeroed on disk"
    );
}

/// Rewrites a segment's header in the first format (version 1, no synced count), as an
/// older rcraft wrote it.
fn make_version_1(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    bytes[12..16].fill(0);
    bytes[16..24].copy_from_slice(&first_index_of(path).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[0..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes[28..32].fill(0);
    fs::write(path, bytes).unwrap();
}

/// The first index a segment's file name gives (a version-3 header does not hold it).
fn first_index_of(path: &Path) -> u64 {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.trim_end_matches(".wal").parse().unwrap()
}

/// A version-2 header (a synced count without its record's term), as rcraft wrote before
/// the frontier's term was recorded.
fn version_2_header(first_index: u64, synced_records: u32) -> Vec<u8> {
    let mut header = b"RCWALSEG".to_vec();
    header.extend_from_slice(&2u32.to_le_bytes());
    header.extend_from_slice(&synced_records.to_le_bytes());
    header.extend_from_slice(&first_index.to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), &header[16..24]);
    header.extend_from_slice(&header_crc.to_le_bytes());
    let count_crc = crc32c::crc32c(&header[12..24]);
    header.extend_from_slice(&count_crc.to_le_bytes());
    header
}

fn append_one(wal: &mut Wal, index: u64) {
    let p = payload(index);
    wal.append(&[Record {
        index,
        term: index / 10 + 1,
        payload: &p,
    }])
    .unwrap();
    wal.sync().unwrap();
}

/// A lost range stays reported across restarts until records cover it again, and a
/// version-1 segment (no synced count) still opens, with the old torn-tail rule.
#[test]
fn a_lost_range_is_reported_until_repaired_and_old_segments_open() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10);
    let last = paths.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    let ninth = record_offsets(&bytes)[8];
    bytes[ninth..].fill(0);
    fs::write(last, &bytes).unwrap();
    // The header records the term of the frontier's record (10 / 10 + 1), and keeps it
    // with the claim.
    let lost = |wal: &Wal| {
        wal.lost()
            .map(|lost| (lost.from, lost.through, lost.through_term))
    };
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(lost(&wal), Some((9, 10, Some(2))));
    drop(wal);
    wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(
        lost(&wal),
        Some((9, 10, Some(2))),
        "not forgotten by a restart"
    );
    append_one(&mut wal, 9);
    drop(wal);
    wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(lost(&wal), Some((10, 10, Some(2))), "half repaired");
    append_one(&mut wal, 10);
    drop(wal);
    wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(lost(&wal), None, "repaired");
    check_log(&wal, 10);
    drop(wal);
    // The same damage in a segment an older rcraft wrote is cut as a torn tail.
    make_version_1(last);
    let mut bytes = fs::read(last).unwrap();
    bytes[ninth..].fill(0);
    fs::write(last, &bytes).unwrap();
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    check_log(&wal, 8);
    assert_eq!(lost(&wal), None);
    append_one(&mut wal, 9);
    drop(wal);
    check_log(&Wal::open(dir.path(), options()).unwrap(), 9);
    // In a segment with a version-2 header (a count, no term) the loss is reported with its
    // term unknown, the claim is kept, and the header becomes version 3 once written.
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    append_one(&mut wal, 10);
    drop(wal);
    let mut bytes = fs::read(last).unwrap();
    bytes[..HEADER_BYTES].copy_from_slice(&version_2_header(1, 10));
    bytes[ninth..].fill(0);
    fs::write(last, &bytes).unwrap();
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(
        lost(&wal),
        Some((9, 10, None)),
        "version 2: the term is not known"
    );
    drop(wal);
    wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(lost(&wal), Some((9, 10, None)), "kept across a restart");
    let header = fs::read(last).unwrap();
    assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 3);
    append_one(&mut wal, 9);
    append_one(&mut wal, 10);
    drop(wal);
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(lost(&wal), None, "repaired");
    check_log(&wal, 10);
}

/// SIM_FINDINGS 60: a record of a later term synced inside a claimed range (a new leader's
/// entry taken during the repair, which the node may have acknowledged) raises the claim's
/// term, so losing it again reports the range with that term, not the claim's older one.
/// Fails with the claim's term kept as it was (2 instead of 5).
#[test]
fn a_later_term_synced_inside_a_claim_raises_its_term() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10);
    let last = paths.last().unwrap();
    let zero_from_ninth = |path: &Path| {
        let mut bytes = fs::read(path).unwrap();
        let ninth = record_offsets(&bytes)[8];
        bytes[ninth..].fill(0);
        fs::write(path, &bytes).unwrap();
    };
    zero_from_ninth(last);
    let lost = |wal: &Wal| {
        wal.lost()
            .map(|lost| (lost.from, lost.through, lost.through_term))
    };
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(lost(&wal), Some((9, 10, Some(2))));
    // A leader of term 5 sends entry 9; it is synced (and may be acknowledged).
    let p = payload(9);
    wal.append(&[Record {
        index: 9,
        term: 5,
        payload: &p,
    }])
    .unwrap();
    wal.sync().unwrap();
    assert_eq!(wal.claimed_through(), Some((10, Some(5))));
    drop(wal);
    zero_from_ninth(last);
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(
        lost(&wal),
        Some((9, 10, Some(5))),
        "the second loss carries the term of the entry synced inside the claim"
    );
}

fn flip(path: &Path, original: &[u8], byte: usize, bit: u8) {
    let mut damaged = original.to_vec();
    damaged[byte] ^= 1 << bit;
    fs::write(path, damaged).unwrap();
}

fn expect_corruption(dir: &Path, file: &Path, offset: Option<u64>, what: &str) {
    match Wal::open(dir, options()) {
        Err(Error::Corruption {
            file: f,
            offset: o,
            reason,
        }) => {
            assert_eq!(f, file, "{what}: wrong file ({reason})");
            if let Some(offset) = offset {
                assert_eq!(o, offset, "{what}: wrong offset ({reason})");
            }
        }
        other => panic!("{what}: expected corruption, got {other:?}"),
    }
}

/// Opens the log and expects records `1..from` held (as `write_log` wrote them) and the
/// range `from..=through` reported lost, with `file` named; then checks that the claim is
/// durable: a restart reports the same range, and after one record of it is written again,
/// a restart reports the rest.
fn expect_lost(dir: &Path, file: &Path, from: u64, through: u64, what: &str) {
    let wal = Wal::open(dir, options()).unwrap_or_else(|e| panic!("{what}: {e}"));
    check_log(&wal, from - 1);
    let lost = wal
        .lost()
        .unwrap_or_else(|| panic!("{what}: nothing reported lost"));
    assert_eq!((lost.from, lost.through), (from, through), "{what}: {lost}");
    assert_eq!(lost.file, file, "{what}: {lost}");
    drop(wal);
    let mut wal = Wal::open(dir, options()).unwrap();
    let range = |wal: &Wal| wal.lost().map(|l| (l.from, l.through));
    assert_eq!(
        range(&wal),
        Some((from, through)),
        "{what}: after a restart"
    );
    append_one(&mut wal, from);
    drop(wal);
    let wal = Wal::open(dir, options()).unwrap();
    let rest = (from < through).then_some((from + 1, through));
    assert_eq!(range(&wal), rest, "{what}: after writing {from} again");
}

#[test]
fn single_bit_flips_are_detected_in_every_region() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 50);
    let originals: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
    for (position, path) in paths.iter().enumerate() {
        let is_last = position + 1 == paths.len();
        let original = fs::read(path).unwrap();
        let offsets = record_offsets(&original);
        let first_in_file = first_index_of(path);
        for byte in 0..HEADER_BYTES {
            for bit in 0..8 {
                flip(path, &original, byte, bit);
                let what = format!("header byte {byte}");
                // The synced count: damage to it loses the frontier, never a record. The
                // fixed fields: the header is rebuilt from the file name, and the records
                // speak for themselves. Either way nothing is lost, and the header is whole
                // again on disk.
                let wal =
                    Wal::open(dir.path(), options()).unwrap_or_else(|e| panic!("{what}: {e}"));
                check_log(&wal, 50);
                assert_eq!(wal.lost(), None, "{what}");
                drop(wal);
                let repaired = fs::read(path).unwrap();
                assert_eq!(repaired[..12], original[..12], "{what}: header rewritten");
                assert_eq!(
                    repaired[24..28],
                    original[24..28],
                    "{what}: header rewritten"
                );
                fs::write(path, &original).unwrap();
            }
        }
        // Every bit of a record in the middle: header (24 bytes) and payload (100 bytes).
        // The synced counts say the records from there on were synced: the log is cut there
        // (a sealed segment's later segments are removed) and they are reported lost.
        let position_in_file = offsets.len() / 2;
        let middle = offsets[position_in_file];
        for byte in middle..middle + 124 {
            for bit in 0..8 {
                flip(path, &original, byte, bit);
                let what = format!("record byte {} bit {bit}", byte - middle);
                let wal =
                    Wal::open(dir.path(), options()).unwrap_or_else(|e| panic!("{what}: {e}"));
                let from = first_in_file + position_in_file as u64;
                check_log(&wal, from - 1);
                let lost = wal.lost().map(|l| (l.from, l.through, l.offset));
                assert_eq!(lost, Some((from, 50, middle as u64)), "{what}");
                assert_eq!(wal.lost().unwrap().file, *path, "{what}");
                drop(wal);
                // A restart before the repair still finds the whole range lost.
                let wal = Wal::open(dir.path(), options()).unwrap();
                assert_eq!(wal.lost().map(|l| (l.from, l.through)), Some((from, 50)));
                drop(wal);
                for (path, bytes) in paths.iter().zip(&originals) {
                    fs::write(path, bytes).unwrap();
                }
            }
        }
        if is_last {
            // Bit rot in the very last record: it was synced, so it is reported lost (it
            // used to be taken for a torn write), and its bytes are never served.
            let tail = *offsets.last().unwrap();
            for byte in [tail, tail + 4, tail + 8, tail + 16, tail + 24, tail + 123] {
                flip(path, &original, byte, 3);
                let wal = Wal::open(dir.path(), options()).unwrap();
                check_log(&wal, 49);
                assert_eq!(wal.lost().map(|l| (l.from, l.through)), Some((50, 50)));
                drop(wal);
                fs::write(path, &original).unwrap();
            }
        }
        fs::write(path, &original).unwrap();
    }
}

/// A segment missing between two others: the log is cut before the gap, and everything
/// from there through the frontier is reported lost (the later segments show it was synced).
#[test]
fn a_missing_middle_segment_is_a_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 120);
    assert!(paths.len() >= 3);
    let first_of = |path: &Path| -> u64 {
        let name = path.file_name().unwrap().to_str().unwrap();
        name.trim_end_matches(".wal").parse().unwrap()
    };
    let from = first_of(&paths[1]);
    fs::remove_file(&paths[1]).unwrap();
    expect_lost(dir.path(), &paths[0], from, 120, "missing segment");
    assert!(paths[2..].iter().all(|p| !p.exists()), "later ones removed");
}

/// Where nothing can be known the open still stops, naming file and offset: a segment whose
/// intact header names another first index than its file name (renamed by hand), or records
/// of one segment running into the next one's.
#[test]
fn a_segment_under_another_name_is_still_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 120);
    let moved = paths[1].with_file_name("00000000000000000040.wal");
    fs::rename(&paths[1], &moved).unwrap();
    // A version-3 header's checksums cover the name's index, so the header reads as
    // damaged; its first record then names the file's true index.
    expect_corruption(
        dir.path(),
        &moved,
        Some(HEADER_BYTES as u64),
        "renamed segment",
    );
    fs::rename(&moved, &paths[1]).unwrap();
    // A version-2 header names its first index itself.
    let second = fs::read(&paths[1]).unwrap();
    let first_of_second = first_index_of(&paths[1]);
    let mut old = second.clone();
    old[..HEADER_BYTES].copy_from_slice(&version_2_header(first_of_second, 0));
    fs::write(&moved, &old).unwrap();
    fs::remove_file(&paths[1]).unwrap();
    expect_corruption(dir.path(), &moved, Some(16), "renamed version-2 segment");
    fs::remove_file(&moved).unwrap();
    fs::write(&paths[1], &second).unwrap();
    // Records of the first segment run past the second one's first index.
    let overlapping = paths[1].with_file_name(format!("{:020}.wal", first_of_second - 2));
    let mut header = second.clone();
    header[..HEADER_BYTES].copy_from_slice(&version_2_header(first_of_second - 2, 0));
    fs::remove_file(&paths[1]).unwrap();
    fs::write(&overlapping, header).unwrap();
    let end = record_offsets(&fs::read(&paths[0]).unwrap()).len() * 124 + HEADER_BYTES;
    expect_corruption(dir.path(), &paths[0], Some(end as u64), "overlap");
}

/// A segment header whose fixed fields are damaged is rebuilt from the file name; damage in
/// its records as well is then judged as in any segment.
#[test]
fn a_damaged_header_and_a_damaged_record_in_a_sealed_segment_are_a_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 120);
    let sealed = &paths[1];
    let original = fs::read(sealed).unwrap();
    let first = first_index_of(sealed);
    let fourth = record_offsets(&original)[3];
    let mut damaged = original.clone();
    damaged[2] ^= 0x10;
    damaged[fourth + 40] ^= 0x01;
    fs::write(sealed, damaged).unwrap();
    expect_lost(dir.path(), sealed, first + 3, 120, "header and record");
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _wal = Wal::open(dir.path(), options()).unwrap();
    assert!(matches!(
        Wal::open(dir.path(), options()),
        Err(Error::Io { .. })
    ));
}

#[test]
fn compaction_removes_only_whole_older_segments() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 120);
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    let second_first = wal.segment_paths().len();
    assert_eq!(second_first, paths.len());
    // Through index 40: segment 1 (records 1..=32) goes, segment 2 (33..=64) stays.
    wal.compact_through(40).unwrap();
    assert_eq!(wal.first_index(), 33);
    assert!(!paths[0].exists() && paths[1].exists());
    wal.compact_through(1_000).unwrap();
    assert_eq!(wal.segment_paths(), vec![paths.last().unwrap().clone()]);
    assert_eq!(wal.last_index(), 120);
    drop(wal);
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(wal.first_index(), 97);
    assert_eq!(wal.read(120..121).unwrap()[0].payload, &payload(120)[..]);
}

#[test]
fn oversized_record_gets_its_own_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    let big = vec![7u8; 10_000];
    wal.append(&[
        Record {
            index: 1,
            term: 1,
            payload: b"small",
        },
        Record {
            index: 2,
            term: 1,
            payload: &big,
        },
        Record {
            index: 3,
            term: 1,
            payload: b"after",
        },
    ])
    .unwrap();
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(wal.read(2..3).unwrap()[0].payload, &big[..]);
    assert_eq!(wal.read(3..4).unwrap()[0].payload, b"after");
    assert_eq!(wal.segment_paths().len(), 3);
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), options()).unwrap();
    let gap = wal.append(&[Record {
        index: 2,
        term: 1,
        payload: b"",
    }]);
    assert!(matches!(gap, Err(Error::InvalidArgument(_))));
    assert!(matches!(wal.read(1..2), Err(Error::InvalidArgument(_))));
    assert!(wal.read(1..1).unwrap().is_empty());
    assert_eq!(wal.term_at(1), None);
    wal.append(&[Record {
        index: 1,
        term: 1,
        payload: b"",
    }])
    .unwrap();
    assert!(matches!(wal.read(0..2), Err(Error::InvalidArgument(_))));
    assert!(!wal.is_stopped(), "bad arguments do not stop the log");
    let tiny = WalOptions {
        segment_bytes: 100,
        ..WalOptions::default()
    };
    assert!(matches!(
        Wal::open(dir.path(), tiny),
        Err(Error::InvalidArgument(_))
    ));
}

fn sim_wal(fs: &SimFs) -> Wal {
    let options = WalOptions {
        segment_bytes: SEGMENT_BYTES,
        fs: Arc::new(fs.clone()),
    };
    Wal::open(Path::new("/wal"), options).unwrap()
}

#[test]
fn a_wal_directory_created_by_open_survives_power_loss() {
    // Neither the data directory nor the WAL directory exists yet: `open` creates both and
    // syncs each one's parent, or a power loss would take them, and every synced record in
    // them, away.
    let fs = SimFs::new();
    let dir = Path::new("/data/wal");
    let open = || {
        let options = WalOptions {
            segment_bytes: SEGMENT_BYTES,
            fs: Arc::new(fs.clone()),
        };
        Wal::open(dir, options).unwrap()
    };
    let mut wal = open();
    let record = Record {
        index: 1,
        term: 1,
        payload: b"acknowledged",
    };
    wal.append(&[record]).unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let wal = open();
    assert_eq!(wal.last_index(), 1, "the synced record survives");
    assert_eq!(wal.read(1..2).unwrap()[0].payload, b"acknowledged");
}

#[test]
fn failed_sync_surfaces_and_stops_all_writes() {
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    wal.append(&[Record {
        index: 1,
        term: 1,
        payload: b"a",
    }])
    .unwrap();
    fs.fail_nth_sync(1);
    assert!(matches!(
        wal.sync(),
        Err(Error::Io {
            op: "sync segment",
            ..
        })
    ));
    // Never retried, never forgotten: every later mutation is refused.
    let next = [Record {
        index: 2,
        term: 1,
        payload: b"b",
    }];
    assert!(matches!(wal.append(&next), Err(Error::Stopped { .. })));
    assert!(matches!(wal.sync(), Err(Error::Stopped { .. })));
    assert!(matches!(wal.truncate_from(1), Err(Error::Stopped { .. })));
    assert!(matches!(wal.compact_through(1), Err(Error::Stopped { .. })));
    assert!(matches!(wal.reset(5), Err(Error::Stopped { .. })));
    // Reads of what is in memory still work (the node logs them while shutting down).
    assert_eq!(wal.read(1..2).unwrap()[0].payload, b"a");
}

#[test]
fn failed_write_surfaces_and_stops_the_log() {
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    wal.append(&[Record {
        index: 1,
        term: 1,
        payload: b"a",
    }])
    .unwrap();
    fs.fail_nth_write(2);
    let batch = [
        Record {
            index: 2,
            term: 1,
            payload: b"b",
        },
        Record {
            index: 3,
            term: 1,
            payload: b"c",
        },
    ];
    assert!(matches!(wal.append(&batch), Err(Error::Io { .. })));
    assert!(wal.is_stopped());
    assert!(matches!(wal.sync(), Err(Error::Stopped { .. })));
}

#[test]
fn failed_sync_while_rolling_to_a_new_segment_stops_the_log() {
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    let p = vec![1u8; 1000];
    let batch = records_in_term(1..=3, 1, &p);
    wal.append(&batch).unwrap();
    fs.fail_nth_sync(1); // the seal of the full segment before the roll
    let more = records_in_term(4..=6, 1, &p);
    assert!(matches!(wal.append(&more), Err(Error::Io { .. })));
    assert!(wal.is_stopped());
}

/// Encodes a record exactly as FORMAT.md describes (independently of the crate's encoder).
fn encode_record(index: u64, term: u64, payload: &[u8]) -> Vec<u8> {
    let len = (RECORD_HEADER_BYTES + payload.len()) as u32;
    let mut body = Vec::new();
    body.extend_from_slice(&index.to_le_bytes());
    body.extend_from_slice(&term.to_le_bytes());
    body.extend_from_slice(payload);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), &body);
    let mut record = len.to_le_bytes().to_vec();
    record.extend_from_slice(&crc.to_le_bytes());
    record.extend_from_slice(&body);
    record
}

#[test]
fn zeroed_length_with_valid_records_after_it_is_a_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10);
    let last = paths.last().unwrap();
    let mut bytes = fs::read(last).unwrap();
    let fifth = record_offsets(&bytes)[4];
    bytes[fifth..fifth + 4].fill(0);
    fs::write(last, &bytes).unwrap();
    // The synced count says ten records: five to ten are lost (and reported), not served.
    let wal = Wal::open(dir.path(), options()).unwrap();
    check_log(&wal, 4);
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), Some((5, 10)));
    drop(wal);
    // A segment written by an older rcraft has no count: the later records show the same.
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 10);
    let last = paths.last().unwrap();
    make_version_1(last);
    let mut bytes = fs::read(last).unwrap();
    bytes[fifth..fifth + 4].fill(0);
    fs::write(last, &bytes).unwrap();
    expect_lost(dir.path(), last, 5, 10, "zeroed length, version 1");
}

#[test]
fn a_later_record_decides_between_torn_write_and_loss() {
    // Records 1..=9 have terms 1 (1..=9 / 10 + 1). After the end, garbage and then a valid
    // record: with an older term it is stale (a torn write: cut), with the same term it can
    // only be synced data behind damage (lost: 10 through the record found).
    for (stale_term, expect_torn) in [(0u64, true), (1, false)] {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_log(dir.path(), 9);
        let last = paths.last().unwrap();
        // The rule is for segments without a synced count (written by an older rcraft);
        // with one, whatever follows the frontier is unsynced and cut.
        make_version_1(last);
        let mut bytes = fs::read(last).unwrap();
        let end = record_offsets(&bytes).last().unwrap() + 124;
        bytes[end..end + 30].fill(0x77);
        let stray = encode_record(12, stale_term, &payload(12));
        bytes[end + 40..end + 40 + stray.len()].copy_from_slice(&stray);
        fs::write(last, &bytes).unwrap();
        if expect_torn {
            check_log(&Wal::open(dir.path(), options()).unwrap(), 9);
            let after = fs::read(last).unwrap();
            assert!(
                after[end..].iter().all(|&b| b == 0),
                "the cut tail is zeroed"
            );
        } else {
            expect_lost(dir.path(), last, 10, 12, "valid record after damage");
        }
    }
}

/// The search for a later record stops at the last non-zero byte of the segment, not at its
/// end; a record whose payload is all zeroes ends past that byte and must still be found.
#[test]
fn a_later_record_ending_in_zeroes_is_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 9);
    let last = paths.last().unwrap();
    make_version_1(last);
    let mut bytes = fs::read(last).unwrap();
    let end = record_offsets(&bytes).last().unwrap() + 124;
    bytes[end..end + 30].fill(0x77);
    // Index 256 and a 256-byte length put zero bytes at the record's very start, too.
    let stray = encode_record(256, 1, &[0; 232]);
    assert_eq!(stray[0], 0, "a length whose low byte is zero");
    bytes[end + 40..end + 40 + stray.len()].copy_from_slice(&stray);
    fs::write(last, &bytes).unwrap();
    expect_lost(dir.path(), last, 10, 256, "valid record after damage");
}

#[test]
fn the_crate_encoder_matches_the_documented_format() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 3);
    let bytes = fs::read(&paths[0]).unwrap();
    // Version 3: the header checksum covers magic, version and the first index (from the
    // file name); the synced count (3 records) and the term of the third record (1) have
    // their own checksum, over them and the first index.
    let first_index = 1u64.to_le_bytes();
    let mut header = b"RCWALSEG".to_vec();
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&1u64.to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&header[0..12]), &first_index);
    header.extend_from_slice(&header_crc.to_le_bytes());
    let count_crc = crc32c::crc32c_append(crc32c::crc32c(&header[12..24]), &first_index);
    header.extend_from_slice(&count_crc.to_le_bytes());
    assert_eq!(bytes[..HEADER_BYTES], header[..]);
    let second = encode_record(2, 1, &payload(2));
    assert_eq!(bytes[HEADER_BYTES + 124..HEADER_BYTES + 248], second[..]);
}

/// A truncation whose zeroing was never synced (the sync failed, or power went out) can
/// leave any mix of zeroes and the old records; the log must reopen, cut at the truncation,
/// and stay so across a second power loss. Found by the storage simulation (seed 56).
#[test]
fn an_interrupted_truncation_reopens_cut_at_its_index() {
    for seed in 0..64 {
        let fs = SimFs::new();
        let mut wal = sim_wal(&fs);
        let payloads: Vec<Vec<u8>> = (1..=20).map(payload).collect();
        let batch: Vec<Record<'_>> = payloads
            .iter()
            .enumerate()
            .map(|(k, payload)| Record {
                index: k as u64 + 1,
                term: 1,
                payload,
            })
            .collect();
        wal.append(&batch).unwrap();
        wal.sync().unwrap();
        // The first sync makes the truncation's marker durable, the second the zeroing.
        fs.fail_nth_sync(1 + seed % 2);
        assert!(
            wal.truncate_from(5).is_err(),
            "a sync of the truncation fails"
        );
        drop(wal);
        let mode = match seed % 3 {
            0 => CrashMode::KeepUnsynced,
            1 => CrashMode::LoseUnsynced,
            _ => CrashMode::TearUnsynced { seed },
        };
        fs.crash(mode);
        let wal = Wal::open(Path::new("/wal"), sim_options(&fs))
            .unwrap_or_else(|e| panic!("seed {seed}, {mode:?}: does not reopen: {e}"));
        let last = wal.last_index();
        assert!(
            last == 4 || last == 20,
            "seed {seed}, {mode:?}: cut at the truncation or untouched, not at {last}"
        );
        if seed % 2 == 1 {
            assert_eq!(
                last, 4,
                "seed {seed}, {mode:?}: the marker was durable: cut"
            );
        }
        drop(wal);
        fs.crash(CrashMode::TearUnsynced { seed: seed + 1000 });
        let wal = Wal::open(Path::new("/wal"), sim_options(&fs)).unwrap();
        assert_eq!(
            wal.last_index(),
            last,
            "seed {seed}: what was recovered is durable"
        );
    }
}

fn sim_options(fs: &SimFs) -> WalOptions {
    WalOptions {
        segment_bytes: SEGMENT_BYTES,
        fs: Arc::new(fs.clone()),
    }
}

/// Damage in a version-1 sealed segment (written by an older rcraft, no synced count): the
/// later segments show it was synced; its header is written again as version 3 to hold the
/// claim, and the range is reported lost like any other, with the term the last segment's
/// header records for its last record.
#[test]
fn damage_in_a_sealed_segment_of_an_older_rcraft_is_a_lost_range() {
    let dir = tempfile::tempdir().unwrap();
    let paths = write_log(dir.path(), 50);
    assert!(paths.len() >= 2);
    let sealed = &paths[0];
    make_version_1(sealed);
    let original = fs::read(sealed).unwrap();
    let middle = record_offsets(&original)[3];
    flip(sealed, &original, middle + 30, 2);
    let wal = Wal::open(dir.path(), options()).unwrap();
    assert_eq!(wal.lost().unwrap().through_term, Some(50 / 10 + 1));
    drop(wal);
    expect_lost(dir.path(), sealed, 4, 50, "version-1 sealed segment");
    let header = fs::read(sealed).unwrap();
    assert_eq!(u32::from_le_bytes(header[8..12].try_into().unwrap()), 3);
}

fn records(range: std::ops::RangeInclusive<u64>, payload: &[u8]) -> Vec<Record<'_>> {
    records_in_term(range, 1, payload)
}

fn records_in_term(
    range: std::ops::RangeInclusive<u64>,
    term: u64,
    payload: &[u8],
) -> Vec<Record<'_>> {
    range
        .map(|index| Record {
            index,
            term,
            payload,
        })
        .collect()
}

/// SIM_FINDINGS S4: a power loss during a sync that brings the segment header's page to the
/// disk but not all of the records' pages. The header's synced count never counts records
/// whose sync has not returned (storage/FORMAT.md §1.1), so the next start finds nothing
/// lost: the batch was never acknowledged. (When a sync wrote the count of its own records,
/// the tears that kept the header and not the records reported 4..=6 lost.)
#[test]
fn a_power_loss_during_a_sync_never_reports_the_unsynced_batch_lost() {
    let payload = vec![7u8; 300];
    for seed in 0..64 {
        let fs = SimFs::new();
        let mut wal = sim_wal(&fs);
        wal.append(&records(1..=3, &payload)).unwrap();
        wal.sync().unwrap();
        wal.append(&records(4..=6, &payload)).unwrap();
        fs.fail_nth_sync(1);
        assert!(wal.sync().is_err());
        drop(wal);
        fs.crash(CrashMode::TearUnsynced { seed });
        let wal = sim_wal(&fs);
        let lost = wal.lost().map(|l| (l.from, l.through));
        assert_eq!(lost, None, "tear seed {seed}: nothing synced was damaged");
        assert!(
            wal.last_index() >= 3,
            "tear seed {seed}: the synced batch stays"
        );
    }
}

/// The count of the newest batch becomes durable with `confirm` (the storage thread calls it
/// when idle), and from then on a loss of that batch is known as one.
#[test]
fn a_confirmed_count_reports_the_newest_batch_lost_when_the_disk_loses_it() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    wal.append(&records(1..=3, &payload)).unwrap();
    wal.sync().unwrap();
    assert!(
        wal.count_pending(),
        "the sync carried the count before its records"
    );
    wal.confirm().unwrap();
    assert!(!wal.count_pending());
    let path = wal.segment_paths().pop().unwrap();
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let third = record_offsets(&fs.contents(&path).unwrap())[2];
    fs.flip_bit(&path, third + 30, 3).unwrap();
    let wal = sim_wal(&fs);
    assert_eq!(wal.last_index(), 2);
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), Some((3, 3)));
}

/// SIM_FINDINGS 49: damage below the synced frontier while the newest batch's count is not
/// yet on disk (a crash before the storage thread's idle `confirm`). The whole records after
/// the damage, the newest batch's among them, were synced and may have been acknowledged: the
/// lost range runs through the last of them, with its term, not just through the count (the
/// cluster simulator found the WAL reporting 270..=271 for a node that had acknowledged 272).
#[test]
fn damage_below_the_frontier_claims_the_whole_records_after_it_beyond_the_count() {
    let payload = vec![7u8; 300];
    for lost_write in [false, true] {
        let fs = SimFs::new();
        let mut wal = sim_wal(&fs);
        wal.append(&records(1..=4, &payload)).unwrap();
        wal.sync().unwrap();
        wal.confirm().unwrap();
        let newest = records_in_term(5..=6, 2, &payload);
        wal.append(&newest).unwrap();
        wal.sync().unwrap();
        assert!(wal.count_pending(), "the count of 5..=6 is not on disk yet");
        let path = wal.segment_paths().pop().unwrap();
        drop(wal);
        fs.crash(CrashMode::LoseUnsynced);
        let offsets = record_offsets(&fs.contents(&path).unwrap());
        let (second, third) = (offsets[1], offsets[2]);
        if lost_write {
            fs.revert_write(&path, second, &vec![0; third - second])
                .unwrap();
        } else {
            fs.flip_bit(&path, second + 40, 5).unwrap();
        }
        let wal = sim_wal(&fs);
        assert_eq!(wal.last_index(), 1);
        let lost = wal.lost().map(|l| (l.from, l.through, l.through_term));
        assert_eq!(lost, Some((2, 6, Some(2))), "lost write: {lost_write}");
        drop(wal);
        // The claim is held: the next start reports the same range.
        let wal = sim_wal(&fs);
        let again = wal.lost().map(|l| (l.from, l.through, l.through_term));
        assert_eq!(again, lost);
    }
}

/// As above, with the damage in a sealed segment and the newest batch, not yet counted, in
/// the next one, which the cut removes: its whole records count toward the lost range.
#[test]
fn damage_in_a_sealed_segment_claims_the_uncounted_records_of_the_next() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    // 324-byte records, 12 to a 4096-byte segment: 1..=12 fill the first.
    wal.append(&records(1..=14, &payload)).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    let newest = records_in_term(15..=16, 3, &payload);
    wal.append(&newest).unwrap();
    wal.sync().unwrap();
    let paths = wal.segment_paths();
    assert_eq!(paths.len(), 2, "{paths:?}");
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let fifth = record_offsets(&fs.contents(&paths[0]).unwrap())[4];
    fs.flip_bit(&paths[0], fifth + 100, 1).unwrap();
    let wal = sim_wal(&fs);
    assert_eq!(wal.last_index(), 4);
    let lost = wal.lost().map(|l| (l.from, l.through, l.through_term));
    assert_eq!(lost, Some((5, 16, Some(3))));
}

/// SIM_FINDINGS 50: a reset to a snapshot that ends inside a lost range keeps the claim of
/// the rest of it on disk at once: a crash before anything is appended to the new segment
/// must not make the next start forget that range (the cluster simulator's seed 898).
#[test]
fn a_reset_inside_a_lost_range_keeps_the_claim_across_a_crash() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    wal.append(&records(1..=6, &payload)).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    let path = wal.segment_paths().pop().unwrap();
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let fourth = record_offsets(&fs.contents(&path).unwrap())[3];
    fs.flip_bit(&path, fourth + 50, 2).unwrap();
    let mut wal = sim_wal(&fs);
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), Some((4, 6)));
    // A snapshot through 5 arrives: the log restarts at 6, which is still lost.
    wal.reset(6).unwrap();
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let wal = sim_wal(&fs);
    assert_eq!(wal.last_index(), 5);
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), Some((6, 6)));
}

/// After an interrupted truncation, the count the header held before it (records the
/// truncation was removing) is not carried as a claim: records appended after the cut, and
/// a power loss, must not make the next start report the removed indexes lost (the storage
/// simulation's seed 5, once it checked that no start reports a false loss).
#[test]
fn an_interrupted_truncation_leaves_no_claim_on_the_removed_records() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    wal.append(&records(1..=12, &payload)).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    fs.fail_nth_sync(2); // the marker is durable, the zeroing is not
    assert!(wal.truncate_from(8).is_err());
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let mut wal = sim_wal(&fs);
    assert_eq!((wal.last_index(), wal.lost()), (7, None));
    let more = records_in_term(8..=9, 2, &payload);
    wal.append(&more).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let wal = sim_wal(&fs);
    assert_eq!(wal.last_index(), 9);
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), None);
}

/// A truncation whose sync failed lowered the header's count in the page cache only; a
/// process kill keeps it, and the start that finishes the truncation must make that count
/// durable with the zeroes, or a power loss right after it brings back the older count,
/// which claims the removed records (the storage simulation's seed 146).
#[test]
fn a_finished_truncation_makes_the_lowered_count_durable() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let mut wal = sim_wal(&fs);
    wal.append(&records(1..=12, &payload)).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    fs.fail_nth_sync(2); // the marker is durable, the zeroing and the lowered count are not
    assert!(wal.truncate_from(8).is_err());
    drop(wal);
    fs.crash(CrashMode::KeepUnsynced);
    let wal = sim_wal(&fs);
    assert_eq!((wal.last_index(), wal.lost()), (7, None));
    drop(wal);
    fs.crash(CrashMode::LoseUnsynced);
    let wal = sim_wal(&fs);
    assert_eq!(wal.last_index(), 7);
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), None);
}

/// An unreadable sector inside a synced segment (a read fails with EIO) does not kill the
/// start: a mapped read of it would raise SIGBUS, so the segment is read with positional
/// reads first and the unreadable page is rewritten with zeroes, which recovery then reports
/// as synced records lost from the first record on that page (OPERATIONS.md §7).
#[test]
fn an_unreadable_sector_mid_segment_is_rewritten_and_reported_lost() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let options = || WalOptions {
        segment_bytes: 64 * 1024,
        fs: Arc::new(fs.clone()),
    };
    let mut wal = Wal::open(Path::new("/wal"), options()).unwrap();
    wal.append(&records(1..=40, &payload)).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    let path = wal.segment_paths().pop().unwrap();
    drop(wal);
    let offsets = record_offsets(&fs.contents(&path).unwrap());
    // A few bytes inside record 20 become unreadable; the page holding them is lost whole.
    let at = offsets[19] + 40;
    fs.make_unreadable(&path, at, 8).unwrap();
    let page = (at / 4096 * 4096, at / 4096 * 4096 + 4096);
    let first_lost = 1 + offsets
        .iter()
        .position(|&o| o + 324 > page.0)
        .expect("a record on the page") as u64;
    assert!(first_lost > 1 && first_lost <= 20, "{first_lost}");

    let wal = Wal::open(Path::new("/wal"), options()).unwrap();
    assert_eq!(wal.last_index(), first_lost - 1);
    let lost = wal.lost().map(|l| (l.from, l.through));
    assert_eq!(lost, Some((first_lost, 40)));
    // The page was rewritten (readable again, zeroes), and the claim holds at the next start.
    let bytes = fs.contents(&path).unwrap();
    assert!(bytes[page.0..page.1].iter().all(|&b| b == 0));
    drop(wal);
    let wal = Wal::open(Path::new("/wal"), options()).unwrap();
    assert_eq!(wal.lost().map(|l| (l.from, l.through)), lost);
}

/// An unreadable first page (the header and its synced count) refuses the start with a
/// message that says so, and writes nothing: which entries were synced there is unknown.
#[test]
fn an_unreadable_segment_header_refuses_the_start_and_says_why() {
    let payload = vec![7u8; 300];
    let fs = SimFs::new();
    let options = || WalOptions {
        segment_bytes: 64 * 1024,
        fs: Arc::new(fs.clone()),
    };
    let mut wal = Wal::open(Path::new("/wal"), options()).unwrap();
    wal.append(&records(1..=20, &payload)).unwrap();
    wal.sync().unwrap();
    wal.confirm().unwrap();
    let path = wal.segment_paths().pop().unwrap();
    drop(wal);
    let before = fs.contents(&path).unwrap();
    fs.make_unreadable(&path, 100, 8).unwrap();
    let err = Wal::open(Path::new("/wal"), options()).unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let message = err.to_string();
    assert!(message.contains("cannot be read"), "{message}");
    assert!(message.contains("replace this node"), "{message}");
    assert_eq!(fs.contents(&path).unwrap(), before, "nothing written");
}
