//! Command-line flags (CONTRACT.md, `rcraft-loadtest`) and their validation into [`Settings`].
//!
//! Owned by the main thread. Invariant after [`Args::into_settings`]: exactly one target,
//! faults only against a spawned cluster, `restart_after < kill_every` so at most one node is
//! down at a time, `0 <= read_ratio <= 1`, at least one client and one key.

use crate::error::{Error, Result};
use crate::limits::PIPELINE_DEPTH_MAX;
use crate::mix::WorkloadKind;
use crate::nemesis::{NemesisKind, NemesisSchedule};
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use rcraft::wire::ReadMode;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Stress an rcraft cluster: concurrent clients, leader kills, latency, lost-write check.
#[derive(Parser, Debug, Clone)]
#[command(name = "rcraft-loadtest", version)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["servers", "spawn"])))]
pub struct Args {
    /// Addresses of a running cluster, in id order.
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub servers: Vec<SocketAddr>,
    /// Spawn a local cluster of N `rcraft serve` processes on 127.0.0.1 for the run.
    #[arg(long, value_name = "N")]
    pub spawn: Option<usize>,
    /// Concurrent clients, each with its own connection, session and one request in flight
    /// (closed loop unless --rate).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Event-loop threads the clients are dealt out to (each client is still a
    /// `rcraft::client::ClientCore` with its own connection and session).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub engine_threads: usize,
    /// One OS thread per client running the blocking `rcraft::client::Client`, instead of the
    /// event-loop engine (same decisions, more load-generator CPU).
    #[arg(long)]
    pub thread_per_client: bool,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub duration: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 100, value_name = "BYTES")]
    pub value_size: usize,
    /// Size of the key space.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Fraction of operations that are (linearizable) reads, 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub read_ratio: f64,
    /// A mix of gets, puts, deletes and compare-and-swaps instead of --read-ratio's gets and
    /// puts. Every run's history is checked for linearizability.
    #[arg(long, value_enum, value_name = "MIX", conflicts_with = "read_ratio")]
    pub workload: Option<WorkloadKind>,
    /// Open loop: total operations per second over all clients (latency then counts from
    /// the scheduled send time). Without it every client sends its next request on reply.
    #[arg(long, value_name = "OPS")]
    pub rate: Option<f64>,
    /// How gets read: linearizable (the leader, after a heartbeat round or from its lease),
    /// lease (the leader's lease; spawned nodes then run with --lease-reads on) or follower
    /// (any node, after the leader confirms a read index; sessions start at different nodes).
    #[arg(long, default_value = "linearizable", value_name = "MODE",
          value_parser = PossibleValuesParser::new(ReadMode::ALL.map(ReadMode::name))
              .try_map(|name| name.parse::<ReadMode>()))]
    pub read_mode: ReadMode,
    /// Requests in flight per client connection. 1: clients with sessions and retries across
    /// leader changes (the event-loop engine, or --thread-per-client). More: a pipelined
    /// connection to the leader per client thread, without retries (closed loop only).
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub pipeline: usize,
    /// kill -9 the leader every SECS seconds (spawned clusters only).
    #[arg(long, value_name = "SECS")]
    pub kill_leader_every: Option<f64>,
    /// Restart a killed node with the same data directory after SECS seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub restart_after: f64,
    /// SIGSTOP the leader every SECS seconds (spawned clusters only).
    #[arg(long, value_name = "SECS")]
    pub pause_leader_every: Option<f64>,
    /// SIGCONT a paused leader after SECS seconds.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub pause_for: f64,
    /// Seeded faults drawn from these kinds (spawned clusters only): kill, pause,
    /// isolate-leader, halves, bridge, one-way, loss, delay (network faults: root only, else
    /// skipped with a message), wal-tail, wal-record (damage to a stopped follower's log).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND,...")]
    pub nemesis: Vec<NemesisKind>,
    /// Seed of the nemesis schedule: which fault when, and whom it hits.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
    /// Mean time between two nemesis faults.
    #[arg(long, default_value_t = 3.0, value_name = "SECS")]
    pub nemesis_every: f64,
    /// Longest a nemesis fault stays in force (each lasts half of this to all of it).
    #[arg(long, default_value_t = 1.5, value_name = "SECS")]
    pub nemesis_hold: f64,
    /// `--snapshot-every N` for spawned nodes (snapshots every N applied entries).
    #[arg(long, value_name = "N")]
    pub snapshot_every: Option<u64>,
    /// Client deadline per operation, including retries across leader changes.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub timeout_ms: u64,
    /// The `rcraft` binary for `--spawn` (default: next to this executable).
    #[arg(long, value_name = "PATH")]
    pub rcraft_bin: Option<PathBuf>,
    /// Election timeout range given to spawned nodes.
    #[arg(long, default_value = "150-300", value_name = "MIN-MAX")]
    pub election_timeout_ms: String,
    /// Heartbeat interval given to spawned nodes.
    #[arg(long, default_value_t = 50, value_name = "MS")]
    pub heartbeat_ms: u64,
    /// Keep the spawned nodes' data directories and logs after the run.
    #[arg(long)]
    pub keep_data: bool,
    /// Write the summary as one JSON object to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart to PATH: throughput and p50/p99 latency over time (100 ms buckets
    /// around faults, 1 s elsewhere), fault windows shaded.
    #[arg(long, value_name = "PATH")]
    pub chart: Option<PathBuf>,
    /// A file (mode 600) whose first line is the client token to send, for nodes started
    /// with token files (every client mode, pipelined too) [default:
    /// $RCRAFT_TOKEN_FILE].
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) the nodes' certificates must chain to: talk TLS (rcraft-loadtest
    /// built with `--features tls`; every client mode, pipelined too). With
    /// `--spawn`, the nodes are started with TLS between peers and for clients, using
    /// `--cert`/`--key` as their certificate and this CA for peers.
    #[arg(long, value_name = "PATH")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for nodes with --client-cert-auth; with --spawn, also the
    /// nodes' certificate (it must name 127.0.0.1 and allow server and client use).
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
}

impl Args {
    /// Further `rcraft serve` flags for spawned nodes: `--snapshot-every`, and
    /// `--lease-reads on` for `--read-mode lease`.
    fn node_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.snapshot_every {
            args.extend(["--snapshot-every".to_string(), n.to_string()]);
        }
        if self.read_mode == ReadMode::Lease {
            args.extend(["--lease-reads".to_string(), "on".to_string()]);
        }
        if let (Some(ca), Some(cert), Some(key)) = (&self.cacert, &self.cert, &self.key) {
            let path = |flag: &str, p: &PathBuf| [flag.to_string(), p.display().to_string()];
            args.extend(path("--cert-file", cert));
            args.extend(path("--key-file", key));
            args.extend(path("--peer-cert-file", cert));
            args.extend(path("--peer-key-file", key));
            args.extend(path("--peer-trusted-ca-file", ca));
        }
        args
    }

    /// The clients' TLS settings (`--cacert`, `--cert`, `--key`); `None`: plaintext.
    pub fn tls(&self) -> Result<Option<rcraft::tls::ClientTls>> {
        let Some(ca) = &self.cacert else {
            if self.cert.is_some() || self.key.is_some() {
                return Err(Error::Usage("--cert and --key need --cacert".into()));
            }
            return Ok(None);
        };
        let namespaces = self.nemesis.iter().any(|k| k.needs_network())
            && crate::netns::unavailable_reason().is_none();
        if self.spawn.is_some() && namespaces {
            return Err(Error::Usage(
                "--cacert with network nemeses: their namespaces give the nodes addresses \
                 (10.A.B.10+id) that the certificate does not name"
                    .into(),
            ));
        }
        if self.spawn.is_some() && (self.cert.is_none() || self.key.is_none()) {
            return Err(Error::Usage(
                "--spawn with --cacert needs --cert and --key too (the nodes' certificate)".into(),
            ));
        }
        rcraft::tls::ClientTls::from_files(ca, self.cert.as_deref(), self.key.as_deref())
            .map(Some)
            .map_err(|e| Error::Usage(e.to_string()))
    }

    /// The token to send: `--token-file`, else `$RCRAFT_TOKEN_FILE`, else none.
    pub fn token(&self) -> Result<Option<rcraft::node::net::auth::Token>> {
        let from_env = || {
            std::env::var_os("RCRAFT_TOKEN_FILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        };
        let Some(path) = self.token_file.clone().or_else(from_env) else {
            return Ok(None);
        };
        rcraft::node::net::auth::Token::from_file(&path)
            .map(Some)
            .map_err(|e| Error::Usage(e.to_string()))
    }
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A cluster someone else runs.
    Servers(Vec<SocketAddr>),
    /// A cluster this tool starts and stops.
    Spawn {
        /// Number of nodes.
        nodes: usize,
        /// The `rcraft` binary.
        rcraft_bin: PathBuf,
        /// `--election-timeout-ms` passed through.
        election_timeout_ms: String,
        /// `--heartbeat-ms` passed through.
        heartbeat_ms: u64,
        /// Leave data directories behind.
        keep_data: bool,
        /// Each node in its own network namespace (root, network nemeses requested).
        network_namespaces: bool,
        /// Further `rcraft serve` flags.
        node_args: Vec<String>,
    },
}

/// A periodic fault: every `every`, do it to the leader, undo it after `undo_after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultSchedule {
    /// Period between faults, first one after one period.
    pub every: Duration,
    /// Time until restart (kill) or SIGCONT (pause).
    pub undo_after: Duration,
}

/// Validated settings of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the load goes.
    pub target: Target,
    /// Client threads.
    pub clients: usize,
    /// Run length.
    pub duration: Duration,
    /// Bytes per value.
    pub value_size: usize,
    /// Key space size.
    pub keys: u64,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// How gets read.
    pub read_mode: ReadMode,
    /// The client token sent in every client handshake (`--token-file`), if any.
    pub token: Option<rcraft::node::net::auth::Token>,
    /// TLS to the nodes (`--cacert`), if any.
    pub tls: Option<rcraft::tls::ClientTls>,
    /// Named operation mix; `None`: gets and puts by `read_ratio`.
    pub workload: Option<WorkloadKind>,
    /// Total open-loop rate, if any.
    pub rate: Option<f64>,
    /// Requests in flight per connection; 1 selects the clients with sessions and retries.
    pub pipeline: usize,
    /// Event-loop threads for the clients; `None`: one thread per client (blocking clients,
    /// or pipelined connections).
    pub engine_threads: Option<usize>,
    /// Leader kills.
    pub kill: Option<FaultSchedule>,
    /// Leader pauses.
    pub pause: Option<FaultSchedule>,
    /// Seeded nemeses.
    pub nemesis: Option<NemesisSchedule>,
    /// Client deadline per operation.
    pub timeout: Duration,
    /// JSON output path.
    pub json: Option<PathBuf>,
    /// SVG output path.
    pub chart: Option<PathBuf>,
}

fn seconds(name: &str, value: f64) -> Result<Duration> {
    if value.is_finite() && value > 0.0 && value < 1e7 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(Error::Usage(format!(
            "{name} must be a positive number of seconds, got {value}"
        )))
    }
}

/// The `rcraft` binary next to this executable (both are built into the same target dir).
pub fn default_rcraft_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locating own executable", e))?;
    let dir = exe
        .parent()
        .ok_or_else(|| Error::Usage(format!("{} has no parent directory", exe.display())))?;
    Ok(dir.join("rcraft"))
}

impl Args {
    /// Checks the flags against each other and produces the run's settings.
    pub fn into_settings(self) -> Result<Settings> {
        if self.clients == 0 || self.keys == 0 {
            return Err(Error::Usage(
                "--clients and --keys must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(Error::Usage(format!(
                "--read-ratio must be in 0..=1, got {}",
                self.read_ratio
            )));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::Usage(format!("--rate must be positive, got {rate}")));
        }
        if self.pipeline == 0 || self.pipeline > PIPELINE_DEPTH_MAX {
            return Err(Error::Usage(format!(
                "--pipeline must be in 1..={PIPELINE_DEPTH_MAX}, got {}",
                self.pipeline
            )));
        }
        if self.engine_threads == 0 {
            return Err(Error::Usage("--engine-threads must be at least 1".into()));
        }
        if self.pipeline > 1 && self.rate.is_some() {
            return Err(Error::Usage(
                "--pipeline above 1 is closed loop only; drop --rate".into(),
            ));
        }
        let kill = match self.kill_leader_every {
            Some(every) => Some(schedule(
                "--kill-leader-every",
                every,
                "--restart-after",
                self.restart_after,
            )?),
            None => None,
        };
        let pause = match self.pause_leader_every {
            Some(every) => Some(schedule(
                "--pause-leader-every",
                every,
                "--pause-for",
                self.pause_for,
            )?),
            None => None,
        };
        let nemesis = self.nemesis_schedule()?;
        let target = self.target(kill.is_some() || pause.is_some() || nemesis.is_some())?;
        let token = self.token()?;
        let tls = self.tls()?;
        Ok(Settings {
            token,
            tls,
            target,
            clients: self.clients,
            duration: seconds("--duration", self.duration)?,
            value_size: self.value_size,
            keys: self.keys,
            read_ratio: self.read_ratio,
            read_mode: self.read_mode,
            workload: self.workload,
            rate: self.rate,
            pipeline: self.pipeline,
            engine_threads: (self.pipeline == 1 && !self.thread_per_client)
                .then_some(self.engine_threads),
            kill,
            pause,
            nemesis,
            timeout: Duration::from_millis(self.timeout_ms.max(1)),
            json: self.json,
            chart: self.chart,
        })
    }

    fn target(&self, has_faults: bool) -> Result<Target> {
        match self.spawn {
            Some(0) => Err(Error::Usage("--spawn needs at least 1 node".into())),
            Some(nodes) => Ok(Target::Spawn {
                nodes,
                rcraft_bin: match &self.rcraft_bin {
                    Some(path) => path.clone(),
                    None => default_rcraft_bin()?,
                },
                election_timeout_ms: self.election_timeout_ms.clone(),
                heartbeat_ms: self.heartbeat_ms,
                keep_data: self.keep_data,
                network_namespaces: self.nemesis.iter().any(|k| k.needs_network())
                    && crate::netns::unavailable_reason().is_none(),
                node_args: self.node_args(),
            }),
            None if has_faults => Err(Error::Usage(
                "--kill-leader-every, --pause-leader-every and --nemesis need --spawn (the tool must own the processes)".into(),
            )),
            None => Ok(Target::Servers(self.servers.clone())),
        }
    }
}

impl Args {
    fn nemesis_schedule(&self) -> Result<Option<NemesisSchedule>> {
        if self.nemesis.is_empty() {
            return Ok(None);
        }
        let every = seconds("--nemesis-every", self.nemesis_every)?;
        let hold = seconds("--nemesis-hold", self.nemesis_hold)?;
        if hold >= every {
            return Err(Error::Usage(format!(
                "--nemesis-hold ({:.1}s) must be shorter than --nemesis-every ({:.1}s) so one fault ends before the next",
                hold.as_secs_f64(),
                every.as_secs_f64()
            )));
        }
        if let Some(nodes) = self.spawn
            && nodes > crate::netns::NODES_MAX
            && self.nemesis.iter().any(|k| k.needs_network())
        {
            return Err(Error::Usage(format!(
                "network nemeses hold at most {} nodes",
                crate::netns::NODES_MAX
            )));
        }
        let mut kinds = self.nemesis.clone();
        kinds.dedup();
        Ok(Some(NemesisSchedule {
            kinds,
            seed: self.seed,
            every,
            hold,
        }))
    }
}

fn schedule(every_name: &str, every: f64, undo_name: &str, undo: f64) -> Result<FaultSchedule> {
    let every = seconds(every_name, every)?;
    let undo_after = seconds(undo_name, undo)?;
    if undo_after >= every {
        return Err(Error::Usage(format!(
            "{undo_name} ({:.1}s) must be shorter than {every_name} ({:.1}s) so at most one node is down at a time",
            undo_after.as_secs_f64(),
            every.as_secs_f64()
        )));
    }
    Ok(FaultSchedule { every, undo_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Settings, String> {
        let args =
            Args::try_parse_from(std::iter::once("rcraft-loadtest").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        args.into_settings().map_err(|e| e.to_string())
    }

    #[test]
    fn servers_are_parsed_in_order() {
        let s = parse(&[
            "--servers",
            "127.0.0.1:7001,127.0.0.1:7002",
            "--clients",
            "4",
        ])
        .unwrap();
        assert_eq!(
            s.target,
            Target::Servers(vec![
                "127.0.0.1:7001".parse().unwrap(),
                "127.0.0.1:7002".parse().unwrap()
            ])
        );
        assert_eq!(s.clients, 4);
        assert!(s.kill.is_none());
    }

    #[test]
    fn a_target_is_required_and_exclusive() {
        assert!(parse(&["--clients", "4"]).is_err());
        assert!(parse(&["--servers", "127.0.0.1:1", "--spawn", "3"]).is_err());
    }

    #[test]
    fn faults_need_a_spawned_cluster() {
        let err = parse(&["--servers", "127.0.0.1:1", "--kill-leader-every", "4"]).unwrap_err();
        assert!(err.contains("--spawn"), "{err}");
    }

    #[test]
    fn restart_must_come_before_the_next_kill() {
        let args = [
            "--spawn",
            "3",
            "--rcraft-bin",
            "/x",
            "--kill-leader-every",
            "2",
            "--restart-after",
            "2",
        ];
        assert!(parse(&args).is_err());
        let args = [
            "--spawn",
            "3",
            "--rcraft-bin",
            "/x",
            "--kill-leader-every",
            "4",
            "--restart-after",
            "2",
        ];
        let s = parse(&args).unwrap();
        assert_eq!(
            s.kill,
            Some(FaultSchedule {
                every: Duration::from_secs(4),
                undo_after: Duration::from_secs(2)
            })
        );
    }

    #[test]
    fn nemeses_are_parsed_with_their_schedule() {
        let base = ["--spawn", "3", "--rcraft-bin", "/x"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert_eq!(with(&[]).unwrap().nemesis, None);
        let s = with(&["--nemesis", "halves,wal-tail", "--seed", "9"]).unwrap();
        let nemesis = s.nemesis.unwrap();
        assert_eq!(
            nemesis.kinds,
            vec![NemesisKind::Halves, NemesisKind::WalTail]
        );
        assert_eq!(
            (nemesis.seed, nemesis.every, nemesis.hold),
            (9, Duration::from_secs(3), Duration::from_millis(1500))
        );
        assert!(with(&["--nemesis", "flood"]).is_err());
        let err = with(&["--nemesis", "kill", "--nemesis-hold", "4"]).unwrap_err();
        assert!(err.contains("--nemesis-hold"), "{err}");
        let err = parse(&["--servers", "127.0.0.1:1", "--nemesis", "kill"]).unwrap_err();
        assert!(err.contains("--spawn"), "{err}");
        let Target::Spawn { node_args, .. } = with(&["--snapshot-every", "300"]).unwrap().target
        else {
            panic!("spawn target expected");
        };
        assert_eq!(node_args, vec!["--snapshot-every", "300"]);
    }

    #[test]
    fn a_workload_replaces_the_read_ratio() {
        let base = ["--spawn", "3", "--rcraft-bin", "/x"];
        assert_eq!(parse(&base).unwrap().workload, None);
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert_eq!(
            with(&["--workload", "cas-heavy"]).unwrap().workload,
            Some(WorkloadKind::CasHeavy)
        );
        assert!(with(&["--workload", "read-heavy", "--read-ratio", "0.5"]).is_err());
        assert!(with(&["--workload", "everything"]).is_err());
    }

    #[test]
    fn the_read_mode_is_parsed_and_lease_mode_spawns_lease_reads() {
        let base = ["--spawn", "3", "--rcraft-bin", "/x"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        let lease_reads = |settings: &Settings| match settings.target {
            Target::Spawn { ref node_args, .. } => node_args
                .windows(2)
                .any(|w| w[0] == "--lease-reads" && w[1] == "on"),
            Target::Servers(_) => panic!("spawned"),
        };
        let default = with(&[]).unwrap();
        assert_eq!(default.read_mode, ReadMode::Linearizable);
        assert!(!lease_reads(&default));
        let follower = with(&["--read-mode", "follower"]).unwrap();
        assert_eq!(follower.read_mode, ReadMode::Follower);
        assert!(!lease_reads(&follower));
        let lease = with(&["--read-mode", "lease"]).unwrap();
        assert_eq!(lease.read_mode, ReadMode::Lease);
        assert!(lease_reads(&lease));
        let error = with(&["--read-mode", "stale"]).unwrap_err();
        assert!(
            error.contains("stale") && error.contains("follower"),
            "{error}"
        );
    }

    #[test]
    fn bad_numbers_are_usage_errors() {
        assert!(parse(&["--spawn", "3", "--rcraft-bin", "/x", "--read-ratio", "1.5"]).is_err());
        assert!(parse(&["--spawn", "3", "--rcraft-bin", "/x", "--duration", "0"]).is_err());
        assert!(parse(&["--spawn", "0", "--rcraft-bin", "/x"]).is_err());
        assert!(parse(&["--spawn", "3", "--rcraft-bin", "/x", "--rate", "-1"]).is_err());
        assert!(parse(&["--spawn", "3", "--rcraft-bin", "/x", "--pipeline", "0"]).is_err());
        let base = ["--spawn", "3", "--rcraft-bin", "/x"];
        let with = |extra: &[&str]| parse(&[&base[..], extra].concat());
        assert_eq!(with(&[]).unwrap().engine_threads, Some(1));
        assert_eq!(
            with(&["--engine-threads", "2"]).unwrap().engine_threads,
            Some(2)
        );
        assert_eq!(with(&["--thread-per-client"]).unwrap().engine_threads, None);
        assert_eq!(with(&["--pipeline", "4"]).unwrap().engine_threads, None);
        assert!(with(&["--engine-threads", "0"]).is_err());
        assert!(
            parse(&[
                "--spawn",
                "3",
                "--rcraft-bin",
                "/x",
                "--pipeline",
                "8",
                "--rate",
                "100"
            ])
            .is_err()
        );
        assert_eq!(
            parse(&["--spawn", "3", "--rcraft-bin", "/x", "--pipeline", "8"])
                .unwrap()
                .pipeline,
            8
        );
    }
}
