//! `serve_kv`: run a node of the built-in key-value store until SIGTERM or SIGINT.
//!
//! Process-level code, so it lives with the binary (an embedder handles its own signals).
//! The calling thread blocks; a small signal thread (signal-hook) forwards signals on a
//! channel. SIGHUP reloads the TLS certificates and keys (`NodeHandle::reload_tls`; a bad
//! file is logged and the old ones kept); the first SIGTERM/SIGINT shuts the node down
//! cleanly (threads stopped, storage synced, everything joined) and `Ok` is returned so the
//! process exits 0.

use crossbeam_channel::{Receiver, bounded, select};
use rcraft::Config;
use rcraft::kv::KvStore;
use rcraft::node::{Error, Node, NodeHandle};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::time::Duration;

/// Signals waiting for the serving thread; more are dropped (a repeat adds nothing).
const SIGNALS_QUEUED_MAX: usize = 8;

/// How often the waiting thread checks that the node is still running.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Starts node `config.id` with the built-in [`KvStore`] and serves until SIGTERM or SIGINT;
/// then shuts down cleanly and returns `Ok`. Returns the error if the node cannot start or
/// stops on its own (e.g. a storage failure).
pub(crate) fn serve_kv(config: Config) -> rcraft::node::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(|e| Error::Io {
        context: "installing the SIGTERM/SIGINT/SIGHUP handlers".to_string(),
        source: e,
    })?;
    let signal_handle = signals.handle();
    let handle = Node::start(config, KvStore::new())?;
    let (signal_tx, signal_rx) = bounded(SIGNALS_QUEUED_MAX);
    let forwarder = std::thread::Builder::new()
        .name("rcraft-signals".to_string())
        .spawn(move || {
            // Never blocks: a signal beyond the queue's depth is one more of the same kind.
            for signal in signals.forever() {
                let _ = signal_tx.try_send(signal);
            }
        })
        .map_err(|e| Error::Io {
            context: "starting the signal thread".to_string(),
            source: e,
        })?;
    let result = wait_for_stop(&handle, &signal_rx);
    signal_handle.close();
    let _ = forwarder.join();
    handle.shutdown().and(result)
}

/// Blocks until SIGTERM/SIGINT arrives (Ok) or the node stops by itself (Err); reloads the
/// TLS files on each SIGHUP.
fn wait_for_stop(handle: &NodeHandle, signals: &Receiver<i32>) -> rcraft::node::Result<()> {
    loop {
        select! {
            recv(signals) -> signal => {
                match signal {
                    Ok(SIGHUP) => reload_tls(handle),
                    Ok(signal) => {
                        log::info!("signal {signal} received; shutting down");
                        return Ok(());
                    }
                    Err(_) => return Ok(()),
                }
            },
            default(LIVENESS_CHECK_INTERVAL) => {
                if handle.has_stopped() {
                    return Err(Error::Stopped);
                }
            }
        }
    }
}

/// SIGHUP: the TLS certificates, keys and CAs are read again for new connections.
fn reload_tls(handle: &NodeHandle) {
    let id = handle.id();
    match handle.reload_tls() {
        Ok(true) => log::info!(
            "node {id}: SIGHUP: TLS certificates and keys reloaded; new connections use them"
        ),
        Ok(false) => log::info!("node {id}: SIGHUP: nothing to reload (this node has no TLS)"),
        Err(e) => log::error!(
            "node {id}: SIGHUP: TLS reload failed, the previous certificates stay in use: {e}"
        ),
    }
}
