//! `rcraft serve` configuration errors through the real binary: one line on stderr naming
//! the file (and line) or flag, exit status 2, never a panic trace.

use std::path::Path;
use std::process::{Command, Output};

fn rcraft_serve(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .arg("serve")
        .args(args)
        .env("HOME", home)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn assert_one_line_error(output: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected {expected:?} in {stderr}"
    );
}

#[test]
fn config_file_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("craft.conf");
    let cases = [
        (
            "id = 0\nservers = 127.0.0.1:5000\n\n# comment\nSERVERS2 = 1\n",
            ":5: unknown key \"SERVERS2\"",
        ),
        (
            "id = 3\nservers = 127.0.0.1:5000\n",
            ":1: id 3 is out of range",
        ),
        (
            "id = 0\nservers = 127.0.0.1\n",
            ":2: bad address \"127.0.0.1\"",
        ),
        (
            "id = 0\nservers = 127.0.0.1:5000\nHEART_BEAT_INTERVAL = 500\n",
            ":3: heartbeat interval",
        ),
        ("id = zero\n", ":1: id: \"zero\" is not a valid number"),
    ];
    for (text, expected) in cases {
        std::fs::write(&conf, text).unwrap();
        let output = rcraft_serve(&["--config", conf.to_str().unwrap()], dir.path());
        assert_one_line_error(&output, &format!("{}{expected}", conf.display()));
    }
}

#[test]
fn flag_errors_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let peers = "127.0.0.1:5000,127.0.0.1:5001";
    let cases: [(&[&str], &str); 7] = [
        (
            &[
                "--id",
                "0",
                "--peers",
                peers,
                "--data-dir",
                data,
                "--join",
                "--initial-voters",
                "0,1",
            ],
            "--join: --join and --initial-voters exclude each other",
        ),
        (
            &[
                "--id",
                "0",
                "--peers",
                peers,
                "--data-dir",
                data,
                "--join",
                "maybe",
            ],
            "--join:",
        ),
        (
            &["--id", "2", "--peers", peers, "--data-dir", data],
            "--id: id 2 is out of range",
        ),
        (
            &["--id", "1", "--peers", "127.0.0.1:5000", "--data-dir", data],
            "--id: id 1 is out of range: 1 server is listed (id 0)",
        ),
        (
            &[
                "--id",
                "0",
                "--peers",
                "127.0.0.1:5000,nowhere",
                "--data-dir",
                data,
            ],
            "--peers: bad address",
        ),
        (
            &[
                "--id",
                "0",
                "--peers",
                peers,
                "--data-dir",
                data,
                "--heartbeat-ms",
                "x",
            ],
            "--heartbeat-ms: \"x\"",
        ),
        (
            &["--id", "0", "--peers", peers],
            "command line: missing --data-dir",
        ),
    ];
    for (args, expected) in cases {
        assert_one_line_error(&rcraft_serve(args, dir.path()), expected);
    }
}

#[test]
fn snapshot_transfer_flags_are_checked_like_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = [
        "--id",
        "0",
        "--peers",
        "127.0.0.1:5000",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let cases = [
        (
            "--snapshot-chunks-in-flight",
            "many",
            "--snapshot-chunks-in-flight: \"many\" is not a valid number",
        ),
        (
            "--snapshot-chunks-in-flight",
            "0",
            "--snapshot-chunks-in-flight: snapshot_chunks_in_flight must be greater than 0",
        ),
        (
            "--snapshot-bytes-per-sec",
            "100MB",
            "--snapshot-bytes-per-sec: \"100MB\" is not a valid number",
        ),
        (
            "--snapshot-bytes-per-sec",
            "99999999999999999999999",
            "--snapshot-bytes-per-sec: \"99999999999999999999999\" is not a valid number",
        ),
    ];
    for (flag, value, expected) in cases {
        let mut args = base.to_vec();
        args.extend([flag, value]);
        assert_one_line_error(&rcraft_serve(&args, dir.path()), expected);
    }
    // Good values pass validation: the node gets as far as its data directory (a file here).
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let mut args = base.to_vec();
    args[5] = file.to_str().unwrap();
    args.extend([
        "--snapshot-chunks-in-flight",
        "8",
        "--snapshot-bytes-per-sec",
        "0",
    ]);
    assert_one_line_error(
        &rcraft_serve(&args, dir.path()),
        "exists and is not a directory",
    );
    let mut args = base.to_vec();
    args.push("--snapshot-chunks-in-flight=-1");
    let expected = "--snapshot-chunks-in-flight: \"-1\" is not a valid number";
    assert_one_line_error(&rcraft_serve(&args, dir.path()), expected);
}

#[test]
fn sizes_take_units_and_switches_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let base = ["--id", "0", "--peers", "127.0.0.1:5000", "--data-dir"];
    let mut args = base.to_vec();
    args.extend([file.to_str().unwrap(), "--snapshot-log-bytes", "256MiB"]);
    args.extend(["--snapshot-bytes-per-sec", "800MiB/s", "--pre-vote", "off"]);
    // Good values pass validation: the node gets as far as its data directory (a file here).
    assert_one_line_error(
        &rcraft_serve(&args, dir.path()),
        "exists and is not a directory",
    );
    let mut args = base.to_vec();
    args.extend([
        file.to_str().unwrap(),
        "--lease-reads",
        "on",
        "--check-quorum",
        "off",
    ]);
    let expected = "--lease-reads: lease_reads needs check_quorum";
    assert_one_line_error(&rcraft_serve(&args, dir.path()), expected);
    let help = Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("[default: 800 MiB/s]"), "{help}");
    assert!(help.contains("[default: 256 MiB]"), "{help}");
}

#[test]
fn no_configuration_at_all_is_explained() {
    let empty_home = tempfile::tempdir().unwrap();
    let output = rcraft_serve(&[], empty_home.path());
    assert_one_line_error(&output, "~/craft/craft.conf does not exist");
}

#[test]
fn default_config_is_read_from_home() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("craft")).unwrap();
    std::fs::write(home.path().join("craft/craft.conf"), "id = 0\nbogus = 1\n").unwrap();
    let output = rcraft_serve(&[], home.path());
    assert_one_line_error(&output, "craft/craft.conf:2: unknown key \"bogus\"");
}

#[test]
fn a_data_dir_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let args = [
        "--id",
        "0",
        "--peers",
        "127.0.0.1:5000",
        "--data-dir",
        file.to_str().unwrap(),
    ];
    let output = rcraft_serve(&args, dir.path());
    assert_one_line_error(&output, "exists and is not a directory");
}
