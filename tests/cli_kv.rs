//! `rcraft kv` through the real binary, without a server: malformed lines are answered with
//! definite failures in order and reading goes on; a valid command with nothing reachable
//! fails within its timeout.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};

/// An address on which nothing listens.
fn closed_address() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn rcraft_kv(args: &[&str], stdin: &[u8]) -> Output {
    let servers = closed_address().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .args(["kv", "--servers", &servers, "--timeout-ms", "300"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn lines(output: &Output) -> Vec<String> {
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn is_definite_failure(line: &str) -> bool {
    line.starts_with(r#"{"ok":false,"definite":true,"error":""#) && line.ends_with("\"}")
}

#[test]
fn malformed_lines_get_definite_errors_in_order() {
    let input = b"\nfoo bar\nput onlykey\nget\ndel a b\ncas k e\nput a b c\n\xff\xfe\n   \n";
    let output = rcraft_kv(&[], input);
    assert!(output.status.success(), "{output:?}");
    let lines = lines(&output);
    assert_eq!(lines.len(), 9, "one line per input line: {lines:?}");
    for line in &lines {
        assert!(is_definite_failure(line), "{line}");
    }
    assert!(
        lines[1].contains(r#"unknown command \"foo\""#),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("usage: put KEY VALUE"), "{}", lines[2]);
    assert!(lines[7].contains("UTF-8"), "{}", lines[7]);
}

#[test]
fn a_valid_command_without_a_server_fails_and_reading_goes_on() {
    let output = rcraft_kv(&[], b"put k v\nnonsense\nget k\n");
    assert!(output.status.success(), "{output:?}");
    let lines = lines(&output);
    assert_eq!(lines.len(), 3, "{lines:?}");
    // Nothing was reachable, so nothing can have been applied.
    assert!(is_definite_failure(&lines[0]), "{}", lines[0]);
    assert!(lines[1].contains("unknown command"), "{}", lines[1]);
    assert!(lines[2].starts_with(r#"{"ok":false,"#), "{}", lines[2]);
}

#[test]
fn single_shot_exits_non_zero_on_failure() {
    let output = rcraft_kv(&["put", "k", "v"], b"");
    assert!(!output.status.success());
    assert_eq!(lines(&output).len(), 1);
    let output = rcraft_kv(&["frobnicate"], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(is_definite_failure(&lines(&output)[0]));
}

#[test]
fn status_reports_unreachable_nodes_and_no_leader() {
    let servers = format!("{},{}", closed_address(), closed_address());
    let output = Command::new(env!("CARGO_BIN_EXE_rcraft"))
        .args([
            "status",
            "--servers",
            &servers,
            "--json",
            "--timeout-ms",
            "300",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "no leader known");
    let lines = lines(&output);
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with(r#"{"id":0,"#), "{}", lines[0]);
    assert!(lines[1].contains(r#""reachable":false"#), "{}", lines[1]);
}

#[test]
fn servers_can_come_from_a_craft_conf() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("craft.conf");
    std::fs::write(&conf, format!("id = 0\nservers = {}\n", closed_address())).unwrap();
    let run = |conf: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_rcraft"))
            .args([
                "kv",
                "--config",
                conf.to_str().unwrap(),
                "--timeout-ms",
                "300",
            ])
            .args(["get", "k"])
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let output = run(&conf);
    assert_eq!(output.status.code(), Some(1));
    assert!(lines(&output)[0].starts_with(r#"{"ok":false,"definite":true,"#));
    std::fs::write(&conf, "id = 0\n").unwrap();
    let output = run(&conf);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no servers listed"), "{stderr}");
}
