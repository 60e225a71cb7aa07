//! The `rcraft` binary: `serve` runs a node of the built-in key-value store, `kv` is its
//! command-line client (pipe mode and single-shot), `status` shows each node's view,
//! `snapshot` asks nodes to snapshot their state machine and compact their log now (and
//! `snapshot save|restore` take and restore backups), `members`
//! lists and changes the membership, `transfer` moves leadership, `debug events` shows
//! each node's flight recorder. One module per sub-command; keep the flags, output and
//! exit codes stable.
//!
//! Everything runs on the main thread except `status`, `snapshot` and `members list`, which
//! ask every node at once from scoped threads. Output is one line per answer, flushed at
//! once, so scripts can drive a pipe-mode `rcraft kv` interactively.

mod backup;
mod cluster;
mod debug;
mod doctor;
mod json;
mod kv;
mod kv_line;
mod members;
mod members_list;
mod serve;
mod serve_kv;
mod snapshot;
mod status;
mod transfer;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Exit status for bad usage or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status for a failed operation (or no leader known, for `status`).
const EXIT_FAILED: u8 = 1;

#[derive(Parser)]
#[command(name = "rcraft", version, about = "A Raft-replicated key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of the built-in key-value store until SIGTERM or SIGINT.
    Serve(Box<serve::ServeArgs>),
    /// Read and write keys: one command per stdin line, or one command given as arguments.
    Kv(kv::KvArgs),
    /// Show every node's role, term, leader and log indexes.
    Status(status::StatusArgs),
    /// Snapshot every node's state machine now and compact its log (or one node's, --id);
    /// `snapshot save FILE` takes a backup, `snapshot restore FILE` seeds a node from one.
    Snapshot(snapshot::SnapshotArgs),
    /// List or change the cluster's members: who votes, who only learns the log.
    Members(members::MembersArgs),
    /// Move leadership to voter --to ID and wait until it leads.
    Transfer(transfer::TransferArgs),
    /// Look inside the nodes: `debug events` shows each node's flight recorder.
    Debug(debug::DebugArgs),
    /// Check a stopped node's data dir (WAL, hard state, snapshots) without changing it.
    Doctor(doctor::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client commands stay quiet unless asked; `serve` sets up logging from its config.
    if !matches!(cli.command, Command::Serve(_)) && std::env::var_os("RUST_LOG").is_some() {
        init_logging("off");
    }
    match cli.command {
        Command::Serve(args) => serve::serve(&args),
        Command::Kv(args) => kv::kv(&args),
        Command::Status(args) => status::status(&args),
        Command::Snapshot(args) => snapshot::snapshot(&args),
        Command::Members(args) => members::members(&args),
        Command::Transfer(args) => transfer::transfer(&args),
        Command::Debug(args) => debug::debug(&args),
        Command::Doctor(args) => doctor::doctor(&args),
    }
}

/// Logs go to stderr; `RUST_LOG`, when set, overrides the configured level.
pub(crate) fn init_logging(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| level.to_string());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .target(env_logger::Target::Stderr)
        .init();
}

pub(crate) fn usage_error(command: &str, message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("rcraft {command}: {message}");
    ExitCode::from(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use members::{MEMBERS_TIMEOUT_MS_DEFAULT, MembersArgs, MembersCommand, MembersListArgs};

    #[test]
    fn members_arguments_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        // The common flags go before or after the command, as with etcdctl.
        for args in [
            &["rcraft", "members", "add", "3", "--servers", "127.0.0.1:1"][..],
            &["rcraft", "members", "--servers", "127.0.0.1:1", "add", "3"],
        ] {
            let Command::Members(members) = parse(args).unwrap().command else {
                panic!("not members");
            };
            let MembersCommand::Add(add) = &members.command else {
                panic!("not members add");
            };
            assert_eq!(add.id, "3");
            assert!(!add.learner);
            assert_eq!(members.common.timeout_ms, MEMBERS_TIMEOUT_MS_DEFAULT);
            assert_eq!(members.common.servers.as_deref(), Some("127.0.0.1:1"));
        }
        let cli = parse(&[
            "rcraft",
            "members",
            "add",
            "--learner",
            "--timeout-ms",
            "5",
            "1",
        ]);
        let Command::Members(members) = cli.unwrap().command else {
            panic!("not members");
        };
        let MembersCommand::Add(add) = &members.command else {
            panic!("not members add");
        };
        assert!(add.learner);
        assert_eq!((add.id.as_str(), members.common.timeout_ms), ("1", 5));
        let cli = parse(&["rcraft", "members", "list", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Members(MembersArgs {
                command: MembersCommand::List(MembersListArgs { json: true }),
                ..
            })
        ));
        for ok in [
            ["rcraft", "members", "remove", "0"],
            ["rcraft", "members", "promote", "2"],
        ] {
            assert!(parse(&ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &["rcraft", "members"][..],
            &["rcraft", "members", "remove"],
            &["rcraft", "members", "add", "1", "2"],
            &["rcraft", "members", "list", "3"],
            &["rcraft", "members", "join", "3"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let ok = parse(&["rcraft", "serve", "--initial-voters", "0,1,2", "--id", "0"]);
        let Command::Serve(serve) = ok.unwrap().command else {
            panic!("not serve");
        };
        let voters = serve.given.iter().find(|(s, _)| s.key == "initial_voters");
        assert_eq!(voters.map(|(_, text)| text.as_str()), Some("0,1,2"));
    }

    #[test]
    fn snapshot_keeps_its_contract_form_beside_save_and_restore() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        let servers = "127.0.0.1:1,127.0.0.1:2";
        for ok in [
            &["rcraft", "snapshot", "--servers", servers][..],
            &[
                "rcraft",
                "snapshot",
                "--servers",
                servers,
                "--id",
                "1",
                "--timeout-ms",
                "5",
            ],
            &["rcraft", "snapshot", "save", "b.snap", "--servers", servers],
            &["rcraft", "snapshot", "save", "b.snap", "--timeout-ms", "5"],
            &[
                "rcraft",
                "snapshot",
                "restore",
                "b.snap",
                "--id",
                "0",
                "--peers",
                servers,
                "--data-dir",
                "d",
            ],
            &[
                "rcraft",
                "snapshot",
                "restore",
                "b.snap",
                "--config",
                "craft.conf",
            ],
        ] {
            let Command::Snapshot(_) = parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}")).command
            else {
                panic!("not snapshot");
            };
        }
        for bad in [
            &["rcraft", "snapshot", "save"][..],
            &["rcraft", "snapshot", "restore"],
            &["rcraft", "snapshot", "--servers", servers, "save", "b.snap"],
            &["rcraft", "snapshot", "save", "b.snap", "--id", "1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
