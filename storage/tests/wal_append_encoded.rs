//! `Wal::append_encoded`: records encoded elsewhere (a leader's, received by a follower) are
//! stored byte for byte after their framing and index are checked; badly framed or misplaced
//! ones are refused with the reason and leave the log unchanged.

use rcraft_storage::{Error, Record, Wal, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        ..WalOptions::default()
    }
}

/// A "leader" WAL holding records `1..=count` (40-byte payloads), and its records' bytes.
fn leader_records(dir: &std::path::Path, count: u64) -> Vec<Vec<u8>> {
    let mut wal = Wal::open(dir, options()).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=count).map(|i| vec![i as u8; 40]).collect();
    let batch: Vec<Record<'_>> = payloads
        .iter()
        .zip(1..)
        .map(|(payload, index)| Record {
            index,
            term: 2,
            payload,
        })
        .collect();
    wal.append(&batch).unwrap();
    wal.sync().unwrap();
    let records = wal.read(1..count + 1).unwrap();
    records.iter().map(|r| r.encoded.to_vec()).collect()
}

fn held(wal: &Wal) -> Vec<(u64, u64, Vec<u8>)> {
    if wal.last_index() < wal.first_index() {
        return Vec::new();
    }
    let records = wal.read(wal.first_index()..wal.last_index() + 1).unwrap();
    records
        .iter()
        .map(|r| (r.index, r.term, r.encoded.to_vec()))
        .collect()
}

#[test]
fn encoded_records_are_stored_as_they_are_and_survive_a_reopen() {
    let leader = tempfile::tempdir().unwrap();
    let follower = tempfile::tempdir().unwrap();
    // Enough records to fill several 4 KiB segments: the batch rolls segments as `append` does.
    let records = leader_records(leader.path(), 300);
    let mut wal = Wal::open(follower.path(), options()).unwrap();
    let first: Vec<&[u8]> = records[..150].iter().map(Vec::as_slice).collect();
    let rest: Vec<&[u8]> = records[150..].iter().map(Vec::as_slice).collect();
    wal.append_encoded(&first).unwrap();
    wal.append_encoded(&rest).unwrap();
    wal.sync().unwrap();
    assert!(wal.segment_paths().len() > 1);
    drop(wal);
    let wal = Wal::open(follower.path(), options()).unwrap();
    let stored = held(&wal);
    assert_eq!(stored.len(), 300);
    for (k, (index, term, bytes)) in stored.into_iter().enumerate() {
        assert_eq!((index, term), (k as u64 + 1, 2));
        assert_eq!(bytes, records[k], "record {index} stored byte for byte");
    }
}

#[test]
fn damaged_or_misplaced_records_are_refused_and_nothing_is_written() {
    let leader = tempfile::tempdir().unwrap();
    let follower = tempfile::tempdir().unwrap();
    let records = leader_records(leader.path(), 4);
    let mut wal = Wal::open(follower.path(), options()).unwrap();
    wal.append_encoded(&[&records[0]]).unwrap();
    let before = held(&wal);

    let refused = |wal: &mut Wal, batch: &[&[u8]], expect: &str| match wal.append_encoded(batch) {
        Err(Error::InvalidArgument(why)) => {
            assert!(why.contains(expect), "{why:?} should name {expect:?}")
        }
        other => panic!("expected a refusal naming {expect:?}, got {other:?}"),
    };
    // A length field cut short in the second record of a batch: the first is not written
    // either. (The checksum is the caller's to vouch for: `rcraft_wire::record` checks it when
    // records arrive, and debug builds check it again here.)
    let mut short = records[2].clone();
    short[0..4].copy_from_slice(&20u32.to_le_bytes());
    refused(
        &mut wal,
        &[&records[1], &short],
        "record length 20 out of range",
    );
    // Truncated: the length field promises more than the bytes hold.
    refused(&mut wal, &[&records[1][..50]], "out of range");
    // Extra bytes after the record.
    let mut longer = records[1].clone();
    longer.push(0);
    refused(&mut wal, &[&longer], "length field says");
    // A good record at the wrong place (index 3 where 2 comes next).
    refused(&mut wal, &[&records[2]], "carries index 3");
    // Nothing at all.
    refused(&mut wal, &[&[]], "truncated record of 0 bytes");
    assert_eq!(held(&wal), before, "no refused batch changed the log");

    // The WAL keeps running after refusals.
    wal.append_encoded(&[&records[1], &records[2], &records[3]])
        .unwrap();
    wal.sync().unwrap();
    assert_eq!(held(&wal).len(), 4);
}
