//! The run's summary: the JSON object of CONTRACT.md (built with `serde_json`, fields in the
//! contract's order) and the human-readable text printed at the end.
//!
//! Pure: built by the main thread from the other modules' results after every thread ended.

use crate::chart::Bucket;
use crate::faults::FaultEvent;
use crate::history::{Verification, key_name};
use crate::linearizability::Linearizability;
use crate::nemesis::NemesisSchedule;
use crate::stats::{LatencySummary, SecondSample};
use rcraft::node::metrics::stage_latency_json;
use rcraft::wire::StageLatency;
use serde_json::{Value, json};
use std::fmt::Write;
use std::time::Duration;

/// Everything the run produced.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// "3 spawned nodes" or the server list.
    pub target: String,
    /// Client threads.
    pub clients: usize,
    /// Measured time, from the first request to the stop.
    pub duration_s: f64,
    /// Bytes per value.
    pub value_size: usize,
    /// Key space size.
    pub keys: u64,
    /// Fraction of reads.
    pub read_ratio: f64,
    /// How gets read (`--read-mode`).
    pub read_mode: rcraft::wire::ReadMode,
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Requests in flight per connection (1: clients with sessions and retries).
    pub pipeline: usize,
    /// Event-loop threads carrying the clients; `None`: one thread per client.
    pub engine_threads: Option<usize>,
    /// CPU this tool used while the clients ran (all its threads), in seconds.
    pub tool_cpu_s: f64,
    /// CPU the spawned nodes used meanwhile, summed; `None` against `--servers`.
    pub server_cpu_s: Option<f64>,
    /// Acknowledged writes.
    pub writes: u64,
    /// Answered reads.
    pub reads: u64,
    /// Definite errors.
    pub errors: u64,
    /// Unknown outcomes.
    pub unknown: u64,
    /// Latency of successful operations.
    pub latency: LatencySummary,
    /// Fault events in time order.
    pub events: Vec<FaultEvent>,
    /// Faults skipped because no leader was found or another was in force.
    pub faults_skipped: u64,
    /// Failover time per kill in ms; `None` when no write was acknowledged after it.
    pub failover_ms: Vec<Option<f64>>,
    /// Failover time per leader pause in ms (from the SIGSTOP to the first write
    /// acknowledged in a newer term); `None` when there was none.
    pub pause_failover_ms: Vec<Option<f64>>,
    /// Read-back result; `None` when the run was interrupted before it.
    pub verification: Option<Verification>,
    /// Named operation mix (`--workload`); `None`: gets and puts by `read_ratio`.
    pub workload: Option<&'static str>,
    /// Linearizability of the history; `None` when the run was interrupted.
    pub linearizability: Option<Linearizability>,
    /// The run's key prefix number (`history::key_name`).
    pub run_id: u64,
    /// Peak RSS per spawned node (VmHWM: includes the WAL's mapped file pages); empty
    /// against `--servers`.
    pub rss_bytes_max: Vec<u64>,
    /// Largest sampled anonymous RSS per spawned node (heap and stacks, no file pages).
    pub anon_rss_bytes_max: Vec<u64>,
    /// Per-second time series.
    pub per_second: Vec<SecondSample>,
    /// The time series the chart draws: 100 ms buckets around faults, from the operation
    /// history; empty when the history was cut (the chart then uses `per_second`).
    pub timeline: Vec<Bucket>,
    /// The seeded nemesis schedule, if one ran.
    pub nemesis: Option<NemesisSchedule>,
    /// Nemeses that could not run here, and why (not root, no netem, ...).
    pub fault_notes: Vec<String>,
    /// Node deaths and fault failures.
    pub problems: Vec<String>,
    /// The leader's own per-stage write latency since it started (`rcraft status
    /// --latency`), asked at the end of the run: its id and stages; `None` when no leader
    /// answered.
    pub leader_stages: Option<(u64, Vec<StageLatency>)>,
    /// Ctrl-C or SIGTERM ended the run early.
    pub interrupted: bool,
}

impl Summary {
    /// Successful operations.
    pub fn ops(&self) -> u64 {
        self.writes + self.reads
    }

    /// Successful operations per second.
    pub fn ops_per_s(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.ops() as f64 / self.duration_s
        } else {
            0.0
        }
    }

    fn count_events(&self, kind: crate::faults::FaultKind) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }

    /// Leader kills performed.
    pub fn leader_kills(&self) -> usize {
        self.count_events(crate::faults::FaultKind::Kill)
    }

    /// True when some operation was answered, the read-back ran and found every acknowledged
    /// write, and the history was found linearizable. A run in which no operation was
    /// answered proves nothing and does not pass.
    pub fn passed(&self) -> bool {
        !self.interrupted
            && !self.nothing_answered()
            && self.verification.is_some_and(|v| v.passed())
            && (self.linearizability.as_ref()).is_none_or(|l| l.linearizable() == Some(true))
    }

    /// No write was acknowledged and no read answered.
    fn nothing_answered(&self) -> bool {
        self.writes == 0 && self.reads == 0
    }

    /// Microseconds of this tool's CPU per acknowledged write.
    pub fn tool_cpu_us_per_write(&self) -> Option<f64> {
        crate::cpu::us_per(Duration::from_secs_f64(self.tool_cpu_s), self.writes)
    }

    /// Microseconds of the spawned nodes' CPU (summed) per acknowledged write.
    pub fn server_cpu_us_per_write(&self) -> Option<f64> {
        let cpu = Duration::from_secs_f64(self.server_cpu_s?);
        crate::cpu::us_per(cpu, self.writes)
    }

    /// The JSON summary: one object, fields of CONTRACT.md first, then extras.
    pub fn to_json(&self) -> String {
        let l = &self.latency;
        let verified = self.verification;
        let mut summary = json!({
            "clients": self.clients,
            "duration_s": json_num(self.duration_s),
            "ops": self.ops(),
            "ops_per_s": json_num(self.ops_per_s()),
            "latency_us": {"p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max},
            "errors": self.errors,
            "unknown": self.unknown,
            "leader_kills": self.leader_kills(),
            "failover_ms": self.failover_ms.iter().map(|f| f.map_or(Value::Null, json_num)).collect::<Vec<_>>(),
            "acked_writes": self.writes,
            "lost_acked_writes": verified.map(|v| v.lost_acked_writes),
            "rss_bytes_max": self.rss_bytes_max,
        });
        let checked = self.linearizability.as_ref();
        let window = checked.map(|l| l.windows_text(|k| key_name(self.run_id, k)));
        let window_lines: Vec<&str> = window.iter().flat_map(|w| w.lines()).collect();
        let extras = json!({
            "anon_rss_bytes_max": self.anon_rss_bytes_max,
            "target": self.target,
            "value_size": self.value_size,
            "keys": self.keys,
            "read_ratio": json_num(self.read_ratio),
            "read_mode": self.read_mode.name(),
            "rate": self.rate.map_or(Value::Null, json_num),
            "pipeline": self.pipeline.max(1),
            "engine_threads": self.engine_threads,
            "pause_failover_ms": self.pause_failover_ms.iter().map(|f| f.map_or(Value::Null, json_num)).collect::<Vec<_>>(),
            "tool_cpu_s": json_num(self.tool_cpu_s),
            "tool_cpu_us_per_write": self.tool_cpu_us_per_write().map_or(Value::Null, json_num),
            "server_cpu_s": self.server_cpu_s.map_or(Value::Null, json_num),
            "server_cpu_us_per_write": self.server_cpu_us_per_write().map_or(Value::Null, json_num),
            "reads": self.reads,
            "writes": self.writes,
            "keys_checked": verified.map(|v| v.keys_checked),
            "unexpected_values": verified.map(|v| v.unexpected_values),
            "unreadable_keys": verified.map(|v| v.unreadable_keys),
            "linearizable": checked.and_then(Linearizability::linearizable),
            "ops_checked": checked.map(|l| l.ops_checked),
            "linearizability_window": window_lines,
            "workload": self.workload,
            "passed": self.passed(),
            "interrupted": self.interrupted,
            "faults_skipped": self.faults_skipped,
            "events": self.events.iter().map(event_json).collect::<Vec<_>>(),
            "per_second": self.per_second.iter().map(sample_json).collect::<Vec<_>>(),
            "problems": self.problems,
            "nemesis": self.nemesis.as_ref().map(|n| json!({
                "kinds": n.kinds.iter().map(|k| k.name()).collect::<Vec<_>>(),
                "seed": n.seed,
            })),
            "fault_notes": self.fault_notes,
            "leader_stages": self.leader_stages.as_ref().map(|(leader, stages)| json!({
                "leader": leader,
                "stages": stages.iter().map(stage_latency_json).collect::<Vec<_>>(),
            })),
        });
        if let (Some(summary), Value::Object(extras)) = (summary.as_object_mut(), extras) {
            summary.extend(extras);
        }
        summary.to_string()
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let reads = format!("{:.0}% reads ({})", self.read_ratio * 100.0, self.read_mode);
        let reads = self
            .workload
            .map_or(reads.clone(), |w| format!("{w} ({reads})"));
        let mode = match (self.rate, self.pipeline) {
            (Some(rate), _) => format!("open loop at {} ops/s", thousands(rate as u64)),
            (None, depth) if depth > 1 => format!("closed loop, {depth} in flight each"),
            (None, _) => "closed loop".to_string(),
        };
        let _ = writeln!(
            s,
            "rcraft-loadtest: {}, {} clients ({mode}), {:.1} s, {} B values, {} keys, {reads}",
            self.target,
            self.clients,
            self.duration_s,
            self.value_size,
            thousands(self.keys)
        );
        // A label longer than the column (a stage name) still gets a space before its text.
        let mut row = |label: &str, text: String| {
            let _ = writeln!(s, "  {label:<15} {text}");
        };
        row(
            "throughput",
            format!(
                "{} ops/s ({} ops)",
                thousands(self.ops_per_s().round() as u64),
                thousands(self.ops())
            ),
        );
        row("writes", format!("{} acknowledged", thousands(self.writes)));
        row("reads", thousands(self.reads));
        row(
            "errors",
            format!(
                "{} definite, {} unknown outcome",
                thousands(self.errors),
                thousands(self.unknown)
            ),
        );
        let l = &self.latency;
        row(
            "latency",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                format_ms(l.p50),
                format_ms(l.p90),
                format_ms(l.p99),
                format_ms(l.p999),
                format_ms(l.max)
            ),
        );
        let per_write = |us: Option<f64>| us.map_or("-".to_string(), |us| format!("{us:.1} us"));
        let nodes = match self.server_cpu_s {
            Some(_) => format!(", nodes {}", per_write(self.server_cpu_us_per_write())),
            None => String::new(),
        };
        let engine = match self.engine_threads {
            Some(threads) => format!("{threads} engine thread(s)"),
            None => "a thread per client".to_string(),
        };
        row(
            "CPU per write",
            format!(
                "load generator {} ({engine}, {:.2} s){nodes}",
                per_write(self.tool_cpu_us_per_write()),
                self.tool_cpu_s
            ),
        );
        if let Some((leader, stages)) = &self.leader_stages {
            row(
                "leader stages",
                format!("node {leader}, since it started (rcraft status --latency)"),
            );
            for s in stages {
                let name = match s.peer {
                    Some(peer) => format!("  {} {peer}", s.stage),
                    None => format!("  {}", s.stage),
                };
                row(
                    &name,
                    format!(
                        "p50 {}  p90 {}  p99 {}  max {}  ({} samples)",
                        format_ms(s.p50_us),
                        format_ms(s.p90_us),
                        format_ms(s.p99_us),
                        format_ms(s.max_us),
                        thousands(s.count)
                    ),
                );
            }
        }
        if !self.failover_ms.is_empty() {
            let list: Vec<String> = self
                .failover_ms
                .iter()
                .map(|f| f.map_or("no write after".into(), |ms| format!("{ms:.0} ms")))
                .collect();
            row(
                "leader kills",
                format!("{}: failover {}", self.leader_kills(), list.join(", ")),
            );
        }
        let pauses = self.count_events(crate::faults::FaultKind::Pause);
        if pauses > 0 {
            let list: Vec<String> = self
                .pause_failover_ms
                .iter()
                .map(|f| f.map_or("no write after".into(), |ms| format!("{ms:.0} ms")))
                .collect();
            row(
                "leader pauses",
                format!("{pauses}: failover {}", list.join(", ")),
            );
        }
        if let Some(nemesis) = &self.nemesis {
            let kinds: Vec<&str> = nemesis.kinds.iter().map(|k| k.name()).collect();
            row(
                "nemesis",
                format!(
                    "{} (seed {}, one every {:.1} s, held up to {:.1} s)",
                    kinds.join(","),
                    nemesis.seed,
                    nemesis.every.as_secs_f64(),
                    nemesis.hold.as_secs_f64()
                ),
            );
            for e in &self.events {
                let term = e.term.map_or(String::new(), |t| format!(" (term {t})"));
                let detail = if e.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", e.detail)
                };
                row(
                    "",
                    format!(
                        "{:>8.3} s  {} n{}{term}{detail}",
                        e.at_ns as f64 / 1e9,
                        e.kind.name(),
                        e.node
                    ),
                );
            }
        }
        for note in &self.fault_notes {
            row("skipped", note.clone());
        }
        if self.faults_skipped > 0 {
            row("faults skipped", self.faults_skipped.to_string());
        }
        if !self.rss_bytes_max.is_empty() {
            let list: Vec<String> = self
                .rss_bytes_max
                .iter()
                .enumerate()
                .map(|(i, b)| match self.anon_rss_bytes_max.get(i) {
                    Some(anon) => format!("node {i} {} (anon {})", mib(*b), mib(*anon)),
                    None => format!("node {i} {}", mib(*b)),
                })
                .collect();
            row("peak memory", list.join(", "));
        }
        for problem in &self.problems {
            row("problem", problem.clone());
        }
        if self.nothing_answered() && !self.interrupted {
            let why = "no operation was answered (could the clients reach a leader?)";
            row("problem", why.to_string());
        }
        row("verification", self.verdict());
        if let Some(checked) = &self.linearizability {
            row("linearizable", checked.summary());
            s.push_str(&checked.windows_text(|k| key_name(self.run_id, k)));
        }
        s
    }

    fn verdict(&self) -> String {
        let Some(v) = self.verification else {
            return if self.interrupted {
                "not run (interrupted)"
            } else {
                "not run (see problems above)"
            }
            .into();
        };
        let mut text = format!("{} keys read back: ", thousands(v.keys_checked));
        if v.lost_acked_writes == 0 {
            text.push_str("0 acknowledged writes lost");
        } else {
            let _ = write!(
                text,
                "{} ACKNOWLEDGED WRITES LOST",
                thousands(v.lost_acked_writes)
            );
        }
        if v.unexpected_values > 0 {
            let _ = write!(
                text,
                ", {} keys with values never written",
                v.unexpected_values
            );
        }
        if v.unreadable_keys > 0 {
            let _ = write!(text, ", {} keys could not be read", v.unreadable_keys);
        }
        text
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string().into_bytes();
    let groups: Vec<&str> = digits
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).expect("decimal digits are ASCII"))
        .collect();
    groups.join(",")
}

/// Microseconds as milliseconds with about three significant digits.
pub fn format_ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    match ms {
        m if m < 1.0 => format!("{m:.3} ms"),
        m if m < 10.0 => format!("{m:.2} ms"),
        m if m < 100.0 => format!("{m:.1} ms"),
        m => format!("{m:.0} ms"),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn event_json(e: &FaultEvent) -> Value {
    json!({
        "t_ms": json_num(e.at_ns as f64 / 1e6),
        "kind": e.kind.name(),
        "node": e.node,
        "term": e.term,
        "detail": e.detail,
    })
}

fn sample_json(s: &SecondSample) -> Value {
    json!({
        "t_s": json_num(s.t_s),
        "ops_per_s": json_num(s.ops_per_s()),
        "writes": s.counts.writes,
        "reads": s.counts.reads,
        "errors": s.counts.errors,
        "unknown": s.counts.unknown,
        "p50_us": s.latency.p50,
        "p99_us": s.latency.p99,
    })
}

/// A JSON number: at most three decimals, an integer when it has none, `null` for NaN and
/// infinities (JSON has none).
pub fn json_num(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let rounded = (x * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        Value::from(rounded as i64)
    } else {
        Value::from(rounded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::FaultKind;
    use crate::stats::Counts;

    fn sample_summary() -> Summary {
        Summary {
            target: "3 spawned nodes".into(),
            clients: 16,
            duration_s: 8.0,
            value_size: 100,
            keys: 1000,
            writes: 8000,
            reads: 0,
            errors: 2,
            unknown: 1,
            latency: LatencySummary {
                p50: 800,
                p90: 1200,
                p99: 2500,
                p999: 9000,
                max: 250_000,
            },
            events: vec![
                FaultEvent {
                    at_ns: 4_000_000_000,
                    kind: FaultKind::Kill,
                    node: 1,
                    term: Some(2),
                    detail: String::new(),
                },
                FaultEvent {
                    at_ns: 6_000_000_000,
                    kind: FaultKind::Restart,
                    node: 1,
                    term: None,
                    detail: String::new(),
                },
            ],
            failover_ms: vec![Some(312.5)],
            verification: Some(Verification {
                keys_checked: 1000,
                ..Verification::default()
            }),
            rss_bytes_max: vec![10 << 20, 11 << 20, 12 << 20],
            per_second: vec![SecondSample {
                t_s: 1.0,
                interval_s: 1.0,
                counts: Counts {
                    writes: 1000,
                    ..Counts::default()
                },
                latency: LatencySummary::default(),
            }],
            problems: vec!["node 2 said \"bye\"".into()],
            engine_threads: Some(1),
            pause_failover_ms: vec![Some(310.0)],
            tool_cpu_s: 0.5,
            server_cpu_s: Some(2.0),
            ..Summary::default()
        }
    }

    #[test]
    fn json_has_the_contract_fields_with_the_right_values() {
        let json = sample_summary().to_json();
        for field in [
            r#""clients":16"#,
            r#""duration_s":8"#,
            r#""ops":8000"#,
            r#""ops_per_s":1000"#,
            r#""latency_us":{"p50":800,"p90":1200,"p99":2500,"p999":9000,"max":250000}"#,
            r#""errors":2"#,
            r#""unknown":1"#,
            r#""leader_kills":1"#,
            r#""failover_ms":[312.5]"#,
            r#""acked_writes":8000"#,
            r#""lost_acked_writes":0"#,
            r#""rss_bytes_max":[10485760,11534336,12582912]"#,
            r#""passed":true"#,
            r#""problems":["node 2 said \"bye\""]"#,
            r#""pause_failover_ms":[310]"#,
            r#""engine_threads":1"#,
            r#""tool_cpu_us_per_write":62.5"#,
            r#""server_cpu_us_per_write":250"#,
        ] {
            assert!(json.contains(field), "missing {field} in {json}");
        }
        assert!(json.starts_with('{') && json.ends_with('}') && !json.contains('\n'));
        assert_eq!(json.matches('{').count(), json.matches('}').count());
    }

    #[test]
    fn json_marks_an_unverified_run() {
        let summary = Summary {
            verification: None,
            interrupted: true,
            ..sample_summary()
        };
        let json = summary.to_json();
        assert!(json.contains(r#""lost_acked_writes":null"#) && json.contains(r#""passed":false"#));
    }

    #[test]
    fn the_leaders_stages_are_shown_beside_the_end_to_end_latency() {
        let stage = |stage: &str, peer: Option<u64>| StageLatency {
            stage: stage.to_string(),
            peer: peer.map(rcraft::wire::NodeId),
            count: 1200,
            p50_us: 450,
            p90_us: 900,
            p99_us: 2100,
            max_us: 9000,
        };
        let summary = Summary {
            leader_stages: Some((2, vec![stage("fsync", None), stage("replication", Some(1))])),
            ..sample_summary()
        };
        let text = summary.to_text();
        assert!(
            text.contains("  leader stages   node 2, since it started (rcraft status --latency)"),
            "{text}"
        );
        assert!(
            text.contains("    fsync         p50 0.450 ms  p90 0.900 ms  p99 2.10 ms  max 9.00 ms  (1,200 samples)"),
            "{text}"
        );
        assert!(text.contains("    replication 1 p50 0.450 ms"), "{text}");
        let json = summary.to_json();
        assert!(
            json.contains(r#""leader_stages":{"leader":2,"stages":[{"stage":"fsync","peer":null,"count":1200,"p50_us":450,"p90_us":900,"p99_us":2100,"max_us":9000},{"stage":"replication","peer":1,"#),
            "{json}"
        );
        assert!(
            sample_summary()
                .to_json()
                .contains(r#""leader_stages":null"#)
        );
    }

    #[test]
    fn text_states_the_verdict() {
        let text = sample_summary().to_text();
        assert!(text.contains("0 acknowledged writes lost"), "{text}");
        assert!(text.contains("1,000 ops/s"), "{text}");
        assert!(
            text.contains("load generator 62.5 us (1 engine thread(s), 0.50 s), nodes 250.0 us"),
            "{text}"
        );
        assert!(
            text.contains("failover 312 ms") || text.contains("failover 313 ms"),
            "{text}"
        );
        let mut lost = sample_summary();
        lost.verification = Some(Verification {
            keys_checked: 10,
            lost_acked_writes: 3,
            ..Verification::default()
        });
        assert!(!lost.passed());
        assert!(lost.to_text().contains("3 ACKNOWLEDGED WRITES LOST"));
    }

    #[test]
    fn number_helpers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(format_ms(812), "0.812 ms");
        assert_eq!(format_ms(2_310), "2.31 ms");
        assert_eq!(format_ms(230_000), "230 ms");
        assert_eq!(json_num(f64::NAN).to_string(), "null");
        assert_eq!(json_num(1.23456).to_string(), "1.235");
        assert_eq!(json_num(8.0).to_string(), "8");
    }
}
