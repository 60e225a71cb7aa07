//! The loadtest speaks TLS (`--cacert`, `--cert`, `--key`; the `tls` feature): against three
//! spawned nodes with mutual TLS between peers and TLS for clients, with a leader killed and
//! restarted, every operation is checked as usual (linearizable, no acknowledged write
//! lost). Certificates from `tests/tls_support` (openssl; skipped without it outside CI).

#![cfg(feature = "tls")]

mod support;
#[path = "../../tests/tls_support/mod.rs"]
mod tls_support;

use std::process::Command;
use support::build_rcraft_bin;
use tls_support::Pki;

/// Runs the loadtest against three spawned TLS nodes with `extra` flags; returns the JSON
/// summary after checking that the run succeeded.
fn spawned_tls_run(pki: &Pki, name: &str, extra: &[&str]) -> serde_json::Value {
    let rcraft = build_rcraft_bin();
    let json = pki.path(name);
    let output = Command::new(env!("CARGO_BIN_EXE_rcraft-loadtest"))
        .args(["--spawn", "3", "--keys", "50", "--value-size", "32"])
        .args(extra)
        .args(["--cacert", &pki.arg("ca.pem")])
        .args([
            "--cert",
            &pki.arg("node.pem"),
            "--key",
            &pki.arg("node.key"),
        ])
        .arg("--rcraft-bin")
        .arg(&rcraft)
        .arg("--json")
        .arg(&json)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {}\n{report}\n{stderr}",
        output.status
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

#[test]
fn a_tls_run_with_a_leader_kill_is_linearizable_and_loses_nothing() {
    let Some(pki) = Pki::new() else { return };
    let summary = spawned_tls_run(
        &pki,
        "summary.json",
        &[
            "--clients",
            "4",
            "--duration",
            "5",
            "--kill-leader-every",
            "2",
            "--restart-after",
            "0.5",
        ],
    );
    assert!(summary["ops"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["acked_writes"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["lost_acked_writes"], 0, "{summary}");
    assert_eq!(summary["linearizable"], true, "{summary}");
    assert!(summary["leader_kills"].as_u64().unwrap() >= 1, "{summary}");

    // A client certificate without the CA to check the nodes against is a usage error.
    let output = Command::new(env!("CARGO_BIN_EXE_rcraft-loadtest"))
        .args(["--cert", &pki.arg("node.pem")])
        .args(["--servers", "127.0.0.1:1", "--duration", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--cert and --key need --cacert"),
        "{stderr}"
    );
}

/// Pipelined connections (`--pipeline K`) speak TLS too.
#[test]
fn pipelined_clients_speak_tls() {
    let Some(pki) = Pki::new() else { return };
    let summary = spawned_tls_run(
        &pki,
        "pipelined.json",
        &["--clients", "2", "--pipeline", "4", "--duration", "2"],
    );
    assert!(summary["acked_writes"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["lost_acked_writes"], 0, "{summary}");
}
