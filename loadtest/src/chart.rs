//! A self-contained SVG chart of the per-second series: throughput on top, p99 latency below,
//! with a vertical mark at every kill, restart, pause and resume. Hand-written SVG: no script,
//! no external fonts or styles, so it renders in a README as is.
//!
//! Pure: a function of the samples and events.

use crate::faults::{FaultEvent, FaultKind};
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
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}s</text>"#,
                bottom + 17.0
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

    fn line(&self, svg: &mut String, points: &[(f64, f64)], color: &str) {
        let coords: Vec<String> = points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", self.x(t), self.y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round"/>"#,
            coords.join(" ")
        );
    }
}

/// A step line: each sample's value held over its interval, so a fault mark falls inside the
/// interval it affected.
fn steps(samples: &[SecondSample], value: impl Fn(&SecondSample) -> f64) -> Vec<(f64, f64)> {
    samples
        .iter()
        .flat_map(|s| {
            let v = value(s);
            [((s.t_s - s.interval_s).max(0.0), v), (s.t_s, v)]
        })
        .collect()
}

/// One legend entry per kind of event present, under the title.
fn legend(svg: &mut String, events: &[FaultEvent]) {
    let mut x = LEFT;
    for kind in [
        FaultKind::Kill,
        FaultKind::Restart,
        FaultKind::Pause,
        FaultKind::Resume,
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
pub fn render_svg(title: &str, samples: &[SecondSample], events: &[FaultEvent]) -> String {
    let t_max = samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let ops_max = nice_ceiling(
        samples
            .iter()
            .map(SecondSample::ops_per_s)
            .fold(0.0, f64::max),
    );
    let p99_max = nice_ceiling(
        samples
            .iter()
            .map(|s| s.latency.p99 as f64 / 1000.0)
            .fold(0.0, f64::max),
    );
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
    throughput.frame(&mut svg, "throughput (successful ops/s)", |v| {
        thousands(v.round() as u64)
    });
    latency.frame(&mut svg, "p99 latency per second (ms)", axis_number);

    let ops = steps(samples, SecondSample::ops_per_s);
    let p99 = steps(samples, |s| s.latency.p99 as f64 / 1000.0);
    throughput.line(&mut svg, &ops, "#1f4e9a");
    latency.line(&mut svg, &p99, "#8c2d04");

    legend(&mut svg, events);
    // Labels only where they fit; with many faults the legend's colours say enough.
    let mut label_free_from = 0.0;
    for event in events {
        let (color, label) = event_style(event.kind);
        let x = throughput.x(event.at_ns as f64 / 1e9);
        let (y1, y2) = (TOP, latency.top + PANEL_HEIGHT);
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y1:.1}" x2="{x:.1}" y2="{y2:.1}" stroke="{color}" stroke-dasharray="4 3"/>"#
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
    use crate::stats::{Counts, LatencySummary};

    fn sample(t: f64, writes: u64, p99: u64) -> SecondSample {
        SecondSample {
            t_s: t,
            interval_s: 1.0,
            counts: Counts {
                writes,
                ..Counts::default()
            },
            latency: LatencySummary {
                p99,
                ..LatencySummary::default()
            },
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
    fn svg_has_both_series_and_every_event() {
        let samples: Vec<_> = (1..=8)
            .map(|t| sample(t as f64, 1000 * t, 500 * t))
            .collect();
        let events = [
            FaultEvent {
                at_ns: 4_000_000_000,
                kind: FaultKind::Kill,
                node: 2,
                term: Some(3),
            },
            FaultEvent {
                at_ns: 6_000_000_000,
                kind: FaultKind::Restart,
                node: 2,
                term: None,
            },
        ];
        let svg = render_svg("3 nodes <spawned> & 16 clients", &samples, &events);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("kill n2") && svg.contains("restart n2"));
        assert!(svg.contains("&lt;spawned&gt; &amp;"), "title is escaped");
        // Eight steps (two points each) per series; the y axis tops out at the rounded-up
        // maximum.
        let first = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        assert_eq!(first.matches(',').count(), 16);
        assert!(svg.contains(">10,000<"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn dense_events_keep_their_lines_but_not_overlapping_labels() {
        let samples: Vec<_> = (1..=40).map(|t| sample(t as f64, 1000, 500)).collect();
        let events: Vec<_> = (1..=40)
            .map(|t| FaultEvent {
                at_ns: t * 1_000_000_000,
                kind: FaultKind::Kill,
                node: 0,
                term: None,
            })
            .collect();
        let svg = render_svg("dense", &samples, &events);
        assert_eq!(
            svg.matches("stroke-dasharray=\"4 3\"/>").count(),
            40 + 1,
            "40 marks and the legend"
        );
        let labels = svg.matches(">kill n0<").count();
        assert!(labels > 1 && labels < 40, "{labels} labels");
    }

    #[test]
    fn svg_of_an_empty_run_is_still_valid() {
        let svg = render_svg("empty", &[], &[]);
        assert!(svg.contains("</svg>") && !svg.contains("NaN") && !svg.contains("inf"));
    }
}
