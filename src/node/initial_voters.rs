//! The voters a brand-new cluster starts with, kept in the data directory so that a node
//! with existing state never changes them.
//!
//! Raft needs every node of a cluster to agree on the configuration that holds before the
//! first membership entry (the "initial configuration"). It comes from `initial_voters`
//! (default: every listed server) the first time a node starts on a data directory, and is
//! then written to `<data_dir>/initial_voters` (text, `0,1,2`, written to a temporary file,
//! synced and renamed, the directory synced). On every later start the stored list wins:
//! changing `--initial-voters` for an existing node logs a warning and changes nothing, and
//! adding addresses to `--peers` does not make them voters. Membership entries in the log and
//! the membership recorded in a snapshot take precedence over it in the core anyway.
//!
//! A node started with `join` on a fresh data dir stores `none`: no initial voters. It cannot
//! campaign (it votes in no configuration it knows) and learns the cluster's membership from
//! the first membership entry or snapshot the leader sends it, which `rcraft members add`
//! causes. Its log prefix before that entry counts as having no voters, which only ever keeps
//! it from campaigning: it was not a member there.
//!
//! Runs once on the thread that calls `Node::start`, before any node thread exists.

use super::data_dir::write_durably;
use super::error::{Error, Result};
use crate::Config;
use rcraft_wire::{Membership, NodeId};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// Name of the file in the data directory.
const FILE_NAME: &str = "initial_voters";
/// What the file holds for a node started with `join`: no initial voters.
const JOINED: &str = "none";

/// Why a data dir's `initial_voters` file cannot be used.
#[derive(Debug)]
pub enum InitialVotersError {
    /// The file exists but could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file holds something else than comma-separated node ids (or `none`).
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it holds (trimmed).
        found: String,
    },
}

impl fmt::Display for InitialVotersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitialVotersError::Read { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            InitialVotersError::Malformed { path, found } => write!(
                f,
                "{}: expected comma-separated node ids, found {found:?}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for InitialVotersError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InitialVotersError::Read { source, .. } => Some(source),
            InitialVotersError::Malformed { .. } => None,
        }
    }
}

/// The initial configuration of the node's cluster: the stored one when the data directory
/// has one, else `config`'s, which is then stored.
pub(crate) fn load_or_store(config: &Config) -> Result<Membership> {
    let dir = &config.data_dir;
    let path = dir.join(FILE_NAME);
    let configured = config.initial_voter_ids();
    let voters = match fs::read_to_string(&path) {
        Ok(text) => {
            let stored = parse(&text).ok_or_else(|| {
                Error::InitialVoters(InitialVotersError::Malformed {
                    path: path.clone(),
                    found: text.trim().to_string(),
                })
            })?;
            if stored.is_empty() {
                log::info!(
                    "{} joined a running cluster (no initial voters); its membership comes \
                     from the cluster",
                    dir.display()
                );
            } else if stored != configured && config.initial_voters.is_some() {
                log::warn!(
                    "{} was created with initial voters {}; the configured {} only apply to a \
                     fresh data dir and are ignored",
                    dir.display(),
                    render(&stored),
                    render(&configured)
                );
            } else if stored != configured {
                // The usual case after growing `--peers` by a spare address: nothing to say.
                log::info!(
                    "initial voters {} (stored in {} at the first start)",
                    render(&stored),
                    dir.display()
                );
            }
            stored
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let voters = if holds_state(dir) {
                predating_voters(config, &configured)
            } else if config.join {
                log::info!(
                    "node {} joins a running cluster: no initial voters; it waits to be added \
                     (rcraft members add {})",
                    config.id,
                    config.id
                );
                Vec::new()
            } else {
                configured
            };
            store(dir, &voters).map_err(|e| Error::io(format!("storing {}", path.display()), e))?;
            voters
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if let Some(id) = voters.iter().find(|id| id.0 >= config.servers.len() as u64) {
        return Err(Error::Config(format!(
            "{}: initial voter {id} has no address ({})",
            path.display(),
            crate::config::servers_listed(config.servers.len())
        )));
    }
    Ok(Membership::with_voters(voters))
}

/// The initial voters stored in `dir`, read only (for `rcraft doctor`): `Ok(None)` when there
/// is no file, an empty list for a node that joined, `Err` naming what is wrong.
pub(crate) fn read_stored(
    dir: &Path,
) -> std::result::Result<Option<Vec<NodeId>>, InitialVotersError> {
    let path = dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => match parse(&text) {
            Some(voters) => Ok(Some(voters)),
            None => Err(InitialVotersError::Malformed {
                path,
                found: text.trim().to_string(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InitialVotersError::Read { path, source }),
    }
}

/// Files a node writes at its first start: a data dir holding one of them was created before
/// the initial voters were stored.
const STATE_NAMES: [&str; 3] = ["hard_state", "wal", "snapshots"];

pub(crate) fn holds_state(dir: &Path) -> bool {
    STATE_NAMES.iter().any(|name| dir.join(name).exists())
}

/// The initial voters of a data dir created before they were stored: then every listed server
/// was one, whatever `initial_voters` now says (taking the flag would give this node another
/// initial configuration than its peers: two majorities, two leaders).
fn predating_voters(config: &Config, configured: &[NodeId]) -> Vec<NodeId> {
    let every: Vec<NodeId> = (0..config.servers.len() as u64).map(NodeId).collect();
    if config.initial_voters.is_some() && configured != every.as_slice() {
        log::warn!(
            "{} holds state from before initial voters were stored, when every listed server \
             was one: keeping {} and ignoring the configured {}",
            config.data_dir.display(),
            render(&every),
            render(configured)
        );
    }
    every
}

/// `0,1,2` (a trailing newline allowed), or `none` for a node that joined a running cluster;
/// `None` when empty or not a list of ids.
fn parse(text: &str) -> Option<Vec<NodeId>> {
    if text.trim() == JOINED {
        return Some(Vec::new());
    }
    let ids: Option<Vec<NodeId>> = text
        .trim()
        .split(',')
        .map(|item| item.trim().parse().ok().map(NodeId))
        .collect();
    ids.filter(|ids| !ids.is_empty())
}

fn render(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return JOINED.to_string();
    }
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    ids.join(",")
}

/// Writes the list durably (see [`write_durably`]).
fn store(dir: &Path, voters: &[NodeId]) -> std::io::Result<()> {
    write_durably(dir, FILE_NAME, format!("{}\n", render(voters)).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn config(dir: &Path, servers: usize, voters: Option<Vec<u64>>) -> Config {
        let servers: Vec<SocketAddr> = (0..servers)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16)))
            .collect();
        let mut config = Config::new(NodeId(0), servers, dir.to_path_buf());
        config.initial_voters = voters.map(|v| v.into_iter().map(NodeId).collect());
        config
    }

    fn voters_of(membership: &Membership) -> Vec<u64> {
        membership.voters.iter().map(|id| id.0).collect()
    }

    #[test]
    fn the_first_start_stores_the_list_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_store(&config(&data, 4, Some(vec![0, 1, 2]))).unwrap();
        assert_eq!(voters_of(&first), [0, 1, 2]);
        assert!(first.learners.is_empty());
        assert_eq!(fs::read_to_string(data.join(FILE_NAME)).unwrap(), "0,1,2\n");
        let later = load_or_store(&config(&data, 4, None)).unwrap();
        assert_eq!(voters_of(&later), [0, 1, 2], "the stored list wins");
    }

    #[test]
    fn a_data_dir_from_before_the_file_keeps_every_server_as_a_voter() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(data.join("wal")).unwrap();
        // The flag would make node 0 count a quorum of {0} while its peers count {0,1,2}.
        let membership = load_or_store(&config(&data, 3, Some(vec![0]))).unwrap();
        assert_eq!(voters_of(&membership), [0, 1, 2]);
        let stored = fs::read_to_string(data.join(FILE_NAME)).unwrap();
        assert_eq!(stored.trim(), "0,1,2");
    }

    #[test]
    fn a_joining_node_has_no_initial_voters_and_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut joining = config(dir.path(), 3, None);
        joining.join = true;
        let membership = load_or_store(&joining).unwrap();
        assert!(membership.voters.is_empty() && membership.learners.is_empty());
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE_NAME)).unwrap(),
            "none\n"
        );
        // Restarted without the flag, it still has none.
        let later = load_or_store(&config(dir.path(), 3, None)).unwrap();
        assert!(later.voters.is_empty());
    }

    #[test]
    fn the_default_is_every_server() {
        let dir = tempfile::tempdir().unwrap();
        let membership = load_or_store(&config(dir.path(), 3, None)).unwrap();
        assert_eq!(voters_of(&membership), [0, 1, 2]);
    }

    #[test]
    fn a_damaged_or_out_of_range_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), "0,x\n").unwrap();
        let e = load_or_store(&config(dir.path(), 3, None)).unwrap_err();
        let path = dir.path().join(FILE_NAME);
        assert!(
            matches!(&e, Error::InitialVoters(InitialVotersError::Malformed { path: p, found })
                if *p == path && found == "0,x"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "storage failed, node stopped: {}: expected comma-separated node ids, found \"0,x\"",
                path.display()
            )
        );
        fs::write(dir.path().join(FILE_NAME), "0,5\n").unwrap();
        let e = load_or_store(&config(dir.path(), 3, None)).unwrap_err();
        assert!(e.to_string().contains("initial voter 5"), "{e}");
    }
}
