//! A local cluster of `rcraft serve` processes owned by the loadtest (`--spawn N`).
//!
//! Owned behind one `Mutex` shared by the main thread, the progress ticker (exit checks, RSS
//! samples) and the fault thread (kill, restart, pause, resume). Invariants: every node has
//! its own data directory and log file inside one temporary directory; a node's `child` is
//! `Some` exactly while this tool believes the process exists; every process started is
//! stopped by [`SpawnedCluster::stop`], which `Drop` also calls, so no exit path leaks a
//! process. The temporary directory is removed unless `--keep-data` was given or a node died
//! unexpectedly (its log is then needed).

use crate::error::{Error, Result};
use crate::limits::STOP_GRACE;
use crate::netns::NetLab;
use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How the spawned nodes are started.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// The `rcraft` binary.
    pub rcraft_bin: PathBuf,
    /// `--election-timeout-ms` for every node.
    pub election_timeout_ms: String,
    /// `--heartbeat-ms` for every node.
    pub heartbeat_ms: u64,
    /// Keep the temporary directory after the run.
    pub keep_data: bool,
    /// Put every node in its own network namespace (root only; needed for partitions).
    pub network_namespaces: bool,
    /// Further `rcraft serve` flags for every node (e.g. `--snapshot-every 300`).
    pub node_args: Vec<String>,
}

/// The port every node listens on inside its own network namespace.
const NAMESPACE_PORT: u16 = 7100;

struct NodeProcess {
    addr: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Set while the node was started on a data directory it is expected to refuse (a
    /// damaged log): its exit is then not reported as unexpected.
    may_exit: bool,
    rss_max_bytes: u64,
    anon_max_bytes: u64,
}

/// The spawned cluster.
pub struct SpawnedCluster {
    options: SpawnOptions,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    nodes: Vec<NodeProcess>,
    keep_dir: bool,
    /// The nodes' private network, when they run in namespaces. Declared last so it is
    /// dropped after `Drop` stopped the nodes.
    net: Option<NetLab>,
}

/// `n` currently free ports on 127.0.0.1. All listeners are held until every port is chosen
/// so the ports are distinct; another process could still take one before the node binds it.
fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("finding a free port", e)))
        .collect::<Result<_>>()?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_err(|e| Error::io("reading a bound port", e))
        })
        .collect()
}

/// Extracts a `Vm...:  N kB` field of `/proc/PID/status` in bytes.
pub fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status
        .lines()
        .find(|line| line.starts_with(field) && line[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `(peak resident set, current anonymous resident memory)` of a process, in bytes.
/// VmHWM counts the WAL's mapped file pages too; RssAnon is the heap and stacks alone.
fn memory_bytes(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak = parse_status_kb(&status, "VmHWM").or_else(|| parse_status_kb(&status, "VmRSS"))?;
    Some((peak, parse_status_kb(&status, "RssAnon").unwrap_or(0)))
}

fn send_signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The pid is our own
    // child that has not been reaped yet (we hold its `Child`), so it cannot name a recycled
    // process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Waits (at most a second) until every thread of `child` is stopped. kill(2) returns once a
/// SIGSTOP is queued; on a busy machine the other threads can run on for milliseconds, and a
/// pause is timed from when the node really stops serving.
fn wait_stopped(child: &Child) {
    let tasks = format!("/proc/{}/task", child.id());
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let Ok(entries) = std::fs::read_dir(&tasks) else {
            return;
        };
        let stopped = entries.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state == "T" || state == "t")
        });
        if stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl SpawnedCluster {
    /// Starts `options.nodes` nodes on free loopback ports, each with a fresh data directory.
    pub fn start(options: SpawnOptions) -> Result<SpawnedCluster> {
        if !options.rcraft_bin.is_file() {
            return Err(Error::Usage(format!(
                "rcraft binary not found at {} (build it with `cargo build -p rcraft`, or pass --rcraft-bin)",
                options.rcraft_bin.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("rcraft-loadtest-")
            .tempdir()
            .map_err(|e| Error::io("creating a temporary directory", e))?;
        let dir_path = dir.path().to_path_buf();
        let net = if options.network_namespaces {
            Some(NetLab::create(options.nodes)?)
        } else {
            None
        };
        let addrs = match &net {
            Some(net) => (0..options.nodes)
                .map(|id| SocketAddr::from((net.addr(id), NAMESPACE_PORT)))
                .collect(),
            None => free_addrs(options.nodes)?,
        };
        let nodes = addrs
            .into_iter()
            .enumerate()
            .map(|(id, addr)| NodeProcess {
                addr,
                data_dir: dir_path.join(format!("node{id}")),
                log_path: dir_path.join(format!("node{id}.log")),
                child: None,
                paused: false,
                may_exit: false,
                rss_max_bytes: 0,
                anon_max_bytes: 0,
            })
            .collect();
        let keep_dir = options.keep_data;
        let mut cluster = SpawnedCluster {
            options,
            dir: Some(dir),
            dir_path,
            nodes,
            keep_dir,
            net,
        };
        for id in 0..cluster.nodes.len() {
            std::fs::create_dir_all(&cluster.nodes[id].data_dir).map_err(|e| {
                Error::io(
                    format!("creating {}", cluster.nodes[id].data_dir.display()),
                    e,
                )
            })?;
            cluster.launch(id)?;
        }
        Ok(cluster)
    }

    fn open_log(path: &Path) -> Result<(File, File)> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", path.display()), e))?;
        Ok((log, log2))
    }

    fn launch(&mut self, id: usize) -> Result<()> {
        let peers: Vec<String> = self.nodes.iter().map(|n| n.addr.to_string()).collect();
        let node = &self.nodes[id];
        let (stdout, stderr) = Self::open_log(&node.log_path)?;
        let mut command = match &self.net {
            // `ip netns exec` enters the namespace and execs the binary: same pid.
            Some(net) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", net.namespace(id)]);
                command.arg(&self.options.rcraft_bin);
                command
            }
            None => Command::new(&self.options.rcraft_bin),
        };
        let child = command
            .arg("serve")
            .args(["--id", &id.to_string(), "--peers", &peers.join(",")])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--election-timeout-ms", &self.options.election_timeout_ms])
            .args(["--heartbeat-ms", &self.options.heartbeat_ms.to_string()])
            .args(&self.options.node_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a Ctrl-C on the terminal reaches only the loadtest, which
            // then stops the nodes in order.
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", self.options.rcraft_bin.display()), e))?;
        let node = &mut self.nodes[id];
        node.child = Some(child);
        node.paused = false;
        node.may_exit = false;
        Ok(())
    }

    /// Client addresses in id order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The temporary directory holding data directories and logs.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Data directory of node `id`.
    pub fn data_dir(&self, id: usize) -> &Path {
        &self.nodes[id].data_dir
    }

    /// The nodes' private network, when they run in network namespaces.
    pub fn net_mut(&mut self) -> Option<&mut NetLab> {
        self.net.as_mut()
    }

    /// True while node `id`'s process exists (running or paused).
    pub fn is_running(&self, id: usize) -> bool {
        self.nodes[id].child.is_some()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a cluster of no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// If node `id` has exited, reaps it and returns how; `None` while it runs.
    pub fn try_reap(&mut self, id: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[id];
        let status = node.child.as_mut()?.try_wait().ok()??;
        node.child = None;
        node.paused = false;
        Some(status)
    }

    /// Log file of node `id`.
    pub fn log_path(&self, id: usize) -> &Path {
        &self.nodes[id].log_path
    }

    /// True while node `id` runs and is not paused: it may answer.
    pub fn is_serving(&self, id: usize) -> bool {
        self.nodes[id].child.is_some() && !self.nodes[id].paused
    }

    /// kill -9 node `id` (its peak RSS is sampled first) and reap it.
    pub fn kill(&mut self, id: usize) -> Result<()> {
        self.sample_rss();
        let node = &mut self.nodes[id];
        let mut child = node
            .child
            .take()
            .ok_or_else(|| Error::Cluster(format!("node {id} is not running")))?;
        child
            .kill()
            .map_err(|e| Error::io(format!("killing node {id}"), e))?;
        child
            .wait()
            .map_err(|e| Error::io(format!("reaping node {id}"), e))?;
        node.paused = false;
        Ok(())
    }

    /// Starts node `id` again with its old data directory.
    pub fn restart(&mut self, id: usize) -> Result<()> {
        if self.nodes[id].child.is_some() {
            return Err(Error::Cluster(format!("node {id} is already running")));
        }
        self.launch(id)
    }

    /// Starts node `id` again on a data directory it may refuse: if it exits, that is
    /// reported by [`SpawnedCluster::try_reap`] only, not as an unexpected exit.
    pub fn restart_may_exit(&mut self, id: usize) -> Result<()> {
        self.restart(id)?;
        self.nodes[id].may_exit = true;
        Ok(())
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: usize) {
        if let Some(child) = &self.nodes[id].child {
            send_signal(child, libc::SIGSTOP);
            wait_stopped(child);
            self.nodes[id].paused = true;
        }
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: usize) {
        if let Some(child) = &self.nodes[id].child {
            send_signal(child, libc::SIGCONT);
        }
        self.nodes[id].paused = false;
    }

    /// Updates every running node's peak resident set size.
    pub fn sample_rss(&mut self) {
        for node in &mut self.nodes {
            if let Some((peak, anon)) = node.child.as_ref().and_then(|c| memory_bytes(c.id())) {
                node.rss_max_bytes = node.rss_max_bytes.max(peak);
                node.anon_max_bytes = node.anon_max_bytes.max(anon);
            }
        }
    }

    /// Process id of each node that is running, in id order.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.nodes
            .iter()
            .map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    /// Peak resident set size per node (over all its incarnations), in id order.
    pub fn rss_max_bytes(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.rss_max_bytes).collect()
    }

    /// Largest sampled anonymous resident memory per node, in id order.
    pub fn anon_rss_max_bytes(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.anon_max_bytes).collect()
    }

    /// Nodes that exited without being killed by us: one message each, naming the log file.
    /// The temporary directory is then kept so the log can be read.
    pub fn reap_unexpected_exits(&mut self) -> Vec<String> {
        let mut messages = Vec::new();
        for (id, node) in self.nodes.iter_mut().enumerate() {
            let Some(child) = node.child.as_mut() else {
                continue;
            };
            if node.may_exit {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                self.keep_dir = true;
                messages.push(format!(
                    "node {id} exited unexpectedly ({status}); log: {}",
                    node.log_path.display()
                ));
            }
        }
        messages
    }

    /// Stops every node: SIGCONT if paused, SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        self.sample_rss();
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                if node.paused {
                    send_signal(child, libc::SIGCONT);
                    node.paused = false;
                }
                send_signal(child, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Stops the nodes and removes the temporary directory (unless it must be kept). Returns
    /// the directory's path when it was kept.
    pub fn finish(mut self) -> Option<PathBuf> {
        self.stop();
        self.release_dir()
    }

    fn release_dir(&mut self) -> Option<PathBuf> {
        let dir = self.dir.take()?;
        if self.keep_dir {
            Some(dir.keep())
        } else {
            // Removal failures (e.g. a node still writing) are not worth failing a run for.
            let _ = dir.close();
            None
        }
    }
}

impl Drop for SpawnedCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some(kept) = self.release_dir() {
            eprintln!(
                "rcraft-loadtest: node data and logs kept in {}",
                kept.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let status = "Name:\trcraft\nVmPeak:\t  20000 kB\nVmHWM:\t   5120 kB\nVmRSS:\t   4096 kB\nRssAnon:\t 1000 kB\n";
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(5120 * 1024));
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(4096 * 1024));
        assert_eq!(parse_status_kb(status, "RssAnon"), Some(1000 * 1024));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
        assert_eq!(parse_status_kb("VmHWMx: 1 kB", "VmHWM"), None);
    }

    #[test]
    fn free_addrs_are_distinct_loopback_ports() {
        let addrs = free_addrs(5).unwrap();
        let mut ports: Vec<u16> = addrs.iter().map(|a| a.port()).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 5);
        assert!(addrs.iter().all(|a| a.ip().is_loopback()));
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = SpawnedCluster::start(SpawnOptions {
            nodes: 3,
            rcraft_bin: PathBuf::from("/nonexistent/rcraft"),
            election_timeout_ms: "150-300".into(),
            heartbeat_ms: 50,
            keep_data: false,
            network_namespaces: false,
            node_args: Vec::new(),
        })
        .err()
        .expect("must fail");
        assert!(err.to_string().contains("/nonexistent/rcraft"), "{err}");
    }

    #[test]
    fn processes_are_stopped_and_the_directory_removed() {
        let Some(script) = test_support::sleeper_script("cluster") else {
            return;
        };
        let mut cluster = SpawnedCluster::start(SpawnOptions {
            nodes: 2,
            rcraft_bin: script.clone(),
            election_timeout_ms: "150-300".into(),
            heartbeat_ms: 50,
            keep_data: false,
            network_namespaces: false,
            node_args: Vec::new(),
        })
        .unwrap();
        let dir = cluster.dir().to_path_buf();
        assert!(dir.join("node0").is_dir() && dir.join("node1.log").is_file());
        cluster.pause(1);
        cluster.resume(1);
        cluster.kill(0).unwrap();
        assert!(!cluster.is_serving(0) && cluster.is_serving(1));
        cluster.restart(0).unwrap();
        cluster.sample_rss();
        assert!(cluster.rss_max_bytes().iter().all(|&b| b > 0));
        assert_eq!(cluster.anon_rss_max_bytes().len(), 2);
        assert!(cluster.reap_unexpected_exits().is_empty());
        assert_eq!(cluster.finish(), None);
        assert!(!dir.exists());
        std::fs::remove_file(script).unwrap();
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Stand-in nodes for tests of process handling.

    use std::path::{Path, PathBuf};

    /// A script that ignores its arguments and sleeps (SIGTERM ends it): a "node" for tests
    /// that only need processes. `None` when no `sleep` binary exists.
    pub(crate) fn sleeper_script(tag: &str) -> Option<PathBuf> {
        let sleep = ["/bin", "/usr/bin"]
            .iter()
            .map(|d| Path::new(d).join("sleep"))
            .find(|p| p.is_file())?;
        let script =
            std::env::temp_dir().join(format!("rcraft-loadtest-{tag}-{}", std::process::id()));
        std::fs::write(&script, format!("#!/bin/sh\nexec {} 30\n", sleep.display())).ok()?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .ok()?;
        Some(script)
    }
}
