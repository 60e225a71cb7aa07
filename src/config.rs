//! Node configuration: the values every thread of a node is started with, and how they are
//! read.
//!
//! Every setting is one entry of the table in [`settings`]: its file key, flag, type,
//! default, valid range, help text and the part of the node it configures. Sources, later
//! ones winning: the table's defaults ([`Config::new`]), a cRaft `craft.conf`
//! ([`ConfigFile`]: `id`, `ELECTION_TIMEOUT`, `RPC_TIMEOUT`, `HEART_BEAT_INTERVAL`, repeated
//! `servers = host:port`, `loglevel`, plus rcraft's snake_case keys), then command-line flags
//! ([`ConfigOverrides`]). [`build_config`] merges them and validates the result; every problem
//! is a [`ConfigError`] naming where the offending value came from (`craft.conf:7: ...` or
//! `--id: ...`).
//!
//! The `Config` is built once on the main thread and then copied into each node thread.
//! Invariants after validation: `id` indexes `servers`, the servers are distinct,
//! `election_timeout_min_ms < election_timeout_max_ms`, `tick_ms <= heartbeat_ms <
//! election_timeout_min_ms`, every value lies in its setting's range (every count, size or
//! duration is non-zero except `snapshot_retain_entries`, `snapshot_bytes_per_sec` and
//! `self_demotion_cooldown_ms`, where 0 means none, no limit and no cool-down), and
//! `lease_reads` implies `check_quorum`.

pub mod settings;

use rcraft_wire::NodeId;
pub use settings::{SETTINGS, Setting, Value, normalize_log_level};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Everything needed to start one node. [`settings::SETTINGS`] documents each tunable field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node; index into `servers`.
    pub id: NodeId,
    /// Every server's address in id order (cRaft's repeated `servers =` lines): where peers
    /// and clients reach each node. A node listens on its own unless
    /// [`listen_addr`](Self::listen_addr) says otherwise.
    pub servers: Vec<SocketAddr>,
    /// The address this node listens on for peers and clients, when it differs from the one
    /// the others reach it at (`servers[id]`, the advertised address): `0.0.0.0:7000` in a
    /// container or behind NAT. `None` listens on the advertised address.
    pub listen_addr: Option<SocketAddr>,
    /// Directory for the WAL, hard state and snapshots.
    pub data_dir: PathBuf,
    /// Identifies the cluster in the connection handshake; nodes of different clusters refuse
    /// each other. `None`: made when the cluster bootstraps (from the initial voters and their
    /// addresses) or, for a node started with `join`, learned from the cluster; either way
    /// recorded in the data dir's `identity` file. A value given for an existing data dir
    /// must be the recorded one.
    pub cluster_id: Option<u64>,
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
    /// Run a Pre-Vote round before an election (thesis §9.6).
    pub pre_vote: bool,
    /// A leader steps down without a quorum's answers within an election timeout (§6.2).
    pub check_quorum: bool,
    /// Serve reads from a leader lease (§6.4.1). Invariant: implies `check_quorum`.
    pub lease_reads: bool,
    /// Gray-failure self-demotion: a leader whose own log writes stay far slower than its
    /// followers' hands leadership to the fastest caught-up follower (core/gray_failure.rs).
    pub self_demotion: bool,
    /// How long the leader must have been slow before it hands over.
    pub self_demotion_window_ms: u64,
    /// Slow means this many times the median follower's durable round trip...
    pub self_demotion_ratio: u64,
    /// ...and at least this many milliseconds above it.
    pub self_demotion_min_gap_ms: u64,
    /// After handing over, the node does not do so again for this long.
    pub self_demotion_cooldown_ms: u64,
    /// Most entry bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// Proposals are refused as overloaded while the leader holds more uncommitted bytes.
    pub uncommitted_bytes_max: u64,
    /// Most bytes of durable, applied entries the core keeps in memory (`CoreConfig::entry_cache_bytes`).
    pub entry_cache_bytes: u64,
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
    /// Where to serve Prometheus metrics (`/metrics`) and health (`/health`); `None`: nowhere.
    pub metrics_addr: Option<SocketAddr>,
    /// The voters of a brand-new cluster, as ids into `servers`; `None` means every server.
    /// Servers left out are spare addresses, not members, until `rcraft members add` (or
    /// [`NodeHandle::change_membership`](crate::node::NodeHandle::change_membership)) adds
    /// them. Every node of a cluster must be given the same value. It is read only when the
    /// data directory is fresh: the value is then stored there, and a node with existing
    /// state uses the stored value and its log's (or snapshot's) membership instead.
    pub initial_voters: Option<Vec<NodeId>>,
    /// A fresh data dir joins a running cluster instead of bootstrapping one: no initial
    /// voters (so the node never campaigns), the membership comes from the leader once
    /// `rcraft members add` adds it. Read only when the data dir is fresh, like
    /// `initial_voters`, which it excludes.
    pub join: bool,
    /// A file holding the cluster secret(s), one per line, private to its owner: peers must
    /// prove they hold one (SECURITY.md). `None`: peers are trusted by their handshake.
    pub secret_file: Option<PathBuf>,
    /// A file of client tokens (reads, writes, status), private to its owner.
    pub client_token_file: Option<PathBuf>,
    /// A file of admin tokens (everything, including membership, snapshot and transfer),
    /// private to its owner. With neither token file, every client may do everything.
    pub admin_token_file: Option<PathBuf>,
    /// Certificate, key and CA files of TLS for peer and client links (the `tls` feature;
    /// SECURITY.md). Empty: plaintext links.
    pub tls: crate::tls::TlsFiles,
}

/// The cluster id every node used before cluster ids were made at bootstrap ("rcraft"): a
/// data dir of that time that records no cluster id keeps this one.
pub const CLUSTER_ID_DEFAULT: u64 = 0x7263_7261_6674;

impl Config {
    /// A configuration with rcraft's defaults (the table's) for node `id` of `servers`.
    pub fn new(id: NodeId, servers: Vec<SocketAddr>, data_dir: PathBuf) -> Config {
        let mut config = Config {
            id,
            servers,
            listen_addr: None,
            data_dir,
            cluster_id: None,
            election_timeout_min_ms: 0,
            election_timeout_max_ms: 0,
            heartbeat_ms: 0,
            rpc_timeout_ms: 0,
            tick_ms: 0,
            pre_vote: false,
            check_quorum: false,
            lease_reads: false,
            self_demotion: false,
            self_demotion_window_ms: 0,
            self_demotion_ratio: 0,
            self_demotion_min_gap_ms: 0,
            self_demotion_cooldown_ms: 0,
            inflight_bytes_max: 0,
            uncommitted_bytes_max: 0,
            entry_cache_bytes: 0,
            snapshot_every: 0,
            snapshot_log_bytes: 0,
            snapshot_retain_entries: 0,
            snapshot_chunk_bytes: 0,
            snapshot_chunks_in_flight: 0,
            snapshot_bytes_per_sec: 0,
            log_level: String::new(),
            metrics_addr: None,
            initial_voters: None,
            join: false,
            secret_file: None,
            client_token_file: None,
            admin_token_file: None,
            tls: crate::tls::TlsFiles::default(),
        };
        for setting in SETTINGS {
            if let (Some(store), Some(value)) = (setting.store, setting.default_value()) {
                store(&mut config, &value);
            }
        }
        config
    }

    /// The address this node listens on: [`listen_addr`](Self::listen_addr) when given,
    /// else its advertised address `servers[id]`.
    ///
    /// # Panics
    /// When `id` does not index `servers` (checked by [`build_config`] and `Node::start`).
    pub fn listen_address(&self) -> SocketAddr {
        self.listen_addr.unwrap_or(self.servers[self.id.0 as usize])
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
    /// A value of the right type outside its setting's range, or a switch that is not
    /// on/off; the text says which and why.
    BadValue(String),
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

/// `1 server is listed (id 0)` or `3 servers are listed (ids 0-2)`.
pub fn servers_listed(servers: usize) -> String {
    match servers {
        0 => "no servers are listed".to_string(),
        1 => "1 server is listed (id 0)".to_string(),
        n => format!("{n} servers are listed (ids 0-{})", n - 1),
    }
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
            ConfigProblem::BadValue(why) => write!(f, "{why}"),
            ConfigProblem::BadAddress { value, reason } => {
                write!(f, "bad address {value:?}: {reason}")
            }
            ConfigProblem::DuplicateAddress(addr) => write!(f, "server {addr} listed twice"),
            ConfigProblem::NoServers => write!(f, "no servers listed"),
            ConfigProblem::Missing(what) => write!(f, "missing {what}"),
            ConfigProblem::IdOutOfRange { id, servers } => {
                write!(f, "id {id} is out of range: {}", servers_listed(*servers))
            }
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
    /// Every `servers` line, in order.
    pub servers: Vec<Located<SocketAddr>>,
    /// Every other setting given, by its table key. `data_dir` is already resolved against
    /// the file's directory.
    pub values: BTreeMap<&'static str, Located<Value>>,
}

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
        let Some(setting) = settings::by_file_key(key) else {
            return error(origin, ConfigProblem::UnknownKey(key.to_string()));
        };
        if setting.key == "servers" {
            // One address per line, repeated: cRaft's form.
            let addr = resolve_address(value).or_else(|reason| {
                let value = value.to_string();
                error(origin.clone(), ConfigProblem::BadAddress { value, reason })
            })?;
            self.servers.push(Located {
                value: addr,
                origin,
            });
            return Ok(());
        }
        if self.values.contains_key(setting.key) {
            // ELECTION_TIMEOUT and election_timeout_ms share a setting: name the one repeated.
            return error(origin, ConfigProblem::DuplicateKey(key.to_string()));
        }
        let parsed = match setting.parse(key, value) {
            Ok(Value::Path(dir)) => {
                Value::Path(self.path.parent().unwrap_or(Path::new("")).join(dir))
            }
            Ok(parsed) => parsed,
            Err(problem) => return error(origin, problem),
        };
        self.values.insert(
            setting.key,
            Located {
                value: parsed,
                origin,
            },
        );
        Ok(())
    }

    /// The value given for the setting `key` (a table key), if the file gives it.
    pub fn get(&self, key: &str) -> Option<&Located<Value>> {
        self.values.get(key)
    }
}

/// Drop a `#` comment and everything after it.
fn strip_comment(line: &str) -> &str {
    match line.find('#') {
        Some(at) => &line[..at],
        None => line,
    }
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
            "id {id} has no address: {}",
            servers_listed(servers)
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
    match settings::setting("servers").parse(flag, list) {
        Ok(Value::Addresses(addrs)) => Ok(addrs),
        Ok(other) => unreachable!("servers parsed as {other:?}"),
        Err(problem) => error(Origin::Flag(flag), problem),
    }
}

fn first_duplicate(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    addrs
        .iter()
        .enumerate()
        .find(|(i, a)| addrs[..*i].contains(a))
        .map(|(_, a)| *a)
}

/// A number given to command-line flag `flag` (decimal or `0x` hexadecimal).
pub fn parse_flag_u64(flag: &'static str, value: &str) -> Result<u64> {
    settings::parse_u64(value).map_or_else(
        || error(Origin::Flag(flag), settings::bad_number(flag, value)),
        Ok,
    )
}

/// Command-line flags that override the file (or stand in for it), each parsed by its
/// setting and remembered with its flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigOverrides {
    values: BTreeMap<&'static str, Located<Value>>,
}

impl ConfigOverrides {
    /// Parses `text` given to the flag of the setting `setting`; errors name the flag.
    pub fn set(&mut self, setting: &'static Setting, text: &str) -> Result<()> {
        let origin = Origin::Flag(setting.flag);
        match setting.parse(setting.flag, text) {
            Ok(value) => {
                self.values.insert(setting.key, Located { value, origin });
                Ok(())
            }
            Err(problem) => error(origin, problem),
        }
    }

    /// Sets the setting `key` (a table key) to an already parsed value, as if given by its
    /// flag.
    ///
    /// # Panics
    /// If `key` names no setting.
    pub fn set_value(&mut self, key: &str, value: Value) {
        let setting = settings::setting(key);
        let origin = Origin::Flag(setting.flag);
        self.values.insert(setting.key, Located { value, origin });
    }

    /// The value given for the setting `key`, if its flag was given.
    pub fn get(&self, key: &str) -> Option<&Located<Value>> {
        self.values.get(key)
    }
}

/// `~/craft/craft.conf`, the file read when neither `--config` nor `--peers` is given.
pub fn default_config_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join("craft").join("craft.conf"))
}

/// The flag's value if given, else the file's, else `None`.
fn given(file: Option<&ConfigFile>, flags: &ConfigOverrides, key: &str) -> Option<Located<Value>> {
    flags
        .get(key)
        .or_else(|| file.and_then(|f| f.get(key)))
        .cloned()
}

/// Merge the parsed file (if any) with the command-line overrides and validate the result.
pub fn build_config(file: Option<&ConfigFile>, flags: &ConfigOverrides) -> Result<Config> {
    let whole_file = match file {
        Some(f) => Origin::WholeFile(f.path.clone()),
        None => Origin::Flag("command line"),
    };
    let servers = choose_servers(file, flags, &whole_file)?;
    let Some(id) = given(file, flags, "id") else {
        return error(whole_file, ConfigProblem::Missing("id (give --id N)"));
    };
    let id_value = id.value.number();
    if id_value >= servers.len() as u64 {
        let servers = servers.len();
        return error(
            id.origin,
            ConfigProblem::IdOutOfRange {
                id: id_value,
                servers,
            },
        );
    }
    let data_dir = match (given(file, flags, "data_dir"), file) {
        (
            Some(Located {
                value: Value::Path(dir),
                ..
            }),
            _,
        ) => dir,
        // A cRaft file has no data_dir: keep each node's data beside the file.
        (_, Some(f)) => data_dir_beside(&f.path, id_value),
        (_, None) => return error(whole_file, ConfigProblem::Missing("--data-dir")),
    };
    let initial_voters = choose_initial_voters(file, flags, servers.len())?;
    let mut config = Config::new(NodeId(id_value), servers, data_dir);
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
    let Some(given) = given(file, flags, "initial_voters") else {
        return Ok(None);
    };
    let Value::Ids(ids) = given.value else {
        unreachable!("initial_voters parsed as {:?}", given.value);
    };
    match check_initial_voters(&ids, servers) {
        Ok(()) => Ok(Some(ids.into_iter().map(NodeId).collect())),
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
    let servers: Vec<SocketAddr> = match (flags.get("servers"), file) {
        (
            Some(Located {
                value: Value::Addresses(peers),
                ..
            }),
            _,
        ) => peers.clone(),
        (_, Some(f)) => {
            let addrs: Vec<SocketAddr> = f.servers.iter().map(|s| s.value).collect();
            if let Some(dup) = first_duplicate(&addrs) {
                let at = f.servers.iter().rposition(|s| s.value == dup).unwrap_or(0);
                let origin = f.servers[at].origin.clone();
                return error(origin, ConfigProblem::DuplicateAddress(dup));
            }
            addrs
        }
        (_, None) => Vec::new(),
    };
    if servers.is_empty() {
        return error(whole_file.clone(), ConfigProblem::NoServers);
    }
    Ok(servers)
}

/// Every setting with a store: the flag's value, else the file's, else the default, checked
/// against its range and stored; then the checks that relate settings to each other.
fn apply_tuning(
    config: &mut Config,
    file: Option<&ConfigFile>,
    flags: &ConfigOverrides,
) -> Result<()> {
    let mut chosen = BTreeMap::new();
    for setting in SETTINGS {
        let Some(store) = setting.store else {
            continue;
        };
        let located = match given(file, flags, setting.key) {
            Some(located) => located,
            None => match setting.default_value() {
                Some(value) => Located {
                    value,
                    origin: Origin::Default,
                },
                None => continue,
            },
        };
        if let Err(problem) = setting.check_range(&located.value) {
            return error(located.origin, problem);
        }
        store(config, &located.value);
        chosen.insert(setting.key, located.origin);
    }
    let origin_of = |key: &str| chosen.get(key).cloned().unwrap_or(Origin::Default);
    check_timing(config, origin_of)?;
    if config.join && config.initial_voters.is_some() {
        let why = "--join and --initial-voters exclude each other: a joining node takes the \
                   cluster's configuration from the cluster";
        return error(origin_of("join"), ConfigProblem::BadValue(why.to_string()));
    }
    if let Err(why) = config.tls.check() {
        let first_given = ["cert_file", "peer_cert_file", "trusted_ca_file", "key_file"]
            .into_iter()
            .find(|key| chosen.contains_key(key))
            .unwrap_or("peer_key_file");
        return error(
            origin_of(first_given),
            ConfigProblem::BadValue(why.to_string()),
        );
    }
    if config.lease_reads && !config.check_quorum {
        let why = "lease_reads needs check_quorum (a lease is only safe while the leader \
                   checks that a quorum still answers)";
        return error(
            origin_of("lease_reads"),
            ConfigProblem::BadTiming(why.to_string()),
        );
    }
    Ok(())
}

/// Randomized election timeouts need a real range, and a leader must be able to send several
/// heartbeats within the shortest election timeout or followers will keep starting elections.
fn check_timing(config: &Config, origin_of: impl Fn(&str) -> Origin) -> Result<()> {
    let (min, max) = (
        config.election_timeout_min_ms,
        config.election_timeout_max_ms,
    );
    if min >= max {
        let why = format!("election timeout range {min}-{max} ms is empty (MIN must be below MAX)");
        return error(
            origin_of("election_timeout_ms"),
            ConfigProblem::BadTiming(why),
        );
    }
    if config.heartbeat_ms >= min {
        let why = format!(
            "heartbeat interval {} ms must be below the election timeout ({min} ms)",
            config.heartbeat_ms
        );
        return error(origin_of("heartbeat_ms"), ConfigProblem::BadTiming(why));
    }
    if config.tick_ms > config.heartbeat_ms {
        let why = format!(
            "tick_ms {} must not exceed the heartbeat interval ({} ms)",
            config.tick_ms, config.heartbeat_ms
        );
        return error(origin_of("tick_ms"), ConfigProblem::BadTiming(why));
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

    /// Overrides as the command line gives them: `(flag, text)` pairs.
    fn flags(given: &[(&str, &str)]) -> ConfigOverrides {
        let mut flags = ConfigOverrides::default();
        for (flag, text) in given {
            let setting = settings::by_flag(flag).expect("a flag of the table");
            flags.set(setting, text).unwrap();
        }
        flags
    }

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
        assert_eq!(config.cluster_id, None);
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
        let flags = flags(&[
            ("--snapshot-chunks-in-flight", "16"),
            ("--snapshot-bytes-per-sec", "1MiB"),
        ]);
        let config = build_config(Some(&file), &flags).unwrap();
        assert_eq!(
            (
                config.snapshot_chunks_in_flight,
                config.snapshot_bytes_per_sec
            ),
            (16, 1 << 20)
        );
        let mut flags = flags;
        flags.set_value("snapshot_bytes_per_sec", Value::Number(0));
        assert_eq!(
            build_config(Some(&file), &flags)
                .unwrap()
                .snapshot_bytes_per_sec,
            0
        );
        flags.set_value("snapshot_chunks_in_flight", Value::Number(0));
        let err = build_config(Some(&file), &flags).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--snapshot-chunks-in-flight: snapshot_chunks_in_flight must be greater than 0"
        );
        let err = ConfigOverrides::default()
            .set(settings::setting("snapshot_bytes_per_sec"), "1e9")
            .unwrap_err();
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
    fn consensus_switches_and_byte_caps() {
        let text = "id = 0\nservers = 127.0.0.1:1\nPre_Vote = off\ninflight_bytes_max = 2MiB\n\
                    uncommitted_bytes_max = 1 GiB\nentry_cache_bytes = 0\n";
        let config =
            build_config(Some(&parse(text).unwrap()), &ConfigOverrides::default()).unwrap();
        assert!(!config.pre_vote && config.check_quorum && !config.lease_reads);
        assert_eq!(config.inflight_bytes_max, 2 << 20);
        assert_eq!(config.uncommitted_bytes_max, 1 << 30);
        assert_eq!(config.entry_cache_bytes, 0);
        let flags = flags(&[("--lease-reads", "on"), ("--check-quorum", "off")]);
        let e = build_config(Some(&parse(text).unwrap()), &flags).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--lease-reads: lease_reads needs check_quorum"),
            "{e}"
        );
        let (line, _) = problem_of("id = 0\nservers = 127.0.0.1:1\ntick_ms = 2000000000\n");
        assert!(
            line.starts_with("craft.conf:3: tick_ms must be between 1 ms and"),
            "{line}"
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
    fn listen_addr_defaults_to_the_advertised_address_and_can_be_set_apart() {
        let file = parse(CRAFT_CONF).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(config.listen_addr, None);
        assert_eq!(
            config.listen_address(),
            config.servers[config.id.0 as usize]
        );

        let file = parse(&format!("{CRAFT_CONF}listen_addr = 0.0.0.0:7000\n")).unwrap();
        let config = build_config(Some(&file), &ConfigOverrides::default()).unwrap();
        assert_eq!(
            config.listen_address(),
            "0.0.0.0:7000".parse::<SocketAddr>().unwrap()
        );

        let mut flags = ConfigOverrides::default();
        let bad = flags.set(settings::setting("listen_addr"), "0.0.0.0");
        assert!(bad.unwrap_err().to_string().contains("--listen-addr"));
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
        let flags = flags(&[("--initial-voters", "3")]);
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
        let flags = flags(&[("--initial-voters", "5")]);
        let e = build_config(Some(&file), &flags).unwrap_err().to_string();
        assert!(
            e.starts_with("--initial-voters: initial voters: id 5"),
            "{e}"
        );
        let e = ConfigOverrides::default()
            .set(settings::setting("initial_voters"), "0,,1")
            .unwrap_err();
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
        let flags = flags(&[
            ("--snapshot-log-bytes", "1MiB"),
            ("--snapshot-retain-entries", "7"),
        ]);
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
        assert_eq!(config.cluster_id, Some(42));
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
        let flags = flags(&[
            ("--id", "2"),
            ("--data-dir", "/tmp/x"),
            ("--election-timeout-ms", "300-600"),
            ("--heartbeat-ms", "30"),
            ("--snapshot-every", "7"),
            ("--cluster-id", "9"),
            ("--log-level", "WARNING"),
        ]);
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
        assert_eq!(config.cluster_id, Some(9));
        assert_eq!(config.log_level, "warn");
        assert_eq!(config.rpc_timeout_ms, 200, "untouched file value stays");
    }

    #[test]
    fn flags_alone_make_a_config_with_defaults() {
        let flags = flags(&[
            ("--id", "0"),
            ("--peers", "127.0.0.1:7000,127.0.0.1:7001"),
            ("--data-dir", "d"),
        ]);
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
        let flags = flags(&[("--id", "5")]);
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
        assert!(
            ConfigOverrides::default()
                .set(settings::setting("loglevel"), "loud")
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
        let flags = flags(&[("--id", "0"), ("--peers", "127.0.0.1:1")]);
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
        let range = settings::setting("election_timeout_ms");
        let flag = "--election-timeout-ms";
        assert_eq!(range.parse(flag, "150-300"), Ok(Value::Range(150, 300)));
        assert!(range.parse(flag, "150").is_err());
        assert!(range.parse(flag, "a-b").is_err());
        assert_eq!(
            range.parse("ELECTION_TIMEOUT", "150"),
            Ok(Value::Range(150, 300))
        );
    }
}
