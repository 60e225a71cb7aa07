//! A self-contained SVG chart of the run over time: throughput on top, p50 and p99 latency
//! below, every fault window shaded and every fault event marked. Around faults the series has
//! 100 ms buckets, so a failover of a few hundred milliseconds shows as a dip that a 1 s bucket
//! would average away; elsewhere 1 s buckets keep long runs readable. Hand-written SVG: no
//! script, no external fonts or styles, so it renders in a README as is.
//!
//! Pure: a function of the buckets (built from the operation history, or from the per-second
//! samples) and the events.

use crate::faults::{FaultEvent, FaultKind};
use crate::oplog::{OpRecord, Outcome, READ_BACK_CLIENT};
use crate::report::thousands;
use crate::stats::SecondSample;
use std::fmt::Write;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 64.0;
const PANEL_HEIGHT: f64 = 170.0;
const PANEL_GAP: f64 = 56.0;
const BOTTOM: f64 = 40.0;
const Y_TICKS: usize = 5;
/// Room one fault label needs, in pixels.
const EVENT_LABEL_WIDTH: f64 = 64.0;
/// The y axis reaches at least this factor above the highest point, so no line runs along
/// the top border.
const HEADROOM: f64 = 1.15;
/// Length of a fine bucket, and of a coarse one, in nanoseconds.
const FINE_NS: u64 = 100_000_000;
const COARSE_NS: u64 = 1_000_000_000;
/// Fine buckets cover this long before and after every fault event.
const FINE_BEFORE_NS: u64 = 1_000_000_000;
const FINE_AFTER_NS: u64 = 3_000_000_000;

/// One point of the time series: a time interval, what succeeded in it, and its latency.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bucket {
    /// Start, seconds since the start of the run.
    pub start_s: f64,
    /// End, seconds since the start of the run.
    pub end_s: f64,
    /// Successful operations per second.
    pub ops_per_s: f64,
    /// Median latency of those operations, microseconds (0 when none).
    pub p50_us: u64,
    /// 99th percentile latency, microseconds (0 when none).
    pub p99_us: u64,
}

impl From<&SecondSample> for Bucket {
    fn from(s: &SecondSample) -> Bucket {
        Bucket {
            start_s: (s.t_s - s.interval_s).max(0.0),
            end_s: s.t_s,
            ops_per_s: s.ops_per_s(),
            p50_us: s.latency.p50,
            p99_us: s.latency.p99,
        }
    }
}

/// The bucket boundaries of a run of `duration_ns`: 100 ms apart within a fault's
/// neighbourhood (a second before to three after each event), 1 s apart elsewhere.
fn boundaries(duration_ns: u64, events: &[FaultEvent]) -> Vec<u64> {
    let near_fault = |second: u64| {
        let (from, to) = (second * COARSE_NS, (second + 1) * COARSE_NS);
        events.iter().any(|e| {
            from < e.at_ns.saturating_add(FINE_AFTER_NS)
                && e.at_ns.saturating_sub(FINE_BEFORE_NS) < to
        })
    };
    let mut bounds = vec![0];
    for second in 0..duration_ns.div_ceil(COARSE_NS) {
        let step = if near_fault(second) {
            FINE_NS
        } else {
            COARSE_NS
        };
        let mut t = second * COARSE_NS;
        while t < (second + 1) * COARSE_NS && t < duration_ns {
            t = (t + step).min(duration_ns);
            bounds.push(t);
        }
    }
    bounds
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The time series from the operation history: each successful operation of the workload
/// (not the read-back) counts in the bucket it returned in, with its call-to-return latency.
pub fn timeline(ops: &[OpRecord], events: &[FaultEvent], duration_ns: u64) -> Vec<Bucket> {
    let bounds = boundaries(duration_ns, events);
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); bounds.len().saturating_sub(1)];
    for op in ops {
        let ok = !matches!(op.outcome, Outcome::Failed | Outcome::Unknown);
        if !ok || op.client >= READ_BACK_CLIENT || op.return_ns >= duration_ns {
            continue;
        }
        let i = bounds.partition_point(|&b| b <= op.return_ns) - 1;
        if let Some(bucket) = latencies.get_mut(i) {
            bucket.push((op.return_ns - op.call_ns) / 1000);
        }
    }
    bounds
        .windows(2)
        .zip(latencies)
        .map(|(w, mut lat)| {
            lat.sort_unstable();
            let seconds = (w[1] - w[0]) as f64 / 1e9;
            Bucket {
                start_s: w[0] as f64 / 1e9,
                end_s: w[1] as f64 / 1e9,
                ops_per_s: lat.len() as f64 / seconds,
                p50_us: percentile(&lat, 0.50),
                p99_us: percentile(&lat, 0.99),
            }
        })
        .collect()
}

/// The smallest "round" number (1, 2 or 5 times a power of ten) at or above `x`.
pub fn nice_ceiling(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= x * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

/// An axis label: no more decimals than the value needs.
fn axis_number(v: f64) -> String {
    // Four significant digits are enough to tell ticks apart (they are 1/5 of a 1-2-5 value).
    let decimals = if v > 0.0 {
        (3 - v.log10().floor() as i32).clamp(0, 6) as usize
    } else {
        0
    };
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn event_style(kind: FaultKind) -> (&'static str, &'static str) {
    match kind {
        FaultKind::Kill => ("#d62728", "kill"),
        FaultKind::Restart => ("#2ca02c", "restart"),
        FaultKind::Pause => ("#ff7f0e", "pause"),
        FaultKind::Resume => ("#1f77b4", "resume"),
        FaultKind::Partition => ("#9467bd", "partition"),
        FaultKind::Netem => ("#8c564b", "netem"),
        FaultKind::Heal => ("#17becf", "heal"),
        FaultKind::Damage => ("#e377c2", "damage"),
    }
}

struct Panel {
    top: f64,
    y_max: f64,
    t_max: f64,
}

impl Panel {
    fn x(&self, t: f64) -> f64 {
        LEFT + (t / self.t_max).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + PANEL_HEIGHT - (v / self.y_max).clamp(0.0, 1.0) * PANEL_HEIGHT
    }

    fn frame(&self, svg: &mut String, title: &str, format: impl Fn(f64) -> String) {
        let right = WIDTH - RIGHT;
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{:.1}" class="title">{}</text>"#,
            self.top - 8.0,
            escape(title)
        );
        for i in 0..=Y_TICKS {
            let v = self.y_max * i as f64 / Y_TICKS as f64;
            let y = self.y(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e5e5e5"/>"##
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                format(v)
            );
        }
        let step = nice_ceiling(self.t_max / 10.0);
        let mut t = 0.0;
        while t <= self.t_max + 1e-9 {
            let x = self.x(t);
            let bottom = self.top + PANEL_HEIGHT;
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/>"##,
                bottom + 4.0
            );
            let _ = writeln!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}s</text>"#,
                bottom + 17.0,
                axis_number(t)
            );
            t += step;
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{PANEL_HEIGHT}" fill="none" stroke="#999"/>"##,
            self.top,
            right - LEFT
        );
    }

    fn line(&self, svg: &mut String, points: &[(f64, f64)], color: &str, width: f64) {
        let coords: Vec<String> = points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", self.x(t), self.y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-linejoin="round"/>"#,
            coords.join(" ")
        );
    }

    /// A translucent band over the panel from `from` to `to` seconds.
    fn shade(&self, svg: &mut String, from: f64, to: f64, color: &str) {
        let (x1, x2) = (self.x(from), self.x(to));
        let _ = writeln!(
            svg,
            r#"<rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="{PANEL_HEIGHT}" fill="{color}" fill-opacity="0.12" class="fault-window"/>"#,
            self.top,
            (x2 - x1).max(1.0)
        );
    }
}

/// A step line: each bucket's value held over its interval, so a fault mark falls inside the
/// interval it affected.
fn steps(buckets: &[Bucket], value: impl Fn(&Bucket) -> f64) -> Vec<(f64, f64)> {
    buckets
        .iter()
        .flat_map(|b| {
            let v = value(b);
            [(b.start_s, v), (b.end_s, v)]
        })
        .collect()
}

/// The windows in which a fault was in force: from each starting event to the next event
/// that undoes one (at most one fault is in force at a time), or to `t_max`.
pub fn fault_windows(events: &[FaultEvent], t_max: f64) -> Vec<(f64, f64, FaultKind)> {
    let mut windows = Vec::new();
    let mut open: Option<(f64, FaultKind)> = None;
    for event in events {
        let t = event.at_ns as f64 / 1e9;
        if event.kind.starts_fault() {
            if let Some((from, kind)) = open.take() {
                windows.push((from, t, kind));
            }
            open = Some((t, event.kind));
        } else if let Some((from, kind)) = open.take() {
            windows.push((from, t, kind));
        }
    }
    if let Some((from, kind)) = open {
        windows.push((from, t_max, kind));
    }
    windows
}

/// One legend entry per series and per kind of event present, under the title.
fn legend(svg: &mut String, events: &[FaultEvent]) {
    let mut x = LEFT;
    for (color, label, dash) in [("#8c2d04", "p99", ""), ("#fd8d3c", "p50", "")] {
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="34" x2="{}" y2="34" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="38" fill="{color}">{label}</text>"#,
            x + 18.0,
            x + 22.0
        );
        x += 60.0;
    }
    for kind in [
        FaultKind::Kill,
        FaultKind::Restart,
        FaultKind::Pause,
        FaultKind::Resume,
        FaultKind::Partition,
        FaultKind::Netem,
        FaultKind::Heal,
        FaultKind::Damage,
    ] {
        if !events.iter().any(|e| e.kind == kind) {
            continue;
        }
        let (color, label) = event_style(kind);
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="34" x2="{}" y2="34" stroke="{color}" stroke-dasharray="4 3"/><text x="{}" y="38" fill="{color}">{label}</text>"#,
            x + 18.0,
            x + 22.0
        );
        x += 90.0;
    }
}

/// Renders the chart. `title` names the run (target, clients).
pub fn render_svg(title: &str, buckets: &[Bucket], events: &[FaultEvent]) -> String {
    let t_max = buckets.iter().map(|b| b.end_s).fold(1.0, f64::max);
    let ops_max = nice_ceiling(buckets.iter().map(|b| b.ops_per_s).fold(0.0, f64::max) * HEADROOM);
    let ms = |us: u64| us as f64 / 1000.0;
    let p99_max = nice_ceiling(buckets.iter().map(|b| ms(b.p99_us)).fold(0.0, f64::max) * HEADROOM);
    let height = TOP + 2.0 * PANEL_HEIGHT + PANEL_GAP + BOTTOM;
    let throughput = Panel {
        top: TOP,
        y_max: ops_max,
        t_max,
    };
    let latency = Panel {
        top: TOP + PANEL_HEIGHT + PANEL_GAP,
        y_max: p99_max,
        t_max,
    };
    let fine = buckets.iter().any(|b| b.end_s - b.start_s < 0.5);

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        "<style>.title {{ font-weight: bold; font-size: 13px; }}</style>"
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="20" class="title">{}</text>"#,
        escape(title)
    );
    for (from, to, kind) in fault_windows(events, t_max) {
        let (color, _) = event_style(kind);
        throughput.shade(&mut svg, from, to, color);
        latency.shade(&mut svg, from, to, color);
    }
    let resolution = if fine {
        "100 ms buckets around faults, 1 s elsewhere"
    } else {
        "1 s buckets"
    };
    throughput.frame(
        &mut svg,
        &format!("throughput (successful ops/s; {resolution})"),
        |v| thousands(v.round() as u64),
    );
    latency.frame(&mut svg, "latency p50 and p99 (ms)", axis_number);

    let ops = steps(buckets, |b| b.ops_per_s);
    throughput.line(&mut svg, &ops, "#1f4e9a", 1.8);
    // Latency only where operations succeeded: an empty bucket is a gap, not a zero.
    for run in buckets
        .split(|b| b.ops_per_s == 0.0)
        .filter(|r| !r.is_empty())
    {
        latency.line(&mut svg, &steps(run, |b| ms(b.p99_us)), "#8c2d04", 1.8);
        latency.line(&mut svg, &steps(run, |b| ms(b.p50_us)), "#fd8d3c", 1.4);
    }

    legend(&mut svg, events);
    // Labels only where they fit; with many faults the legend's colours say enough.
    let mut label_free_from = 0.0;
    for event in events {
        let (color, label) = event_style(event.kind);
        let x = throughput.x(event.at_ns as f64 / 1e9);
        let (y1, y2) = (TOP, latency.top + PANEL_HEIGHT);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{y2:.1}" stroke="{color}" stroke-dasharray="4 3"><title>{}</title></line>"#,
            escape(&format!("{label} n{} {}", event.node, event.detail))
        );
        if x >= label_free_from {
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" fill="{color}" font-size="10">{label} n{}</text>"#,
                x + 3.0,
                TOP + 11.0,
                event.node
            );
            label_free_from = x + EVENT_LABEL_WIDTH;
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oplog::Request;

    fn bucket(t: f64, ops: f64, p99_us: u64) -> Bucket {
        Bucket {
            start_s: t - 1.0,
            end_s: t,
            ops_per_s: ops,
            p50_us: p99_us / 4,
            p99_us,
        }
    }

    fn event(at_ms: u64, kind: FaultKind) -> FaultEvent {
        FaultEvent {
            at_ns: at_ms * 1_000_000,
            kind,
            node: 2,
            term: None,
            detail: String::new(),
        }
    }

    fn get(call_ms: f64, return_ms: f64) -> OpRecord {
        OpRecord {
            client: 0,
            key: 0,
            request: Request::Get,
            outcome: Outcome::Read(crate::oplog::Value::Absent),
            call_ns: (call_ms * 1e6) as u64,
            return_ns: (return_ms * 1e6) as u64,
        }
    }

    #[test]
    fn nice_ceiling_rounds_up_to_1_2_5() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(12_345.0), 20_000.0);
        assert_eq!(nice_ceiling(50.0), 50.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
    }

    #[test]
    fn axis_numbers_are_short() {
        assert_eq!(axis_number(0.0), "0");
        assert_eq!(axis_number(0.004), "0.004");
        assert_eq!(axis_number(2.5), "2.5");
        assert_eq!(axis_number(40.0), "40");
        assert_eq!(axis_number(0.0016), "0.0016");
        assert_eq!(axis_number(100_000.0), "100000");
    }

    #[test]
    fn buckets_are_fine_only_around_faults() {
        let events = [event(4_500, FaultKind::Kill)];
        let bounds = boundaries(10_000_000_000, &events);
        let widths: Vec<u64> = bounds.windows(2).map(|w| w[1] - w[0]).collect();
        // Seconds 0..3 and 8..10 coarse; 3..8 (a second before to three after) fine.
        assert_eq!(widths.iter().filter(|&&w| w == COARSE_NS).count(), 3 + 2);
        assert_eq!(widths.iter().filter(|&&w| w == FINE_NS).count(), 5 * 10);
        assert_eq!(*bounds.last().unwrap(), 10_000_000_000);
        assert_eq!(
            boundaries(2_500_000_000, &[]),
            vec![0, 1_000_000_000, 2_000_000_000, 2_500_000_000]
        );
    }

    #[test]
    fn a_300_ms_failover_shows_as_a_dip() {
        // One op returning every 10 ms for 6 s, with none between 3.0 and 3.3 s (a kill at
        // 3.0 s), where the ops that return at 3.3 s waited 300 ms.
        let mut ops: Vec<OpRecord> = (0..600)
            .map(|i| i as f64 * 10.0)
            .filter(|&t| !(3000.0..3300.0).contains(&t))
            .map(|t| get(t - 1.0, t))
            .collect();
        ops.push(get(3000.0, 3300.0));
        let mut failed = get(100.0, 200.0);
        failed.outcome = Outcome::Unknown;
        ops.push(failed);
        let mut read_back = get(100.0, 200.0);
        read_back.client = READ_BACK_CLIENT;
        ops.push(read_back);
        let events = [
            event(3_000, FaultKind::Kill),
            event(4_000, FaultKind::Restart),
        ];
        let series = timeline(&ops, &events, 6_000_000_000);
        let at = |t: f64| {
            series
                .iter()
                .find(|b| b.start_s <= t && t < b.end_s)
                .unwrap()
        };
        assert_eq!(at(0.5).ops_per_s, 100.0, "1 s bucket far from the fault");
        assert!((at(0.5).end_s - at(0.5).start_s - 1.0).abs() < 1e-9);
        assert_eq!(at(3.05).ops_per_s, 0.0, "the failover is a dip");
        assert_eq!(at(3.15).ops_per_s, 0.0);
        assert_eq!(at(2.55).ops_per_s, 100.0);
        assert_eq!(at(3.35).p99_us, 300_000, "the waiting op's latency");
        assert_eq!(at(2.55).p50_us, 1_000);
        let sum: f64 = series
            .iter()
            .map(|b| b.ops_per_s * (b.end_s - b.start_s))
            .sum();
        assert!(
            (sum - 571.0).abs() < 1e-6,
            "every successful op counted once: {sum}"
        );
    }

    #[test]
    fn fault_windows_run_from_start_to_undo() {
        let events = [
            event(1_000, FaultKind::Partition),
            event(2_000, FaultKind::Heal),
            event(3_000, FaultKind::Pause),
        ];
        assert_eq!(
            fault_windows(&events, 5.0),
            vec![
                (1.0, 2.0, FaultKind::Partition),
                (3.0, 5.0, FaultKind::Pause)
            ]
        );
    }

    #[test]
    fn svg_has_both_panels_every_event_and_headroom() {
        let buckets: Vec<_> = (1..=8)
            .map(|t| bucket(t as f64, 1000.0 * t as f64, 500 * t))
            .collect();
        let mut kill = event(4_000, FaultKind::Kill);
        kill.term = Some(3);
        let events = [kill, event(6_000, FaultKind::Restart)];
        let svg = render_svg("3 nodes <spawned> & 16 clients", &buckets, &events);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3, "ops, p99, p50");
        // A bucket without successful operations breaks the latency lines.
        let mut gap = buckets.clone();
        gap[3].ops_per_s = 0.0;
        let gapped = render_svg("gap", &gap, &[]);
        assert_eq!(gapped.matches("<polyline").count(), 1 + 2 * 2);
        assert!(svg.contains("kill n2") && svg.contains("restart n2"));
        assert!(svg.contains("&lt;spawned&gt; &amp;"), "title is escaped");
        assert_eq!(
            svg.matches("class=\"fault-window\"").count(),
            2,
            "one window, two panels"
        );
        // Eight steps (two points each) per series; the y axis tops out above the maximum
        // (8000 ops/s needs 9200 with headroom: 10,000).
        let first = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(first.matches(',').count(), 16);
        assert!(svg.contains(">10,000<"));
        assert!(!svg.contains("NaN"));
        // A maximum right at a round number still gets room above it.
        let flat: Vec<_> = (1..=4).map(|t| bucket(t as f64, 5000.0, 1000)).collect();
        let svg = render_svg("flat", &flat, &[]);
        assert!(svg.contains(">10,000<") && svg.contains(">2<"), "{svg}");
    }

    #[test]
    fn dense_events_keep_their_lines_but_not_overlapping_labels() {
        let buckets: Vec<_> = (1..=40).map(|t| bucket(t as f64, 1000.0, 500)).collect();
        let events: Vec<_> = (1..=40).map(|t| event(t * 1000, FaultKind::Kill)).collect();
        let svg = render_svg("dense", &buckets, &events);
        assert_eq!(
            svg.matches("stroke-dasharray=\"4 3\"><title>").count(),
            40,
            "40 marks"
        );
        let labels = svg.matches(">kill n2<").count();
        assert!(labels > 1 && labels < 40, "{labels} labels");
    }

    #[test]
    fn svg_of_an_empty_run_is_still_valid() {
        let svg = render_svg("empty", &[], &[]);
        assert!(svg.contains("</svg>") && !svg.contains("NaN") && !svg.contains("inf"));
        assert!(timeline(&[], &[], 0).is_empty());
    }
}
