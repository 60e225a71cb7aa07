//! `serve_kv`: run a node of the built-in key-value store until SIGTERM or SIGINT.
//!
//! Used by `rcraft serve`. The calling thread blocks; a small signal thread (signal-hook)
//! forwards the first SIGTERM/SIGINT on a channel, then the node is shut down cleanly (threads
//! stopped, storage synced, everything joined) and `Ok` returned so the process exits 0.

use super::error::{Error, Result};
use super::handle::NodeHandle;
use super::runtime::Node;
use crate::Config;
use crate::kv::KvStore;
use crossbeam_channel::{bounded, select};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::time::Duration;

/// How often the waiting thread checks that the node is still running.
const LIVENESS_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Starts node `config.id` with the built-in [`KvStore`] and serves until SIGTERM or SIGINT;
/// then shuts down cleanly and returns `Ok`. Returns the error if the node cannot start or
/// stops on its own (e.g. a storage failure).
pub fn serve_kv(config: Config) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::io("installing the SIGTERM/SIGINT handlers", e))?;
    let signal_handle = signals.handle();
    let handle = Node::start(config, KvStore::new())?;
    let (signal_tx, signal_rx) = bounded(1);
    let forwarder = std::thread::Builder::new()
        .name("rcraft-signals".to_string())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _ = signal_tx.send(signal);
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    let result = wait_for_stop(&handle, &signal_rx);
    signal_handle.close();
    let _ = forwarder.join();
    let shutdown = handle.shutdown();
    shutdown.and(result)
}

/// Blocks until a signal arrives (Ok) or the node stops by itself (Err).
fn wait_for_stop(handle: &NodeHandle, signals: &crossbeam_channel::Receiver<i32>) -> Result<()> {
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
                    return Err(Error::Stopped);
                }
            }
        }
    }
}
