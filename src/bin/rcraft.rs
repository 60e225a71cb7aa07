//! The `rcraft` binary: `serve` runs a node of the built-in key-value store, `kv` is its
//! command-line client (pipe mode and single-shot), `status` shows each node's view,
//! `snapshot` asks nodes to snapshot their state machine and compact their log now.
//! `../shared/CONTRACT.md` fixes the flags, the output and the exit codes; keep them stable.
//!
//! Everything runs on the main thread except `status` and `snapshot`, which ask every node
//! at once from scoped threads. Output is one line per answer, flushed at once, so scripts can drive a
//! pipe-mode `rcraft kv` interactively.

use clap::{Args, Parser, Subcommand};
use rcraft::Config;
use rcraft::client::{CasOutcome, Client, ClientError, ClientOptions};
use rcraft::config::{self, ConfigError, ConfigFile, ConfigOverrides};
use rcraft::node::SnapshotResult;
use rcraft::wire::{NodeStatus, Role};
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit status for bad usage or configuration.
const EXIT_USAGE: u8 = 2;
/// Exit status for a failed operation (or no leader known, for `status`).
const EXIT_FAILED: u8 = 1;
/// Longest wait for one node's answer inside a client operation.
const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(name = "rcraft", version, about = "A Raft-replicated key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of the built-in key-value store until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Read and write keys: one command per stdin line, or one command given as arguments.
    Kv(KvArgs),
    /// Show every node's role, term, leader and log indexes.
    Status(StatusArgs),
    /// Snapshot every node's state machine now and compact its log (or one node's, --id).
    Snapshot(SnapshotArgs),
}

/// Flags of `rcraft serve`. Numbers are taken as text so that a bad one is reported like
/// every other configuration error: one line naming the flag.
#[derive(Args)]
struct ServeArgs {
    /// A cRaft `craft.conf` (plus rcraft keys such as `data_dir`); flags override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// This node's id: its position in the peer list, from 0.
    #[arg(long, value_name = "N")]
    id: Option<String>,
    /// Every node's address, in id order.
    #[arg(long, value_name = "HOST:PORT,...")]
    peers: Option<String>,
    /// Directory for the log, hard state and snapshots.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Randomized election timeout range [default: 150-300].
    #[arg(long, value_name = "MIN-MAX")]
    election_timeout_ms: Option<String>,
    /// Leader heartbeat interval [default: 50].
    #[arg(long, value_name = "N")]
    heartbeat_ms: Option<String>,
    /// How long a client request may wait inside the node (cRaft's RPC_TIMEOUT) [default: 5000].
    #[arg(long, value_name = "N")]
    rpc_timeout_ms: Option<String>,
    /// Length of one consensus tick [default: 10].
    #[arg(long, value_name = "N")]
    tick_ms: Option<String>,
    /// Take a snapshot after this many applied entries [default: 100000].
    #[arg(long, value_name = "N")]
    snapshot_every: Option<String>,
    /// Also take a snapshot after this many bytes of applied log [default: 268435456].
    #[arg(long, value_name = "N")]
    snapshot_log_bytes: Option<String>,
    /// Entries kept in the log behind a snapshot for slightly lagging followers
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    snapshot_retain_entries: Option<String>,
    /// Size of one snapshot chunk sent to a follower [default: 1048576].
    #[arg(long, value_name = "N")]
    snapshot_chunk_bytes: Option<String>,
    /// Most snapshot chunks sent ahead of a follower's answers [default: 4].
    #[arg(long, value_name = "N")]
    snapshot_chunks_in_flight: Option<String>,
    /// Snapshot bytes per second the leader sends to all followers together, 0 for no
    /// limit [default: 838860800].
    #[arg(long, value_name = "N")]
    snapshot_bytes_per_sec: Option<String>,
    /// Cluster id checked in every connection handshake.
    #[arg(long, value_name = "N")]
    cluster_id: Option<String>,
    /// error, warn, info, debug or trace (RUST_LOG, when set, wins) [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
}

/// Where the client finds the cluster.
#[derive(Args)]
struct ClusterArgs {
    /// Every node's address, in id order. Without it, the servers of --config (or of
    /// ~/craft/craft.conf) are used.
    #[arg(long, value_name = "HOST:PORT,...")]
    servers: Option<String>,
    /// A craft.conf to take the servers and cluster id from.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Cluster id sent in the handshake [default: the file's, else rcraft's].
    #[arg(long, value_name = "N")]
    cluster_id: Option<String>,
}

#[derive(Args)]
struct KvArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Deadline for each command, retries included.
    #[arg(long, value_name = "N", default_value_t = 5000)]
    timeout_ms: u64,
    /// A single command (`put KEY VALUE`, `get KEY`, `del KEY`, `cas KEY EXPECTED NEW`);
    /// without it, commands are read from stdin, one per line.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// One JSON object per node and line instead of a table.
    #[arg(long)]
    json: bool,
    /// Longest wait for each node's answer.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    timeout_ms: u64,
}

#[derive(Args)]
struct SnapshotArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only this node (its position in the server list); default: every node.
    #[arg(long, value_name = "N")]
    id: Option<usize>,
    /// Longest wait for each node's snapshot to be durable.
    #[arg(long, value_name = "N", default_value_t = 60_000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client commands stay quiet unless asked; `serve` sets up logging from its config.
    if !matches!(cli.command, Command::Serve(_)) && std::env::var_os("RUST_LOG").is_some() {
        init_logging("off");
    }
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Kv(args) => kv(&args),
        Command::Status(args) => status(&args),
        Command::Snapshot(args) => snapshot(&args),
    }
}

// ---------------------------------------------------------------------------------------
// serve

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match serve_config(args) {
        Ok(config) => config,
        Err(e) => return usage_error("serve", &e),
    };
    init_logging(&config.log_level);
    let dir = config.data_dir.display();
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        return usage_error(
            "serve",
            &format!("data dir {dir}: exists and is not a directory"),
        );
    }
    if let Err(e) = std::fs::create_dir_all(&config.data_dir) {
        return usage_error("serve", &format!("data dir {dir}: cannot create: {e}"));
    }
    run_node(config)
}

/// Runs the node with the built-in KV store until SIGTERM or SIGINT (exit 0). A failure to
/// start or a fail-stop error (e.g. storage) is one line on stderr and a non-zero exit.
fn run_node(config: Config) -> ExitCode {
    match rcraft::node::serve_kv(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcraft serve: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The file (explicit, or `~/craft/craft.conf` when neither `--config` nor `--peers` is
/// given) merged with the flags.
fn serve_config(args: &ServeArgs) -> Result<Config, String> {
    let file = match (&args.config, &args.peers) {
        (Some(path), _) => Some(ConfigFile::read(path).map_err(|e| e.to_string())?),
        (None, Some(_)) => None,
        (None, None) => match config::default_config_path().filter(|p| p.exists()) {
            Some(path) => Some(ConfigFile::read(&path).map_err(|e| e.to_string())?),
            None => {
                return Err("no configuration: give --config PATH, or --id N --peers \
                            HOST:PORT,... --data-dir DIR (~/craft/craft.conf does not exist)"
                    .to_string());
            }
        },
    };
    let overrides = serve_overrides(args).map_err(|e| e.to_string())?;
    config::build_config(file.as_ref(), &overrides).map_err(|e| e.to_string())
}

fn serve_overrides(args: &ServeArgs) -> Result<ConfigOverrides, ConfigError> {
    let number = |flag: &'static str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| config::parse_flag_u64(flag, v))
            .transpose()
    };
    Ok(ConfigOverrides {
        id: number("--id", &args.id)?,
        peers: args
            .peers
            .as_deref()
            .map(|list| config::parse_address_list("--peers", list))
            .transpose()?,
        data_dir: args.data_dir.clone(),
        election_timeout_ms: args
            .election_timeout_ms
            .as_deref()
            .map(|v| config::parse_flag_range("--election-timeout-ms", v))
            .transpose()?,
        heartbeat_ms: number("--heartbeat-ms", &args.heartbeat_ms)?,
        rpc_timeout_ms: number("--rpc-timeout-ms", &args.rpc_timeout_ms)?,
        tick_ms: number("--tick-ms", &args.tick_ms)?,
        snapshot_every: number("--snapshot-every", &args.snapshot_every)?,
        snapshot_log_bytes: number("--snapshot-log-bytes", &args.snapshot_log_bytes)?,
        snapshot_retain_entries: number(
            "--snapshot-retain-entries",
            &args.snapshot_retain_entries,
        )?,
        snapshot_chunk_bytes: number("--snapshot-chunk-bytes", &args.snapshot_chunk_bytes)?,
        snapshot_chunks_in_flight: number(
            "--snapshot-chunks-in-flight",
            &args.snapshot_chunks_in_flight,
        )?,
        snapshot_bytes_per_sec: number("--snapshot-bytes-per-sec", &args.snapshot_bytes_per_sec)?,
        cluster_id: number("--cluster-id", &args.cluster_id)?,
        log_level: args.log_level.clone(),
    })
}

/// Logs go to stderr; `RUST_LOG`, when set, overrides the configured level.
fn init_logging(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| level.to_string());
    env_logger::Builder::new()
        .parse_filters(&filter)
        .target(env_logger::Target::Stderr)
        .init();
}

fn usage_error(command: &str, message: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("rcraft {command}: {message}");
    ExitCode::from(EXIT_USAGE)
}

// ---------------------------------------------------------------------------------------
// client side: finding the cluster

/// The servers and cluster id from `--servers`/`--cluster-id`, else from a craft.conf.
fn cluster_of(args: &ClusterArgs) -> Result<(Vec<SocketAddr>, u64), String> {
    let path = match (&args.servers, &args.config) {
        (Some(_), _) => None,
        (None, Some(path)) => Some(path.clone()),
        (None, None) => config::default_config_path().filter(|p| p.exists()),
    };
    let file = match path {
        Some(path) => Some(ConfigFile::read(&path).map_err(|e| e.to_string())?),
        None if args.servers.is_none() => {
            return Err("give --servers HOST:PORT,... (or --config PATH)".to_string());
        }
        None => None,
    };
    let servers = match (&args.servers, &file) {
        (Some(list), _) => {
            config::parse_address_list("--servers", list).map_err(|e| e.to_string())?
        }
        (None, Some(f)) if !f.servers.is_empty() => f.servers.iter().map(|s| s.value).collect(),
        (None, _) => return Err("no servers listed: give --servers HOST:PORT,...".to_string()),
    };
    let cluster_id = match (
        &args.cluster_id,
        file.as_ref().and_then(|f| f.cluster_id.as_ref()),
    ) {
        (Some(id), _) => config::parse_flag_u64("--cluster-id", id).map_err(|e| e.to_string())?,
        (None, Some(id)) => id.value,
        (None, None) => config::CLUSTER_ID_DEFAULT,
    };
    Ok((servers, cluster_id))
}

fn client_options(timeout_ms: u64, cluster_id: u64) -> ClientOptions {
    let timeout = Duration::from_millis(timeout_ms.max(1));
    ClientOptions {
        timeout,
        attempt_timeout: timeout.min(ATTEMPT_TIMEOUT_MAX),
        cluster_id,
        ..ClientOptions::default()
    }
}

// ---------------------------------------------------------------------------------------
// kv

/// One line of `rcraft kv` input, parsed.
#[derive(Debug, PartialEq, Eq)]
enum KvLine {
    Put(String, String),
    Get(String),
    Del(String),
    Cas(String, String, String),
}

fn parse_kv_line(tokens: &[&str]) -> Result<KvLine, String> {
    let owned = |i: usize| tokens[i].to_string();
    match tokens {
        [] => Err("empty command (expected put, get, del or cas)".to_string()),
        ["put", _, _] => Ok(KvLine::Put(owned(1), owned(2))),
        ["get", _] => Ok(KvLine::Get(owned(1))),
        ["del", _] => Ok(KvLine::Del(owned(1))),
        ["cas", _, _, _] => Ok(KvLine::Cas(owned(1), owned(2), owned(3))),
        ["put", ..] => Err("usage: put KEY VALUE".to_string()),
        ["get", ..] => Err("usage: get KEY".to_string()),
        ["del", ..] => Err("usage: del KEY".to_string()),
        ["cas", ..] => Err("usage: cas KEY EXPECTED NEW".to_string()),
        [other, ..] => Err(format!(
            "unknown command {} (expected put, get, del or cas)",
            json_string(other)
        )),
    }
}

/// Carry out one command and render its JSON line; the bool is true on success.
fn run_kv_line(client: &mut Client, line: &KvLine) -> (String, bool) {
    let result = match line {
        KvLine::Put(key, value) => client
            .put(key.as_bytes(), value.as_bytes())
            .map(|()| r#"{"ok":true}"#.to_string()),
        KvLine::Get(key) => client
            .get(key.as_bytes())
            .map(|value| format!(r#"{{"ok":true,"value":{}}}"#, json_bytes(value.as_deref()))),
        KvLine::Del(key) => client
            .delete(key.as_bytes())
            .map(|()| r#"{"ok":true}"#.to_string()),
        KvLine::Cas(key, expected, new) => client
            .cas(key.as_bytes(), Some(expected.as_bytes()), new.as_bytes())
            .map(|outcome| cas_json(&outcome)),
    };
    match result {
        Ok(json) => (json, true),
        Err(e) => (failure_json(e.is_definite(), &e.to_string()), false),
    }
}

fn cas_json(outcome: &CasOutcome) -> String {
    if outcome.swapped {
        r#"{"ok":true,"swapped":true}"#.to_string()
    } else {
        let current = json_bytes(outcome.current.as_deref());
        format!(r#"{{"ok":true,"swapped":false,"value":{current}}}"#)
    }
}

fn failure_json(definite: bool, message: &str) -> String {
    let message = json_string(message);
    format!(r#"{{"ok":false,"definite":{definite},"error":{message}}}"#)
}

fn kv(args: &KvArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("kv", &e),
    };
    let options = client_options(args.timeout_ms, cluster_id);
    let mut client = match Client::new(&servers, options) {
        Ok(client) => client,
        Err(e) => return usage_error("kv", &e),
    };
    if args.command.is_empty() {
        kv_pipe(&mut client)
    } else {
        kv_single(&mut client, &args.command)
    }
}

fn kv_single(client: &mut Client, words: &[String]) -> ExitCode {
    let tokens: Vec<&str> = words.iter().map(String::as_str).collect();
    let (json, succeeded, status) = match parse_kv_line(&tokens) {
        Ok(line) => {
            let (json, ok) = run_kv_line(client, &line);
            (json, ok, EXIT_FAILED)
        }
        Err(why) => (failure_json(true, &why), false, EXIT_USAGE),
    };
    let _ = writeln!(io::stdout().lock(), "{json}");
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(status)
    }
}

/// One JSON line per input line, in order, flushed each time. A line that is not valid
/// UTF-8 or not a command is a definite failure and reading goes on.
fn kv_pipe(client: &mut Client) -> ExitCode {
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match input.read_until(b'\n', &mut raw) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(e) => return usage_error("kv", &format!("reading stdin: {e}")),
        }
        let json = match std::str::from_utf8(&raw) {
            Ok(text) => {
                let tokens: Vec<&str> = text.split_whitespace().collect();
                match parse_kv_line(&tokens) {
                    Ok(line) => run_kv_line(client, &line).0,
                    Err(why) => failure_json(true, &why),
                }
            }
            Err(_) => failure_json(true, "line is not valid UTF-8"),
        };
        // A closed stdout (the reader went away) ends the session quietly.
        if writeln!(out, "{json}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS;
        }
    }
}

// ---------------------------------------------------------------------------------------
// status

fn status(args: &StatusArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("status", &e),
    };
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..client_options(args.timeout_ms, cluster_id)
    };
    let answers: Vec<Result<NodeStatus, ClientError>> = std::thread::scope(|scope| {
        let asks: Vec<_> = servers
            .iter()
            .map(|&address| {
                let options = options.clone();
                scope.spawn(move || {
                    let mut client = Client::new(&[address], options)?;
                    client.status_of(address)
                })
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().expect("status thread panicked"))
            .collect()
    });
    let lines: Vec<String> = if args.json {
        status_json_lines(&servers, &answers)
    } else {
        status_table(&servers, &answers)
    };
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let leader_known = answers
        .iter()
        .flatten()
        .any(|s| s.leader.is_some() || s.role == Role::Leader);
    if leader_known {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `rcraft snapshot`: one line per node asked, `node ID ADDRESS: snapshot at index I term T,
/// B bytes` or `node ID ADDRESS: failed: WHY`; exit 0 only when every node asked succeeded.
fn snapshot(args: &SnapshotArgs) -> ExitCode {
    let (servers, cluster_id) = match cluster_of(&args.cluster) {
        Ok(found) => found,
        Err(e) => return usage_error("snapshot", &e),
    };
    let asked: Vec<(usize, SocketAddr)> = match args.id {
        Some(id) if id >= servers.len() => {
            let why = format!("--id {id}: only {} servers are listed", servers.len());
            return usage_error("snapshot", &why);
        }
        Some(id) => vec![(id, servers[id])],
        None => servers.iter().copied().enumerate().collect(),
    };
    let options = ClientOptions {
        attempt_timeout: Duration::from_millis(args.timeout_ms.max(1)),
        ..client_options(args.timeout_ms, cluster_id)
    };
    let answers: Vec<Result<SnapshotResult, ClientError>> = std::thread::scope(|scope| {
        let asks: Vec<_> = asked
            .iter()
            .map(|&(_, address)| {
                let options = options.clone();
                scope.spawn(move || {
                    let mut client = Client::new(&[address], options)?;
                    client.snapshot_of(address)
                })
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().expect("snapshot thread panicked"))
            .collect()
    });
    let mut out = io::stdout().lock();
    let mut all_ok = true;
    for ((id, address), answer) in asked.iter().zip(&answers) {
        let line = match answer {
            Ok(s) => format!(
                "node {id} {address}: snapshot at index {} term {}, {} bytes",
                s.index, s.term, s.size_bytes
            ),
            Err(e) => {
                all_ok = false;
                format!("node {id} {address}: failed: {e}")
            }
        };
        let _ = writeln!(out, "{line}");
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::Learner => "learner",
    }
}

fn status_json_lines(
    servers: &[SocketAddr],
    answers: &[Result<NodeStatus, ClientError>],
) -> Vec<String> {
    let rows = servers.iter().zip(answers).enumerate();
    rows.map(|(i, (address, answer))| {
        let address = json_string(&address.to_string());
        match answer {
            Ok(s) => format!(
                r#"{{"id":{},"address":{address},"reachable":true,"role":"{}","term":{},"leader":{},"commit_index":{},"applied_index":{},"last_index":{},"snapshot_index":{}}}"#,
                s.id,
                role_name(s.role),
                s.term,
                s.leader.map_or("null".to_string(), |l| l.to_string()),
                s.commit_index,
                s.applied_index,
                s.last_index,
                s.snapshot_index,
            ),
            Err(e) => format!(
                r#"{{"id":{i},"address":{address},"reachable":false,"error":{}}}"#,
                json_string(&e.to_string())
            ),
        }
    })
    .collect()
}

fn status_table(
    servers: &[SocketAddr],
    answers: &[Result<NodeStatus, ClientError>],
) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<3} {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT"
    )];
    for (i, (address, answer)) in servers.iter().zip(answers).enumerate() {
        lines.push(match answer {
            Ok(s) => format!(
                "{:<3} {:<22} {:<10} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10}",
                s.id.to_string(),
                address.to_string(),
                role_name(s.role),
                s.term.to_string(),
                s.leader.map_or("-".to_string(), |l| l.to_string()),
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_index.to_string(),
                s.snapshot_index.to_string(),
            ),
            Err(e) => format!("{i:<3} {:<22} unreachable ({e})", address.to_string()),
        });
    }
    lines
}

// ---------------------------------------------------------------------------------------
// JSON output

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A stored value as a JSON string (invalid UTF-8 replaced), or `null` when absent.
fn json_bytes(value: Option<&[u8]>) -> String {
    match value {
        Some(bytes) => json_string(&String::from_utf8_lossy(bytes)),
        None => "null".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("é"), "\"é\"");
        assert_eq!(json_bytes(None), "null");
        assert_eq!(json_bytes(Some(&[0xff])), "\"\u{fffd}\"");
    }

    #[test]
    fn kv_lines_parse() {
        assert_eq!(
            parse_kv_line(&["put", "k", "v"]),
            Ok(KvLine::Put("k".into(), "v".into()))
        );
        assert_eq!(parse_kv_line(&["get", "k"]), Ok(KvLine::Get("k".into())));
        assert_eq!(parse_kv_line(&["del", "k"]), Ok(KvLine::Del("k".into())));
        assert!(matches!(
            parse_kv_line(&["cas", "k", "a", "b"]),
            Ok(KvLine::Cas(..))
        ));
        for bad in [
            &[][..],
            &["put", "k"],
            &["get"],
            &["cas", "k", "a"],
            &["PUT", "k", "v"],
        ] {
            assert!(parse_kv_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn outputs_match_the_contract() {
        assert_eq!(
            cas_json(&CasOutcome {
                swapped: false,
                current: None
            }),
            r#"{"ok":true,"swapped":false,"value":null}"#
        );
        assert_eq!(
            cas_json(&CasOutcome {
                swapped: false,
                current: Some(b"7".to_vec())
            }),
            r#"{"ok":true,"swapped":false,"value":"7"}"#
        );
        assert_eq!(
            cas_json(&CasOutcome {
                swapped: true,
                current: None
            }),
            r#"{"ok":true,"swapped":true}"#
        );
        assert_eq!(
            failure_json(false, "x"),
            r#"{"ok":false,"definite":false,"error":"x"}"#
        );
    }
}
