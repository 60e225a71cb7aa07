//! A replicated counter, run as a self-contained three-node cluster in one process.
//!
//! ```text
//! cargo run --example counter
//! ```
//!
//! Shows what cRaft users asked for beyond a key-value store: a shared counter whose every
//! increment is applied exactly once on every node, a stream of applied entries (cRaft's
//! `ApplyMsg`), and writes continuing after the leader goes away.

use rcraft::node::{ApplyMsg, Error, Node, NodeHandle};
use rcraft::wire::{LogIndex, NodeId, Role};
use rcraft::{Config, StateMachine};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// The counter: a command is a little-endian `i64` delta; the response is the new value.
#[derive(Default)]
struct Counter {
    value: i64,
}

impl StateMachine for Counter {
    fn apply(&mut self, _index: LogIndex, command: &[u8]) -> Vec<u8> {
        if let Ok(delta) = <[u8; 8]>::try_from(command) {
            self.value = self.value.wrapping_add(i64::from_le_bytes(delta));
        }
        self.value.to_le_bytes().to_vec()
    }

    fn query(&self, _query: &[u8]) -> Vec<u8> {
        self.value.to_le_bytes().to_vec()
    }

    fn snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(&self.value.to_le_bytes())
    }

    fn restore(&mut self, input: &mut dyn Read) -> io::Result<()> {
        let mut word = [0u8; 8];
        input.read_exact(&mut word)?;
        self.value = i64::from_le_bytes(word);
        Ok(())
    }
}

fn value_of(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().expect("an 8-byte counter value"))
}

/// Adds `delta` through whichever node leads, following leader hints (bounded).
fn add(nodes: &[Option<NodeHandle>], delta: i64) -> Result<i64, Error> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut target = 0;
    loop {
        let Some(node) = nodes[target].as_ref() else {
            target = (target + 1) % nodes.len();
            continue;
        };
        match node.propose(delta.to_le_bytes().to_vec()) {
            Ok(result) => return Ok(value_of(&result.response)),
            Err(Error::NotLeader { hint, .. }) if Instant::now() < deadline => {
                target = match hint {
                    Some(id) if nodes[id.0 as usize].is_some() => id.0 as usize,
                    _ => (target + 1) % nodes.len(),
                };
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn leader_of(nodes: &[Option<NodeHandle>]) -> Option<usize> {
    nodes.iter().flatten().find_map(|node| {
        let status = node.status().ok()?;
        (status.role == Role::Leader).then_some(status.id.0 as usize)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let data = tempfile_dir()?;
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let servers: Vec<SocketAddr> = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<Result<_, _>>()?;
    drop(listeners);

    let mut nodes: Vec<Option<NodeHandle>> = Vec::new();
    for id in 0..3u64 {
        let config = Config::new(NodeId(id), servers.clone(), data.join(format!("node{id}")));
        nodes.push(Some(Node::start(config, Counter::default())?));
    }
    let applied = nodes[2].as_ref().expect("started").subscribe_applied()?;

    for _ in 0..10 {
        add(&nodes, 1)?;
    }
    let leader = loop {
        if let Some(leader) = leader_of(&nodes) {
            break leader;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("node {leader} leads; counter is {}", add(&nodes, 0)?);
    nodes[leader].take().expect("running").shutdown()?;
    println!("node {leader} stopped");
    for _ in 0..10 {
        add(&nodes, 2)?;
    }
    for node in nodes.iter().flatten() {
        let read = node.read(Vec::new());
        match read {
            Ok(read) => println!("node {} reads {}", node.id(), value_of(&read.response)),
            Err(e) => println!("node {} cannot serve reads: {e}", node.id()),
        }
    }
    let stream: Vec<ApplyMsg> = applied.try_iter().collect();
    println!(
        "node 2 saw {} applied increments, the last at index {:?}",
        stream.len(),
        stream.last().map(|m| m.index)
    );
    for node in nodes.into_iter().flatten() {
        node.shutdown()?;
    }
    std::fs::remove_dir_all(&data)?;
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> io::Result<std::path::PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("rcraft-counter-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
