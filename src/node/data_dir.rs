//! Whose a data directory is: the node id and cluster id it was created for, recorded at the
//! first start and checked at every later one.
//!
//! `<data_dir>/identity` is text (`node_id = 0`, `cluster_id = 0x726372616674`,
//! `address = 10.0.0.1:7000`), written with [`write_durably`]. A data dir started as another
//! node (`--id 1` on node 0's directory) or for another cluster is refused with a message that
//! names both: its log, votes and snapshots are another node's, and running it under the wrong
//! id would hand that node's votes and entries to this one. The recorded address only earns a
//! warning when it changes: a node may move, and a server list given in another order is
//! already refused by its peers, whose handshake checks the id of the node at each address.
//! A data dir from before the file existed gets one, from the configuration, at its next start.
//!
//! Runs once on the thread that calls `Node::start`, before any node thread exists.

use super::error::{Error, Result};
use crate::Config;
use std::fs;
use std::io::Write;
use std::path::Path;

/// Name of the file in the data directory.
const FILE_NAME: &str = "identity";

/// What the identity file records.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    node_id: u64,
    cluster_id: u64,
    /// This node's address in the server list when the file was written.
    address: String,
}

impl Identity {
    fn of(config: &Config) -> Identity {
        Identity {
            node_id: config.id.0,
            cluster_id: config.cluster_id,
            address: config.servers[config.id.0 as usize].to_string(),
        }
    }

    fn render(&self) -> String {
        format!(
            "node_id = {}\ncluster_id = {:#x}\naddress = {}\n",
            self.node_id, self.cluster_id, self.address
        )
    }

    /// The file's text; `Err` names what is missing or malformed.
    fn parse(text: &str) -> std::result::Result<Identity, String> {
        let (mut node_id, mut cluster_id, mut address) = (None, None, None);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("expected `key = value`, found {line:?}"));
            };
            let value = value.trim();
            let number = || {
                crate::config::settings::parse_u64(value)
                    .ok_or_else(|| format!("{}: {value:?} is not a number", key.trim()))
            };
            match key.trim() {
                "node_id" => node_id = Some(number()?),
                "cluster_id" => cluster_id = Some(number()?),
                "address" => address = Some(value.to_string()),
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        match (node_id, cluster_id, address) {
            (Some(node_id), Some(cluster_id), Some(address)) => Ok(Identity {
                node_id,
                cluster_id,
                address,
            }),
            _ => Err("expected node_id, cluster_id and address".to_string()),
        }
    }
}

/// The identity recorded in `dir` as (node id, cluster id, address), read only (for
/// `rcraft doctor`): `Ok(None)` when there is no file, `Err` naming what is wrong.
pub(crate) fn read_recorded(dir: &Path) -> std::result::Result<Option<(u64, u64, String)>, String> {
    let path = dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => Identity::parse(&text)
            .map(|id| Some((id.node_id, id.cluster_id, id.address)))
            .map_err(|why| format!("{}: {why}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Checks that `config.data_dir` belongs to this node of this cluster, recording it there at
/// the first start.
pub(crate) fn check_or_record(config: &Config) -> Result<()> {
    let dir = &config.data_dir;
    let path = dir.join(FILE_NAME);
    let configured = Identity::of(config);
    let recorded = match fs::read_to_string(&path) {
        Ok(text) => Identity::parse(&text)
            .map_err(|why| Error::Storage(format!("{}: {why}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return write_durably(dir, FILE_NAME, configured.render().as_bytes())
                .map_err(|e| Error::io(format!("recording {}", path.display()), e));
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if recorded.node_id != configured.node_id {
        return Err(Error::Config(format!(
            "data dir {} belongs to node {} (at {}), not node {}: start it with --id {}, or \
             give node {} a data dir of its own",
            dir.display(),
            recorded.node_id,
            recorded.address,
            configured.node_id,
            recorded.node_id,
            configured.node_id
        )));
    }
    if recorded.cluster_id != configured.cluster_id {
        return Err(Error::Config(format!(
            "data dir {} belongs to cluster {:#x}, not {:#x}: give the cluster id it was \
             created with (--cluster-id), or a fresh data dir",
            dir.display(),
            recorded.cluster_id,
            configured.cluster_id
        )));
    }
    if recorded.address != configured.address {
        log::warn!(
            "node {} was at {} when {} was created and is now listed at {}: if the server \
             list was reordered, its peers will refuse it; recording the new address",
            configured.node_id,
            recorded.address,
            dir.display(),
            configured.address
        );
        write_durably(dir, FILE_NAME, configured.render().as_bytes())
            .map_err(|e| Error::io(format!("recording {}", path.display()), e))?;
    }
    Ok(())
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
    use rcraft_wire::NodeId;
    use std::net::SocketAddr;

    fn config(dir: &Path, id: u64, cluster_id: u64, first_port: u16) -> Config {
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
        check_or_record(&config(&data, 0, 7, 4000)).unwrap();
        let text = fs::read_to_string(data.join(FILE_NAME)).unwrap();
        assert_eq!(
            text,
            "node_id = 0\ncluster_id = 0x7\naddress = 127.0.0.1:4000\n"
        );
        check_or_record(&config(&data, 0, 7, 4000)).unwrap();

        let e = check_or_record(&config(&data, 1, 7, 4000)).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("belongs to node 0 (at 127.0.0.1:4000), not node 1")
                && message.contains("--id 0"),
            "{message}"
        );
        let e = check_or_record(&config(&data, 0, 8, 4000)).unwrap_err();
        assert!(e.to_string().contains("cluster 0x7, not 0x8"), "{e}");
        assert_eq!(fs::read_to_string(data.join(FILE_NAME)).unwrap(), text);
    }

    #[test]
    fn a_moved_node_is_recorded_at_its_new_address() {
        let dir = tempfile::tempdir().unwrap();
        check_or_record(&config(dir.path(), 1, 7, 4000)).unwrap();
        check_or_record(&config(dir.path(), 1, 7, 5000)).unwrap();
        let text = fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert!(text.contains("address = 127.0.0.1:5001"), "{text}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["node_id = x\n", "node_id = 0\n", "garbage\n", "color = 3\n"] {
            fs::write(dir.path().join(FILE_NAME), text).unwrap();
            let e = check_or_record(&config(dir.path(), 0, 7, 4000)).unwrap_err();
            assert!(e.to_string().contains("identity"), "{text:?}: {e}");
        }
    }
}
