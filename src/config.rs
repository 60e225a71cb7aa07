//! Node configuration: the values every thread of a node is started with, and how they are
//! read.
//!
//! Sources, later ones winning: rcraft's defaults ([`Config::new`]), a cRaft `craft.conf`
//! ([`ConfigFile`]: `id`, `ELECTION_TIMEOUT`, `RPC_TIMEOUT`, `HEART_BEAT_INTERVAL`, repeated
//! `servers = host:port`, `loglevel`, plus rcraft's snake_case keys), then command-line flags
//! ([`ConfigOverrides`]). [`build_config`] merges them and validates the result; every problem
//! is a [`ConfigError`] naming where the offending value came from (`craft.conf:7: ...` or
//! `--id: ...`).
//!
//! The `Config` is built once on the main thread and then copied into each node thread.
//! Invariants after validation: `id` indexes `servers`, the servers are distinct,
//! `election_timeout_min_ms < election_timeout_max_ms`, `tick_ms <= heartbeat_ms <
//! election_timeout_min_ms`, and every count, size or duration is non-zero except
//! `snapshot_retain_entries` (0 keeps no entries behind a snapshot) and
//! `snapshot_bytes_per_sec` (0 is no limit).

use rcraft_wire::NodeId;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Everything needed to start one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node; index into `servers`.
    pub id: NodeId,
    /// Every server's address in id order (cRaft's repeated `servers =` lines). Each node
    /// listens on its own address for peers and clients.
    pub servers: Vec<SocketAddr>,
    /// Directory for the WAL, hard state and snapshots.
    pub data_dir: PathBuf,
    /// Identifies the cluster in the connection handshake; nodes of different clusters refuse
    /// each other.
    pub cluster_id: u64,
    /// Lower bound of the randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// cRaft's `RPC_TIMEOUT`: how long a client request may wait inside the node.
    pub rpc_timeout_ms: u64,
    /// Length of one consensus tick.
    pub tick_ms: u64,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Also take a snapshot once this many bytes of log (entry payloads) were applied since
    /// the last one, whichever of the two comes first.
    pub snapshot_log_bytes: u64,
    /// Entries kept in the log behind a new snapshot, so followers only slightly behind
    /// catch up from the log instead of receiving the whole snapshot.
    pub snapshot_retain_entries: u64,
    /// Size of one InstallSnapshot chunk sent to a follower.
    pub snapshot_chunk_bytes: u64,
    /// Most snapshot chunks in flight to one follower (with the chunk size, this bounds the
    /// memory a transfer holds).
    pub snapshot_chunks_in_flight: u64,
    /// Snapshot bytes per second a leader may read for all its transfers together, so they
    /// leave room for log replication; 0 means unlimited.
    pub snapshot_bytes_per_sec: u64,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`), as cRaft's `loglevel`.
    pub log_level: String,
    /// The voters of a brand-new cluster, as ids into `servers`; `None` means every server.
    /// Servers left out are spare addresses, not members, until `rcraft members add` (or
    /// [`NodeHandle::change_membership`](crate::node::NodeHandle::change_membership)) adds
    /// them. Every node of a cluster must be given the same value. It is read only when the
    /// data directory is fresh: the value is then stored there, and a node with existing
    /// state uses the stored value and its log's (or snapshot's) membership instead.
    pub initial_voters: Option<Vec<NodeId>>,
}

/// The cluster id used when neither the file nor the command line gives one ("rcraft").
pub const CLUSTER_ID_DEFAULT: u64 = 0x7263_7261_6674;

impl Config {
    /// A configuration with rcraft's defaults for node `id` of `servers`.
    pub fn new(id: NodeId, servers: Vec<SocketAddr>, data_dir: PathBuf) -> Config {
        Config {
            id,
            servers,
            data_dir,
            cluster_id: CLUSTER_ID_DEFAULT,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_ms: 50,
            rpc_timeout_ms: 5000,
            tick_ms: 10,
            snapshot_every: 100_000,
            snapshot_log_bytes: 256 << 20,
            snapshot_retain_entries: 1024,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_chunks_in_flight: 4,
            snapshot_bytes_per_sec: 800 << 20,
            log_level: "info".to_string(),
            initial_voters: None,
        }
    }

    /// The voters of a brand-new cluster: [`initial_voters`](Self::initial_voters), or every
    /// server when it is `None`.
    pub fn initial_voter_ids(&self) -> Vec<NodeId> {
        match &self.initial_voters {
            Some(voters) => voters.clone(),
            None => (0..self.servers.len() as u64).map(NodeId).collect(),
        }
    }

    /// This node's own address (where it listens).
    ///
    /// # Panics
    /// If the configuration was not validated (`id` outside `servers`).
    pub fn own_address(&self) -> SocketAddr {
        self.servers[self.id.0 as usize]
    }
}

/// Where a configuration value came from; errors name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Line `line` (1-based) of the file `path`.
    File {
        /// The file as it was named.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The whole file `path` (for a key it lacks).
    WholeFile(PathBuf),
    /// A command-line flag, e.g. `--id`.
    Flag(&'static str),
    /// Not given anywhere; rcraft's default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::WholeFile(path) => write!(f, "{}", path.display()),
            Origin::Flag(flag) => write!(f, "{flag}"),
            Origin::Default => write!(f, "configuration"),
        }
    }
}

/// What is wrong with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigProblem {
    /// The file could not be read.
    Unreadable(String),
    /// A line that is neither blank, a comment, nor `key = value`.
    Syntax(String),
    /// A key neither cRaft nor rcraft knows.
    UnknownKey(String),
    /// A key that may appear once appeared again.
    DuplicateKey(String),
    /// A value that should be a number (or a range) is not.
    BadNumber {
        /// The key or flag.
        key: String,
        /// The text given.
        value: String,
    },
    /// A duration or count that must be positive is zero.
    Zero(String),
    /// An address that does not parse or resolve.
    BadAddress {
        /// The text given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The same address listed twice.
    DuplicateAddress(SocketAddr),
    /// No `servers` at all.
    NoServers,
    /// A required value is missing (`id`, `data_dir`).
    Missing(&'static str),
    /// `id` does not index the server list.
    IdOutOfRange {
        /// The id given.
        id: u64,
        /// How many servers are listed.
        servers: usize,
    },
    /// Timing values that cannot work together.
    BadTiming(String),
    /// A log level that is not one of error, warn, info, debug, trace, off.
    BadLogLevel(String),
    /// An `initial_voters` list that is empty, repeats an id or names an id without an
    /// address.
    BadInitialVoters(String),
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigProblem::Unreadable(why) => write!(f, "cannot read: {why}"),
            ConfigProblem::Syntax(line) => write!(f, "expected `key = value`, found {line:?}"),
            ConfigProblem::UnknownKey(key) => write!(f, "unknown key {key:?}"),
            ConfigProblem::DuplicateKey(key) => write!(f, "key {key:?} given twice"),
            // A flag's name is already in the origin; a file line needs the key.
            ConfigProblem::BadNumber { key, value } if key.starts_with("--") => {
                write!(f, "{value:?} is not a valid number")
            }
            ConfigProblem::BadNumber { key, value } => {
                write!(f, "{key}: {value:?} is not a valid number")
            }
            ConfigProblem::Zero(key) => write!(f, "{key} must be greater than 0"),
            ConfigProblem::BadAddress { value, reason } => {
                write!(f, "bad address {value:?}: {reason}")
            }
            ConfigProblem::DuplicateAddress(addr) => write!(f, "server {addr} listed twice"),
            ConfigProblem::NoServers => write!(f, "no servers listed"),
            ConfigProblem::Missing(what) => write!(f, "missing {what}"),
            ConfigProblem::IdOutOfRange { id, servers } => write!(
                f,
                "id {id} is out of range: {servers} servers are listed (ids 0-{})",
                servers.saturating_sub(1)
            ),
            ConfigProblem::BadTiming(why) => write!(f, "{why}"),
            ConfigProblem::BadLogLevel(level) => write!(
                f,
                "unknown log level {level:?} (expected error, warn, info, debug, trace or off)"
            ),
            ConfigProblem::BadInitialVoters(why) => write!(f, "initial voters: {why}"),
        }
    }
}

/// A configuration problem and where it is. Displays as one line: `origin: problem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the offending value came from.
    pub origin: Origin,
    /// What is wrong with it.
    pub problem: ConfigProblem,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Result of configuration parsing and validation.
pub type Result<T> = std::result::Result<T, ConfigError>;

fn error<T>(origin: Origin, problem: ConfigProblem) -> Result<T> {
    Err(ConfigError { origin, problem })
}

/// A value and where it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
}

/// The settings found in one `craft.conf`, each with its line. Keys are matched without
/// regard to case, so `servers`, `SERVERS` and `Servers` are the same key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// The file as named by the caller.
    pub path: PathBuf,
    /// `id`.
    pub id: Option<Located<u64>>,
    /// Every `servers` line, in order.
    pub servers: Vec<Located<SocketAddr>>,
    /// `ELECTION_TIMEOUT = N` (cRaft: min N, max 2N) or `election_timeout_ms = MIN-MAX`.
    pub election_timeout_ms: Option<Located<(u64, u64)>>,
    /// `HEART_BEAT_INTERVAL`.
    pub heartbeat_ms: Option<Located<u64>>,
    /// `RPC_TIMEOUT`.
    pub rpc_timeout_ms: Option<Located<u64>>,
    /// `loglevel`.
    pub log_level: Option<Located<String>>,
    /// `data_dir`, resolved against the file's directory when relative.
    pub data_dir: Option<Located<PathBuf>>,
    /// `snapshot_every`.
    pub snapshot_every: Option<Located<u64>>,
    /// `snapshot_log_bytes`.
    pub snapshot_log_bytes: Option<Located<u64>>,
    /// `snapshot_retain_entries`.
    pub snapshot_retain_entries: Option<Located<u64>>,
    /// `snapshot_chunk_bytes`.
    pub snapshot_chunk_bytes: Option<Located<u64>>,
    /// `snapshot_chunks_in_flight`.
    pub snapshot_chunks_in_flight: Option<Located<u64>>,
    /// `snapshot_bytes_per_sec`.
    pub snapshot_bytes_per_sec: Option<Located<u64>>,
    /// `cluster_id` (decimal or `0x` hexadecimal).
    pub cluster_id: Option<Located<u64>>,
    /// `tick_ms`.
    pub tick_ms: Option<Located<u64>>,
    /// `initial_voters = 0,1,2`: ids of the first voters (see [`Config::initial_voters`]).
    pub initial_voters: Option<Located<Vec<u64>>>,
}

/// The keys a `craft.conf` may hold, in lower case. The first six are cRaft's.
pub const CONFIG_KEYS: [&str; 17] = [
    "id",
    "election_timeout",
    "rpc_timeout",
    "heart_beat_interval",
    "servers",
    "loglevel",
    "election_timeout_ms",
    "data_dir",
    "snapshot_every",
    "cluster_id",
    "tick_ms",
    "snapshot_log_bytes",
    "snapshot_retain_entries",
    "snapshot_chunk_bytes",
    "snapshot_chunks_in_flight",
    "snapshot_bytes_per_sec",
    "initial_voters",
];

impl ConfigFile {
    /// Read and parse the file at `path`.
    pub fn read(path: &Path) -> Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => ConfigFile::parse(path, &text),
            Err(e) => error(
                Origin::WholeFile(path.to_path_buf()),
                ConfigProblem::Unreadable(e.to_string()),
            ),
        }
    }

    /// Parse `text` as the contents of the file `path` (used only for messages and to resolve
    /// a relative `data_dir`).
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile> {
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            ..ConfigFile::default()
        };
        for (number, raw) in text.lines().enumerate() {
            let origin = Origin::File {
                path: path.to_path_buf(),
                line: number + 1,
            };
            let line = strip_comment(raw).trim();
            if line.is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return error(origin, ConfigProblem::Syntax(raw.to_string()));
            };
            file.set(key.trim(), value.trim(), origin)?;
        }
        Ok(file)
    }

    fn set(&mut self, key: &str, value: &str, origin: Origin) -> Result<()> {
        let lower = key.to_ascii_lowercase();
        match lower.as_str() {
            "id" => put_once(&mut self.id, key, parse_u64(key, value), origin),
            "servers" => {
                let addr = resolve_address(value).or_else(|reason| {
                    let value = value.to_string();
                    error(origin.clone(), ConfigProblem::BadAddress { value, reason })
                })?;
                self.servers.push(Located {
                    value: addr,
                    origin,
                });
                Ok(())
            }
            "election_timeout" => {
                let n = parse_u64(key, value);
                let range = n.map(|n| (n, n.saturating_mul(2)));
                put_once(&mut self.election_timeout_ms, key, range, origin)
            }
            "election_timeout_ms" => {
                let range = parse_range(value).ok_or_else(|| bad_number(key, value));
                put_once(&mut self.election_timeout_ms, key, range, origin)
            }
            "heart_beat_interval" => {
                put_once(&mut self.heartbeat_ms, key, parse_u64(key, value), origin)
            }
            "rpc_timeout" => put_once(&mut self.rpc_timeout_ms, key, parse_u64(key, value), origin),
            "loglevel" => {
                let level =
                    normalize_log_level(value).ok_or(ConfigProblem::BadLogLevel(value.into()));
                put_once(&mut self.log_level, key, level, origin)
            }
            "data_dir" => {
                let dir = self.path.parent().unwrap_or(Path::new("")).join(value);
                let dir = if value.is_empty() {
                    Err(ConfigProblem::Missing("data_dir value"))
                } else {
                    Ok(dir)
                };
                put_once(&mut self.data_dir, key, dir, origin)
            }
            "snapshot_every" => {
                put_once(&mut self.snapshot_every, key, parse_u64(key, value), origin)
            }
            "snapshot_log_bytes" => put_once(
                &mut self.snapshot_log_bytes,
                key,
                parse_u64(key, value),
                origin,
            ),
            "snapshot_retain_entries" => put_once(
                &mut self.snapshot_retain_entries,
                key,
                parse_u64(key, value),
                origin,
            ),
            "snapshot_chunk_bytes" => put_once(
                &mut self.snapshot_chunk_bytes,
                key,
                parse_u64(key, value),
                origin,
            ),
            "snapshot_chunks_in_flight" => put_once(
                &mut self.snapshot_chunks_in_flight,
                key,
                parse_u64(key, value),
                origin,
            ),
            "snapshot_bytes_per_sec" => put_once(
                &mut self.snapshot_bytes_per_sec,
                key,
                parse_u64(key, value),
                origin,
            ),
            "cluster_id" => put_once(&mut self.cluster_id, key, parse_u64(key, value), origin),
            "tick_ms" => put_once(&mut self.tick_ms, key, parse_u64(key, value), origin),
            "initial_voters" => put_once(
                &mut self.initial_voters,
                key,
                parse_id_list(key, value),
                origin,
            ),
            _ => error(origin, ConfigProblem::UnknownKey(key.to_string())),
        }
    }
}

/// Store a single-valued key, refusing a second occurrence and a value that did not parse.
fn put_once<T>(
    slot: &mut Option<Located<T>>,
    key: &str,
    value: std::result::Result<T, ConfigProblem>,
    origin: Origin,
) -> Result<()> {
    if slot.is_some() {
        // ELECTION_TIMEOUT and election_timeout_ms share a slot: name the one repeated.
        return error(origin, ConfigProblem::DuplicateKey(key.to_string()));
    }
    match value {
        Ok(value) => {
            *slot = Some(Located { value, origin });
            Ok(())
        }
        Err(problem) => error(origin, problem),
    }
}

/// Drop a `#` comment and everything after it.
fn strip_comment(line: &str) -> &str {
    match line.find('#') {
        Some(at) => &line[..at],
        None => line,
    }
}

fn bad_number(key: &str, value: &str) -> ConfigProblem {
    ConfigProblem::BadNumber {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// A non-negative integer, decimal or `0x` hexadecimal, `_` allowed as a separator.
fn parse_u64(key: &str, value: &str) -> std::result::Result<u64, ConfigProblem> {
    let digits = value.replace('_', "");
    let parsed = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => digits.parse(),
    };
    parsed.map_err(|_| bad_number(key, value))
}

/// A comma-separated list of node ids, e.g. `0,1,2` (spaces allowed around the commas).
fn parse_id_list(key: &str, value: &str) -> std::result::Result<Vec<u64>, ConfigProblem> {
    if value.trim().is_empty() {
        return Err(ConfigProblem::BadInitialVoters(
            "the list is empty".to_string(),
        ));
    }
    value
        .split(',')
        .map(|item| parse_u64(key, item.trim()))
        .collect()
}

/// An id list given to command-line flag `flag` (`--initial-voters 0,1,2`).
pub fn parse_flag_id_list(flag: &'static str, value: &str) -> Result<Vec<u64>> {
    parse_id_list(flag, value).or_else(|problem| error(Origin::Flag(flag), problem))
}

/// Checks an initial voter list against `servers` listed addresses: not empty, no repeats,
/// every id has an address.
pub fn check_initial_voters(
    voters: &[u64],
    servers: usize,
) -> std::result::Result<(), ConfigProblem> {
    let bad = |why: String| Err(ConfigProblem::BadInitialVoters(why));
    if voters.is_empty() {
        return bad("the list is empty".to_string());
    }
    if let Some(id) = voters.iter().find(|&&id| id >= servers as u64) {
        return bad(format!(
            "id {id} has no address: {servers} servers are listed (ids 0-{})",
            servers.saturating_sub(1)
        ));
    }
    let repeated = voters
        .iter()
        .enumerate()
        .find(|(i, id)| voters[..*i].contains(id));
    if let Some((_, id)) = repeated {
        return bad(format!("id {id} is listed twice"));
    }
    Ok(())
}

/// `MIN-MAX` in milliseconds, e.g. `150-300`.
pub fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (min, max) = value.split_once('-')?;
    Some((min.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// Resolve `host:port` (e.g. `127.0.0.1:5000`, `localhost:5000`, `[::1]:5000`) to one
/// address, preferring IPv4 when a name resolves to several, so every process that reads the
/// same list picks the same address.
pub fn resolve_address(value: &str) -> std::result::Result<SocketAddr, String> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !value.contains(':') {
        return Err("expected HOST:PORT".to_string());
    }
    let addrs: Vec<SocketAddr> = value
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| "the name resolves to no address".to_string())
}

/// Parse a comma-separated `HOST:PORT,HOST:PORT,...` list (the `--peers` and `--servers`
/// flags). Errors name the flag.
pub fn parse_address_list(flag: &'static str, list: &str) -> Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for item in list.split(',').map(str::trim) {
        let addr = resolve_address(item).or_else(|reason| {
            let value = item.to_string();
            error(
                Origin::Flag(flag),
                ConfigProblem::BadAddress { value, reason },
            )
        })?;
        addrs.push(addr);
    }
    if let Some(dup) = first_duplicate(&addrs) {
        return error(Origin::Flag(flag), ConfigProblem::DuplicateAddress(dup));
    }
    Ok(addrs)
}

fn first_duplicate(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .enumerate()
        .find(|(i, a)| addrs[..*i].contains(a))
        .map(|(_, a)| *a)
}

/// Map cRaft / spdlog level names onto `log` level names; `None` for anything else.
pub fn normalize_log_level(value: &str) -> Option<String> {
    let level = match value.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "err" | "critical" => "error",
        "off" => "off",
        _ => return None,
    };
    Some(level.to_string())
}

/// A number given to command-line flag `flag` (decimal or `0x` hexadecimal).
pub fn parse_flag_u64(flag: &'static str, value: &str) -> Result<u64> {
    parse_u64(flag, value).or_else(|problem| error(Origin::Flag(flag), problem))
}

/// A `MIN-MAX` range given to command-line flag `flag`.
pub fn parse_flag_range(flag: &'static str, value: &str) -> Result<(u64, u64)> {
    match parse_range(value) {
        Some(range) => Ok(range),
        None => error(Origin::Flag(flag), bad_number(flag, value)),
    }
}

/// Command-line flags that override the file (or stand in for it). `None` = not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    /// `--id`.
    pub id: Option<u64>,
    /// `--peers`, already parsed with [`parse_address_list`]; replaces the file's servers.
    pub peers: Option<Vec<SocketAddr>>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--election-timeout-ms MIN-MAX`.
    pub election_timeout_ms: Option<(u64, u64)>,
    /// `--heartbeat-ms`.
    pub heartbeat_ms: Option<u64>,
    /// `--rpc-timeout-ms`.
    pub rpc_timeout_ms: Option<u64>,
    /// `--tick-ms`.
    pub tick_ms: Option<u64>,
    /// `--snapshot-every`.
    pub snapshot_every: Option<u64>,
    /// `--snapshot-log-bytes`.
    pub snapshot_log_bytes: Option<u64>,
    /// `--snapshot-retain-entries`.
    pub snapshot_retain_entries: Option<u64>,
    /// `--snapshot-chunk-bytes`.
    pub snapshot_chunk_bytes: Option<u64>,
    /// `--snapshot-chunks-in-flight`.
    pub snapshot_chunks_in_flight: Option<u64>,
    /// `--snapshot-bytes-per-sec` (0 = unlimited).
    pub snapshot_bytes_per_sec: Option<u64>,
    /// `--cluster-id`.
    pub cluster_id: Option<u64>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--initial-voters`, already parsed with [`parse_flag_id_list`].
    pub initial_voters: Option<Vec<u64>>,
}

/// `~/craft/craft.conf`, the file read when neither `--config` nor `--peers` is given.
pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join("craft").join("craft.conf"))
}

/// Pick the flag's value if given, else the file's, else the default, remembering where it
/// came from.
fn choose<T: Clone>(
    flag: Option<T>,
    flag_name: &'static str,
    from_file: Option<&Located<T>>,
    default: T,
) -> Located<T> {
    match (flag, from_file) {
        (Some(value), _) => Located {
            value,
            origin: Origin::Flag(flag_name),
        },
        (None, Some(located)) => located.clone(),
        (None, None) => Located {
            value: default,
            origin: Origin::Default,
        },
    }
}

/// Merge the parsed file (if any) with the command-line overrides and validate the result.
pub fn build_config(file: Option<&ConfigFile>, flags: &ConfigOverrides) -> Result<Config> {
    let whole_file = match file {
        Some(f) => Origin::WholeFile(f.path.clone()),
        None => Origin::Flag("command line"),
    };
    let servers = choose_servers(file, flags, &whole_file)?;
    let id = match (flags.id, file.and_then(|f| f.id.clone())) {
        (Some(id), _) => Located {
            value: id,
            origin: Origin::Flag("--id"),
        },
        (None, Some(id)) => id,
        (None, None) => return error(whole_file, ConfigProblem::Missing("id (give --id N)")),
    };
    if id.value >= servers.len() as u64 {
        let servers = servers.len();
        return error(
            id.origin,
            ConfigProblem::IdOutOfRange {
                id: id.value,
                servers,
            },
        );
    }
    let data_dir = match (&flags.data_dir, file.and_then(|f| f.data_dir.as_ref())) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.value.clone(),
        (None, None) => match file {
            // A cRaft file has no data_dir: keep each node's data beside the file.
            Some(f) => data_dir_beside(&f.path, id.value),
            None => return error(whole_file, ConfigProblem::Missing("--data-dir")),
        },
    };
    let initial_voters = choose_initial_voters(file, flags, servers.len())?;
    let mut config = Config::new(NodeId(id.value), servers, data_dir);
    config.initial_voters = initial_voters;
    apply_tuning(&mut config, file, flags)?;
    Ok(config)
}

/// `--initial-voters` or the file's `initial_voters`, checked against the server list;
/// `None` (every server votes) when neither is given.
fn choose_initial_voters(
    file: Option<&ConfigFile>,
    flags: &ConfigOverrides,
    servers: usize,
) -> Result<Option<Vec<NodeId>>> {
    let given = match (
        &flags.initial_voters,
        file.and_then(|f| f.initial_voters.as_ref()),
    ) {
        (Some(ids), _) => Located {
            value: ids.clone(),
            origin: Origin::Flag("--initial-voters"),
        },
        (None, Some(located)) => located.clone(),
        (None, None) => return Ok(None),
    };
    match check_initial_voters(&given.value, servers) {
        Ok(()) => Ok(Some(given.value.into_iter().map(NodeId).collect())),
        Err(problem) => error(given.origin, problem),
    }
}

/// `<dir of the file>/rcraft-data-<id>`.
fn data_dir_beside(config_path: &Path, id: u64) -> PathBuf {
    let dir = config_path.parent().unwrap_or(Path::new(""));
    dir.join(format!("rcraft-data-{id}"))
}

fn choose_servers(
    file: Option<&ConfigFile>,
    flags: &ConfigOverrides,
    whole_file: &Origin,
) -> Result<Vec<SocketAddr>> {
    let servers: Vec<SocketAddr> = match (&flags.peers, file) {
        (Some(peers), _) => peers.clone(),
        (None, Some(f)) => {
            let addrs: Vec<SocketAddr> = f.servers.iter().map(|s| s.value).collect();
            if let Some(dup) = first_duplicate(&addrs) {
                let at = f.servers.iter().rposition(|s| s.value == dup).unwrap_or(0);
                let origin = f.servers[at].origin.clone();
                return error(origin, ConfigProblem::DuplicateAddress(dup));
            }
            addrs
        }
        (None, None) => Vec::new(),
    };
    if servers.is_empty() {
        return error(whole_file.clone(), ConfigProblem::NoServers);
    }
    Ok(servers)
}

/// Timing, snapshot, cluster and log settings: merge, then check they can work together.
fn apply_tuning(
    config: &mut Config,
    file: Option<&ConfigFile>,
    flags: &ConfigOverrides,
) -> Result<()> {
    let defaults = config.clone();
    let election = choose(
        flags.election_timeout_ms,
        "--election-timeout-ms",
        file.and_then(|f| f.election_timeout_ms.as_ref()),
        (
            defaults.election_timeout_min_ms,
            defaults.election_timeout_max_ms,
        ),
    );
    let heartbeat = choose(
        flags.heartbeat_ms,
        "--heartbeat-ms",
        file.and_then(|f| f.heartbeat_ms.as_ref()),
        defaults.heartbeat_ms,
    );
    let rpc = choose(
        flags.rpc_timeout_ms,
        "--rpc-timeout-ms",
        file.and_then(|f| f.rpc_timeout_ms.as_ref()),
        defaults.rpc_timeout_ms,
    );
    let tick = choose(
        flags.tick_ms,
        "--tick-ms",
        file.and_then(|f| f.tick_ms.as_ref()),
        defaults.tick_ms,
    );
    let snapshot = choose(
        flags.snapshot_every,
        "--snapshot-every",
        file.and_then(|f| f.snapshot_every.as_ref()),
        defaults.snapshot_every,
    );
    let log_bytes = choose(
        flags.snapshot_log_bytes,
        "--snapshot-log-bytes",
        file.and_then(|f| f.snapshot_log_bytes.as_ref()),
        defaults.snapshot_log_bytes,
    );
    let retain = choose(
        flags.snapshot_retain_entries,
        "--snapshot-retain-entries",
        file.and_then(|f| f.snapshot_retain_entries.as_ref()),
        defaults.snapshot_retain_entries,
    );
    let chunk = choose(
        flags.snapshot_chunk_bytes,
        "--snapshot-chunk-bytes",
        file.and_then(|f| f.snapshot_chunk_bytes.as_ref()),
        defaults.snapshot_chunk_bytes,
    );
    let in_flight = choose(
        flags.snapshot_chunks_in_flight,
        "--snapshot-chunks-in-flight",
        file.and_then(|f| f.snapshot_chunks_in_flight.as_ref()),
        defaults.snapshot_chunks_in_flight,
    );
    let bytes_per_sec = choose(
        flags.snapshot_bytes_per_sec,
        "--snapshot-bytes-per-sec",
        file.and_then(|f| f.snapshot_bytes_per_sec.as_ref()),
        defaults.snapshot_bytes_per_sec,
    );
    let cluster = choose(
        flags.cluster_id,
        "--cluster-id",
        file.and_then(|f| f.cluster_id.as_ref()),
        defaults.cluster_id,
    );
    let level = match &flags.log_level {
        Some(level) => match normalize_log_level(level) {
            Some(level) => level,
            None => {
                return error(
                    Origin::Flag("--log-level"),
                    ConfigProblem::BadLogLevel(level.clone()),
                );
            }
        },
        None => file
            .and_then(|f| f.log_level.as_ref())
            .map_or(defaults.log_level, |l| l.value.clone()),
    };
    for (value, origin, name) in [
        (election.value.0, &election.origin, "election timeout"),
        (heartbeat.value, &heartbeat.origin, "heartbeat interval"),
        (rpc.value, &rpc.origin, "rpc timeout"),
        (tick.value, &tick.origin, "tick_ms"),
        (snapshot.value, &snapshot.origin, "snapshot_every"),
        (log_bytes.value, &log_bytes.origin, "snapshot_log_bytes"),
        (chunk.value, &chunk.origin, "snapshot_chunk_bytes"),
        (
            in_flight.value,
            &in_flight.origin,
            "snapshot_chunks_in_flight",
        ),
    ] {
        if value == 0 {
            return error(origin.clone(), ConfigProblem::Zero(name.to_string()));
        }
    }
    check_timing(election.clone(), &heartbeat, &tick)?;
    config.election_timeout_min_ms = election.value.0;
    config.election_timeout_max_ms = election.value.1;
    config.heartbeat_ms = heartbeat.value;
    config.rpc_timeout_ms = rpc.value;
    config.tick_ms = tick.value;
    config.snapshot_every = snapshot.value;
    config.snapshot_log_bytes = log_bytes.value;
    config.snapshot_retain_entries = retain.value;
    config.snapshot_chunk_bytes = chunk.value;
    config.snapshot_chunks_in_flight = in_flight.value;
    config.snapshot_bytes_per_sec = bytes_per_sec.value;
    config.cluster_id = cluster.value;
    config.log_level = level;
    Ok(())
}

/// Randomized election timeouts need a real range, and a leader must be able to send several
/// heartbeats within the shortest election timeout or followers will keep starting elections.
fn check_timing(
    election: Located<(u64, u64)>,
    heartbeat: &Located<u64>,
    tick: &Located<u64>,
) -> Result<()> {
    let (min, max) = election.value;
    if min >= max {
        let why = format!("election timeout range {min}-{max} ms is empty (MIN must be below MAX)");
        return error(election.origin, ConfigProblem::BadTiming(why));
    }
    if heartbeat.value >= min {
        let why = format!(
            "heartbeat interval {} ms must be below the election timeout ({min} ms)",
            heartbeat.value
        );
        return error(heartbeat.origin.clone(), ConfigProblem::BadTiming(why));
    }
    if tick.value > heartbeat.value {
        let why = format!(
            "tick_ms {} must not exceed the heartbeat interval ({} ms)",
            tick.value, heartbeat.value
        );
        return error(tick.origin.clone(), ConfigProblem::BadTiming(why));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cRaft seed's file, comments and odd spacing included.
    const CRAFT_CONF: &str = "\
# cRaft configuration
id = 1

ELECTION_TIMEOUT=400
RPC_TIMEOUT = 200
HEART_BEAT_INTERVAL   =   100
servers = 127.0.0.1:5000
servers = 127.0.0.1:5001   # this node
servers = localhost:5002
loglevel = debug
";

    fn parse(text: &str) -> Result<ConfigFile> {
        ConfigFile::parse(Path::new("craft.conf"), text)
    }

    fn problem_of(text: &str) -> (String, ConfigProblem) {
        let e = parse(text).and_then(|f| build_config(Some(&f), &ConfigOverrides::default()));
        let e = e.expect_err("configuration should be refused");
        let line = e.to_string();
        assert!(!line.contains('\n'), "one line: {line}");
        (line, e.problem)
    }

    #[test]
    fn reads_a_craft_conf_as_is() {
        let file = parse(CRAFT_CONF).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(config.id, NodeId(1));
        let ports: Vec<u16> = config.servers.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [5000, 5001, 5002]);
        assert!(config.servers[2].ip().is_loopback());
        assert_eq!(
            (
                config.election_timeout_min_ms,
                config.election_timeout_max_ms
            ),
            (400, 800)
        );
        assert_eq!(config.rpc_timeout_ms, 200);
        assert_eq!(config.heartbeat_ms, 100);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.data_dir, PathBuf::from("rcraft-data-1"));
        assert_eq!(config.cluster_id, CLUSTER_ID_DEFAULT);
        assert_eq!(config.own_address().port(), 5001);
    }

    #[test]
    fn snapshot_transfer_keys() {
        let text = "id = 0\nservers = 127.0.0.1:1\nsnapshot_chunks_in_flight = 8\n\
                    snapshot_bytes_per_sec = 0\n";
        let file = ConfigFile::parse(Path::new("craft.conf"), text).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(
            (
                config.snapshot_chunks_in_flight,
                config.snapshot_bytes_per_sec
            ),
            (8, 0)
        );
        // The flags win over the file; a rate of 0 (unlimited) is allowed from either.
        let flags = ConfigOverrides {
            snapshot_chunks_in_flight: Some(16),
            snapshot_bytes_per_sec: Some(1 << 20),
            ..ConfigOverrides::default()
        };
        let config = build_config(Some(&file), &flags).unwrap();
        assert_eq!(
            (
                config.snapshot_chunks_in_flight,
                config.snapshot_bytes_per_sec
            ),
            (16, 1 << 20)
        );
        let flags = ConfigOverrides {
            snapshot_bytes_per_sec: Some(0),
            ..flags
        };
        assert_eq!(
            build_config(Some(&file), &flags)
                .unwrap()
                .snapshot_bytes_per_sec,
            0
        );
        let flags = ConfigOverrides {
            snapshot_chunks_in_flight: Some(0),
            ..flags
        };
        let err = build_config(Some(&file), &flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--snapshot-chunks-in-flight: snapshot_chunks_in_flight must be greater than 0"
        );
        let err = parse_flag_u64("--snapshot-bytes-per-sec", "1e9").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--snapshot-bytes-per-sec: \"1e9\" is not a valid number"
        );
        let text = "id = 0\nservers = 127.0.0.1:1\nsnapshot_chunks_in_flight = 0\n";
        let file = ConfigFile::parse(Path::new("craft.conf"), text).unwrap();
        let err = build_config(Some(&file), &ConfigOverrides::default()).unwrap_err();
        assert!(
            err.to_string().contains("snapshot_chunks_in_flight"),
            "{err}"
        );
    }

    #[test]
    fn initial_voters_default_to_every_server() {
        let file = parse(CRAFT_CONF).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(config.initial_voters, None);
        assert_eq!(
            config.initial_voter_ids(),
            [NodeId(0), NodeId(1), NodeId(2)]
        );
    }

    #[test]
    fn initial_voters_from_the_file_and_the_flag() {
        let text = "id = 3\nservers = 127.0.0.1:1\nservers = 127.0.0.1:2\n\
                    servers = 127.0.0.1:3\nservers = 127.0.0.1:4\ninitial_voters = 0, 1,2\n";
        let file = parse(text).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(
            config.initial_voter_ids(),
            [NodeId(0), NodeId(1), NodeId(2)]
        );
        let flags = ConfigOverrides {
            initial_voters: Some(parse_flag_id_list("--initial-voters", "3").unwrap()),
            ..ConfigOverrides::default()
        };
        let config = build_config(Some(&file), &flags).unwrap();
        assert_eq!(config.initial_voters, Some(vec![NodeId(3)]));
    }

    #[test]
    fn bad_initial_voters_name_the_line_or_flag() {
        let servers = "id = 0\nservers = 127.0.0.1:1\nservers = 127.0.0.1:2\n";
        for (list, why) in [
            ("0,2", "id 2 has no address"),
            ("1,1", "id 1 is listed twice"),
            ("", "the list is empty"),
            ("0,x", "\"x\" is not a valid number"),
        ] {
            let (line, _) = problem_of(&format!("{servers}initial_voters = {list}\n"));
            assert!(line.starts_with("craft.conf:4: "), "{line}");
            assert!(line.contains(why), "{line}");
        }
        let file = parse(servers).unwrap();
        let flags = ConfigOverrides {
            initial_voters: Some(vec![5]),
            ..ConfigOverrides::default()
        };
        let e = build_config(Some(&file), &flags).unwrap_err().to_string();
        assert!(
            e.starts_with("--initial-voters: initial voters: id 5"),
            "{e}"
        );
        let e = parse_flag_id_list("--initial-voters", "0,,1").unwrap_err();
        assert!(e.to_string().starts_with("--initial-voters: "), "{e}");
    }

    #[test]
    fn snapshot_policy_keys_and_flags() {
        let text = "id = 0\nservers = 127.0.0.1:1\nsnapshot_log_bytes = 4096\n\
                    snapshot_retain_entries = 0\nsnapshot_chunk_bytes = 512\n";
        let file = ConfigFile::parse(Path::new("craft.conf"), text).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(
            (
                config.snapshot_log_bytes,
                config.snapshot_retain_entries,
                config.snapshot_chunk_bytes
            ),
            (4096, 0, 512)
        );
        let flags = ConfigOverrides {
            snapshot_log_bytes: Some(1 << 20),
            snapshot_retain_entries: Some(7),
            ..ConfigOverrides::default()
        };
        let config = build_config(Some(&file), &flags).unwrap();
        assert_eq!(config.snapshot_log_bytes, 1 << 20);
        assert_eq!(config.snapshot_retain_entries, 7);
        let zero = ConfigFile::parse(
            Path::new("craft.conf"),
            "id = 0\nservers = 127.0.0.1:1\nsnapshot_chunk_bytes = 0\n",
        )
        .unwrap();
        let err = build_config(Some(&zero), &ConfigOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("snapshot_chunk_bytes"), "{err}");
    }

    #[test]
    fn reads_rcraft_keys() {
        let text = "id = 0\nservers = 127.0.0.1:1\ndata_dir = d0\nsnapshot_every = 50\n\
                    cluster_id = 0x2a\ntick_ms = 5\nelection_timeout_ms = 100-250\n";
        let file = ConfigFile::parse(Path::new("/etc/rcraft/craft.conf"), text).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/etc/rcraft/d0"));
        assert_eq!(config.snapshot_every, 50);
        assert_eq!(config.cluster_id, 42);
        assert_eq!(config.tick_ms, 5);
        assert_eq!(
            (
                config.election_timeout_min_ms,
                config.election_timeout_max_ms
            ),
            (100, 250)
        );
    }

    #[test]
    fn flags_override_the_file() {
        let file = parse(CRAFT_CONF).unwrap();
        let flags = ConfigOverrides {
            id: Some(2),
            data_dir: Some(PathBuf::from("/tmp/x")),
            election_timeout_ms: Some((300, 600)),
            heartbeat_ms: Some(30),
            snapshot_every: Some(7),
            cluster_id: Some(9),
            log_level: Some("WARNING".into()),
            ..ConfigOverrides::default()
        };
        let config = build_config(Some(&file), &flags).unwrap();
        assert_eq!(config.id, NodeId(2));
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            (
                config.election_timeout_min_ms,
                config.election_timeout_max_ms
            ),
            (300, 600)
        );
        assert_eq!(config.heartbeat_ms, 30);
        assert_eq!(config.snapshot_every, 7);
        assert_eq!(config.cluster_id, 9);
        assert_eq!(config.log_level, "warn");
        assert_eq!(config.rpc_timeout_ms, 200, "untouched file value stays");
    }

    #[test]
    fn flags_alone_make_a_config_with_defaults() {
        let flags = ConfigOverrides {
            id: Some(0),
            peers: Some(parse_address_list("--peers", "127.0.0.1:7000,127.0.0.1:7001").unwrap()),
            data_dir: Some(PathBuf::from("d")),
            ..ConfigOverrides::default()
        };
        let config = build_config(None, &flags).unwrap();
        let defaults = Config::new(NodeId(0), config.servers.clone(), PathBuf::from("d"));
        assert_eq!(config, defaults);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let (line, problem) =
            problem_of("id = 0\nservers = 127.0.0.1:1\n\n# c\n\n\nSERVERS2 = x\n");
        assert_eq!(line, r#"craft.conf:7: unknown key "SERVERS2""#);
        assert_eq!(problem, ConfigProblem::UnknownKey("SERVERS2".into()));
    }

    #[test]
    fn line_without_equals_is_a_syntax_error() {
        let (line, problem) = problem_of("id 0\n");
        assert!(line.starts_with("craft.conf:1: "), "{line}");
        assert!(matches!(problem, ConfigProblem::Syntax(_)));
    }

    #[test]
    fn id_out_of_range_points_at_the_id_line() {
        let (line, problem) = problem_of("servers = 127.0.0.1:1\nservers = 127.0.0.1:2\nid = 2\n");
        assert!(
            line.starts_with("craft.conf:3: id 2 is out of range"),
            "{line}"
        );
        assert_eq!(problem, ConfigProblem::IdOutOfRange { id: 2, servers: 2 });
        let file = parse("servers = 127.0.0.1:1\nid = 0\n").unwrap();
        let flags = ConfigOverrides {
            id: Some(5),
            ..ConfigOverrides::default()
        };
        let e = build_config(Some(&file), &flags).unwrap_err();
        assert!(
            e.to_string().starts_with("--id: id 5 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn unparsable_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.0.0.1:notaport",
            "300.0.0.1:5",
            "no-such-host.invalid:5",
        ] {
            let (line, problem) = problem_of(&format!("id = 0\nservers = {bad}\n"));
            assert!(line.starts_with("craft.conf:2: bad address"), "{line}");
            assert!(matches!(problem, ConfigProblem::BadAddress { .. }), "{bad}");
        }
        let e = parse_address_list("--peers", "127.0.0.1:1,nonsense").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--peers: bad address \"nonsense\""),
            "{e}"
        );
    }

    #[test]
    fn localhost_resolves() {
        let addr = resolve_address("localhost:5002").unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 5002);
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let (line, problem) = problem_of("id = 0\nservers = 127.0.0.1:1\nservers = 127.0.0.1:1\n");
        assert!(line.starts_with("craft.conf:3: "), "{line}");
        assert!(matches!(problem, ConfigProblem::DuplicateAddress(_)));
        assert!(parse_address_list("--peers", "127.0.0.1:1,127.0.0.1:1").is_err());
    }

    #[test]
    fn heartbeat_must_be_below_election_timeout() {
        let text =
            "id = 0\nservers = 127.0.0.1:1\nELECTION_TIMEOUT = 100\nHEART_BEAT_INTERVAL = 100\n";
        let (line, problem) = problem_of(text);
        assert!(
            line.starts_with("craft.conf:4: heartbeat interval 100 ms"),
            "{line}"
        );
        assert!(matches!(problem, ConfigProblem::BadTiming(_)));
    }

    #[test]
    fn election_range_must_not_be_empty() {
        let text = "id = 0\nservers = 127.0.0.1:1\nelection_timeout_ms = 300-300\n";
        let (line, problem) = problem_of(text);
        assert!(
            line.starts_with("craft.conf:3: election timeout range"),
            "{line}"
        );
        assert!(matches!(problem, ConfigProblem::BadTiming(_)));
    }

    #[test]
    fn tick_must_not_exceed_heartbeat() {
        let (line, _) = problem_of("id = 0\nservers = 127.0.0.1:1\ntick_ms = 60\n");
        assert!(line.starts_with("craft.conf:3: tick_ms 60"), "{line}");
    }

    #[test]
    fn bad_numbers_are_refused() {
        for (text, at) in [
            ("id = one\n", 1),
            ("id = 0\nELECTION_TIMEOUT = 1.5\n", 2),
            ("id = 0\nRPC_TIMEOUT = -1\n", 2),
            ("id = 0\nHEART_BEAT_INTERVAL =\n", 2),
            ("id = 0\nsnapshot_every = 1e6\n", 2),
            ("id = 0\nelection_timeout_ms = 150\n", 2),
            ("id = 0\ncluster_id = 0xZZ\n", 2),
        ] {
            let (line, problem) = problem_of(text);
            assert!(line.starts_with(&format!("craft.conf:{at}: ")), "{line}");
            assert!(matches!(problem, ConfigProblem::BadNumber { .. }), "{text}");
        }
    }

    #[test]
    fn zero_values_are_refused() {
        let (line, problem) = problem_of("id = 0\nservers = 127.0.0.1:1\nsnapshot_every = 0\n");
        assert!(line.starts_with("craft.conf:3: "), "{line}");
        assert_eq!(problem, ConfigProblem::Zero("snapshot_every".into()));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let (line, problem) = problem_of("id = 0\nid = 1\n");
        assert!(line.starts_with("craft.conf:2: "), "{line}");
        assert_eq!(problem, ConfigProblem::DuplicateKey("id".into()));
        let (_, problem) = problem_of("ELECTION_TIMEOUT = 300\nelection_timeout_ms = 150-300\n");
        assert!(matches!(problem, ConfigProblem::DuplicateKey(_)));
    }

    #[test]
    fn bad_log_level_is_refused() {
        let (line, problem) = problem_of("id = 0\nloglevel = loud\n");
        assert!(
            line.starts_with("craft.conf:2: unknown log level"),
            "{line}"
        );
        assert_eq!(problem, ConfigProblem::BadLogLevel("loud".into()));
        let flags = ConfigOverrides {
            log_level: Some("loud".into()),
            ..ConfigOverrides::default()
        };
        let file = parse("id = 0\nservers = 127.0.0.1:1\n").unwrap();
        assert!(
            build_config(Some(&file), &flags)
                .unwrap_err()
                .to_string()
                .starts_with("--log-level: ")
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let (line, problem) = problem_of("id = 0\n");
        assert_eq!(line, "craft.conf: no servers listed");
        assert_eq!(problem, ConfigProblem::NoServers);
        let (_, problem) = problem_of("servers = 127.0.0.1:1\n");
        assert!(matches!(problem, ConfigProblem::Missing(_)));
        let flags = ConfigOverrides {
            id: Some(0),
            peers: Some(vec![resolve_address("127.0.0.1:1").unwrap()]),
            ..ConfigOverrides::default()
        };
        let e = build_config(None, &flags).unwrap_err();
        assert_eq!(e.problem, ConfigProblem::Missing("--data-dir"));
    }

    #[test]
    fn unreadable_file_is_one_line() {
        let e = ConfigFile::read(Path::new("/nonexistent/craft.conf")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/craft.conf: cannot read: "),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("150-300"), Some((150, 300)));
        assert_eq!(parse_range("150"), None);
        assert_eq!(parse_range("a-b"), None);
    }
}
