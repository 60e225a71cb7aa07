//! `serve_kv`: run a node of the built-in key-value store until SIGTERM or SIGINT.
//!
//! Process-level code, so it lives with the binary (an embedder handles its own signals).
//! The calling thread blocks; a small signal thread (signal-hook) forwards the first
//! SIGTERM/SIGINT on a channel, then the node is shut down cleanly (threads stopped, storage
//! synced, everything joined) and `Ok` returned so the process exits 0.

use crossbeam_channel::{Receiver, bounded, select};
use rcraft::Config;
use rcraft::kv::KvStore;
use rcraft::node::{Node, NodeHandle};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::time::Duration;

/// How often the waiting thread checks that the node is still running.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Starts node `config.id` with the built-in [`KvStore`] and serves until SIGTERM or SIGINT;
/// then shuts down cleanly and returns `Ok`. Returns the error if the node cannot start or
/// stops on its own (e.g. a storage failure).
pub(crate) fn serve_kv(config: Config) -> Result<(), String> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("installing the SIGTERM/SIGINT handlers: {e}"))?;
    let signal_handle = signals.handle();
    let handle = Node::start(config, KvStore::new()).map_err(|e| e.to_string())?;
    let (signal_tx, signal_rx) = bounded(1);
    let forwarder = std::thread::Builder::new()
        .name("rcraft-signals".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = signal_tx.send(signal);
            }
        })
        .map_err(|e| format!("starting the signal thread: {e}"))?;
    let result = wait_for_stop(&handle, &signal_rx);
    signal_handle.close();
    let _ = forwarder.join();
    let shutdown = handle.shutdown().map_err(|e| e.to_string());
    shutdown.and(result)
}

/// Blocks until a signal arrives (Ok) or the node stops by itself (Err).
fn wait_for_stop(handle: &NodeHandle, signals: &Receiver<i32>) -> Result<(), String> {
    loop {
        select! {
            recv(signals) -> signal => {
                if let Ok(signal) = signal {
                    log::info!("signal {signal} received; shutting down");
                }
                return Ok(());
            },
            default(LIVENESS_CHECK_INTERVAL) => {
                if handle.has_stopped() {
                    return Err(rcraft::node::Error::Stopped.to_string());
                }
            }
        }
    }
}
