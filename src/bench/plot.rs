//! Latency-by-percentile plots as standalone SVG: the percentile axis is
//! logarithmic in 1/(1−p) (0%, 90%, 99%, 99.9%, ...), as HdrHistogram's
//! plotter draws it, and latency is logarithmic too so that runs from
//! microseconds to seconds fit one plot. Several runs overlay.

use std::fmt::Write as _;

/// One line on the plot: (quantile, latency µs) points in quantile order.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
/// The last percentile shown is 99.9999%.
const MAX_NINES: f64 = 6.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Width and height of the plot area, inside the margins.
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

/// The SVG text of `series` under `title`.
pub fn svg(title: &str, series: &[Series]) -> String {
    let axes = Axes::fitting(series);
    let mut out = String::new();
    head(&mut out, title);
    percentile_grid(&mut out);
    latency_grid(&mut out, &axes);
    for (i, s) in series.iter().enumerate() {
        line_and_legend(&mut out, &axes, i, s);
    }
    out.push_str("</svg>\n");
    out
}

/// Where a point goes: percentiles across, latency up, over whole decades
/// of latency from below the least value to above the greatest.
struct Axes {
    lo_decade: f64,
    hi_decade: f64,
}

impl Axes {
    fn fitting(series: &[Series]) -> Axes {
        let values = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1.max(1.0)));
        let (lo, hi) = values.fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let lo_decade = if lo == f64::MAX {
            0.0
        } else {
            lo.log10().floor()
        };
        let hi_decade = hi.log10().ceil().max(lo_decade + 1.0);
        Axes {
            lo_decade,
            hi_decade,
        }
    }

    fn x(&self, q: f64) -> f64 {
        LEFT + PLOT_W * nines(q).min(MAX_NINES) / MAX_NINES
    }

    fn y(&self, v: f64) -> f64 {
        let (lo, hi) = (self.lo_decade, self.hi_decade);
        TOP + PLOT_H * (1.0 - (v.max(1.0).log10() - lo) / (hi - lo))
    }
}

/// The opening tag, the background and the title.
fn head(out: &mut String, title: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        LEFT + PLOT_W / 2.0,
        escape(title)
    );
}

/// A vertical line and label at 0%, 90%, 99%, ... 99.9999%.
fn percentile_grid(out: &mut String) {
    for n in 0..=MAX_NINES as u32 {
        let px = LEFT + PLOT_W * n as f64 / MAX_NINES;
        let label = match n {
            0 => "0%".to_owned(),
            n => format!(
                "{:.*}%",
                n.saturating_sub(2) as usize,
                100.0 - 100.0 / 10f64.powi(n as i32)
            ),
        };
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + PLOT_H,
            TOP + PLOT_H + 18.0
        );
    }
}

/// A horizontal line and label at each decade of latency, then both axes'
/// titles.
fn latency_grid(out: &mut String, axes: &Axes) {
    let mut d = axes.lo_decade;
    while d <= axes.hi_decade {
        let py = axes.y(10f64.powf(d));
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + PLOT_W,
            LEFT - 6.0,
            py + 4.0,
            micros(10f64.powf(d))
        );
        d += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">latency</text>"#,
        LEFT + PLOT_W / 2.0,
        HEIGHT - 10.0,
        TOP + PLOT_H / 2.0
    );
}

/// The `i`th series' line, and its entry in the legend on the right.
fn line_and_legend(out: &mut String, axes: &Axes, i: usize, s: &Series) {
    let colour = COLOURS[i % COLOURS.len()];
    let path: Vec<String> = s
        .points
        .iter()
        .map(|&(q, v)| format!("{:.1},{:.1}", axes.x(q), axes.y(v)))
        .collect();
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
        path.join(" ")
    );
    let ly = TOP + 10.0 + 18.0 * i as f64;
    let lx = LEFT + PLOT_W + 12.0;
    let _ = writeln!(
        out,
        r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        lx + 18.0,
        lx + 24.0,
        ly + 4.0,
        escape(&s.label)
    );
}

/// log10(1/(1−q)): 1 at 90%, 2 at 99%, ...; the 100% point is drawn at the
/// right edge.
fn nines(q: f64) -> f64 {
    if q >= 1.0 {
        MAX_NINES
    } else {
        (1.0 / (1.0 - q)).log10()
    }
}

fn micros(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{} s", v / 1e6),
        v if v >= 1e3 => format!("{} ms", v / 1e3),
        v => format!("{v} µs"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlay_has_one_line_and_one_legend_entry_per_run() {
        let a = Series {
            label: "a <1>".into(),
            points: vec![(0.0, 10.0), (0.9, 20.0), (0.999, 400.0), (1.0, 5000.0)],
        };
        let b = Series {
            label: "b".into(),
            points: vec![(0.0, 100.0), (1.0, 200.0)],
        };
        let text = svg("t", &[a, b]);
        assert!(text.starts_with("<svg"));
        assert!(text.trim_end().ends_with("</svg>"));
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("a &lt;1&gt;"));
        assert!(text.contains("99.9%"));
    }
}
