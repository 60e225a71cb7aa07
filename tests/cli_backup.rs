//! `rcraft snapshot save FILE` and `rcraft snapshot restore FILE` through the real binary: a
//! backup taken from a live 3-node cluster while clients write, restored into three fresh
//! data dirs of a new cluster that serves every write acknowledged before the save began and
//! takes new ones; a damaged backup, a non-empty data dir and `--join` are refused with a
//! clear error and leave nothing behind. (The admin token a save needs is tested in
//! cli_security.) Real `rcraft serve` processes on 127.0.0.1; every wait is bounded;
//! processes are killed and directories removed on drop.

mod snapshot_support;

use snapshot_support::{BIN, Cluster, key, value, wait_for, write_keys};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Runs `rcraft ARGS`; returns exit code and stdout, stderr.
fn rcraft(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("RCRAFT_TOKEN_FILE")
        .output()
        .expect("rcraft runs");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `rcraft snapshot restore FILE` for node `id` of `cluster` (not started).
fn restore(cluster: &Cluster, file: &Path, id: usize) -> (i32, String, String) {
    let dir = cluster.data_dir(id);
    rcraft(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--id",
        &id.to_string(),
        "--peers",
        &cluster.servers(),
        "--data-dir",
        dir.to_str().unwrap(),
    ])
}

#[test]
fn a_backup_saved_under_writes_seeds_a_new_cluster_with_every_acknowledged_write() {
    let old = Cluster::start(&["--snapshot-every", "60"]);
    old.wait_for_leader();
    write_keys(&old, 150, 32);

    // Writers keep going while the backup is taken; each acknowledged key is noted.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("cluster.snap");
    let (code, out, err, acked_before) = std::thread::scope(|scope| {
        for writer in 0..2 {
            let (stop, acked, old) = (stop.clone(), acked.clone(), &old);
            scope.spawn(move || {
                let mut client = old.client();
                let mut i = 1000 + writer;
                while !stop.load(Ordering::Relaxed) {
                    if client.put(&key(i), &value(i, 32)).is_ok() {
                        acked.lock().unwrap().push(i);
                    }
                    i += 2;
                }
            });
        }
        wait_for("writes under way", || {
            (acked.lock().unwrap().len() >= 20).then_some(())
        })
        .expect("the writers write");
        let acked_before: Vec<usize> = acked.lock().unwrap().clone();
        let (code, out, err) = rcraft(&[
            "snapshot",
            "save",
            file.to_str().unwrap(),
            "--servers",
            &old.servers(),
        ]);
        // Some more writes after the save, which the backup may or may not hold.
        let target = acked.lock().unwrap().len() + 20;
        wait_for("writes after the save", || {
            (acked.lock().unwrap().len() >= target).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        (code, out, err, acked_before)
    });
    assert_eq!(code, 0, "{out}{err}\nlogs:\n{}", old.logs());
    assert!(out.starts_with("saved snapshot at index "), "{out}");
    assert!(out.contains("voters 0,1,2"), "{out}");
    assert!(!backup_dir.path().join("cluster.snap.tmp").exists());
    drop(old); // The whole old cluster is gone.

    // Three fresh data dirs of a new cluster, on other ports.
    let mut new = Cluster::unstarted(3, &[]);
    for id in 0..3 {
        let (code, out, err) = restore(&new, &file, id);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("checksum verified"), "{out}");
        assert!(out.contains("membership     voters 0,1,2"), "{out}");
    }
    // What `rcraft doctor` makes of a restored dir: healthy, the snapshot and an empty log.
    let (code, text, err) = rcraft(&["doctor", new.data_dir(0).to_str().unwrap()]);
    assert_eq!(code, 0, "{text}{err}");
    assert!(text.contains("verdict         healthy"), "{text}");
    assert!(
        text.contains("membership      voters 0,1,2 (the snapshot)"),
        "{text}"
    );
    // Restoring again over a restored dir is refused.
    let (code, out, err) = restore(&new, &file, 0);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("is not empty"), "{err}");

    (0..3).for_each(|id| new.restart(id));
    new.wait_for_leader();
    let mut client = new.client();
    for i in (0..150).chain(acked_before) {
        assert_eq!(client.get(&key(i)).unwrap(), Some(value(i, 32)), "key {i}");
    }
    client
        .put(b"after-restore", b"1")
        .expect("the new cluster writes");
    let leader = new.wait_for_leader();
    for id in 0..3 {
        new.wait_caught_up(id, leader);
    }
}

#[test]
fn a_damaged_backup_a_used_data_dir_and_join_are_refused_leaving_nothing_behind() {
    let old = Cluster::start(&[]);
    old.wait_for_leader();
    write_keys(&old, 30, 8);
    let backup_dir = tempfile::tempdir().unwrap();
    let file = backup_dir.path().join("b.snap");
    let (code, out, err) = rcraft(&[
        "snapshot",
        "save",
        file.to_str().unwrap(),
        "--servers",
        &old.servers(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let good = std::fs::read(&file).unwrap();
    let new = Cluster::unstarted(3, &[]);

    // A flipped bit in the data (found by the data checksum), in the header, a cut file.
    let mut in_data = good.clone();
    let at = in_data.len() - 100;
    in_data[at] ^= 0x10;
    let mut in_header = good.clone();
    in_header[20] ^= 0x01;
    let cut = good[..good.len() - 10].to_vec();
    for (damaged, why) in [
        (in_data, "checksum mismatch"),
        (in_header, "header checksum mismatch"),
        (cut, "footer"),
    ] {
        std::fs::write(&file, &damaged).unwrap();
        let (code, out, err) = restore(&new, &file, 0);
        assert_eq!((code, out.as_str()), (1, ""), "{err}");
        assert!(
            err.contains("is damaged") && err.contains(why),
            "{why}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!new.data_dir(0).exists(), "a refused restore left {err}");
    }

    // A data dir in use, and a restored node told to join.
    std::fs::write(&file, &good).unwrap();
    let (code, _, err) = restore(&new, &file, 1);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = restore(&new, &file, 1);
    assert_eq!(code, 1);
    assert!(err.contains("is not empty"), "{err}");
    let dir = new.data_dir(2);
    let (code, _, err) = rcraft(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--id",
        "2",
        "--peers",
        &new.servers(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--join",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("do not give --join"), "{err}");
    assert!(!dir.exists());
    let leftovers: Vec<_> = std::fs::read_dir(new.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only node 1's dir: {leftovers:?}");
}
