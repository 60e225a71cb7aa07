//! The deterministic simulator of the consensus core (`make sim`, `make sim SEED=n`).
//!
//! Each seed builds a cluster of 3 to 5 voting nodes (plus up to 2 spares that membership
//! changes may add), each the node's own consensus-thread handler around a
//! `rcraft::core::Replica` (`rcraft::node::testing::SimConsensus`), with simulated network,
//! disks, state machines, clients and faults, runs a few thousand events, and checks Raft's
//! safety properties after every step and liveness after faults heal. See `tests/sim/` and
//! the "The simulator" section of `docs/ARCHITECTURE.md`.

#[path = "sim/checker.rs"]
mod checker;
#[path = "sim/client_wire.rs"]
mod client_wire;
#[path = "sim/clients.rs"]
mod clients;
#[path = "sim/disk.rs"]
mod disk;
#[path = "sim/effects.rs"]
mod effects;
#[path = "sim/entry_log.rs"]
mod entry_log;
#[path = "sim/hard_state_damage.rs"]
mod hard_state_damage;
#[path = "sim/history.rs"]
mod history;
#[path = "sim/membership.rs"]
mod membership;
#[path = "sim/network.rs"]
mod network;
#[path = "sim/params.rs"]
mod params;
#[path = "sim/replica.rs"]
mod replica;
#[path = "sim/rng.rs"]
mod rng;
#[path = "sim/runner.rs"]
mod runner;
#[path = "sim/state_machine.rs"]
mod state_machine;
#[path = "sim/wire.rs"]
mod wire;
#[path = "sim/workload.rs"]
mod workload;
#[path = "sim/world.rs"]
mod world;
#[path = "sim/world_checks.rs"]
mod world_checks;

/// Runs the seeds chosen by `SIM_SEED` / `SIM_SEEDS` (see `tests/sim/runner.rs`) against the
/// real consensus handler and core and fails with a one-line reproduction when any property breaks.
#[test]
fn simulated_clusters_stay_safe_and_live() {
    let options = runner::RunnerOptions::from_env().unwrap_or_else(|e| panic!("sim: {e}"));
    match runner::run_seeds::<rcraft::node::testing::SimConsensus>(&options) {
        Ok(summary) => println!("{summary}"),
        Err(report) => {
            eprintln!("{report}");
            let headline: Vec<&str> = report.lines().take(2).collect();
            panic!("{}", headline.join("\n"));
        }
    }
}

/// The seeds that found the bugs of docs/SIM_FINDINGS.md beyond the default seed range.
#[test]
fn seeds_of_findings_pass() {
    match runner::run_finding_seeds::<rcraft::node::testing::SimConsensus>() {
        Ok(summary) => println!("{summary}"),
        Err(report) => panic!("{report}"),
    }
}
