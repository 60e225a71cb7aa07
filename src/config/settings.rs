//! The table of every node setting: the one place that says, for each, its `craft.conf` key
//! (and cRaft's spelling), its `rcraft serve` flag, its type, default, valid range, help text
//! and which part of the node it configures.
//!
//! File parsing, flag parsing, `--help`, defaults ([`Config::new`]), range checks and the
//! error messages are all derived from [`SETTINGS`]; adding a setting is one entry here plus
//! the code that uses the value. The table is read-only data, shared by every thread.
//!
//! Invariants (checked by the tests below): keys and flags are unique, every default parses
//! with its own kind and lies in its own range.

use super::{Config, ConfigProblem};
use std::net::SocketAddr;
use std::path::PathBuf;

/// What a value looks like and how it is parsed and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A non-negative integer, decimal or `0x` hexadecimal, `_` allowed as a separator.
    Count,
    /// A duration in milliseconds (`50`, `50ms`, `2s`).
    Millis,
    /// A `MIN-MAX` range of milliseconds.
    MillisRange,
    /// A size in bytes with an optional unit (`4096`, `256MiB`, `1 GiB`).
    Bytes,
    /// A rate in bytes per second with an optional unit (`800MiB`, `800MiB/s`); 0 is no limit.
    BytesPerSec,
    /// `on`/`off` (also `true`/`false`, `yes`/`no`, `1`/`0`).
    Switch,
    /// A log level: error, warn, info, debug, trace or off (cRaft's spdlog names too).
    LogLevel,
    /// A directory.
    Path,
    /// One `HOST:PORT` address.
    Address,
    /// A file.
    File,
    /// A comma-separated list of `HOST:PORT` addresses.
    Addresses,
    /// A comma-separated list of node ids.
    Ids,
}

/// Which part of a node a setting configures (shown in `--help`, used in docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Who is in the cluster and where this node keeps its data.
    Cluster,
    /// The consensus core: elections, heartbeats, replication windows.
    Consensus,
    /// Client requests inside the node.
    Clients,
    /// When snapshots are taken and how they are sent.
    Snapshots,
    /// Authentication of peers and clients (SECURITY.md).
    Security,
    /// Logging.
    Logging,
    /// Metrics and health checks.
    Monitoring,
}

impl Part {
    /// The name `--help` shows.
    pub fn name(self) -> &'static str {
        match self {
            Part::Cluster => "cluster",
            Part::Consensus => "consensus",
            Part::Clients => "clients",
            Part::Snapshots => "snapshots",
            Part::Security => "security",
            Part::Logging => "logging",
            Part::Monitoring => "monitoring",
        }
    }
}

/// A parsed setting value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Count, Millis, Bytes, BytesPerSec.
    Number(u64),
    /// MillisRange.
    Range(u64, u64),
    /// Switch.
    Switch(bool),
    /// LogLevel (normalized) or any other text.
    Text(String),
    /// Path.
    Path(PathBuf),
    /// Address.
    Address(SocketAddr),
    /// Addresses.
    Addresses(Vec<SocketAddr>),
    /// Ids.
    Ids(Vec<u64>),
}

impl Value {
    /// The number, for the numeric kinds.
    ///
    /// # Panics
    /// On another kind: the table pairs each setting's kind with its store function.
    pub fn number(&self) -> u64 {
        match self {
            Value::Number(n) => *n,
            other => panic!("setting value {other:?} is not a number"),
        }
    }

    /// The switch's state.
    ///
    /// # Panics
    /// On another kind.
    pub fn switch(&self) -> bool {
        match self {
            Value::Switch(on) => *on,
            other => panic!("setting value {other:?} is not a switch"),
        }
    }
}

/// One setting. See the module header.
pub struct Setting {
    /// rcraft's `craft.conf` key, snake_case; also the setting's name in messages.
    pub key: &'static str,
    /// cRaft's spelling of the key, when cRaft has it. Keys match without regard to case.
    pub craft_key: Option<&'static str>,
    /// The `rcraft serve` flag, with its dashes.
    pub flag: &'static str,
    /// Type of the value.
    pub kind: Kind,
    /// Default, written as a person would write the value; `None` when there is none (the
    /// setting must be given, or its absence means something, see the help).
    pub default: Option<&'static str>,
    /// Smallest value allowed for the numeric kinds (for a range: its lower end).
    pub min: u64,
    /// Largest value allowed for the numeric kinds.
    pub max: u64,
    /// One sentence for `--help`.
    pub help: &'static str,
    /// The part of the node it configures.
    pub part: Part,
    /// Puts a value of this setting's kind into a `Config`; `None` for the settings
    /// `build_config` places itself (id, servers, data dir, initial voters).
    pub store: Option<fn(&mut Config, &Value)>,
}

const MS_MAX: u64 = 3_600_000;
const BYTES_MAX: u64 = 1 << 40;

/// Every setting of a node, in the order `--help` lists them.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "id",
        craft_key: Some("id"),
        flag: "--id",
        kind: Kind::Count,
        default: None,
        min: 0,
        max: u64::MAX,
        help: "This node's id: its position in the server list, from 0",
        part: Part::Cluster,
        store: None,
    },
    Setting {
        key: "servers",
        craft_key: Some("servers"),
        flag: "--peers",
        kind: Kind::Addresses,
        default: None,
        min: 0,
        max: u64::MAX,
        help: "Every node's address, in id order (in a file: one `servers =` line each)",
        part: Part::Cluster,
        store: None,
    },
    Setting {
        key: "listen_addr",
        craft_key: None,
        flag: "--listen-addr",
        kind: Kind::Address,
        default: None,
        min: 0,
        max: u64::MAX,
        help: "Address to listen on when it is not this node's address in the server list \
               (which peers and clients are told): 0.0.0.0:PORT in a container or behind NAT \
               [default: this node's address in the server list]",
        part: Part::Cluster,
        store: Some(|c, v| {
            if let Value::Address(address) = v {
                c.listen_addr = Some(*address);
            }
        }),
    },
    Setting {
        key: "data_dir",
        craft_key: None,
        flag: "--data-dir",
        kind: Kind::Path,
        default: None,
        min: 0,
        max: u64::MAX,
        help: "Directory for the log, hard state and snapshots [default with a file: \
               rcraft-data-ID beside it]",
        part: Part::Cluster,
        store: None,
    },
    Setting {
        key: "initial_voters",
        craft_key: None,
        flag: "--initial-voters",
        kind: Kind::Ids,
        default: None,
        min: 0,
        max: u64::MAX,
        help: "Ids that vote in a brand-new cluster; the other addresses are spare until \
               `rcraft members add`. Give every node the same list. Read only on a fresh data \
               dir [default: every id]",
        part: Part::Cluster,
        store: None,
    },
    Setting {
        key: "join",
        craft_key: None,
        flag: "--join",
        kind: Kind::Switch,
        default: Some("off"),
        min: 0,
        max: 1,
        help: "Start a fresh data dir as a node joining a running cluster (etcd's \
               --initial-cluster-state existing): it takes no initial voters and never \
               campaigns until `rcraft members add ID` makes it a member; instead of \
               --initial-voters",
        part: Part::Cluster,
        store: Some(|c, v| c.join = v.switch()),
    },
    Setting {
        key: "cluster_id",
        craft_key: None,
        flag: "--cluster-id",
        kind: Kind::Count,
        default: None,
        min: 1,
        max: u64::MAX,
        help: "Cluster id checked in every connection handshake (default: made when the \
               cluster bootstraps, from its initial voters and their addresses; a joining \
               node learns it from the cluster)",
        part: Part::Cluster,
        store: Some(|c, v| c.cluster_id = Some(v.number())),
    },
    Setting {
        key: "election_timeout_ms",
        craft_key: Some("ELECTION_TIMEOUT"),
        flag: "--election-timeout-ms",
        kind: Kind::MillisRange,
        default: Some("150-300"),
        min: 1,
        max: MS_MAX,
        help: "Randomized election timeout range (cRaft's ELECTION_TIMEOUT = N means N-2N)",
        part: Part::Consensus,
        store: Some(|c, v| {
            if let Value::Range(min, max) = v {
                (c.election_timeout_min_ms, c.election_timeout_max_ms) = (*min, *max);
            }
        }),
    },
    Setting {
        key: "heartbeat_ms",
        craft_key: Some("HEART_BEAT_INTERVAL"),
        flag: "--heartbeat-ms",
        kind: Kind::Millis,
        default: Some("50"),
        min: 1,
        max: MS_MAX,
        help: "Leader heartbeat interval",
        part: Part::Consensus,
        store: Some(|c, v| c.heartbeat_ms = v.number()),
    },
    Setting {
        key: "tick_ms",
        craft_key: None,
        flag: "--tick-ms",
        kind: Kind::Millis,
        default: Some("10"),
        min: 1,
        max: MS_MAX,
        help: "Length of one consensus tick",
        part: Part::Consensus,
        store: Some(|c, v| c.tick_ms = v.number()),
    },
    Setting {
        key: "pre_vote",
        craft_key: None,
        flag: "--pre-vote",
        kind: Kind::Switch,
        default: Some("on"),
        min: 0,
        max: 1,
        help: "Run a Pre-Vote round before an election, so a node that was cut off cannot \
               disrupt the cluster when it returns (thesis 9.6)",
        part: Part::Consensus,
        store: Some(|c, v| c.pre_vote = v.switch()),
    },
    Setting {
        key: "check_quorum",
        craft_key: None,
        flag: "--check-quorum",
        kind: Kind::Switch,
        default: Some("on"),
        min: 0,
        max: 1,
        help: "A leader steps down when it has not heard from a quorum within an election \
               timeout (thesis 6.2)",
        part: Part::Consensus,
        store: Some(|c, v| c.check_quorum = v.switch()),
    },
    Setting {
        key: "lease_reads",
        craft_key: None,
        flag: "--lease-reads",
        kind: Kind::Switch,
        default: Some("off"),
        min: 0,
        max: 1,
        help: "Serve linearizable reads from a leader lease instead of a heartbeat round; \
               relies on bounded clock drift and needs check_quorum (thesis 6.4.1)",
        part: Part::Consensus,
        store: Some(|c, v| c.lease_reads = v.switch()),
    },
    Setting {
        key: "self_demotion",
        craft_key: None,
        flag: "--self-demotion",
        kind: Kind::Switch,
        default: Some("on"),
        min: 0,
        max: 1,
        help: "A leader whose own log writes stay far slower than its followers' (a failing \
               disk) hands leadership to the fastest caught-up follower and logs why",
        part: Part::Consensus,
        store: Some(|c, v| c.self_demotion = v.switch()),
    },
    Setting {
        key: "self_demotion_window_ms",
        craft_key: None,
        flag: "--self-demotion-window-ms",
        kind: Kind::Millis,
        default: Some("5000"),
        min: 1,
        max: MS_MAX,
        help: "How long the leader's writes must have stayed slow before it hands over",
        part: Part::Consensus,
        store: Some(|c, v| c.self_demotion_window_ms = v.number()),
    },
    Setting {
        key: "self_demotion_ratio",
        craft_key: None,
        flag: "--self-demotion-ratio",
        kind: Kind::Count,
        default: Some("4"),
        min: 2,
        max: 1_000,
        help: "Slow means at least this many times the median follower's durable round trip",
        part: Part::Consensus,
        store: Some(|c, v| c.self_demotion_ratio = v.number()),
    },
    Setting {
        key: "self_demotion_min_gap_ms",
        craft_key: None,
        flag: "--self-demotion-min-gap-ms",
        kind: Kind::Millis,
        default: Some("100"),
        min: 1,
        max: MS_MAX,
        help: "Slow also means at least this much above the median follower's round trip, so \
               noise on fast disks never counts",
        part: Part::Consensus,
        store: Some(|c, v| c.self_demotion_min_gap_ms = v.number()),
    },
    Setting {
        key: "self_demotion_cooldown_ms",
        craft_key: None,
        flag: "--self-demotion-cooldown-ms",
        kind: Kind::Millis,
        default: Some("60000"),
        min: 0,
        max: MS_MAX,
        help: "After handing over, a node does not do so again for this long (no ping-pong)",
        part: Part::Consensus,
        store: Some(|c, v| c.self_demotion_cooldown_ms = v.number()),
    },
    Setting {
        key: "inflight_bytes_max",
        craft_key: None,
        flag: "--inflight-bytes-max",
        kind: Kind::Bytes,
        default: Some("8MiB"),
        min: 1,
        max: BYTES_MAX,
        help: "Most entry bytes sent to one follower and not yet acknowledged",
        part: Part::Consensus,
        store: Some(|c, v| c.inflight_bytes_max = v.number()),
    },
    Setting {
        key: "uncommitted_bytes_max",
        craft_key: None,
        flag: "--uncommitted-bytes-max",
        kind: Kind::Bytes,
        default: Some("64MiB"),
        min: 1,
        max: BYTES_MAX,
        help: "The leader refuses new writes (overloaded) while it holds more uncommitted \
               entry bytes than this",
        part: Part::Consensus,
        store: Some(|c, v| c.uncommitted_bytes_max = v.number()),
    },
    Setting {
        key: "entry_cache_bytes",
        craft_key: None,
        flag: "--entry-cache-bytes",
        kind: Kind::Bytes,
        default: Some("64MiB"),
        min: 0,
        max: BYTES_MAX,
        help: "Most bytes of durable, applied log entries kept in memory for followers; \
               older ones are read back from the log on disk when a follower needs them",
        part: Part::Consensus,
        store: Some(|c, v| c.entry_cache_bytes = v.number()),
    },
    Setting {
        key: "rpc_timeout_ms",
        craft_key: Some("RPC_TIMEOUT"),
        flag: "--rpc-timeout-ms",
        kind: Kind::Millis,
        default: Some("5000"),
        min: 1,
        max: MS_MAX,
        help: "How long a client request may wait inside the node",
        part: Part::Clients,
        store: Some(|c, v| c.rpc_timeout_ms = v.number()),
    },
    Setting {
        key: "snapshot_every",
        craft_key: None,
        flag: "--snapshot-every",
        kind: Kind::Count,
        default: Some("100000"),
        min: 1,
        max: u64::MAX,
        help: "Take a snapshot after this many applied entries",
        part: Part::Snapshots,
        store: Some(|c, v| c.snapshot_every = v.number()),
    },
    Setting {
        key: "snapshot_log_bytes",
        craft_key: None,
        flag: "--snapshot-log-bytes",
        kind: Kind::Bytes,
        default: Some("256MiB"),
        min: 1,
        max: u64::MAX,
        help: "Also take a snapshot after this many bytes of applied log",
        part: Part::Snapshots,
        store: Some(|c, v| c.snapshot_log_bytes = v.number()),
    },
    Setting {
        key: "snapshot_retain_entries",
        craft_key: None,
        flag: "--snapshot-retain-entries",
        kind: Kind::Count,
        default: Some("1024"),
        min: 0,
        max: u64::MAX,
        help: "Entries kept in the log behind a snapshot for slightly lagging followers",
        part: Part::Snapshots,
        store: Some(|c, v| c.snapshot_retain_entries = v.number()),
    },
    Setting {
        key: "snapshot_chunk_bytes",
        craft_key: None,
        flag: "--snapshot-chunk-bytes",
        kind: Kind::Bytes,
        default: Some("1MiB"),
        min: 1,
        max: u64::MAX,
        help: "Size of one snapshot chunk sent to a follower",
        part: Part::Snapshots,
        store: Some(|c, v| c.snapshot_chunk_bytes = v.number()),
    },
    Setting {
        key: "snapshot_chunks_in_flight",
        craft_key: None,
        flag: "--snapshot-chunks-in-flight",
        kind: Kind::Count,
        default: Some("4"),
        min: 1,
        max: u64::MAX,
        help: "Most snapshot chunks sent ahead of a follower's answers",
        part: Part::Snapshots,
        store: Some(|c, v| c.snapshot_chunks_in_flight = v.number()),
    },
    Setting {
        key: "snapshot_bytes_per_sec",
        craft_key: None,
        flag: "--snapshot-bytes-per-sec",
        kind: Kind::BytesPerSec,
        default: Some("800MiB/s"),
        min: 0,
        max: u64::MAX,
        help: "Snapshot bytes per second the leader sends to all followers together, 0 for \
               no limit",
        part: Part::Snapshots,
        store: Some(|c, v| c.snapshot_bytes_per_sec = v.number()),
    },
    Setting {
        key: "secret_file",
        craft_key: None,
        flag: "--secret-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "File (mode 600) holding the cluster secret, one per line (the first proves, any \
               is accepted: rotation): peers must prove they hold it before they can vote, \
               append or be counted [default: peers are trusted]",
        part: Part::Security,
        store: Some(|c, v| c.secret_file = Some(path_of(v))),
    },
    Setting {
        key: "client_token_file",
        craft_key: None,
        flag: "--client-token-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "File (mode 600) of client tokens, one per line: reads, writes and status need \
               one (or an admin token) [default with no token file: clients may do anything]",
        part: Part::Security,
        store: Some(|c, v| c.client_token_file = Some(path_of(v))),
    },
    Setting {
        key: "admin_token_file",
        craft_key: None,
        flag: "--admin-token-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "File (mode 600) of admin tokens, one per line: membership changes, snapshots \
               and leadership transfer need one",
        part: Part::Security,
        store: Some(|c, v| c.admin_token_file = Some(path_of(v))),
    },
    Setting {
        key: "cert_file",
        craft_key: None,
        flag: "--cert-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "Certificate chain (PEM) shown to clients: clients must connect over TLS \
               (the `tls` feature) [default: clients connect in plaintext]",
        part: Part::Security,
        store: Some(|c, v| c.tls.cert_file = Some(path_of(v))),
    },
    Setting {
        key: "key_file",
        craft_key: None,
        flag: "--key-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "Private key (PEM) of --cert-file",
        part: Part::Security,
        store: Some(|c, v| c.tls.key_file = Some(path_of(v))),
    },
    Setting {
        key: "trusted_ca_file",
        craft_key: None,
        flag: "--trusted-ca-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "CA (PEM) that client certificates are checked against; with \
               --client-cert-auth clients must present one",
        part: Part::Security,
        store: Some(|c, v| c.tls.trusted_ca_file = Some(path_of(v))),
    },
    Setting {
        key: "client_cert_auth",
        craft_key: None,
        flag: "--client-cert-auth",
        kind: Kind::Switch,
        default: Some("off"),
        min: 0,
        max: 1,
        help: "Clients must present a certificate of --trusted-ca-file",
        part: Part::Security,
        store: Some(|c, v| c.tls.client_cert_auth = v.switch()),
    },
    Setting {
        key: "peer_cert_file",
        craft_key: None,
        flag: "--peer-cert-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "Certificate chain (PEM) this node shows peers, as server and as client: \
               peers must connect over mutual TLS (the `tls` feature) [default: plaintext \
               between peers]",
        part: Part::Security,
        store: Some(|c, v| c.tls.peer_cert_file = Some(path_of(v))),
    },
    Setting {
        key: "peer_key_file",
        craft_key: None,
        flag: "--peer-key-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "Private key (PEM) of --peer-cert-file",
        part: Part::Security,
        store: Some(|c, v| c.tls.peer_key_file = Some(path_of(v))),
    },
    Setting {
        key: "peer_trusted_ca_file",
        craft_key: None,
        flag: "--peer-trusted-ca-file",
        kind: Kind::File,
        default: None,
        min: 0,
        max: 0,
        help: "CA (PEM) that every peer's certificate is checked against",
        part: Part::Security,
        store: Some(|c, v| c.tls.peer_trusted_ca_file = Some(path_of(v))),
    },
    Setting {
        key: "loglevel",
        craft_key: Some("loglevel"),
        flag: "--log-level",
        kind: Kind::LogLevel,
        default: Some("info"),
        min: 0,
        max: 0,
        help: "error, warn, info, debug, trace or off (RUST_LOG, when set, wins)",
        part: Part::Logging,
        store: Some(|c, v| {
            if let Value::Text(level) = v {
                c.log_level = level.clone();
            }
        }),
    },
    Setting {
        key: "metrics_addr",
        craft_key: None,
        flag: "--metrics-addr",
        kind: Kind::Address,
        default: None,
        min: 0,
        max: 0,
        help: "Serve Prometheus metrics on http://HOST:PORT/metrics and a health check on \
               /health [default: none]",
        part: Part::Monitoring,
        store: Some(|c, v| {
            if let Value::Address(address) = v {
                c.metrics_addr = Some(*address);
            }
        }),
    },
];

fn path_of(value: &Value) -> PathBuf {
    match value {
        Value::Path(path) => path.clone(),
        other => panic!("setting value {other:?} is not a path"),
    }
}

/// The setting named `key` (its rcraft key).
///
/// # Panics
/// When there is none: callers name settings with literals from the table.
pub fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key:?}"))
}

/// The setting a `craft.conf` key names, matched without regard to case.
pub fn by_file_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| {
        s.key.eq_ignore_ascii_case(key) || s.craft_key.is_some_and(|c| c.eq_ignore_ascii_case(key))
    })
}

/// The setting a `rcraft serve` flag sets.
pub fn by_flag(flag: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.flag == flag)
}

impl Setting {
    /// Parses `text` given for this setting under the name `name` (a file key or the flag).
    /// cRaft's `ELECTION_TIMEOUT = N` is the range N-2N.
    pub fn parse(&self, name: &str, text: &str) -> Result<Value, ConfigProblem> {
        let bad = || bad_number(name, text);
        let text = text.trim();
        match self.kind {
            Kind::MillisRange if self.craft_key.is_some_and(|c| c.eq_ignore_ascii_case(name)) => {
                let n = parse_u64(text).ok_or_else(bad)?;
                Ok(Value::Range(n, n.saturating_mul(2)))
            }
            Kind::Count => parse_u64(text).map(Value::Number).ok_or_else(bad),
            Kind::Millis => parse_millis(text).map(Value::Number).ok_or_else(bad),
            Kind::MillisRange => parse_range(text)
                .map(|(min, max)| Value::Range(min, max))
                .ok_or_else(bad),
            Kind::Bytes => parse_bytes(text).map(Value::Number).ok_or_else(bad),
            Kind::BytesPerSec => {
                let amount = text.strip_suffix("/s").unwrap_or(text);
                parse_bytes(amount).map(Value::Number).ok_or_else(bad)
            }
            Kind::Switch => parse_switch(text).map(Value::Switch).ok_or_else(|| {
                ConfigProblem::BadValue(format!(
                    "{name}: {text:?} is not a switch (expected on or off)"
                ))
            }),
            Kind::LogLevel => normalize_log_level(text)
                .map(Value::Text)
                .ok_or_else(|| ConfigProblem::BadLogLevel(text.to_string())),
            Kind::Path if text.is_empty() => Err(ConfigProblem::Missing("data_dir value")),
            Kind::Path => Ok(Value::Path(PathBuf::from(text))),
            Kind::Address if text.contains(',') => Err(ConfigProblem::BadValue(format!(
                "{name} takes one HOST:PORT, not a list ({text:?})"
            ))),
            Kind::Address => super::resolve_address(text.trim())
                .map(Value::Address)
                .map_err(|reason| ConfigProblem::BadAddress {
                    value: text.to_string(),
                    reason,
                }),
            Kind::File if text.is_empty() => Err(ConfigProblem::BadValue(format!(
                "{name}: a file name is needed"
            ))),
            Kind::File => Ok(Value::Path(PathBuf::from(text))),
            Kind::Addresses => parse_addresses(text).map(Value::Addresses),
            Kind::Ids => parse_id_list(name, text).map(Value::Ids),
        }
    }

    /// The parsed default, if the setting has one.
    ///
    /// # Panics
    /// If the table's default does not parse (a test checks every one).
    pub fn default_value(&self) -> Option<Value> {
        self.default.map(|text| {
            self.parse(self.key, text)
                .unwrap_or_else(|e| panic!("default of {}: {e}", self.key))
        })
    }

    /// Checks a parsed value against the valid range; the problem names the setting.
    pub fn check_range(&self, value: &Value) -> Result<(), ConfigProblem> {
        let numbers = match value {
            Value::Number(n) => [*n, *n],
            Value::Range(min, max) => [*min, *max],
            _ => return Ok(()),
        };
        if numbers[0] == 0 && self.min == 1 {
            return Err(ConfigProblem::Zero(self.key.to_string()));
        }
        if numbers[0] < self.min || numbers[1] > self.max {
            return Err(ConfigProblem::BadValue(format!(
                "{} must be between {} and {}",
                self.key,
                self.show_number(self.min),
                self.show_number(self.max)
            )));
        }
        Ok(())
    }

    /// The value as a person reads it: `256 MiB`, `800 MiB/s`, `50 ms`, `on`.
    pub fn show(&self, value: &Value) -> String {
        match value {
            Value::Number(n) => self.show_number(*n),
            Value::Range(min, max) => format!("{min}-{max} ms"),
            Value::Switch(on) => if *on { "on" } else { "off" }.to_string(),
            Value::Text(text) => text.clone(),
            Value::Path(path) => path.display().to_string(),
            Value::Address(address) => address.to_string(),
            Value::Addresses(list) => {
                let list: Vec<String> = list.iter().map(ToString::to_string).collect();
                list.join(",")
            }
            Value::Ids(ids) => {
                let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
                ids.join(",")
            }
        }
    }

    fn show_number(&self, n: u64) -> String {
        match self.kind {
            Kind::Millis | Kind::MillisRange => format!("{n} ms"),
            Kind::Bytes => human_bytes(n),
            Kind::BytesPerSec if n == 0 => "0 (no limit)".to_string(),
            Kind::BytesPerSec => format!("{}/s", human_bytes(n)),
            Kind::Count if self.key == "cluster_id" => format!("{n:#x}"),
            _ => n.to_string(),
        }
    }

    /// What `--help` shows for the flag: the sentence, the file key and the default.
    pub fn help_text(&self) -> String {
        let file_key = match self.craft_key {
            Some(craft) if craft != self.key => format!("{} or {craft}", self.key),
            _ => self.key.to_string(),
        };
        let default = match self.default_value() {
            Some(value) => format!(" [default: {}]", self.show(&value)),
            None => String::new(),
        };
        format!(
            "{}. ({}; file key {file_key}){default}",
            self.help,
            self.part.name()
        )
    }

    /// The placeholder `--help` shows for the value.
    pub fn value_name(&self) -> &'static str {
        match self.kind {
            Kind::Count if self.key == "id" => "N",
            Kind::Count => "N",
            Kind::Millis => "MS",
            Kind::MillisRange => "MIN-MAX",
            Kind::Bytes => "SIZE",
            Kind::BytesPerSec => "SIZE/s",
            Kind::Switch => "on|off",
            Kind::LogLevel => "LEVEL",
            Kind::Path => "DIR",
            Kind::Address => "HOST:PORT",
            Kind::File => "FILE",
            Kind::Addresses => "HOST:PORT,...",
            Kind::Ids => "ID,ID,...",
        }
    }
}

pub(super) fn bad_number(key: &str, value: &str) -> ConfigProblem {
    ConfigProblem::BadNumber {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// A non-negative integer, decimal or `0x` hexadecimal, `_` allowed as a separator.
pub(crate) fn parse_u64(value: &str) -> Option<u64> {
    let digits = value.trim().replace('_', "");
    match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => digits.parse().ok(),
    }
}

/// Milliseconds: `50`, `50ms` or `2s`.
fn parse_millis(value: &str) -> Option<u64> {
    if let Some(ms) = value.strip_suffix("ms") {
        return parse_u64(ms);
    }
    if let Some(secs) = value.strip_suffix('s') {
        return parse_u64(secs)?.checked_mul(1000);
    }
    parse_u64(value)
}

/// `MIN-MAX` in milliseconds, e.g. `150-300`.
fn parse_range(value: &str) -> Option<(u64, u64)> {
    let (min, max) = value.split_once('-')?;
    Some((parse_u64(min)?, parse_u64(max)?))
}

/// The binary (IEC) units a size may carry, largest first.
const BYTE_UNITS: [(&str, u32); 5] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)];

/// A size: a number with an optional binary unit, `4096`, `256MiB`, `1 GiB`.
pub fn parse_bytes(value: &str) -> Option<u64> {
    let value = value.trim();
    for (unit, shift) in BYTE_UNITS {
        let Some(number) = value
            .len()
            .checked_sub(unit.len())
            .filter(|&at| value.is_char_boundary(at))
            .filter(|&at| value[at..].eq_ignore_ascii_case(unit))
            .map(|at| &value[..at])
        else {
            continue;
        };
        let n = parse_u64(number)?;
        return n.checked_mul(1u64 << shift);
    }
    parse_u64(value)
}

/// `n` bytes in the largest binary unit that divides it: `256 MiB`, `1536 bytes`.
pub fn human_bytes(n: u64) -> String {
    for (unit, shift) in BYTE_UNITS {
        if shift > 0 && n != 0 && n % (1u64 << shift) == 0 {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

fn parse_switch(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// A comma-separated list of node ids, e.g. `0,1,2` (spaces allowed around the commas).
fn parse_id_list(name: &str, value: &str) -> Result<Vec<u64>, ConfigProblem> {
    if value.trim().is_empty() {
        return Err(ConfigProblem::BadInitialVoters(
            "the list is empty".to_string(),
        ));
    }
    value
        .split(',')
        .map(|item| parse_u64(item).ok_or_else(|| bad_number(name, item.trim())))
        .collect()
}

fn parse_addresses(list: &str) -> Result<Vec<SocketAddr>, ConfigProblem> {
    let mut addrs = Vec::new();
    for item in list.split(',').map(str::trim) {
        let addr = super::resolve_address(item).map_err(|reason| ConfigProblem::BadAddress {
            value: item.to_string(),
            reason,
        })?;
        addrs.push(addr);
    }
    if let Some(dup) = super::first_duplicate(&addrs) {
        return Err(ConfigProblem::DuplicateAddress(dup));
    }
    Ok(addrs)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_flags_are_unique_and_defaults_valid() {
        for (i, s) in SETTINGS.iter().enumerate() {
            for other in &SETTINGS[..i] {
                assert_ne!(s.key, other.key);
                assert_ne!(s.flag, other.flag);
                assert!(by_file_key(s.key).is_some_and(|found| std::ptr::eq(found, s)));
            }
            assert!(s.flag.starts_with("--"), "{}", s.flag);
            if let Some(value) = s.default_value() {
                assert_eq!(s.check_range(&value), Ok(()), "{}", s.key);
                assert!(s.store.is_some(), "{} has a default but no store", s.key);
            }
        }
    }

    #[test]
    fn the_cluster_id_has_no_default_and_zero_is_refused() {
        let cluster_id = setting("cluster_id");
        assert_eq!(cluster_id.default_value(), None);
        assert!(cluster_id.check_range(&Value::Number(0)).is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("256MiB"), Some(256 << 20));
        assert_eq!(parse_bytes("1 GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("4kib"), Some(4096));
        assert_eq!(parse_bytes("12B"), Some(12));
        assert_eq!(parse_bytes("4096"), Some(4096));
        for bad in ["100MB", "MiB", "1.5MiB", "99999999999TiB", "-1"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
        assert_eq!(human_bytes(800 << 20), "800 MiB");
        assert_eq!(human_bytes(3072), "3 KiB");
        assert_eq!(human_bytes(1536), "1536 bytes");
        assert_eq!(human_bytes(1000), "1000 bytes");
        let rate = setting("snapshot_bytes_per_sec");
        assert_eq!(rate.parse("--x", "800MiB/s"), Ok(Value::Number(800 << 20)));
        assert!(
            rate.help_text().ends_with("[default: 800 MiB/s]"),
            "{}",
            rate.help_text()
        );
    }

    #[test]
    fn switches_and_millis_parse() {
        let pre_vote = setting("pre_vote");
        assert_eq!(
            pre_vote.parse("--pre-vote", "off"),
            Ok(Value::Switch(false))
        );
        assert_eq!(
            pre_vote.parse("--pre-vote", "TRUE"),
            Ok(Value::Switch(true))
        );
        assert!(pre_vote.parse("--pre-vote", "maybe").is_err());
        let heartbeat = setting("heartbeat_ms");
        assert_eq!(heartbeat.parse("x", "2s"), Ok(Value::Number(2000)));
        assert_eq!(heartbeat.parse("x", "40ms"), Ok(Value::Number(40)));
    }
}
