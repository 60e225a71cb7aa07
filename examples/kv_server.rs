//! A key-value server with its own state machine and snapshot format: the Rust version of
//! cRaft's `KVServer` example, where the service injects apply + snapshot + restore.
//!
//! ```text
//! cargo run --example kv_server -- ID HOST:PORT,HOST:PORT,... DATA_DIR
//! ```
//!
//! Start one process per address (ids count from 0, in list order). Each reads commands from
//! stdin (`put KEY VALUE`, `get KEY`, `del KEY`, `status`), runs them through its node and
//! prints the outcome with the entry's term and index; a follower prints the leader's address.
//! Remote programs reach the same state with `rcraft::client::Client::submit` / `query` and
//! this example's command bytes. End with Ctrl-D (clean shutdown).

use rcraft::node::{Error, Node, NodeHandle};
use rcraft::wire::{LogIndex, NodeId};
use rcraft::{Config, StateMachine};
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The service's state: a sorted map, so snapshots are deterministic.
#[derive(Default)]
struct KvService {
    map: BTreeMap<String, String>,
}

/// Commands are UTF-8 text: `put KEY VALUE` or `del KEY`. Queries are a key.
impl StateMachine for KvService {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(command);
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["put", key, value] => {
                let old = self.map.insert(key.to_string(), value.to_string());
                old.unwrap_or_default().into_bytes()
            }
            ["del", key] => self.map.remove(*key).unwrap_or_default().into_bytes(),
            // Invalid commands were replicated but change nothing, on every node alike.
            _ => b"invalid command".to_vec(),
        }
    }

    fn query(&self, key: &[u8]) -> Vec<u8> {
        let key = String::from_utf8_lossy(key);
        self.map
            .get(key.as_ref())
            .cloned()
            .unwrap_or_default()
            .into_bytes()
    }

    /// Snapshot format: `count u64`, then `key_len u32 | key | value_len u32 | value` each.
    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&(self.map.len() as u64).to_le_bytes())?;
        for (key, value) in &self.map {
            for field in [key, value] {
                out.write_all(&(field.len() as u32).to_le_bytes())?;
                out.write_all(field.as_bytes())?;
            }
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut count = [0u8; 8];
        input.read_exact(&mut count)?;
        self.map.clear();
        for _ in 0..u64::from_le_bytes(count) {
            let key = read_field(input)?;
            let value = read_field(input)?;
            self.map.insert(key, value);
        }
        Ok(())
    }
}

fn read_field(input: &mut dyn Read) -> io::Result<String> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [id, servers, data_dir] = args.as_slice() else {
        eprintln!("usage: kv_server ID HOST:PORT,HOST:PORT,... DATA_DIR");
        std::process::exit(2);
    };
    let servers: Vec<SocketAddr> = servers
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let mut config = Config::new(NodeId(id.parse()?), servers, PathBuf::from(data_dir));
    config.snapshot_every = 1000;
    let node = Node::start(config, KvService::default())?;
    match node.wait_for_leader(Duration::from_secs(5)) {
        Ok(leader) => println!("node {id} running; leader is node {leader}"),
        Err(_) => println!("node {id} running; no leader yet (start the other nodes)"),
    }
    println!("commands: put KEY VALUE | get KEY | del KEY | status");
    for line in io::stdin().lock().lines() {
        run_command(&node, line?.trim());
    }
    node.shutdown()?;
    Ok(())
}

fn run_command(node: &NodeHandle, line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let outcome = match words.as_slice() {
        [] => return,
        ["status"] => node.status().map(|s| format!("{s:?}")),
        ["get", key] => node.read(key.as_bytes().to_vec()).map(|r| {
            let value = String::from_utf8_lossy(&r.response).into_owned();
            format!("{key} = {value:?} (read index {})", r.index)
        }),
        ["put", _, _] | ["del", _] => node.propose(line.as_bytes().to_vec()).map(|r| {
            let old = String::from_utf8_lossy(&r.response).into_owned();
            format!(
                "ok at term {} index {} (previous value {old:?})",
                r.term, r.index
            )
        }),
        _ => Ok("unknown command".to_string()),
    };
    match outcome {
        Ok(text) => println!("{text}"),
        Err(Error::NotLeader { hint, address }) => {
            println!("not the leader; leader is {hint:?} at {address:?}");
        }
        Err(e) => println!("error: {e}"),
    }
    // Keep the prompt readable when a leader is still being elected.
    if node.status().is_ok_and(|s| s.leader.is_none()) {
        std::thread::sleep(Duration::from_millis(100));
    }
}
