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
use rcraft::config::{self, ConfigError, ConfigFile, ConfigOverrides, SETTINGS, Setting};
use rcraft::node::SnapshotResult;
use rcraft::wire::{LogIndex, Membership, NodeId, NodeStatus, ReplicationState, Role};
use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// List or change the cluster's members: who votes, who only learns the log.
    Members(MembersArgs),
}

/// Flags of `rcraft serve`: `--config` and one flag per setting of
/// [`rcraft::config::SETTINGS`], whose table gives each its help text and default. Values are
/// taken as text so that a bad one is reported like every other configuration error: one
/// line naming the flag.
struct ServeArgs {
    /// A cRaft `craft.conf` (plus rcraft keys such as `data_dir`); flags override it.
    config: Option<PathBuf>,
    /// `(setting, text)` for every setting flag given, in table order.
    given: Vec<(&'static Setting, String)>,
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let given = SETTINGS
            .iter()
            .filter_map(|s| Some((s, matches.get_one::<String>(s.key)?.clone())))
            .collect();
        Ok(ServeArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            given,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = ServeArgs::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("PATH")
            .value_parser(clap::value_parser!(PathBuf))
            .help("A cRaft craft.conf (plus rcraft keys such as data_dir); flags override it");
        let settings = SETTINGS.iter().map(|s| {
            clap::Arg::new(s.key)
                .long(&s.flag[2..])
                .value_name(s.value_name())
                .allow_hyphen_values(true)
                .help(s.help_text())
        });
        command.arg(config).args(settings)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        ServeArgs::augment_args(command)
    }
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
        Command::Members(args) => members(&args),
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
    let peers = args.given.iter().any(|(s, _)| s.key == "servers");
    let file = match (&args.config, peers) {
        (Some(path), _) => Some(ConfigFile::read(path).map_err(|e| e.to_string())?),
        (None, true) => None,
        (None, false) => match config::default_config_path().filter(|p| p.exists()) {
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
    let mut overrides = ConfigOverrides::default();
    for (setting, text) in &args.given {
        overrides.set(setting, text)?;
    }
    Ok(overrides)
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
        file.as_ref().and_then(|f| f.get("cluster_id")),
    ) {
        (Some(id), _) => config::parse_flag_u64("--cluster-id", id).map_err(|e| e.to_string())?,
        (None, Some(id)) => id.value.number(),
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
// members

/// Leader's last index minus the index through which it knows a learner's log matches, at
/// most, for the learner to count as caught up (and be promoted to voter). A new voter far behind would slow commits, or stop them if
/// another voter failed while it catches up.
const CATCH_UP_LAG_MAX_ENTRIES: u64 = 100;
/// Pause between two looks at a learner's progress.
const CATCH_UP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a change the leader refused without effect (an earlier change not committed
/// yet, a leader fresh from its election) is retried.
const CHANGE_REFUSED_RETRY_WINDOW: Duration = Duration::from_secs(3);
/// Pause before retrying a refused change.
const CHANGE_REFUSED_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Default deadline of a `rcraft members` command, in milliseconds.
const MEMBERS_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// `rcraft members [FLAGS] COMMAND [FLAGS]`: the common flags go before or after the command.
#[derive(Args)]
struct MembersArgs {
    #[command(flatten)]
    common: MembersCommon,
    #[command(subcommand)]
    command: MembersCommand,
}

/// `rcraft members ...`, named after `etcdctl member ...`.
#[derive(Subcommand)]
enum MembersCommand {
    /// Show every listed address: voter, learner, voter (outgoing) while a joint change is
    /// under way, or none; which one leads; each node's own log indexes. Exit 0 when a
    /// leader answered, 1 otherwise.
    List(MembersListArgs),
    /// Add node ID (its position in --servers): as a learner, then, without --learner, wait
    /// until it has caught up with the leader's log and promote it to voter.
    Add(MembersAddArgs),
    /// Promote learner ID to voter once it has caught up with the leader's log.
    Promote(MembersIdArgs),
    /// Remove node ID, voter or learner. Removing the leader works: it steps down once the
    /// change is committed and the others elect a new leader.
    Remove(MembersIdArgs),
}

/// Flags every `rcraft members` command takes (global: before or after the command).
#[derive(Args)]
struct MembersCommon {
    /// Every node's address, in id order. Without it, the servers of --config (or of
    /// ~/craft/craft.conf) are used.
    #[arg(long, value_name = "HOST:PORT,...", global = true)]
    servers: Option<String>,
    /// A craft.conf to take the servers and cluster id from.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Cluster id sent in the handshake [default: the file's, else rcraft's].
    #[arg(long, value_name = "N", global = true)]
    cluster_id: Option<String>,
    /// Deadline for the whole command: finding the leader, the change, catching up.
    #[arg(long, value_name = "N", default_value_t = MEMBERS_TIMEOUT_MS_DEFAULT, global = true)]
    timeout_ms: u64,
}

impl MembersCommon {
    /// The cluster flags in the form the other commands take them.
    fn cluster(&self) -> ClusterArgs {
        ClusterArgs {
            servers: self.servers.clone(),
            config: self.config.clone(),
            cluster_id: self.cluster_id.clone(),
        }
    }
}

#[derive(Args)]
struct MembersListArgs {
    /// One JSON object per address and line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct MembersAddArgs {
    /// Only add it as a learner (it receives the log but does not vote).
    #[arg(long)]
    learner: bool,
    /// The node: its position in --servers, from 0.
    #[arg(value_name = "ID")]
    id: String,
}

#[derive(Args)]
struct MembersIdArgs {
    /// The node: its position in --servers, from 0.
    #[arg(value_name = "ID")]
    id: String,
}

/// One single-step membership change (at most one voter changes, so the core appends the
/// target configuration as is, without a joint phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberChange {
    AddLearner(NodeId),
    Promote(NodeId),
    Remove(NodeId),
}

/// How a `rcraft members` command failed: the message, and whether it was a usage error
/// (exit 2: nothing was asked of the cluster) or an operation that failed (exit 1).
struct MembersFailure {
    usage: bool,
    message: String,
}

impl MembersFailure {
    fn usage(message: impl Into<String>) -> MembersFailure {
        MembersFailure {
            usage: true,
            message: message.into(),
        }
    }

    fn failed(message: impl Into<String>) -> MembersFailure {
        MembersFailure {
            usage: false,
            message: message.into(),
        }
    }
}

fn members(members: &MembersArgs) -> ExitCode {
    let common = &members.common;
    let (name, result) = match &members.command {
        MembersCommand::List(args) => ("members list", members_list(common, args)),
        MembersCommand::Add(args) => ("members add", members_add(common, args)),
        MembersCommand::Promote(args) => ("members promote", members_promote(common, args)),
        MembersCommand::Remove(args) => ("members remove", members_remove(common, args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("rcraft {name}: {}", failure.message);
            ExitCode::from(if failure.usage {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            })
        }
    }
}

/// What every members command starts from: the servers, a deadline, and a client.
struct MembersContext {
    servers: Vec<SocketAddr>,
    cluster_id: u64,
    deadline: Instant,
    timeout_ms: u64,
}

impl MembersContext {
    fn new(common: &MembersCommon) -> Result<MembersContext, MembersFailure> {
        let (servers, cluster_id) = cluster_of(&common.cluster()).map_err(MembersFailure::usage)?;
        Ok(MembersContext {
            servers,
            cluster_id,
            deadline: Instant::now() + Duration::from_millis(common.timeout_ms),
            timeout_ms: common.timeout_ms,
        })
    }

    /// A client whose operations end by the command's deadline.
    fn client(&self) -> Result<Client, MembersFailure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        if left_ms == 0 {
            return Err(self.timed_out());
        }
        let options = client_options(left_ms, self.cluster_id);
        Client::new(&self.servers, options).map_err(|e| MembersFailure::usage(e.to_string()))
    }

    fn timed_out(&self) -> MembersFailure {
        MembersFailure::failed(format!("timed out after {} ms", self.timeout_ms))
    }

    /// The id given on the command line, which must have an address in the server list.
    fn node_id(&self, text: &str) -> Result<NodeId, MembersFailure> {
        let id = text.parse().map_err(|_| {
            MembersFailure::usage(format!(
                "{text:?} is not a node id (the node's position in --servers, from 0)"
            ))
        })?;
        if id >= self.servers.len() as u64 {
            return Err(MembersFailure::usage(format!(
                "node {id} has no address in --servers ({} listed: ids 0-{})",
                self.servers.len(),
                self.servers.len().saturating_sub(1)
            )));
        }
        Ok(NodeId(id))
    }

    /// The leader's status: its view of the configuration.
    fn leader_status(&self) -> Result<NodeStatus, MembersFailure> {
        self.client()?
            .leader_status()
            .map_err(|e| MembersFailure::failed(format!("no leader answered: {e}")))
    }

    /// Proposes `change` against the leader's configuration `current` and waits until it is
    /// committed. Returns the configuration now in force and the leader that committed it.
    ///
    /// The leader refuses a change, without changing anything, while an earlier one is not
    /// committed yet or before it has committed an entry of its own term (right after an
    /// election). Such refusals are retried for [`CHANGE_REFUSED_RETRY_WINDOW`], planning
    /// again from the leader's configuration each time.
    fn apply_change(
        &self,
        current: &Membership,
        change: MemberChange,
    ) -> Result<(Membership, Option<NodeId>), MembersFailure> {
        let mut current = current.clone();
        let mut retry_until = None;
        loop {
            let target = plan_member_change(&current, change).map_err(MembersFailure::usage)?;
            let mut client = self.client()?;
            let refusal = match client.change_membership(target.clone()) {
                Ok(_) => return Ok((target, client.leader())),
                Err(e @ ClientError::Server { definite: true, .. }) => e,
                Err(e) => return Err(change_failure(change, &e)),
            };
            let until = *retry_until.get_or_insert(Instant::now() + CHANGE_REFUSED_RETRY_WINDOW);
            let now = Instant::now();
            if now + CHANGE_REFUSED_RETRY_PAUSE >= until.min(self.deadline) {
                return Err(change_failure(change, &refusal));
            }
            std::thread::sleep(CHANGE_REFUSED_RETRY_PAUSE);
            current = self.leader_status()?.membership;
        }
    }

    /// Waits until the leader reports learner `id`'s log matching its own to within
    /// [`CATCH_UP_LAG_MAX_ENTRIES`] entries, or the deadline passes (the error says how far it
    /// got).
    fn wait_caught_up(&self, id: NodeId) -> Result<(), MembersFailure> {
        let address = self.servers[id.0 as usize];
        let mut last_seen = "no answer yet".to_string();
        while Instant::now() + CATCH_UP_POLL_INTERVAL < self.deadline {
            match self.learner_lag(id) {
                Ok(None) => return Ok(()),
                Ok(Some(behind)) => last_seen = behind,
                // A failed look (the deadline may pass during it) is reported as the last
                // thing seen if the learner never catches up.
                Err(failure) => last_seen = failure.message,
            }
            std::thread::sleep(CATCH_UP_POLL_INTERVAL);
        }
        Err(MembersFailure::failed(format!(
            "node {id} ({address}) did not catch up within {} ms ({last_seen})",
            self.timeout_ms
        )))
    }

    /// `None` when the leader's log matches node `id`'s to within the allowed lag, else how
    /// far behind it is, as the leader sees it.
    fn learner_lag(&self, id: NodeId) -> Result<Option<String>, MembersFailure> {
        let leader = self.leader_status()?;
        Ok(replication_lag(&leader, id))
    }
}

/// How far node `id` is behind the leader whose status is `leader`, or `None` when it is
/// within [`CATCH_UP_LAG_MAX_ENTRIES`] entries of the leader's last index and the leader
/// streams entries to it and heard from it lately. The last two keep a node that never
/// answered from counting as caught up on a short log (its match index is 0).
fn replication_lag(leader: &NodeStatus, id: NodeId) -> Option<String> {
    let Some(progress) = leader.replication.iter().find(|p| p.id == id) else {
        return Some(format!("leader {} does not replicate to it yet", leader.id));
    };
    if progress.state != ReplicationState::Replicate || !progress.recently_active {
        let silent = if progress.recently_active {
            ""
        } else {
            ", not heard from lately"
        };
        return Some(format!(
            "leader {} has not seen it acknowledge its log ({}{silent})",
            leader.id,
            replication_state_name(progress.state)
        ));
    }
    let lag = leader.last_index.0.saturating_sub(progress.match_index.0);
    if lag <= CATCH_UP_LAG_MAX_ENTRIES {
        return None;
    }
    Some(format!(
        "its log matches the leader's through index {}, {lag} behind the leader's {} ({})",
        progress.match_index,
        leader.last_index,
        replication_state_name(progress.state)
    ))
}

/// The leader's replication state for one member, as operators read it.
fn replication_state_name(state: ReplicationState) -> String {
    match state {
        ReplicationState::Probe => "probing".to_string(),
        ReplicationState::Replicate => "replicating".to_string(),
        ReplicationState::Snapshot { offset, size_bytes } => {
            format!("sending snapshot, {offset} of {size_bytes} bytes")
        }
    }
}

/// The leader's match index for node `id` and how it replicates to it: the leader itself
/// matches through its last index; `None` for a node the leader does not replicate to.
fn leader_view(leader: &NodeStatus, id: NodeId) -> Option<(LogIndex, String)> {
    if id == leader.id {
        return Some((leader.last_index, "leader".to_string()));
    }
    leader
        .replication
        .iter()
        .find(|p| p.id == id)
        .map(|p| (p.match_index, replication_state_name(p.state)))
}

/// The one-line failure of a change the leader did not confirm.
fn change_failure(change: MemberChange, error: &ClientError) -> MembersFailure {
    let outcome = if error.is_definite() {
        "nothing changed"
    } else {
        "the change may or may not take effect, check with `rcraft members list`"
    };
    MembersFailure::failed(format!("{}: {error}; {outcome}", describe_change(change)))
}

/// The configuration after `change`, or why it cannot be made.
fn plan_member_change(current: &Membership, change: MemberChange) -> Result<Membership, String> {
    if current.is_joint() {
        return Err(format!(
            "a joint configuration is in force ({}); wait until the leader leaves it",
            describe_membership(current)
        ));
    }
    let mut target = current.clone();
    match change {
        MemberChange::AddLearner(id) => {
            if current.voters.contains(&id) {
                return Err(format!("node {id} is already a voter"));
            }
            if !target.learners.insert(id) {
                return Err(format!("node {id} is already a learner"));
            }
        }
        MemberChange::Promote(id) => {
            if current.voters.contains(&id) {
                return Err(format!("node {id} is already a voter"));
            }
            if !target.learners.remove(&id) {
                return Err(format!(
                    "node {id} is not a member; add it with `rcraft members add {id}`"
                ));
            }
            target.voters.insert(id);
        }
        MemberChange::Remove(id) => {
            if current.voters.len() == 1 && current.voters.contains(&id) {
                return Err(format!(
                    "node {id} is the last voter; a cluster needs at least one"
                ));
            }
            if !target.voters.remove(&id) && !target.learners.remove(&id) {
                return Err(format!("node {id} is not a member"));
            }
        }
    }
    Ok(target)
}

fn describe_change(change: MemberChange) -> String {
    match change {
        MemberChange::AddLearner(id) => format!("adding node {id} as a learner"),
        MemberChange::Promote(id) => format!("promoting node {id} to voter"),
        MemberChange::Remove(id) => format!("removing node {id}"),
    }
}

fn id_list(ids: &std::collections::BTreeSet<NodeId>) -> String {
    if ids.is_empty() {
        return "none".to_string();
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.join(",")
}

/// `voters 0,1,2; learners 3`, or while joint `voters 1,2,3 (joint with outgoing voters
/// 0,1,2); learners none`.
fn describe_membership(membership: &Membership) -> String {
    let joint = if membership.is_joint() {
        format!(
            " (joint with outgoing voters {})",
            id_list(&membership.voters_outgoing)
        )
    } else {
        String::new()
    };
    format!(
        "voters {}{joint}; learners {}",
        id_list(&membership.voters),
        id_list(&membership.learners)
    )
}

/// How `id` takes part in `membership`, as `members list` shows it.
fn membership_label(membership: &Membership, id: NodeId) -> &'static str {
    if membership.voters.contains(&id) {
        "voter"
    } else if membership.voters_outgoing.contains(&id) {
        "voter (outgoing)"
    } else if membership.learners.contains(&id) {
        "learner"
    } else {
        "none"
    }
}

fn members_add(common: &MembersCommon, args: &MembersAddArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let id = context.node_id(&args.id)?;
    let current = context.leader_status()?.membership;
    // A learner already (e.g. an earlier `add` that timed out while it caught up): go on
    // with the promotion.
    let resuming = !args.learner && current.learners.contains(&id);
    let now = if resuming {
        current
    } else {
        context
            .apply_change(&current, MemberChange::AddLearner(id))?
            .0
    };
    if args.learner {
        println!(
            "added node {id} as a learner; now {}",
            describe_membership(&now)
        );
        return Ok(());
    }
    promote_when_caught_up(&context, id, &now).map_err(|mut failure| {
        failure.message = format!(
            "{}; node {id} stays a learner (now {}); promote it later with \
             `rcraft members promote {id}`",
            failure.message,
            describe_membership(&now)
        );
        failure
    })?;
    Ok(())
}

fn members_promote(common: &MembersCommon, args: &MembersIdArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let id = context.node_id(&args.id)?;
    let current = context.leader_status()?.membership;
    plan_member_change(&current, MemberChange::Promote(id)).map_err(MembersFailure::usage)?;
    promote_when_caught_up(&context, id, &current)
}

/// Waits for learner `id` to catch up, promotes it and prints the configuration.
fn promote_when_caught_up(
    context: &MembersContext,
    id: NodeId,
    current: &Membership,
) -> Result<(), MembersFailure> {
    context.wait_caught_up(id)?;
    // The configuration may have moved on while the learner caught up.
    let current = match context.leader_status() {
        Ok(status) => status.membership,
        Err(_) => current.clone(),
    };
    let (now, _) = context.apply_change(&current, MemberChange::Promote(id))?;
    println!(
        "promoted node {id} to voter; now {}",
        describe_membership(&now)
    );
    Ok(())
}

fn members_remove(common: &MembersCommon, args: &MembersIdArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let id = context.node_id(&args.id)?;
    let current = context.leader_status()?.membership;
    let (now, committed_by) = context.apply_change(&current, MemberChange::Remove(id))?;
    let stepped_down = if committed_by == Some(id) {
        " (it was the leader and has stepped down; the others elect a new one)"
    } else {
        ""
    };
    println!(
        "removed node {id}{stepped_down}; now {}",
        describe_membership(&now)
    );
    Ok(())
}

/// One row of `members list`: an address (or a member without one) and what it says.
struct MemberRow {
    id: NodeId,
    address: Option<SocketAddr>,
    label: &'static str,
    leader: bool,
    /// The leader's match index for this node and how it replicates to it.
    replication: Option<(LogIndex, String)>,
    status: Option<Result<NodeStatus, ClientError>>,
}

fn members_list(common: &MembersCommon, args: &MembersListArgs) -> Result<(), MembersFailure> {
    let context = MembersContext::new(common)?;
    let leader = context.leader_status()?;
    let membership = &leader.membership;
    let mut ids: std::collections::BTreeSet<NodeId> =
        (0..context.servers.len() as u64).map(NodeId).collect();
    ids.extend(membership.members());
    let attempt = ATTEMPT_TIMEOUT_MAX.min(Duration::from_millis(common.timeout_ms.max(1)));
    let options = ClientOptions {
        attempt_timeout: attempt,
        ..client_options(common.timeout_ms, context.cluster_id)
    };
    let rows: Vec<MemberRow> = std::thread::scope(|scope| {
        let asks: Vec<_> = ids
            .iter()
            .map(|&id| {
                let address = context.servers.get(id.0 as usize).copied();
                let options = options.clone();
                let ask = scope.spawn(move || {
                    let address = address?;
                    let answer =
                        Client::new(&[address], options).and_then(|mut c| c.status_of(address));
                    Some(answer)
                });
                (id, address, ask)
            })
            .collect();
        asks.into_iter()
            .map(|(id, address, ask)| MemberRow {
                id,
                address,
                label: membership_label(membership, id),
                leader: id == leader.id,
                replication: leader_view(&leader, id),
                status: ask.join().expect("members thread panicked"),
            })
            .collect()
    });
    let lines = if args.json {
        rows.iter().map(member_json).collect()
    } else {
        members_table(&rows, membership)
    };
    let mut out = io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    Ok(())
}

fn member_json(row: &MemberRow) -> String {
    let address = row
        .address
        .map_or("null".to_string(), |a| json_string(&a.to_string()));
    let replication = match &row.replication {
        Some((index, state)) => format!(
            r#""match_index":{index},"replication":{}"#,
            json_string(state)
        ),
        None => r#""match_index":null,"replication":null"#.to_string(),
    };
    let head = format!(
        r#"{{"id":{},"address":{address},"membership":"{}","leader":{},{replication}"#,
        row.id, row.label, row.leader
    );
    match &row.status {
        Some(Ok(s)) => format!(
            r#"{head},"reachable":true,"role":"{}","term":{},"commit_index":{},"applied_index":{},"last_index":{}}}"#,
            role_name(s.role),
            s.term,
            s.commit_index,
            s.applied_index,
            s.last_index
        ),
        Some(Err(e)) => format!(
            r#"{head},"reachable":false,"error":{}}}"#,
            json_string(&e.to_string())
        ),
        None => format!(r#"{head},"reachable":false,"error":"no address in --servers"}}"#),
    }
}

fn members_table(rows: &[MemberRow], membership: &Membership) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<3} {:<22} {:<17} {:<6} {:>10} {:>10} {:>10} {:>10}",
        "ID", "ADDRESS", "MEMBERSHIP", "LEADER", "MATCH", "COMMIT", "APPLIED", "LAST"
    )];
    for row in rows {
        let address = row.address.map_or("-".to_string(), |a| a.to_string());
        let leader = if row.leader { "*" } else { "" };
        let matched = row
            .replication
            .as_ref()
            .map_or("-".to_string(), |(index, _)| index.to_string());
        let head = format!(
            "{:<3} {address:<22} {:<17} {leader:<6} {matched:>10}",
            row.id.to_string(),
            row.label
        );
        lines.push(match &row.status {
            Some(Ok(s)) => format!(
                "{head} {:>10} {:>10} {:>10}",
                s.commit_index.to_string(),
                s.applied_index.to_string(),
                s.last_index.to_string()
            ),
            Some(Err(e)) => format!("{head} unreachable ({e})"),
            None => format!("{head} no address in --servers"),
        });
    }
    lines.push(format!(
        "configuration: {}",
        describe_membership(membership)
    ));
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
    use rcraft::wire::{PeerProgress, Term};

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

    fn membership(voters: &[u64], outgoing: &[u64], learners: &[u64]) -> Membership {
        let set = |ids: &[u64]| ids.iter().copied().map(NodeId).collect();
        Membership {
            voters: set(voters),
            voters_outgoing: set(outgoing),
            learners: set(learners),
        }
    }

    #[test]
    fn member_changes_are_planned_or_refused() {
        use MemberChange::{AddLearner, Promote, Remove};
        let three = membership(&[0, 1, 2], &[], &[]);
        let with_learner = membership(&[0, 1, 2], &[], &[3]);
        assert_eq!(
            plan_member_change(&three, AddLearner(NodeId(3))),
            Ok(with_learner.clone())
        );
        assert_eq!(
            plan_member_change(&with_learner, Promote(NodeId(3))),
            Ok(membership(&[0, 1, 2, 3], &[], &[]))
        );
        assert_eq!(
            plan_member_change(&with_learner, Remove(NodeId(3))),
            Ok(three.clone())
        );
        assert_eq!(
            plan_member_change(&three, Remove(NodeId(0))),
            Ok(membership(&[1, 2], &[], &[]))
        );
        let refused = [
            (&three, AddLearner(NodeId(1)), "node 1 is already a voter"),
            (&with_learner, AddLearner(NodeId(3)), "already a learner"),
            (&three, Promote(NodeId(2)), "node 2 is already a voter"),
            (&three, Promote(NodeId(3)), "node 3 is not a member"),
            (&three, Remove(NodeId(3)), "node 3 is not a member"),
        ];
        for (current, change, why) in refused {
            let e = plan_member_change(current, change).unwrap_err();
            assert!(e.contains(why), "{change:?}: {e}");
        }
        let one = membership(&[2], &[], &[0]);
        let e = plan_member_change(&one, Remove(NodeId(2))).unwrap_err();
        assert!(e.contains("node 2 is the last voter"), "{e}");
        assert!(plan_member_change(&one, Remove(NodeId(0))).is_ok());
        let joint = membership(&[1, 2, 3], &[0, 1, 2], &[]);
        let e = plan_member_change(&joint, Remove(NodeId(3))).unwrap_err();
        assert!(e.contains("joint configuration"), "{e}");
    }

    #[test]
    fn memberships_are_described_and_labelled() {
        assert_eq!(
            describe_membership(&membership(&[0, 1, 2], &[], &[3])),
            "voters 0,1,2; learners 3"
        );
        let joint = membership(&[1, 2, 3], &[0, 1, 2], &[]);
        assert_eq!(
            describe_membership(&joint),
            "voters 1,2,3 (joint with outgoing voters 0,1,2); learners none"
        );
        assert_eq!(membership_label(&joint, NodeId(0)), "voter (outgoing)");
        assert_eq!(membership_label(&joint, NodeId(1)), "voter");
        assert_eq!(membership_label(&joint, NodeId(3)), "voter");
        assert_eq!(membership_label(&joint, NodeId(4)), "none");
        let learner = membership(&[0], &[], &[1]);
        assert_eq!(membership_label(&learner, NodeId(1)), "learner");
    }

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
    fn members_list_rows_render() {
        let status = NodeStatus {
            id: NodeId(1),
            role: Role::Leader,
            term: Term(4),
            leader: Some(NodeId(1)),
            commit_index: LogIndex(9),
            applied_index: LogIndex(8),
            last_index: LogIndex(10),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0), NodeId(1)],
            learners: vec![NodeId(2)],
            membership: membership(&[0, 1], &[], &[2]),
            replication: vec![PeerProgress {
                id: NodeId(2),
                match_index: LogIndex(7),
                next_index: LogIndex(8),
                state: ReplicationState::Replicate,
                recently_active: true,
            }],
        };
        assert_eq!(
            leader_view(&status, NodeId(1)),
            Some((LogIndex(10), "leader".into()))
        );
        let learner = leader_view(&status, NodeId(2));
        assert_eq!(learner, Some((LogIndex(7), "replicating".into())));
        assert_eq!(leader_view(&status, NodeId(5)), None);
        let status_for_views = status.clone();
        let row = |id: u64, label, leader, status| MemberRow {
            id: NodeId(id),
            address: (id < 3).then(|| format!("127.0.0.1:{}", 7000 + id).parse().unwrap()),
            label,
            leader,
            replication: leader_view(&status_for_views, NodeId(id)),
            status,
        };
        let unreachable = ClientError::InvalidInput("down".to_string());
        let rows = [
            row(1, "voter", true, Some(Ok(status))),
            row(2, "learner", false, Some(Err(unreachable))),
            row(5, "voter", false, None),
        ];
        assert_eq!(
            member_json(&rows[0]),
            r#"{"id":1,"address":"127.0.0.1:7001","membership":"voter","leader":true,"match_index":10,"replication":"leader","reachable":true,"role":"leader","term":4,"commit_index":9,"applied_index":8,"last_index":10}"#
        );
        assert_eq!(
            member_json(&rows[1]),
            r#"{"id":2,"address":"127.0.0.1:7002","membership":"learner","leader":false,"match_index":7,"replication":"replicating","reachable":false,"error":"invalid request: down"}"#
        );
        assert!(
            member_json(&rows[2]).contains(
                r#""address":null,"membership":"voter","leader":false,"match_index":null"#
            )
        );
        let table = members_table(&rows, &membership(&[0, 1], &[], &[2]));
        assert_eq!(table.len(), 5);
        assert!(
            table[1].starts_with("1   127.0.0.1:7001         voter             *              10")
        );
        assert!(table[2].contains(" learner "), "{}", table[2]);
        assert!(table[2].contains(" 7 unreachable"), "{}", table[2]);
        assert!(table[2].contains("unreachable (invalid request: down)"));
        assert!(table[3].contains("no address in --servers"));
        assert_eq!(table[4], "configuration: voters 0,1; learners 2");
    }

    #[test]
    fn a_learner_is_caught_up_when_the_leader_says_its_log_matches() {
        let leader = |match_index: u64, state| NodeStatus {
            id: NodeId(0),
            role: Role::Leader,
            term: Term(2),
            leader: Some(NodeId(0)),
            commit_index: LogIndex(500),
            applied_index: LogIndex(500),
            last_index: LogIndex(500),
            snapshot_index: LogIndex(0),
            voters: vec![NodeId(0)],
            learners: vec![NodeId(1)],
            membership: membership(&[0], &[], &[1]),
            replication: vec![PeerProgress {
                id: NodeId(1),
                match_index: LogIndex(match_index),
                next_index: LogIndex(match_index + 1),
                state,
                recently_active: true,
            }],
        };
        assert_eq!(
            replication_lag(&leader(400, ReplicationState::Replicate), NodeId(1)),
            None
        );
        let far = replication_lag(&leader(399, ReplicationState::Replicate), NodeId(1));
        assert_eq!(
            far.as_deref(),
            Some(
                "its log matches the leader's through index 399, 101 behind the leader's 500 (replicating)"
            )
        );
        let snapshot = ReplicationState::Snapshot {
            offset: 10,
            size_bytes: 40,
        };
        let sending = replication_lag(&leader(0, snapshot), NodeId(1)).unwrap();
        assert!(
            sending.ends_with("(sending snapshot, 10 of 40 bytes)"),
            "{sending}"
        );
        // A node that never answered has match index 0; on a short log that is within the
        // allowed lag, yet it has not caught up.
        let mut short = leader(0, ReplicationState::Probe);
        short.last_index = LogIndex(3);
        short.replication[0].recently_active = false;
        assert_eq!(
            replication_lag(&short, NodeId(1)).as_deref(),
            Some("leader 0 has not seen it acknowledge its log (probing, not heard from lately)")
        );
        short.replication[0].state = ReplicationState::Replicate;
        assert!(replication_lag(&short, NodeId(1)).is_some());
        short.replication[0].recently_active = true;
        assert_eq!(replication_lag(&short, NodeId(1)), None);
        let unknown = replication_lag(&leader(0, ReplicationState::Probe), NodeId(2));
        assert_eq!(
            unknown.as_deref(),
            Some("leader 0 does not replicate to it yet")
        );
    }

    #[test]
    fn node_ids_must_have_an_address() {
        let context = MembersContext {
            servers: vec![
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            cluster_id: 0,
            deadline: Instant::now(),
            timeout_ms: 0,
        };
        assert_eq!(context.node_id("1").ok(), Some(NodeId(1)));
        for (bad, why) in [
            (
                "2",
                "node 2 has no address in --servers (2 listed: ids 0-1)",
            ),
            ("-1", "\"-1\" is not a node id"),
            ("one", "\"one\" is not a node id"),
        ] {
            let failure = context.node_id(bad).expect_err("refused");
            assert!(failure.usage, "{bad}");
            assert!(failure.message.starts_with(why), "{}", failure.message);
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
