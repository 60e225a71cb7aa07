//! A private network for a spawned cluster (root only): one network namespace per node, each
//! joined to one bridge in the root namespace by a veth pair, each node with its own address
//! (`10.A.B.10+id`, the bridge `10.A.B.1`). The loadtest's clients stay in the root namespace
//! and reach every node through the bridge; partitions are cut between nodes only.
//!
//! Cuts are blackhole routes inside the sending node's namespace (`ip route add blackhole
//! PEER/32`): packets from that node to that peer vanish without an error, so a cut is one-way
//! by construction and a partition is two cuts per pair. Packet loss and delay are a `tc netem`
//! qdisc on each node's interface, available only when the kernel has `sch_netem` (probed once
//! at creation). Nothing depends on the clocks.
//!
//! Owned by the [`SpawnedCluster`](crate::cluster::SpawnedCluster) behind its mutex. Invariant:
//! every namespace, veth and bridge created is listed in the `NetLab` and deleted by
//! [`NetLab::destroy`], which `Drop` calls, so an error, a panic or Ctrl-C leaves nothing
//! behind; a `kill -9` of the loadtest does, and the next `NetLab::create` deletes what dead
//! processes left (their names carry the pid).

use crate::error::{Error, Result};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Prefix of every namespace and link this tool creates.
const PREFIX: &str = "rclt";
/// Largest cluster a lab holds: interface names (`rclt<pid>x<lab>h<id>`, pid up to 7
/// digits) must stay within the kernel's 15 bytes.
pub const NODES_MAX: usize = 10;
/// Labs created by this process so far (its last digit is part of each name and subnet).
static LABS: AtomicU32 = AtomicU32::new(0);

/// The private network of one spawned cluster.
pub struct NetLab {
    tag: String,
    subnet: [u8; 3],
    namespaces: Vec<String>,
    bridge: Option<String>,
    netem: bool,
    /// Cuts in force: (from, to) means packets from `from` to `to` are dropped.
    cuts: BTreeSet<(usize, usize)>,
    netem_on: bool,
}

/// Why partitions cannot run here, or `None` when they can (root, and an `ip` binary).
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: geteuid(2) takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need it)".into());
    }
    match Command::new("ip").arg("-V").stdout(Stdio::null()).status() {
        Ok(status) if status.success() => None,
        _ => Some("no working `ip` command (install iproute2)".into()),
    }
}

/// Runs one command, returning its stderr as the error.
fn sh(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {program}"), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Cluster(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name this tool made (`rclt<pid>x<lab>...`), if it is one.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    rest[digits.len()..].starts_with('x').then_some(())?;
    digits.parse().ok()
}

/// Deletes namespaces and bridges left by loadtests that no longer run (killed with -9).
fn sweep_leftovers() {
    let listed = |args: &[&str]| -> Vec<String> {
        Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                // `ip netns list`: "name (id: 3)"; `ip -o link`: "7: name: <...>" or "name@peer".
                let word = if args[0] == "netns" {
                    line.split_whitespace().next()
                } else {
                    line.split(": ")
                        .nth(1)
                        .map(|w| w.split('@').next().unwrap_or(w))
                };
                word.map(str::to_string)
            })
            .collect()
    };
    let stale = |name: &String| owner_pid(name).is_some_and(|pid| !pid_alive(pid));
    for ns in listed(&["netns", "list"]).iter().filter(|n| stale(n)) {
        let _ = sh("ip", &["netns", "del", ns]);
    }
    for link in listed(&["-o", "link", "show"]).iter().filter(|n| stale(n)) {
        let _ = sh("ip", &["link", "del", link]);
    }
}

impl NetLab {
    /// Creates the namespaces, veth pairs and bridge for `nodes` nodes. On failure everything
    /// created so far is deleted again.
    pub fn create(nodes: usize) -> Result<NetLab> {
        if nodes == 0 || nodes > NODES_MAX {
            return Err(Error::Usage(format!(
                "network namespaces hold 1..={NODES_MAX} nodes, not {nodes}"
            )));
        }
        if let Some(reason) = unavailable_reason() {
            return Err(Error::Cluster(reason));
        }
        sweep_leftovers();
        let pid = std::process::id();
        let lab = LABS.fetch_add(1, Ordering::Relaxed) % 10;
        let x = (pid.wrapping_mul(10).wrapping_add(lab)) % (64 * 256);
        let mut net = NetLab {
            tag: format!("{PREFIX}{pid}x{lab}"),
            subnet: [10, 64 + (x / 256) as u8, (x % 256) as u8],
            namespaces: Vec::new(),
            bridge: None,
            netem: false,
            cuts: BTreeSet::new(),
            netem_on: false,
        };
        // On error `net` is dropped, which deletes what exists.
        net.build(nodes)?;
        Ok(net)
    }

    fn build(&mut self, nodes: usize) -> Result<()> {
        let bridge = format!("{}b", self.tag);
        sh("ip", &["link", "add", &bridge, "type", "bridge"])?;
        self.bridge = Some(bridge.clone());
        let gateway = format!("{}/24", self.gateway());
        sh("ip", &["addr", "add", &gateway, "dev", &bridge])?;
        sh("ip", &["link", "set", &bridge, "up"])?;
        for id in 0..nodes {
            let ns = format!("{}n{id}", self.tag);
            sh("ip", &["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            let (host, inner) = (format!("{}h{id}", self.tag), format!("{}p{id}", self.tag));
            sh(
                "ip",
                &["link", "add", &host, "type", "veth", "peer", "name", &inner],
            )?;
            sh("ip", &["link", "set", &inner, "netns", &ns])?;
            sh("ip", &["link", "set", &host, "master", &bridge])?;
            sh("ip", &["link", "set", &host, "up"])?;
            let addr = format!("{}/24", self.addr(id));
            sh("ip", &["-n", &ns, "link", "set", &inner, "name", "eth0"])?;
            sh("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        // Probe netem once on node 0's interface.
        let ns = self.namespaces[0].clone();
        let probe = ["-n", &ns, "qdisc", "add", "dev", "eth0", "root", "netem"];
        self.netem = sh("tc", &[&probe[..], &["delay", "1ms"]].concat()).is_ok();
        if self.netem {
            sh("tc", &["-n", &ns, "qdisc", "del", "dev", "eth0", "root"])?;
        }
        Ok(())
    }

    /// The bridge's address in the root namespace.
    fn gateway(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: usize) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 10 + id as u8)
    }

    /// Node `id`'s namespace name (for `ip netns exec`).
    pub fn namespace(&self, id: usize) -> &str {
        &self.namespaces[id]
    }

    /// True when the kernel has `tc netem` (packet loss and delay).
    pub fn has_netem(&self) -> bool {
        self.netem
    }

    /// Drops every packet from node `from` to node `to` (one way).
    pub fn cut(&mut self, from: usize, to: usize) -> Result<()> {
        if from == to || self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        let peer = format!("{}/32", self.addr(to));
        sh(
            "ip",
            &[
                "-n",
                &self.namespaces[from],
                "route",
                "add",
                "blackhole",
                &peer,
            ],
        )?;
        self.cuts.insert((from, to));
        Ok(())
    }

    /// Cuts in force, as (from, to) pairs.
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        self.cuts.iter().copied().collect()
    }

    /// Applies `tc netem ARGS` (e.g. `loss 20%`) on every node's interface.
    pub fn netem(&mut self, args: &[&str]) -> Result<()> {
        if !self.netem {
            return Err(Error::Cluster(
                "the kernel has no tc netem (sch_netem)".into(),
            ));
        }
        for ns in &self.namespaces {
            let base = [
                "-n",
                ns.as_str(),
                "qdisc",
                "replace",
                "dev",
                "eth0",
                "root",
                "netem",
            ];
            sh("tc", &[&base[..], args].concat())?;
        }
        self.netem_on = true;
        Ok(())
    }

    /// Removes every cut and every netem qdisc: the network is whole again.
    pub fn heal(&mut self) -> Result<()> {
        let mut first_error = None;
        for (from, to) in std::mem::take(&mut self.cuts) {
            let peer = format!("{}/32", self.addr(to));
            let ns = &self.namespaces[from];
            if let Err(e) = sh("ip", &["-n", ns, "route", "del", "blackhole", &peer]) {
                first_error.get_or_insert(e);
            }
        }
        if std::mem::take(&mut self.netem_on) {
            for ns in &self.namespaces {
                if let Err(e) = sh("tc", &["-n", ns, "qdisc", "del", "dev", "eth0", "root"]) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes every namespace (with its veth end, routes and qdiscs) and the bridge. Call it
    /// after the nodes have stopped.
    pub fn destroy(&mut self) {
        // Deleting a namespace removes the veth pair inside it only later, in the kernel's
        // own time; deleting the host end now removes both ends before this returns. A pair
        // not created yet (a build that failed half way) is simply not found.
        for id in 0..self.namespaces.len() {
            let _ = sh("ip", &["link", "del", &format!("{}h{id}", self.tag)]);
        }
        for ns in self.namespaces.drain(..) {
            if let Err(e) = sh("ip", &["netns", "del", &ns]) {
                eprintln!("rcraft-loadtest: {e}");
            }
        }
        if let Some(bridge) = self.bridge.take()
            && let Err(e) = sh("ip", &["link", "del", &bridge])
        {
            eprintln!("rcraft-loadtest: {e}");
        }
        self.cuts.clear();
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.destroy();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_from_names_this_tool_made() {
        assert_eq!(owner_pid("rclt1234x0n2"), Some(1234));
        assert_eq!(owner_pid("rclt99x12b"), Some(99));
        assert_eq!(owner_pid("rclt1234n2"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("rcltx0"), None);
    }

    #[test]
    fn a_lab_is_built_cut_healed_and_removed() {
        if let Some(reason) = unavailable_reason() {
            eprintln!("skipped: {reason}");
            return;
        }
        let mut lab = NetLab::create(3).unwrap();
        let (ns, bridge) = (lab.namespace(1).to_string(), lab.bridge.clone().unwrap());
        lab.cut(0, 1).unwrap();
        lab.cut(0, 1).unwrap();
        assert_eq!(lab.cuts(), vec![(0, 1)]);
        let routes = Command::new("ip")
            .args(["-n", lab.namespace(0), "route"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&routes.stdout);
        assert!(
            routes.contains(&format!("blackhole {}", lab.addr(1))),
            "{routes}"
        );
        if lab.has_netem() {
            lab.netem(&["loss", "20%"]).unwrap();
            let qdisc = Command::new("tc")
                .args(["-n", lab.namespace(2), "qdisc", "show", "dev", "eth0"])
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&qdisc.stdout).contains("netem"));
        } else {
            let err = lab.netem(&["loss", "20%"]).unwrap_err();
            assert!(err.to_string().contains("no tc netem"), "{err}");
        }
        lab.heal().unwrap();
        assert!(lab.cuts().is_empty());
        drop(lab);
        let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&namespaces.stdout).contains(&ns));
        let links = Command::new("ip").args(["link", "show"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&links.stdout).contains(&bridge));
    }
}
