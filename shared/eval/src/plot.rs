//! Small SVG scatter plots (no plotting dependency): one point per labelled series member, series
//! joined by lines in the order given (a knob sweep draws its curve).

use std::fmt::Write;

/// One series: a name and its points `(x, y, label)`, with optional 95 % intervals per point
/// (`[x_lo, x_hi, y_lo, y_hi]`, drawn as error bars; empty: none).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64, String)>,
    pub errors: Vec<Option<[f64; 4]>>,
}

const W: f64 = 640.0;
const H: f64 = 420.0;
const M: f64 = 80.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A scatter plot of `series` with axis titles and a title; axes span the data with 5 % margins.
pub fn scatter(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let frame = Frame::fit(series);
    let mut s = String::new();
    // The legend sits under the plot, one line per series.
    let height = H + 16.0 * series.len() as f64 + 8.0;
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    frame.axes(&mut s, x_label, y_label);
    for (i, ser) in series.iter().enumerate() {
        frame.series(&mut s, i, ser);
    }
    s.push_str("</svg>\n");
    s
}

/// The data's ranges on both axes, and where a value lands in the picture.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    /// Ranges that hold every finite point and error bar's end, with 5 % margins.
    fn fit(series: &[Series]) -> Frame {
        let bar_ends = series.iter().flat_map(|s| {
            s.errors
                .iter()
                .flatten()
                .flat_map(|e| [(e[0], e[2]), (e[1], e[3])])
        });
        let pts: Vec<(f64, f64)> = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| (p.0, p.1)))
            .chain(bar_ends)
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let span = |v: Vec<f64>| {
            let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if !lo.is_finite() {
                return (0.0, 1.0);
            }
            let pad = ((hi - lo) * 0.05).max(1e-9);
            (lo - pad, hi + pad)
        };
        Frame {
            x: span(pts.iter().map(|p| p.0).collect()),
            y: span(pts.iter().map(|p| p.1).collect()),
        }
    }

    fn sx(&self, x: f64) -> f64 {
        M + (x - self.x.0) / (self.x.1 - self.x.0) * (W - 2.0 * M)
    }

    fn sy(&self, y: f64) -> f64 {
        H - M - (y - self.y.0) / (self.y.1 - self.y.0) * (H - 2.0 * M)
    }

    /// Both axes with 5 ticks each, and their titles.
    fn axes(&self, s: &mut String, x_label: &str, y_label: &str) {
        let ((x0, x1), (y0, y1)) = (self.x, self.y);
        let _ = write!(
            s,
            r##"<line x1="{M}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{M}" y1="{M}" x2="{M}" y2="{}" stroke="#333"/>"##,
            H - M,
            W - M,
            H - M,
            H - M
        );
        for i in 0..=4 {
            let f = i as f64 / 4.0;
            let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}</text><text x="{}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
                self.sx(xv),
                H - M + 16.0,
                tick(xv, (x1 - x0) / 4.0),
                M - 6.0,
                self.sy(yv) + 4.0,
                tick(yv, (y1 - y0) / 4.0)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            W / 2.0,
            H - 14.0,
            esc(x_label),
            H / 2.0,
            esc(y_label)
        );
    }

    /// Series `i`: its line, error bars, points with their labels, and its legend entry.
    fn series(&self, s: &mut String, i: usize, ser: &Series) {
        let c = COLOURS[i % COLOURS.len()];
        // Every other series is drawn as rings on a dashed line, so curves that coincide (e.g. two
        // methods making the same decisions) both stay visible.
        let (marker, dash) = if i % 2 == 1 {
            (
                format!(r#"r="6" fill="none" stroke="{c}" stroke-width="2""#),
                r#" stroke-dasharray="5 3""#,
            )
        } else {
            (format!(r#"r="4" fill="{c}""#), "")
        };
        let finite: Vec<&(f64, f64, String)> = ser
            .points
            .iter()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        if finite.len() > 1 {
            let path: Vec<String> = finite
                .iter()
                .map(|p| format!("{:.1},{:.1}", self.sx(p.0), self.sy(p.1)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="1.5"{dash}/>"#,
                path.join(" ")
            );
        }
        for e in ser.errors.iter().flatten() {
            self.error_bars(s, c, e);
        }
        // A dense curve marks only its labelled points.
        let dense = finite.len() > 40;
        for p in finite.iter().filter(|p| !dense || !p.2.is_empty()) {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" {marker}><title>{}</title></circle><text x="{:.1}" y="{:.1}" fill="{c}">{}</text>"#,
                self.sx(p.0),
                self.sy(p.1),
                esc(&format!("{} {}: ({:.4}, {:.4})", ser.name, p.2, p.0, p.1)),
                self.sx(p.0) + 6.0,
                self.sy(p.1) - 6.0,
                esc(&p.2)
            );
        }
        let _ = write!(
            s,
            r#"<rect x="{M}" y="{}" width="10" height="10" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            H + 16.0 * i as f64,
            M + 15.0,
            H + 9.0 + 16.0 * i as f64,
            esc(&ser.name)
        );
    }

    /// A point's 95 % intervals `[x_lo, x_hi, y_lo, y_hi]` as a cross in colour `c` (none if any
    /// end is not finite).
    fn error_bars(&self, s: &mut String, c: &str, e: &[f64; 4]) {
        if e.iter().all(|v| v.is_finite()) {
            let (xm, ym) = ((e[0] + e[1]) / 2.0, (e[2] + e[3]) / 2.0);
            let _ = write!(
                s,
                r#"<path d="M{:.1} {:.1}H{:.1}M{:.1} {:.1}V{:.1}" stroke="{c}" stroke-opacity="0.45"/>"#,
                self.sx(e[0]),
                self.sy(ym),
                self.sx(e[1]),
                self.sx(xm),
                self.sy(e[2]),
                self.sy(e[3])
            );
        }
    }
}

/// A tick label with enough decimals to tell ticks `step` apart.
fn tick(v: f64, step: f64) -> String {
    let decimals = (-step.abs().max(1e-12).log10()).ceil().max(0.0) as usize + 1;
    format!("{v:.decimals$}", decimals = decimals.min(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_is_svg_with_every_point_and_escapes_text() {
        let svg = scatter(
            "quality <vs> energy",
            "energy / token (J)",
            "BERTScore F1",
            &[
                Series {
                    name: "u-hlm".into(),
                    points: vec![(0.4, 0.9, "0.07".into()), (0.3, 0.85, "0.2".into())],
                    errors: vec![Some([0.38, 0.42, 0.8, 0.95]), None],
                },
                Series {
                    name: "ours".into(),
                    points: vec![(0.35, 0.92, "λ=2".into()), (f64::NAN, 1.0, "bad".into())],
                    ..Default::default()
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<circle").count(),
            3,
            "the non-finite point is left out"
        );
        assert!(svg.contains("quality &lt;vs&gt; energy"));
        assert!(svg.contains("<polyline"));
        assert_eq!(svg.matches("stroke-opacity").count(), 1, "one error bar");
        // Points stay inside the canvas.
        for c in svg.split("cx=\"").skip(1) {
            let x: f64 = c.split('"').next().unwrap().parse().unwrap();
            assert!((0.0..=W).contains(&x));
        }
    }
}
