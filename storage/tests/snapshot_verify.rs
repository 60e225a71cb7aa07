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
