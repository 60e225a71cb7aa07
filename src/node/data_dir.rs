//! Whose a data directory is: the node id and cluster id it was created for, the random
//! incarnation that tells this data dir from any other the node was ever started on, and the
//! incarnation of each peer as this node last accepted it. Recorded at the first start,
//! checked at every later one, and updated by the network thread when it learns something.
//!
//! `<data_dir>/identity` is text, written with [`write_durably`]:
//!
//! ```text
//! node_id = 0
//! cluster_id = 0x5be0cd19137e2179
//! incarnation = 0x1f83d9abfb41bd6b
//! address = 10.0.0.1:7000
//! peer_incarnation = 1:0x6a09e667f3bcc908
//! ```
//!
//! A data dir started as another node (`--id 1` on node 0's directory) or for another cluster
//! is refused with a message that names both: its log, votes and snapshots are another
//! node's, and running it under the wrong id would hand that node's votes and entries to this
//! one. The recorded address only earns a warning when it changes: a node may move, and a
//! server list given in another order is already refused by its peers, whose handshake checks
//! the id of the node at each address.
//!
//! The cluster id of a fresh data dir: the configured `cluster_id` when there is one; else,
//! for a node that bootstraps a cluster, one derived from the initial voters and their
//! addresses (every initial voter computes the same without talking to the others, as etcd
//! derives its cluster id from the initial cluster); else, for a node started with `join` or
//! at a spare address (not an initial voter), [`CLUSTER_ID_UNKNOWN`] until its first contact
//! with a member, which the network thread records before it reads a frame. The incarnation is random, made when the file is.
//!
//! Older data dirs: one without the file gets it at its next start, with the configured
//! cluster id or, when none is configured, [`CLUSTER_ID_DEFAULT`] (what every earlier
//! version used), so an upgraded cluster keeps talking; a file without `incarnation` (written
//! by an earlier version) gets one at its next start, and peers that never saw this node's
//! incarnation accept the first one they see.
//!
//! Runs on the thread that calls `Node::start`, before any node thread exists; afterwards
//! only the network thread writes the file ([`Identity::store`]).

use super::error::{Error, Result};
use crate::Config;
use crate::config::CLUSTER_ID_DEFAULT;
use rcraft_wire::{CLUSTER_ID_UNKNOWN, NodeId};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the file in the data directory.
const FILE_NAME: &str = "identity";
/// How the file writes a cluster id not known yet.
const UNKNOWN: &str = "unknown";

/// What the identity file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) node_id: u64,
    /// [`CLUSTER_ID_UNKNOWN`] until a joining node's first contact.
    pub(crate) cluster_id: u64,
    /// Random, made with the file; never zero. Zero only while parsing a file of an earlier
    /// version, which has none.
    pub(crate) incarnation: u64,
    /// This node's address in the server list when the file was written.
    pub(crate) address: String,
    /// The incarnation of each peer, as this node last accepted it.
    pub(crate) peers: BTreeMap<NodeId, u64>,
}

impl Identity {
    fn render(&self) -> String {
        let cluster = match self.cluster_id {
            CLUSTER_ID_UNKNOWN => UNKNOWN.to_string(),
            id => format!("{id:#x}"),
        };
        let mut text = format!(
            "node_id = {}\ncluster_id = {cluster}\nincarnation = {:#x}\naddress = {}\n",
            self.node_id, self.incarnation, self.address
        );
        for (peer, incarnation) in &self.peers {
            text.push_str(&format!("peer_incarnation = {peer}:{incarnation:#x}\n"));
        }
        text
    }

    /// The file's text; `Err` names what is missing or malformed.
    fn parse(text: &str) -> std::result::Result<Identity, IdentityProblem> {
        let (mut node_id, mut cluster_id, mut address) = (None, None, None);
        let (mut incarnation, mut peers) = (0, BTreeMap::new());
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((key, value)) = line.split_once('=') else {
                return Err(IdentityProblem::NotKeyValue(line.to_string()));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = |value: &str| {
                crate::config::settings::parse_u64(value).ok_or_else(|| {
                    IdentityProblem::NotANumber {
                        key: key.to_string(),
                        value: value.to_string(),
                    }
                })
            };
            match key {
                "node_id" => node_id = Some(number(value)?),
                "cluster_id" if value == UNKNOWN => cluster_id = Some(CLUSTER_ID_UNKNOWN),
                "cluster_id" => cluster_id = Some(number(value)?),
                "incarnation" => incarnation = number(value)?,
                "address" => address = Some(value.to_string()),
                "peer_incarnation" => {
                    let (peer, value) = value
                        .split_once(':')
                        .ok_or_else(|| IdentityProblem::NotAPeer(value.to_string()))?;
                    peers.insert(NodeId(number(peer.trim())?), number(value.trim())?);
                }
                other => return Err(IdentityProblem::UnknownKey(other.to_string())),
            }
        }
        match (node_id, cluster_id, address) {
            (Some(node_id), Some(cluster_id), Some(address)) => Ok(Identity {
                node_id,
                cluster_id,
                incarnation,
                address,
                peers,
            }),
            _ => Err(IdentityProblem::Incomplete),
        }
    }

    /// Writes the file into `dir` (durably).
    pub(crate) fn store(&self, dir: &Path) -> std::io::Result<()> {
        write_durably(dir, FILE_NAME, self.render().as_bytes())
    }
}

/// Why a data dir's `identity` file cannot be used.
#[derive(Debug)]
pub enum IdentityError {
    /// The file exists but could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file does not parse.
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        problem: IdentityProblem,
    },
}

/// What is wrong in an `identity` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityProblem {
    /// A line that is not `key = value`.
    NotKeyValue(String),
    /// A value that should be a number.
    NotANumber {
        /// Its key.
        key: String,
        /// The value found.
        value: String,
    },
    /// A `peer_incarnation` value that is not `ID:INCARNATION`.
    NotAPeer(String),
    /// A key the file does not have.
    UnknownKey(String),
    /// `node_id`, `cluster_id` or `address` is missing.
    Incomplete,
}

impl fmt::Display for IdentityProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityProblem::NotKeyValue(line) => {
                write!(f, "expected `key = value`, found {line:?}")
            }
            IdentityProblem::NotANumber { key, value } => {
                write!(f, "{key}: {value:?} is not a number")
            }
            IdentityProblem::NotAPeer(value) => write!(
                f,
                "peer_incarnation: expected `ID:INCARNATION`, found {value:?}"
            ),
            IdentityProblem::UnknownKey(key) => write!(f, "unknown key {key:?}"),
            IdentityProblem::Incomplete => f.write_str("expected node_id, cluster_id and address"),
        }
    }
}

impl std::error::Error for IdentityProblem {}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            IdentityError::Malformed { path, problem } => {
                write!(f, "{}: {problem}", path.display())
            }
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IdentityError::Read { source, .. } => Some(source),
            IdentityError::Malformed { problem, .. } => Some(problem),
        }
    }
}

/// A fresh random incarnation (never zero, which means "none").
fn fresh_incarnation() -> Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| {
        Error::io(
            "making an incarnation id",
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

/// The cluster id a bootstrapping node derives from its initial configuration: the initial
/// voters and their addresses, so that every initial voter derives the same one, and clusters
/// on other addresses (or with other voters) another. Never [`CLUSTER_ID_UNKNOWN`].
pub(crate) fn bootstrap_cluster_id(config: &Config) -> u64 {
    let mut hash = Sha256::new();
    hash.update(b"rcraft cluster id v1\n");
    for voter in config.initial_voter_ids() {
        let address = config.servers.get(voter.0 as usize);
        hash.update(format!("{voter}={address:?}\n").as_bytes());
    }
    let digest = hash.finalize();
    let id = u64::from_le_bytes(digest[..8].try_into().expect("eight bytes"));
    id.max(1)
}

/// The identity recorded in `dir` as (node id, cluster id, address), read only (for
/// `rcraft doctor`): `Ok(None)` when there is no file, `Err` naming what is wrong. The
/// cluster id is [`CLUSTER_ID_UNKNOWN`] for a joining node that has not met its cluster.
pub(crate) fn read_recorded(
    dir: &Path,
) -> std::result::Result<Option<(u64, u64, String)>, IdentityError> {
    let path = dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => match Identity::parse(&text) {
            Ok(id) => Ok(Some((id.node_id, id.cluster_id, id.address))),
            Err(problem) => Err(IdentityError::Malformed { path, problem }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Read { path, source }),
    }
}

/// Checks that `config.data_dir` belongs to this node of this cluster, recording it there at
/// the first start; returns the identity the node runs with.
pub(crate) fn check_or_record(config: &Config) -> Result<Identity> {
    let dir = &config.data_dir;
    let path = dir.join(FILE_NAME);
    let record = |identity: &Identity| {
        identity
            .store(dir)
            .map_err(|e| Error::io(format!("recording {}", path.display()), e))
    };
    let address = config.servers[config.id.0 as usize].to_string();
    let mut recorded = match fs::read_to_string(&path) {
        Ok(text) => Identity::parse(&text).map_err(|problem| {
            Error::Identity(IdentityError::Malformed {
                path: path.clone(),
                problem,
            })
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let identity = Identity {
                node_id: config.id.0,
                cluster_id: fresh_cluster_id(config),
                incarnation: fresh_incarnation()?,
                address,
                peers: BTreeMap::new(),
            };
            record(&identity)?;
            return Ok(identity);
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if recorded.node_id != config.id.0 {
        return Err(Error::Config(format!(
            "data dir {} belongs to node {} (at {}), not node {}: start it with --id {}, or \
             give node {} a data dir of its own",
            dir.display(),
            recorded.node_id,
            recorded.address,
            config.id,
            recorded.node_id,
            config.id
        )));
    }
    let mut changed = false;
    match config.cluster_id {
        Some(configured) if recorded.cluster_id == CLUSTER_ID_UNKNOWN => {
            recorded.cluster_id = configured;
            changed = true;
        }
        Some(configured) if recorded.cluster_id != configured => {
            return Err(Error::Config(format!(
                "data dir {} belongs to cluster {:#x}, not {configured:#x}: give the cluster \
                 id it was created with (--cluster-id), or a fresh data dir",
                dir.display(),
                recorded.cluster_id,
            )));
        }
        _ => {}
    }
    if recorded.incarnation == 0 {
        recorded.incarnation = fresh_incarnation()?;
        log::info!(
            "node {}: {} was written by an earlier version; recording incarnation {:#x}",
            config.id,
            path.display(),
            recorded.incarnation
        );
        changed = true;
    }
    if recorded.address != address {
        log::warn!(
            "node {} was at {} when {} was created and is now listed at {address}: if the \
             server list was reordered, its peers will refuse it; recording the new address",
            config.id,
            recorded.address,
            dir.display(),
        );
        recorded.address = address;
        changed = true;
    }
    if changed {
        record(&recorded)?;
    }
    Ok(recorded)
}

/// The cluster id of a data dir that has no identity file yet (module header).
fn fresh_cluster_id(config: &Config) -> u64 {
    if let Some(configured) = config.cluster_id {
        return configured;
    }
    if super::initial_voters::holds_state(&config.data_dir) {
        log::info!(
            "node {}: {} predates the identity file; it keeps the cluster id of earlier \
             versions, {CLUSTER_ID_DEFAULT:#x}",
            config.id,
            config.data_dir.display()
        );
        return CLUSTER_ID_DEFAULT;
    }
    // A spare (an address outside the initial voters) is as quiet as a joining node until
    // it is added, and may be started long after the cluster bootstrapped: it learns too.
    if config.join || !config.initial_voter_ids().contains(&config.id) {
        log::info!(
            "node {}: not an initial voter; its cluster id is learned from the first member \
             it meets",
            config.id
        );
        return CLUSTER_ID_UNKNOWN;
    }
    let id = bootstrap_cluster_id(config);
    log::info!(
        "node {}: bootstrapping cluster {id:#x} (derived from the initial voters and their \
         addresses; give each cluster its own --cluster-id to tell apart clusters bootstrapped \
         on the same addresses)",
        config.id
    );
    id
}

/// Writes `dir/name` durably: a temporary file, synced, renamed over the name, the directory
/// synced (creating `dir` if needed).
pub(crate) fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let temp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn config(dir: &Path, id: u64, cluster_id: Option<u64>, first_port: u16) -> Config {
        let servers: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], first_port + i)))
            .collect();
        let mut config = Config::new(NodeId(id), servers, dir.to_path_buf());
        config.cluster_id = cluster_id;
        config
    }

    #[test]
    fn the_first_start_records_the_identity_and_later_starts_check_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = check_or_record(&config(&data, 0, Some(7), 4000)).unwrap();
        assert_ne!(first.incarnation, 0);
        let text = fs::read_to_string(data.join(FILE_NAME)).unwrap();
        assert_eq!(
            text,
            format!(
                "node_id = 0\ncluster_id = 0x7\nincarnation = {:#x}\naddress = 127.0.0.1:4000\n",
                first.incarnation
            )
        );
        assert_eq!(
            check_or_record(&config(&data, 0, Some(7), 4000)).unwrap(),
            first
        );
        // Without a configured cluster id, the recorded one holds.
        assert_eq!(
            check_or_record(&config(&data, 0, None, 4000)).unwrap(),
            first
        );

        let e = check_or_record(&config(&data, 1, Some(7), 4000)).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("belongs to node 0 (at 127.0.0.1:4000), not node 1")
                && message.contains("--id 0"),
            "{message}"
        );
        let e = check_or_record(&config(&data, 0, Some(8), 4000)).unwrap_err();
        assert!(e.to_string().contains("cluster 0x7, not 0x8"), "{e}");
        assert_eq!(fs::read_to_string(data.join(FILE_NAME)).unwrap(), text);
    }

    #[test]
    fn a_damaged_identity_file_is_named_with_what_is_wrong() {
        use std::error::Error as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let path = data.join(FILE_NAME);
        fs::write(&path, "node_id = zero\ncluster_id = 0x7\naddress = a\n").unwrap();
        let e = check_or_record(&config(&data, 0, Some(7), 4000)).unwrap_err();
        assert!(
            matches!(&e, Error::Identity(IdentityError::Malformed {
                path: p,
                problem: IdentityProblem::NotANumber { key, .. },
            }) if *p == path && key == "node_id"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "storage failed, node stopped: {}: node_id: \"zero\" is not a number",
                path.display()
            )
        );
        assert!(e.source().unwrap().source().is_some());
        fs::write(&path, "node_id = 0\n").unwrap();
        let e = read_recorded(&data).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: expected node_id, cluster_id and address",
                path.display()
            )
        );
    }

    #[test]
    fn initial_voters_derive_one_cluster_id_and_other_addresses_another() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<u64> = (0..3)
            .map(|id| {
                let data = dir.path().join(format!("node{id}"));
                check_or_record(&config(&data, id, None, 4000))
                    .unwrap()
                    .cluster_id
            })
            .collect();
        assert!(
            ids.iter()
                .all(|&id| id == ids[0] && id != CLUSTER_ID_UNKNOWN),
            "{ids:?}"
        );
        let elsewhere = dir.path().join("elsewhere");
        let other = check_or_record(&config(&elsewhere, 0, None, 5000)).unwrap();
        assert_ne!(other.cluster_id, ids[0]);
        // Every data dir has an incarnation of its own.
        let again = dir.path().join("again");
        let twin = check_or_record(&config(&again, 0, None, 4000)).unwrap();
        assert_eq!(twin.cluster_id, ids[0]);
        let first = check_or_record(&config(&dir.path().join("node0"), 0, None, 4000)).unwrap();
        assert_ne!(twin.incarnation, first.incarnation);
    }

    #[test]
    fn a_joining_node_records_its_cluster_id_once_known() {
        let dir = tempfile::tempdir().unwrap();
        let mut joining = config(dir.path(), 2, None, 4000);
        joining.join = true;
        let mut identity = check_or_record(&joining).unwrap();
        assert_eq!(identity.cluster_id, CLUSTER_ID_UNKNOWN);
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("cluster_id = unknown"), "{text}");
        identity.cluster_id = 0x42;
        identity.peers.insert(NodeId(0), 0x99);
        identity.store(dir.path()).unwrap();
        assert_eq!(check_or_record(&joining).unwrap(), identity);
    }

    #[test]
    fn a_spare_learns_its_cluster_id_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut spare = config(dir.path(), 2, None, 4000);
        spare.initial_voters = Some(vec![NodeId(0), NodeId(1)]);
        assert_eq!(
            check_or_record(&spare).unwrap().cluster_id,
            CLUSTER_ID_UNKNOWN
        );
    }

    #[test]
    fn files_of_earlier_versions_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let earlier = "node_id = 0\ncluster_id = 0x726372616674\naddress = 127.0.0.1:4000\n";
        fs::write(dir.path().join(FILE_NAME), earlier).unwrap();
        let identity = check_or_record(&config(dir.path(), 0, None, 4000)).unwrap();
        assert_eq!(identity.cluster_id, CLUSTER_ID_DEFAULT);
        assert_ne!(identity.incarnation, 0);
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("incarnation = 0x"), "{text}");
        // A data dir from before the identity file keeps the earlier default cluster id.
        let older = tempfile::tempdir().unwrap();
        fs::write(older.path().join("hard_state"), b"").unwrap();
        let identity = check_or_record(&config(older.path(), 0, None, 4000)).unwrap();
        assert_eq!(identity.cluster_id, CLUSTER_ID_DEFAULT);
    }

    #[test]
    fn a_moved_node_is_recorded_at_its_new_address() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record(&config(dir.path(), 1, Some(7), 4000)).unwrap();
        check_or_record(&config(dir.path(), 1, Some(7), 5000)).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("address = 127.0.0.1:5001"), "{text}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for text in [
            "node_id = x\n",
            "node_id = 0\n",
            "garbage\n",
            "color = 3\n",
            "node_id = 0\ncluster_id = 7\naddress = a\npeer_incarnation = 3\n",
        ] {
            fs::write(dir.path().join(FILE_NAME), text).unwrap();
            let e = check_or_record(&config(dir.path(), 0, Some(7), 4000)).unwrap_err();
            assert!(e.to_string().contains("identity"), "{text:?}: {e}");
        }
    }
}
