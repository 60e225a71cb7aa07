//! A build without the `tls` feature (the default) refuses TLS flags with a message that
//! says how to get TLS, at `rcraft serve` and at the client tools.

#![cfg(not(feature = "tls"))]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_rcraft");
const NEEDS_FEATURE: &str = "TLS needs rcraft built with the `tls` cargo feature";

#[test]
fn tls_flags_say_that_tls_needs_the_feature() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["serve", "--id", "0", "--peers", "127.0.0.1:1"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--cert-file", "node.pem", "--key-file", "node.key"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(NEEDS_FEATURE), "{stderr}");
    assert!(stderr.contains("--cert-file"), "{stderr}");

    let output = Command::new(BIN)
        .args([
            "kv",
            "--servers",
            "127.0.0.1:1",
            "--cacert",
            "ca.pem",
            "get",
            "k",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains(NEEDS_FEATURE), "{stderr}");
}
