//! The run's summary: the JSON object of CONTRACT.md (hand-written: a dozen fields do not
//! earn a serialization framework) and the human-readable text printed at the end.
//!
//! Pure: built by the main thread from the other modules' results after every thread ended.

use crate::faults::FaultEvent;
use crate::history::{Verification, key_name};
use crate::linearizability::Linearizability;
use crate::stats::{LatencySummary, SecondSample};
use std::fmt::Write;

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
    /// Open-loop rate, if any.
    pub rate: Option<f64>,
    /// Requests in flight per connection (1: blocking client).
    pub pipeline: usize,
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
    /// Node deaths and fault failures.
    pub problems: Vec<String>,
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

    /// True when the read-back ran and found every acknowledged write, and the history was
    /// found linearizable.
    pub fn passed(&self) -> bool {
        !self.interrupted
            && self.verification.is_some_and(|v| v.passed())
            && (self.linearizability.as_ref()).is_none_or(|l| l.linearizable() == Some(true))
    }

    /// The JSON summary: one object, fields of CONTRACT.md first, then extras.
    pub fn to_json(&self) -> String {
        let mut o = JsonObject::default();
        o.num("clients", self.clients as f64);
        o.num("duration_s", self.duration_s);
        o.num("ops", self.ops() as f64);
        o.num("ops_per_s", self.ops_per_s());
        let l = &self.latency;
        o.raw(
            "latency_us",
            &format!(
                r#"{{"p50":{},"p90":{},"p99":{},"p999":{},"max":{}}}"#,
                l.p50, l.p90, l.p99, l.p999, l.max
            ),
        );
        o.num("errors", self.errors as f64);
        o.num("unknown", self.unknown as f64);
        o.num("leader_kills", self.leader_kills() as f64);
        o.raw(
            "failover_ms",
            &json_list(
                self.failover_ms
                    .iter()
                    .map(|f| f.map_or("null".into(), json_num)),
            ),
        );
        o.num("acked_writes", self.writes as f64);
        let verified = self.verification;
        o.raw(
            "lost_acked_writes",
            &verified.map_or("null".into(), |v| v.lost_acked_writes.to_string()),
        );
        o.raw(
            "rss_bytes_max",
            &json_list(self.rss_bytes_max.iter().map(u64::to_string)),
        );
        // Extras.
        o.raw(
            "anon_rss_bytes_max",
            &json_list(self.anon_rss_bytes_max.iter().map(u64::to_string)),
        );
        o.str("target", &self.target);
        o.num("value_size", self.value_size as f64);
        o.num("keys", self.keys as f64);
        o.num("read_ratio", self.read_ratio);
        o.raw("rate", &self.rate.map_or("null".into(), json_num));
        o.num("pipeline", self.pipeline.max(1) as f64);
        o.num("reads", self.reads as f64);
        o.num("writes", self.writes as f64);
        o.raw(
            "keys_checked",
            &verified.map_or("null".into(), |v| v.keys_checked.to_string()),
        );
        o.raw(
            "unexpected_values",
            &verified.map_or("null".into(), |v| v.unexpected_values.to_string()),
        );
        o.raw(
            "unreadable_keys",
            &verified.map_or("null".into(), |v| v.unreadable_keys.to_string()),
        );
        let checked = self.linearizability.as_ref();
        let linearizable = checked.and_then(Linearizability::linearizable);
        o.raw(
            "linearizable",
            &linearizable.map_or("null".into(), |l| l.to_string()),
        );
        o.raw(
            "ops_checked",
            &checked.map_or("null".into(), |l| l.ops_checked.to_string()),
        );
        let window = checked.map(|l| l.windows_text(|k| key_name(self.run_id, k)));
        o.raw(
            "linearizability_window",
            &json_list(window.iter().flat_map(|w| w.lines().map(json_str))),
        );
        o.raw("workload", &self.workload.map_or("null".into(), json_str));
        o.raw("passed", if self.passed() { "true" } else { "false" });
        o.raw(
            "interrupted",
            if self.interrupted { "true" } else { "false" },
        );
        o.num("faults_skipped", self.faults_skipped as f64);
        o.raw("events", &json_list(self.events.iter().map(event_json)));
        o.raw(
            "per_second",
            &json_list(self.per_second.iter().map(sample_json)),
        );
        o.raw(
            "problems",
            &json_list(self.problems.iter().map(|p| json_str(p))),
        );
        o.finish()
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let reads = format!("{:.0}% reads", self.read_ratio * 100.0);
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
        let mut row = |label: &str, text: String| {
            let _ = writeln!(s, "  {label:<16}{text}");
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
            row("leader pauses", pauses.to_string());
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

fn event_json(e: &FaultEvent) -> String {
    let term = e.term.map_or("null".into(), |t| t.to_string());
    format!(
        r#"{{"t_ms":{},"kind":"{}","node":{},"term":{term}}}"#,
        json_num(e.at_ns as f64 / 1e6),
        e.kind.name(),
        e.node
    )
}

fn sample_json(s: &SecondSample) -> String {
    format!(
        r#"{{"t_s":{},"ops_per_s":{},"writes":{},"reads":{},"errors":{},"unknown":{},"p50_us":{},"p99_us":{}}}"#,
        json_num(s.t_s),
        json_num(s.ops_per_s()),
        s.counts.writes,
        s.counts.reads,
        s.counts.errors,
        s.counts.unknown,
        s.latency.p50,
        s.latency.p99
    )
}

/// A JSON number: at most three decimals, `null` for NaN and infinities (JSON has none).
pub fn json_num(x: f64) -> String {
    if !x.is_finite() {
        return "null".into();
    }
    let rounded = (x * 1000.0).round() / 1000.0;
    if rounded.fract() == 0.0 && rounded.abs() < 1e15 {
        format!("{}", rounded as i64)
    } else {
        format!("{rounded}")
    }
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

#[derive(Default)]
struct JsonObject {
    body: String,
}

impl JsonObject {
    fn raw(&mut self, key: &str, value: &str) {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        let _ = write!(self.body, "{}:{value}", json_str(key));
    }

    fn num(&mut self, key: &str, value: f64) {
        self.raw(key, &json_num(value));
    }

    fn str(&mut self, key: &str, value: &str) {
        self.raw(key, &json_str(value));
    }

    fn finish(self) -> String {
        format!("{{{}}}", self.body)
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
                },
                FaultEvent {
                    at_ns: 6_000_000_000,
                    kind: FaultKind::Restart,
                    node: 1,
                    term: None,
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
    fn text_states_the_verdict() {
        let text = sample_summary().to_text();
        assert!(text.contains("0 acknowledged writes lost"), "{text}");
        assert!(text.contains("1,000 ops/s"), "{text}");
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
        assert_eq!(json_num(f64::NAN), "null");
        assert_eq!(json_num(1.23456), "1.235");
        assert_eq!(json_str("a\u{1}b"), "\"a\\u0001b\"");
    }
}
