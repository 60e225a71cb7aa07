//! Checking a complete snapshot file's data against its footer, as a leader does before it
//! sends the file: the whole-file check (`verify_data`), the running check over chunks read in
//! sequence (`check_data_crc32c`), and rewriting a damaged snapshot under the same name.

use rcraft_storage::{Error, Fs, RealFs, SnapshotFileMeta, SnapshotInfo, SnapshotStore};
use std::io::Write;
use std::sync::Arc;

const CHUNK: usize = 4096;

fn meta() -> SnapshotFileMeta {
    SnapshotFileMeta {
        index: 40,
        term: 3,
        membership: vec![9, 8, 7],
        membership_entry: Some((31, 2)),
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 241) as u8 ^ 0x3c).collect()
}

fn write(store: &SnapshotStore, bytes: &[u8]) -> SnapshotInfo {
    let mut writer = store.begin(meta()).unwrap();
    writer.write_all(bytes).unwrap();
    writer.finish().unwrap()
}

/// Flips one bit of the data byte at data offset `at` in the file on disk.
fn flip_data_byte(info: &SnapshotInfo, at: u64) {
    let mut bytes = std::fs::read(&info.path).unwrap();
    let header = bytes.len() as u64 - info.data_bytes - 24;
    bytes[(header + at) as usize] ^= 0x04;
    std::fs::write(&info.path, &bytes).unwrap();
}

/// The CRC-32C a sender keeps over chunks read in sequence from `from` to the end.
fn running_crc(store: &SnapshotStore, info: &SnapshotInfo, from: u64) -> u32 {
    let mut crc = 0;
    let mut offset = from;
    while offset < info.data_bytes {
        let chunk = store.read_chunk(info, offset, CHUNK).unwrap();
        crc = crc32c::crc32c_append(crc, &chunk);
        offset += chunk.len() as u64;
    }
    crc
}

fn assert_names_file(result: rcraft_storage::Result<()>, info: &SnapshotInfo) {
    match result {
        Err(Error::Corruption { file, reason, .. }) => {
            assert_eq!(file, info.path);
            assert!(reason.contains("footer says"), "{reason}");
        }
        other => panic!(
            "expected corruption naming {}, got {other:?}",
            info.path.display()
        ),
    }
}

fn open(dir: &std::path::Path) -> SnapshotStore {
    let fs: Arc<dyn Fs> = Arc::new(RealFs::default());
    SnapshotStore::open(fs, dir).unwrap()
}

#[test]
fn a_good_file_passes_both_checks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = write(&store, &data(10 * CHUNK + 17));
    store.verify_data(&info).unwrap();
    info.check_data_crc32c(running_crc(&store, &info, 0))
        .unwrap();
}

#[test]
fn a_damaged_data_byte_is_found_by_both_checks_while_the_file_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = write(&store, &data(10 * CHUNK + 17));
    flip_data_byte(&info, 5 * CHUNK as u64 + 100);
    // Header and footer are intact: the file is still the current snapshot, and every chunk
    // reads fine (a chunk's own checksum would be computed over the damaged bytes).
    assert_eq!(store.latest().unwrap(), Some(info.clone()));
    assert_names_file(store.verify_data(&info), &info);
    assert_names_file(info.check_data_crc32c(running_crc(&store, &info, 0)), &info);
}

#[test]
fn damage_before_a_resumed_transfer_is_found_only_by_the_whole_file_check() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let info = write(&store, &data(10 * CHUNK));
    flip_data_byte(&info, 10);
    // A transfer resumed at chunk 3 reads only intact bytes: a running CRC over them says
    // nothing about the file (it is not the footer's value even for a good file).
    let resumed = running_crc(&store, &info, 3 * CHUNK as u64);
    let intact_tail = crc32c::crc32c(&data(10 * CHUNK)[3 * CHUNK..]);
    assert_eq!(resumed, intact_tail);
    assert_names_file(store.verify_data(&info), &info);
}

#[test]
fn a_damaged_snapshot_is_replaced_by_one_written_again_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let other_handle = store.clone();
    let bytes = data(3 * CHUNK);
    let info = write(&store, &bytes);
    let before = other_handle.generation();
    flip_data_byte(&info, 2 * CHUNK as u64);
    assert!(store.verify_data(&info).is_err());

    let rewritten = write(&store, &bytes);
    assert_eq!(
        rewritten, info,
        "same name, same index and term, same bytes"
    );
    assert!(
        other_handle.generation() > before,
        "every handle sees that the file under that name changed"
    );
    store.verify_data(&rewritten).unwrap();
    assert_eq!(store.latest().unwrap(), Some(rewritten));
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "only the rewritten file is left: {names:?}");
}

#[test]
fn a_snapshot_file_outside_the_store_is_written_atomically_and_read_back_checked() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn Fs> = Arc::new(RealFs::default());
    let path = dir.path().join("backup.snap");
    let bytes = data(3 * CHUNK + 5);
    let mut writer = rcraft_storage::create_snapshot_file(fs.clone(), &path, meta()).unwrap();
    writer.write_all(&bytes).unwrap();
    assert_eq!(writer.data_bytes(), bytes.len() as u64);
    assert_eq!(writer.data_crc32c(), crc32c::crc32c(&bytes));
    assert!(!path.exists(), "nothing under the final name before finish");
    let info = writer.finish().unwrap();
    assert_eq!(
        (info.path.as_path(), info.meta.clone()),
        (path.as_path(), meta())
    );
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "the temporary file was renamed");

    let mut reader = rcraft_storage::open_snapshot_file(fs.as_ref(), &path).unwrap();
    assert_eq!(reader.info().meta, meta());
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut back).unwrap();
    assert_eq!(back, bytes);

    // A flipped data bit fails at the end of the data; a damaged header at open.
    flip_data_byte(&info, 100);
    let mut reader = rcraft_storage::open_snapshot_file(fs.as_ref(), &path).unwrap();
    let e = std::io::Read::read_to_end(&mut reader, &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    let mut raw = std::fs::read(&path).unwrap();
    raw[20] ^= 1;
    std::fs::write(&path, &raw).unwrap();
    match rcraft_storage::open_snapshot_file(fs.as_ref(), &path) {
        Err(Error::Corruption { reason, .. }) => assert!(reason.contains("header"), "{reason}"),
        other => panic!("expected a corruption, got {other:?}"),
    }
}

/// A snapshot file as rcraft wrote it before the configuration entry point (version 1: a
/// 36-byte fixed header), for `meta` and `bytes`.
fn version_1_file(meta: &SnapshotFileMeta, bytes: &[u8]) -> Vec<u8> {
    let mut file = b"RCSNAP01".to_vec();
    file.extend_from_slice(&1u32.to_le_bytes());
    file.extend_from_slice(&(meta.membership.len() as u32).to_le_bytes());
    file.extend_from_slice(&meta.index.to_le_bytes());
    file.extend_from_slice(&meta.term.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&file), &meta.membership);
    file.extend_from_slice(&crc.to_le_bytes());
    file.extend_from_slice(&meta.membership);
    file.extend_from_slice(bytes);
    let mut footer = (bytes.len() as u64).to_le_bytes().to_vec();
    footer.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    let footer_crc = crc32c::crc32c(&footer);
    footer.extend_from_slice(&footer_crc.to_le_bytes());
    footer.extend_from_slice(b"RCSNAPOK");
    file.extend_from_slice(&footer);
    file
}

/// The configuration entry point (index, term) is written in the header and read back, by
/// the store, a reader and a received snapshot alike; an unknown one stays unknown, and the
/// value that stands for unknown cannot be written as a known one.
#[test]
fn the_configuration_entry_point_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let bytes = data(2 * CHUNK + 9);
    let info = write(&store, &bytes);
    assert_eq!(info.meta.membership_entry, Some((31, 2)));
    let reopened = open(dir.path()).latest().unwrap().expect("a snapshot");
    assert_eq!(reopened.meta, meta());
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut store.open_reader(&reopened).unwrap(), &mut back).unwrap();
    assert_eq!(back, bytes);

    let unknown = SnapshotFileMeta {
        index: 50,
        membership_entry: None,
        ..meta()
    };
    let mut writer = store.begin(unknown.clone()).unwrap();
    writer.write_all(&bytes).unwrap();
    writer.finish().unwrap();
    let latest = open(dir.path()).latest().unwrap().expect("a snapshot");
    assert_eq!(latest.meta, unknown);

    let received = SnapshotFileMeta {
        index: 60,
        membership_entry: Some((0, 0)),
        ..meta()
    };
    let mut partial = store
        .resume_or_start(received.clone(), crc32c::crc32c(&bytes))
        .unwrap();
    partial
        .write_chunk(0, &bytes, crc32c::crc32c(&bytes))
        .unwrap();
    assert!(store.partial_is_for(&received));
    match partial
        .finish(bytes.len() as u64, crc32c::crc32c(&bytes))
        .unwrap()
    {
        rcraft_storage::Finish::Installed(info) => assert_eq!(info.meta, received),
        rcraft_storage::Finish::Continue(_) => panic!("the whole data was written"),
    }
    assert_eq!(open(dir.path()).latest().unwrap().unwrap().meta, received);

    let reserved = SnapshotFileMeta {
        membership_entry: Some((u64::MAX, 3)),
        ..meta()
    };
    match store.begin(reserved) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("reserved"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A snapshot file of an older rcraft (version 1) still opens, with the configuration entry
/// point unknown, and its data is read and checked where its shorter header ends; a partial
/// file of version 1 is not resumed (its data starts elsewhere) but received again.
#[test]
fn a_version_1_snapshot_file_still_opens_with_the_entry_point_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let old = SnapshotFileMeta {
        membership_entry: None,
        ..meta()
    };
    let bytes = data(3 * CHUNK + 1);
    let name = format!("snap-{:020}-{:020}.snap", old.index, old.term);
    std::fs::write(dir.path().join(name), version_1_file(&old, &bytes)).unwrap();
    let store = open(dir.path());
    let info = store.latest().unwrap().expect("the old snapshot opens");
    assert_eq!(info.meta, old);
    assert_eq!(info.data_bytes, bytes.len() as u64);
    store.verify_data(&info).unwrap();
    info.check_data_crc32c(running_crc(&store, &info, 0))
        .unwrap();
    assert_eq!(store.read_chunk(&info, 0, 5).unwrap(), bytes[..5]);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut store.open_reader(&info).unwrap(), &mut back).unwrap();
    assert_eq!(back, bytes);

    // The same file as a partial one (header and data, no footer).
    let mut partial_bytes = version_1_file(&old, &bytes);
    partial_bytes.truncate(partial_bytes.len() - 24);
    std::fs::write(dir.path().join("partial.snap.recv"), partial_bytes).unwrap();
    assert!(!store.partial_is_for(&old));
    let partial = store
        .resume_or_start(old.clone(), crc32c::crc32c(&bytes))
        .unwrap();
    assert_eq!(partial.next_offset(), 0, "received again from the start");
}
