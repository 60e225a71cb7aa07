//! Whole runs (`run::run`) through the real client adapter against the fake node: the
//! linearizability checker passes a correct store under every workload, blocking and
//! pipelined, and catches planted server bugs (reads served from a lagging copy,
//! compare-and-swaps decided against one, acknowledged writes lost).

use crate::backend::{ClusterAccess, RcraftCluster};
use crate::cli::{Settings, Target};
use crate::fake_server::{FakeBug, FakeNode};
use crate::mix::WorkloadKind;
use crate::report::Summary;
use crate::run::{AccessFactory, run};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn settings(node: &FakeNode, workload: Option<WorkloadKind>, pipeline: usize) -> Settings {
    Settings {
        target: Target::Servers(vec![node.addr]),
        clients: 4,
        duration: Duration::from_millis(400),
        value_size: 16,
        keys: 8,
        read_ratio: 0.0,
        read_mode: rcraft::wire::ReadMode::Linearizable,
        token: None,
        tls: None,
        workload,
        rate: None,
        pipeline,
        // Pipeline 1 runs through the event-loop engine.
        engine_threads: (pipeline == 1).then_some(1),
        kill: None,
        pause: None,
        nemesis: None,
        timeout: Duration::from_secs(2),
        json: None,
        chart: None,
    }
}

fn run_against(node: &FakeNode, workload: Option<WorkloadKind>, pipeline: usize) -> Summary {
    let make: &AccessFactory = &|addrs, timeout| {
        Arc::new(RcraftCluster::new(addrs.to_vec(), timeout)) as Arc<dyn ClusterAccess>
    };
    run(
        &settings(node, workload, pipeline),
        make,
        Arc::new(AtomicBool::new(false)),
    )
    .unwrap()
}

#[test]
fn a_correct_store_is_linearizable_under_every_workload() {
    let node = FakeNode::start(rcraft::config::CLUSTER_ID_DEFAULT);
    for workload in [
        None,
        Some(WorkloadKind::WriteHeavy),
        Some(WorkloadKind::ReadHeavy),
        Some(WorkloadKind::CasHeavy),
    ] {
        for pipeline in [1, 4] {
            let summary = run_against(&node, workload, pipeline);
            let checked = summary.linearizability.as_ref().unwrap();
            assert_eq!(
                checked.linearizable(),
                Some(true),
                "{workload:?} x{pipeline}:\n{}",
                summary.to_text()
            );
            assert!(summary.passed(), "{}", summary.to_text());
            assert!(checked.ops_checked >= summary.writes + summary.reads);
            let json = summary.to_json();
            assert!(json.contains(r#""linearizable":true"#), "{json}");
            assert!(json.contains(r#""lost_acked_writes":0"#), "{json}");
        }
    }
}

#[test]
fn the_cas_heavy_workload_swaps_and_reads_back() {
    let node = FakeNode::start(rcraft::config::CLUSTER_ID_DEFAULT);
    let summary = run_against(&node, Some(WorkloadKind::CasHeavy), 1);
    let json = summary.to_json();
    assert!(json.contains(r#""workload":"cas-heavy""#), "{json}");
    assert!(
        summary
            .to_text()
            .contains("cas-heavy (25% reads (linearizable))")
    );
    assert!(
        summary.writes > 0 && summary.reads > 0,
        "{}",
        summary.to_text()
    );
}

#[test]
fn stale_reads_from_a_lagging_copy_are_caught() {
    let node = FakeNode::start_with(
        rcraft::config::CLUSTER_ID_DEFAULT,
        FakeBug::StaleReads { lag: 5 },
    );
    let summary = run_against(&node, Some(WorkloadKind::ReadHeavy), 1);
    let checked = summary.linearizability.as_ref().unwrap();
    let text = summary.to_text();
    assert_eq!(checked.linearizable(), Some(false), "{text}");
    assert!(checked.keys_violated > 0 && !checked.violations.is_empty());
    assert!(!summary.passed());
    // The smallest window: a handful of operations, ending in a read.
    let window = &checked.violations[0].window;
    assert!(window.len() <= 10, "{text}");
    assert!(text.contains("KEYS NOT LINEARIZABLE"), "{text}");
    assert!(text.contains("no order of these"), "{text}");
    let json = summary.to_json();
    assert!(json.contains(r#""linearizable":false"#), "{json}");
    assert!(
        json.contains(r#""linearizability_window":["key lt"#),
        "{json}"
    );
}

#[test]
fn acknowledged_writes_that_are_lost_are_caught() {
    let node = FakeNode::start_with(
        rcraft::config::CLUSTER_ID_DEFAULT,
        FakeBug::LosesWrites { every: 50 },
    );
    let summary = run_against(&node, Some(WorkloadKind::WriteHeavy), 1);
    let checked = summary.linearizability.as_ref().unwrap();
    let text = summary.to_text();
    assert_eq!(checked.linearizable(), Some(false), "{text}");
    assert!(!summary.passed());
    assert!(
        checked.violations.iter().all(|v| v.window.len() <= 10),
        "{text}"
    );
}

#[test]
fn compare_and_swaps_decided_on_a_lagging_copy_are_caught() {
    let node = FakeNode::start_with(
        rcraft::config::CLUSTER_ID_DEFAULT,
        FakeBug::StaleCas { lag: 5 },
    );
    let summary = run_against(&node, Some(WorkloadKind::CasHeavy), 1);
    let checked = summary.linearizability.as_ref().unwrap();
    let text = summary.to_text();
    assert_eq!(checked.linearizable(), Some(false), "{text}");
    assert!(!summary.passed());
    let window = &checked.violations[0].window;
    assert!(
        window.iter().any(|op| op.describe().contains("cas ")),
        "the failing window holds a compare-and-swap:\n{text}"
    );
}
