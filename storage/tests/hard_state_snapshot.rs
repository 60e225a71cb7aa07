//! Hard-state and snapshot-file tests: round trips, torn saves, damage detection, fail-stop,
//! resumable snapshot reception.

use rcraft_storage::{
    CrashMode, Error, Finish, Fs, HardState, HardStateStore, PartialSnapshot, RealFs, SimFs,
    SnapshotFileMeta, SnapshotInfo, SnapshotStore,
};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

fn real() -> Arc<dyn Fs> {
    Arc::new(RealFs::default())
}

#[test]
fn hard_state_round_trips_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hardstate");
    let mut store = HardStateStore::open(real(), &path).unwrap();
    assert_eq!(store.current(), HardState::default());
    for term in 1..=5 {
        let state = HardState {
            term,
            vote: (term % 2 == 0).then_some(term + 10),
            commit: term * 3,
            votes_unknown: false,
        };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
    }
    drop(store);
    let store = HardStateStore::open(real(), &path).unwrap();
    assert_eq!(
        store.current(),
        HardState {
            term: 5,
            vote: None,
            commit: 15,
            votes_unknown: false,
        }
    );
}

#[test]
fn torn_hard_state_save_keeps_the_previous_state() {
    let path = Path::new("/data/hardstate");
    let mut outcomes = [0; 2];
    for seed in 0..32 {
        let fs = SimFs::new();
        // The node's data directory exists durably (the WAL, opened first, creates it).
        fs.create_dir_all(Path::new("/data")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let mut store = HardStateStore::open(Arc::new(fs.clone()), path).unwrap();
        let old = HardState {
            term: 7,
            vote: Some(2),
            commit: 40,
            votes_unknown: false,
        };
        store.save(&old).unwrap();
        let new = HardState {
            term: 8,
            vote: Some(3),
            commit: 41,
            votes_unknown: false,
        };
        fs.fail_nth_sync(1); // the save's data reaches the page cache but is never synced
        assert!(store.save(&new).is_err());
        assert!(
            matches!(store.save(&new), Err(Error::Stopped { .. })),
            "fail-stop"
        );
        drop(store);
        fs.crash(CrashMode::TearUnsynced { seed });
        let store = HardStateStore::open(Arc::new(fs.clone()), path).unwrap();
        let state = store.current();
        // A save that never returned Ok may or may not have landed, but never half of it.
        // A torn slot is damage the node cannot tell from rot: the votes are then unknown.
        assert_eq!(state.votes_unknown, store.damage().is_some(), "seed {seed}");
        let read = HardState {
            votes_unknown: false,
            ..state
        };
        assert!(read == old || read == new, "seed {seed}: {state:?}");
        outcomes[usize::from(read == new)] += 1;
    }
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "both outcomes occur: {outcomes:?}"
    );
}

/// Issue 15: a file with no valid slot (both damaged, or cut short) used to stop the node.
/// It opens with the votes unknown and the lowest state (term 0); the mark is saved in both
/// slots, so it survives a restart until a save clears it.
#[test]
fn hard_state_with_both_slots_damaged_opens_with_the_votes_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hardstate");
    let mut store = HardStateStore::open(real(), &path).unwrap();
    assert_eq!(store.damage(), None);
    assert!(store.created());
    store
        .save(&HardState {
            term: 2,
            vote: Some(1),
            commit: 0,
            votes_unknown: false,
        })
        .unwrap();
    drop(store);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 1;
    bytes[512 + 20] ^= 1;
    let unknown = HardState {
        votes_unknown: true,
        ..HardState::default()
    };
    for damaged in [bytes.clone(), bytes[..100].to_vec(), vec![0; 1024]] {
        std::fs::write(&path, &damaged).unwrap();
        let store = HardStateStore::open(real(), &path).unwrap();
        assert_eq!(store.current(), unknown);
        assert!(!store.created());
        let why = store.damage().unwrap().to_string();
        assert!(why.contains("no slot is valid"), "{why}");
        drop(store);
        // Reopened: the file is whole again, and still says the votes are unknown.
        let mut store = HardStateStore::open(real(), &path).unwrap();
        assert_eq!((store.current(), store.damage()), (unknown, None));
        let known = HardState {
            term: 9,
            ..HardState::default()
        };
        store.save(&known).unwrap();
        drop(store);
        assert_eq!(
            HardStateStore::open(real(), &path).unwrap().current(),
            known
        );
    }
}

/// Issue 15: bit rot in the slot holding the newest state used to fall back to the previous
/// state (and the node could vote twice in a term). Every save writes both slots, so the
/// other slot usually holds the same state; but rot there cannot be told from rot after a
/// lost write left the other slot older, so the state read is only a lower bound: it opens
/// with the votes unknown, and both slots are rewritten.
#[test]
fn a_damaged_slot_marks_the_votes_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hardstate");
    let voted = HardState {
        term: 5,
        vote: Some(3),
        commit: 9,
        votes_unknown: false,
    };
    for slot in [0usize, 1] {
        for byte in [0usize, 8, 16, 24, 40, 41, 44] {
            let mut store = HardStateStore::open(real(), &path).unwrap();
            store
                .save(&HardState {
                    term: 4,
                    vote: Some(1),
                    commit: 8,
                    votes_unknown: false,
                })
                .unwrap();
            store.save(&voted).unwrap();
            drop(store);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[slot * 512 + byte] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            let store = HardStateStore::open(real(), &path).unwrap();
            let why = store.damage().unwrap().to_string();
            assert!(why.contains(&format!("slot {slot}")), "{why}");
            assert!(why.contains("holds term 5"), "{why}");
            assert_eq!(
                store.current(),
                HardState {
                    votes_unknown: true,
                    ..voted
                },
                "slot {slot} byte {byte}"
            );
            drop(store);
            let healed = std::fs::read(&path).unwrap();
            assert_eq!(healed[..512], healed[512..], "both slots rewritten");
        }
    }
}

/// A file written by an older rcraft (one slot per save, flags byte 0) still opens, with its
/// newest state, and is rewritten mirrored.
#[test]
fn a_hard_state_file_of_an_older_rcraft_opens_and_is_mirrored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hardstate");
    let old_slot = |sequence: u64, term: u64, vote: u64| {
        let mut slot = vec![0u8; 512];
        slot[0..8].copy_from_slice(b"RCHRDST1");
        slot[8..16].copy_from_slice(&sequence.to_le_bytes());
        slot[16..24].copy_from_slice(&term.to_le_bytes());
        slot[24..32].copy_from_slice(&vote.to_le_bytes());
        slot[40] = 1;
        let crc = crc32c::crc32c(&slot[..44]);
        slot[44..48].copy_from_slice(&crc.to_le_bytes());
        slot
    };
    let mut bytes = old_slot(4, 3, 2);
    bytes.extend(old_slot(3, 2, 1));
    std::fs::write(&path, &bytes).unwrap();
    let store = HardStateStore::open(real(), &path).unwrap();
    assert_eq!(store.damage(), None);
    let expected = HardState {
        term: 3,
        vote: Some(2),
        commit: 0,
        votes_unknown: false,
    };
    assert_eq!(store.current(), expected);
    drop(store);
    let rewritten = std::fs::read(&path).unwrap();
    assert_eq!(rewritten[..512], rewritten[512..]);
    assert_eq!(
        HardStateStore::open(real(), &path).unwrap().current(),
        expected
    );
}

/// The data checksum a sender announces in the resumable-transfer tests (any fixed value: the
/// partial file is tied to it, and `finish` is given the real one).
const DATA_CRC: u32 = 0x5eed_c0de;

fn meta(index: u64) -> SnapshotFileMeta {
    SnapshotFileMeta {
        index,
        term: index / 10 + 1,
        membership: vec![1, 2, 3, index as u8],
        membership_entry: Some((index / 2, index / 20 + 1)),
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[test]
fn snapshot_write_read_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    assert_eq!(store.latest().unwrap(), None);
    let first = data(700_000, 1);
    let mut writer = store.begin(meta(10)).unwrap();
    for chunk in first.chunks(9_999) {
        writer.write_all(chunk).unwrap();
    }
    let info = writer.finish().unwrap();
    assert_eq!(store.latest().unwrap(), Some(info.clone()));
    assert_eq!(info.data_bytes, first.len() as u64);
    let mut read_back = Vec::new();
    store
        .open_reader(&info)
        .unwrap()
        .read_to_end(&mut read_back)
        .unwrap();
    assert_eq!(read_back, first);
    let chunk = store.read_chunk(&info, 1000, 500).unwrap();
    assert_eq!(chunk, first[1000..1500]);
    assert!(
        store
            .read_chunk(&info, first.len() as u64, 10)
            .unwrap()
            .is_empty()
    );

    let mut writer = store.begin(meta(20)).unwrap();
    writer.write_all(&data(10, 2)).unwrap();
    let newer = writer.finish().unwrap();
    assert_eq!(store.latest().unwrap(), Some(newer));
    assert!(
        !info.path.exists(),
        "the older snapshot is removed once the newer is durable"
    );
}

/// Once the caller says which snapshots it uses, a snapshot it sends outlives newer ones
/// until it no longer lists it, and stays readable by its point meanwhile; one made current
/// that it has not heard of yet stays too (issue 14: a transfer goes on with the snapshot it
/// started with).
#[test]
fn snapshots_in_use_outlive_newer_ones_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    // Another handle on the directory, as the apply thread holds one.
    let other = store.clone();
    let write = |index: u64, seed: u8| {
        let mut writer = other.begin(meta(index)).unwrap();
        writer.write_all(&data(1_000, seed)).unwrap();
        writer.finish().unwrap()
    };
    let sent = write(10, 1);
    store.keep(&[(10, 2)]).unwrap();
    let middle = write(20, 2);
    let newest = write(30, 3);
    assert_eq!(store.latest().unwrap(), Some(newest.clone()));
    assert!(
        sent.path.exists() && middle.path.exists(),
        "nothing removed unasked"
    );
    assert_eq!(store.find(10, 2).unwrap(), Some(sent.clone()));
    assert_eq!(
        store.read_chunk(&sent, 100, 10).unwrap(),
        data(1_000, 1)[100..110]
    );
    // Current is now 20, still sending 10: nothing goes; 30 is above what is listed.
    store.keep(&[(10, 2), (20, 3)]).unwrap();
    assert!(sent.path.exists() && middle.path.exists() && newest.path.exists());
    // Current 30, nothing sent: the older ones go.
    store.keep(&[(30, 4)]).unwrap();
    assert!(!sent.path.exists() && !middle.path.exists());
    assert_eq!(store.find(10, 2).unwrap(), None);
    assert_eq!(store.find(30, 4).unwrap(), Some(newest));
}

#[test]
fn a_snapshot_directory_created_by_open_survives_power_loss() {
    // Neither the data directory nor its snapshot directory exists yet: `open` creates both
    // and syncs each one's parent, or a power loss would take them, and every snapshot
    // finished in them, away.
    let fs = SimFs::new();
    let dir = Path::new("/data/snapshots");
    let store = SnapshotStore::open(Arc::new(fs.clone()), dir).unwrap();
    let mut writer = store.begin(meta(10)).unwrap();
    writer.write_all(&data(100, 1)).unwrap();
    let info = writer.finish().unwrap();
    drop(store);
    fs.crash(CrashMode::LoseUnsynced);
    let store = SnapshotStore::open(Arc::new(fs.clone()), dir).unwrap();
    assert_eq!(store.latest().unwrap(), Some(info));
}

#[test]
fn unfinished_snapshot_is_invisible_and_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let mut writer = store.begin(meta(5)).unwrap();
    writer.write_all(b"half").unwrap();
    writer.flush().unwrap();
    drop(writer);
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    assert_eq!(store.latest().unwrap(), None);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn damaged_snapshot_files_are_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let mut writer = store.begin(meta(10)).unwrap();
    writer.write_all(&data(5000, 3)).unwrap();
    let info = writer.finish().unwrap();
    let original = std::fs::read(&info.path).unwrap();
    let len = original.len();
    // Header, membership, footer: checked by `latest`.
    for byte in [
        0,
        9,
        13,
        17,
        25,
        33,
        37,
        len - 24,
        len - 13,
        len - 9,
        len - 1,
    ] {
        let mut bytes = original.clone();
        bytes[byte] ^= 0x10;
        std::fs::write(&info.path, &bytes).unwrap();
        match store.latest() {
            Err(Error::Corruption { file, .. }) => assert_eq!(file, info.path, "byte {byte}"),
            other => panic!("byte {byte}: expected corruption, got {other:?}"),
        }
    }
    // Data: checked while streaming.
    let mut bytes = original.clone();
    bytes[100] ^= 0x01;
    std::fs::write(&info.path, &bytes).unwrap();
    let info = store.latest().unwrap().unwrap();
    let err = store
        .open_reader(&info)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(err.to_string().contains(&info.path.display().to_string()));
    // Truncated file.
    std::fs::write(&info.path, &original[..len - 30]).unwrap();
    assert!(store.latest().unwrap_err().is_corruption());
}

/// Writes `source[from..to]` as one chunk with its correct checksum.
fn put(partial: &mut PartialSnapshot, source: &[u8], from: usize, to: usize) -> u64 {
    let chunk = &source[from..to];
    partial
        .write_chunk(from as u64, chunk, crc32c::crc32c(chunk))
        .unwrap()
}

fn installed(finish: Finish) -> SnapshotInfo {
    match finish {
        Finish::Installed(info) => info,
        Finish::Continue(partial) => panic!("not installed; continue at {}", partial.next_offset()),
    }
}

fn continued(finish: Finish) -> PartialSnapshot {
    match finish {
        Finish::Installed(info) => panic!("installed {info:?}"),
        Finish::Continue(partial) => partial,
    }
}

#[test]
fn partial_snapshot_resumes_after_restart_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let source = data(100_000, 4);
    let crc = crc32c::crc32c(&source);
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    assert_eq!(partial.next_offset(), 0);
    assert_eq!(put(&mut partial, &source, 0, 30_000), 30_000);
    assert_eq!(put(&mut partial, &source, 10_000, 20_000), 30_000);
    let tail = &source[40_000..];
    assert!(matches!(
        partial.write_chunk(40_000, tail, crc32c::crc32c(tail)),
        Err(Error::InvalidArgument(_))
    ));
    drop(partial);

    // Restart: same snapshot resumes where it stopped; overlapping chunks are fine.
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    assert_eq!(partial.next_offset(), 30_000);
    put(&mut partial, &source, 25_000, 70_000);
    put(&mut partial, &source, 70_000, 100_000);
    let info = installed(partial.finish(source.len() as u64, crc).unwrap());
    assert_eq!(store.latest().unwrap(), Some(info.clone()));
    let mut read_back = Vec::new();
    store
        .open_reader(&info)
        .unwrap()
        .read_to_end(&mut read_back)
        .unwrap();
    assert_eq!(read_back, source);
    let names = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(
        names, 1,
        "only the snapshot is left, no partial file or chunk table"
    );
}

#[test]
fn a_partial_file_is_not_resumed_for_other_bytes_of_the_same_snapshot() {
    // Two nodes may serialize the same snapshot point differently: a sender announcing another
    // data checksum must not continue bytes received from the first.
    let dir = tempfile::tempdir().unwrap();
    let first = data(50_000, 4);
    let second = data(20_000, 9);
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    assert_eq!(put(&mut partial, &first, 0, 30_000), 30_000);
    drop(partial);

    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let other_crc = crc32c::crc32c(&second);
    let mut partial = store.resume_or_start(meta(30), other_crc).unwrap();
    assert_eq!(partial.next_offset(), 0, "resumed bytes of another version");
    assert_eq!(put(&mut partial, &second, 0, 20_000), 20_000);
    let info = installed(partial.finish(second.len() as u64, other_crc).unwrap());
    let mut read_back = Vec::new();
    store
        .open_reader(&info)
        .unwrap()
        .read_to_end(&mut read_back)
        .unwrap();
    assert_eq!(read_back, second);
}

#[test]
fn partial_snapshot_for_another_snapshot_restarts_and_bad_data_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(real(), dir.path()).unwrap();
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    put(&mut partial, b"old transfer", 0, 12);
    drop(partial);
    let mut partial = store.resume_or_start(meta(40), DATA_CRC).unwrap();
    assert_eq!(partial.next_offset(), 0, "a different snapshot starts over");
    put(&mut partial, b"some bytes", 0, 10);
    // Every chunk is as the sender sent it, yet the whole differs: start over.
    let wrong_crc = crc32c::crc32c(b"other bytes");
    let partial = continued(partial.finish(10, wrong_crc).unwrap());
    assert_eq!(partial.next_offset(), 0);
    assert_eq!(store.latest().unwrap(), None);
    drop(partial);
    let partial = store.resume_or_start(meta(40), DATA_CRC).unwrap();
    assert_eq!(partial.next_offset(), 0, "a refused transfer starts over");
}

#[test]
fn a_chunk_that_fails_its_checksum_is_refused_and_not_written() {
    let fs = SimFs::new();
    let store = SnapshotStore::open(Arc::new(fs.clone()), Path::new("/snap")).unwrap();
    let source = data(3000, 9);
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    put(&mut partial, &source, 0, 1000);
    let mut damaged = source[1000..2000].to_vec();
    damaged[10] ^= 1;
    let crc = crc32c::crc32c(&source[1000..2000]);
    let err = partial.write_chunk(1000, &damaged, crc).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(why) if why.contains("checksum")),
        "{err}"
    );
    assert_eq!(partial.next_offset(), 1000);
    assert_eq!(put(&mut partial, &source, 1000, 3000), 3000);
    let info = installed(partial.finish(3000, crc32c::crc32c(&source)).unwrap());
    assert_eq!(info.data_bytes, 3000);
}

/// A partial file of `source` in three 1000-byte chunks at /snap, and its header length.
fn three_chunks(fs: &SimFs, source: &[u8]) -> (SnapshotStore, u64) {
    let store = SnapshotStore::open(Arc::new(fs.clone()), Path::new("/snap")).unwrap();
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    for i in 0..3 {
        put(&mut partial, source, i * 1000, (i + 1) * 1000);
    }
    let header = fs
        .contents(Path::new("/snap/partial.snap.recv"))
        .unwrap()
        .len()
        - 3000;
    (store, header as u64)
}

#[test]
fn a_damaged_middle_chunk_is_cut_off_on_resume_and_at_the_end() {
    let fs = SimFs::new();
    let source = data(4000, 2);
    let partial_path = Path::new("/snap/partial.snap.recv");

    // On resume after a crash: the data is cut where the damaged chunk starts.
    let (store, header) = three_chunks(&fs, &source);
    fs.crash(CrashMode::LoseUnsynced);
    fs.flip_bit(partial_path, (header + 1500) as usize, 3)
        .unwrap();
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    assert_eq!(
        partial.next_offset(),
        1000,
        "only the damaged chunk on is asked again"
    );
    assert_eq!(
        fs.contents(partial_path).unwrap().len() as u64,
        header + 1000
    );
    assert_eq!(put(&mut partial, &source, 1000, 4000), 4000);
    let info = installed(partial.finish(4000, crc32c::crc32c(&source)).unwrap());
    assert_eq!(info.data_bytes, 4000);

    // At the end of a transfer: the whole-file checksum fails, the chunks are re-checked.
    let fs = SimFs::new();
    let (store, header) = three_chunks(&fs, &source);
    let mut partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    fs.flip_bit(partial_path, (header + 2999) as usize, 0)
        .unwrap();
    put(&mut partial, &source, 3000, 4000);
    let mut partial = continued(partial.finish(4000, crc32c::crc32c(&source)).unwrap());
    assert_eq!(partial.next_offset(), 2000);
    put(&mut partial, &source, 2000, 4000);
    installed(partial.finish(4000, crc32c::crc32c(&source)).unwrap());
}

#[test]
fn a_damaged_chunk_table_starts_the_transfer_over() {
    let source = data(3000, 5);
    for (byte, what) in [
        (3, "magic"),
        (13, "snapshot identity"),
        (21, "header checksum"),
    ] {
        let fs = SimFs::new();
        let (store, _) = three_chunks(&fs, &source);
        let table = Path::new("/snap/partial.snap.chunks");
        fs.flip_bit(table, byte, 1).unwrap();
        let partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
        assert_eq!(partial.next_offset(), 0, "{what}");
    }
    // A damaged record: the data is trusted up to the records before it.
    let fs = SimFs::new();
    let (store, _) = three_chunks(&fs, &source);
    fs.flip_bit(Path::new("/snap/partial.snap.chunks"), 24 + 24 + 5, 1)
        .unwrap();
    let partial = store.resume_or_start(meta(30), DATA_CRC).unwrap();
    assert_eq!(partial.next_offset(), 1000);
}

/// A hard state whose save failed to sync but was still read at the next start (the write
/// stayed in the page cache) is the one the node acts on: it must survive a later power
/// loss, or the node could vote twice in a term. Found by the storage simulation (seed 0).
#[test]
fn a_hard_state_read_at_open_survives_a_later_power_loss() {
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/data")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let path = Path::new("/data/hardstate");
    let mut store = HardStateStore::open(Arc::new(fs.clone()), path).unwrap();
    let old = HardState {
        term: 7,
        vote: None,
        commit: 0,
        votes_unknown: false,
    };
    store.save(&old).unwrap();
    let new = HardState {
        term: 8,
        vote: Some(3),
        commit: 0,
        votes_unknown: false,
    };
    fs.fail_nth_sync(1);
    assert!(store.save(&new).is_err());
    drop(store);
    fs.crash(CrashMode::KeepUnsynced);
    let store = HardStateStore::open(Arc::new(fs.clone()), path).unwrap();
    assert_eq!(store.current(), new, "the unsynced save was still there");
    drop(store);
    fs.crash(CrashMode::LoseUnsynced);
    let store = HardStateStore::open(Arc::new(fs.clone()), path).unwrap();
    assert_eq!(store.current(), new, "what the node acted on is durable");
}

/// A snapshot renamed into place whose directory sync failed, seen at the next start, is
/// the one the node restores and resets its log after: its name must survive a later power
/// loss. Found by the storage simulation (seed 80).
#[test]
fn a_snapshot_seen_at_open_survives_a_later_power_loss() {
    let dir = Path::new("/data/snapshots");
    let mut failing_sync = None;
    for nth in 1..=6 {
        let fs = SimFs::new();
        let store = SnapshotStore::open(Arc::new(fs.clone()), dir).unwrap();
        let mut writer = store.begin(meta(10)).unwrap();
        writer.write_all(&data(100, 1)).unwrap();
        fs.fail_nth_sync(nth);
        match writer.finish() {
            Err(e) if e.to_string().contains("sync directory") => {
                failing_sync = Some(nth);
                drop(store);
                fs.crash(CrashMode::KeepUnsynced);
                let store = SnapshotStore::open(Arc::new(fs.clone()), dir).unwrap();
                let seen = store
                    .latest()
                    .unwrap()
                    .expect("the renamed file is visible");
                drop(store);
                fs.crash(CrashMode::LoseUnsynced);
                let store = SnapshotStore::open(Arc::new(fs.clone()), dir).unwrap();
                assert_eq!(store.latest().unwrap(), Some(seen));
                break;
            }
            _ => continue,
        }
    }
    assert!(
        failing_sync.is_some(),
        "finish syncs the directory after the rename"
    );
}
