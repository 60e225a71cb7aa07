//! Helpers shared by the loadtest's end-to-end tests.
//!
//! The `rcraft` binary belongs to another package, so `CARGO_BIN_EXE_rcraft` is not available
//! here. [`build_rcraft_bin`] asks cargo to build it (a no-op when it is up to date) and returns
//! the executable cargo reports, so a test never runs a stale binary left from older sources,
//! and a binary that cannot be built fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds the workspace's `rcraft` binary with the cargo running this test and returns the
/// executable's path; panics, with cargo's output, when that fails. With the loadtest's `tls`
/// feature the binary is built with TLS too: the same features as the test run's, so that the
/// build neither differs from nor replaces the `rcraft` that rcraft's own tests run.
pub fn build_rcraft_bin() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let features: &[&str] = match cfg!(feature = "tls") {
        true => &["--features", "tls"],
        false => &[],
    };
    let output = Command::new(&cargo)
        .args([
            "build",
            "-p",
            "rcraft",
            "--bin",
            "rcraft",
            "--message-format=json",
        ])
        .args(features)
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the rcraft binary: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "building the rcraft binary failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let executable = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["kind"] == serde_json::json!(["bin"]))
        .filter(|message| message["target"]["name"] == "rcraft")
        .find_map(|message| message["executable"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("cargo reported no rcraft executable:\n{stdout}"));
    let executable = PathBuf::from(executable);
    assert!(
        executable.is_file(),
        "cargo reported {} as the rcraft binary, but it is missing",
        executable.display()
    );
    executable
}
