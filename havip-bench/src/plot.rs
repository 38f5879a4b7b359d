//! A small hand-written SVG: median throughput with min–max whiskers for
//! limit/havip/kernel, for the VIP hit against HAVIP count, and for VXLAN
//! (encapsulation and decapsulation). One y axis for all panels, so bars
//! compare across them. A part without figures
//! leaves its panel empty but for why (failed or skipped).

use std::{fmt::Write, fs, path::Path};

use anyhow::{Context, Result};

use crate::{
    report::{Part, Results},
    stats::Spread,
};

const W: f64 = 1300.0;
const H: f64 = 380.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 320.0;
const PATH_COLORS: [&str; 3] = ["#4e79a7", "#f28e2b", "#59a14f"];
/// VXLAN panel: limit, havip, kernel (encap), then limit, havip (decap).
const VXLAN_COLORS: [&str; 5] = ["#4e79a7", "#f28e2b", "#59a14f", "#4e79a7", "#f28e2b"];
/// Scale panel: one hot VIP, traffic spread over all.
const SCALE_COLORS: [&str; 2] = ["#f28e2b", "#e15759"];

/// Bars of one panel, or why it has none.
type Bars = Result<Vec<(String, Spread)>, String>;

fn panel(svg: &mut String, (x0, width): (f64, f64), title: &str, bars: &Bars, colors: &[&str], ymax: f64) {
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * v / ymax;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="30" font-size="15" text-anchor="middle">{title}</text>"#,
        x0 + width / 2.0
    );
    let step = if ymax > 10.0 { 2.0 } else { 1.0 };
    let mut t = 0.0;
    while t <= ymax {
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{yy}" x2="{x2}" y2="{yy}" stroke="#ddd"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{t}</text>"##,
            yy = y(t),
            x2 = x0 + width,
            tx = x0 - 5.0,
            ty = y(t) + 4.0
        );
        t += step;
    }
    // Axes over the grid.
    let _ =
        writeln!(svg, r#"<line x1="{x0}" y1="{BOTTOM}" x2="{}" y2="{BOTTOM}" stroke="black"/>"#, x0 + width);
    let _ = writeln!(svg, r#"<line x1="{x0}" y1="{TOP}" x2="{x0}" y2="{BOTTOM}" stroke="black"/>"#);
    let bars = match bars {
        Ok(bars) => bars,
        Err(why) => {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#c00">{}</text>"##,
                x0 + width / 2.0,
                (TOP + BOTTOM) / 2.0,
                escape(why)
            );
            return;
        }
    };
    let slot = width / bars.len() as f64;
    for (i, (label, s)) in bars.iter().enumerate() {
        let cx = x0 + slot * (i as f64 + 0.5);
        let bw = slot * 0.55;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="{bw}" height="{}" fill="{}"/>"#,
            cx - bw / 2.0,
            y(s.median),
            BOTTOM - y(s.median),
            colors[i % colors.len()]
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{cx}" y1="{}" x2="{cx}" y2="{}" stroke="black"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
            y(s.min),
            y(s.max),
            cx - 6.0,
            y(s.min),
            cx + 6.0,
            y(s.min),
            cx - 6.0,
            y(s.max),
            cx + 6.0,
            y(s.max)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{cx}" y="{}" font-size="11" text-anchor="middle">{:.2}</text><text x="{cx}" y="{}" font-size="10" text-anchor="middle">{label}</text>"#,
            y(s.max) - 6.0,
            s.median,
            BOTTOM + 18.0
        );
    }
}

/// `text` fit for SVG character data (error messages quote paths and the like).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes the plot of whatever of throughput, the scale curve and VXLAN was measured.
pub fn write(path: &Path, r: &Results) -> Result<()> {
    // Real traffic first (the headline), then one core: limit / havip / kernel each.
    let real =
        r.real_traffic.as_ref().map(|t| t.throughput.iter().map(|p| (format!("{} 2c", p.name), p.value)));
    let one =
        r.throughput.as_ref().map(|t| t.mpps.iter().take(3).map(|p| (format!("{} 1c", p.name), p.value)));
    let paths: Bars = match (real, one) {
        (None, None) => Err(r.unmeasured(Part::Throughput.title())),
        (real, one) => Ok(real.into_iter().flatten().chain(one.into_iter().flatten()).collect()),
    };
    let scale: Bars = match &r.scale {
        Some(scale) => Ok(scale
            .iter()
            .flat_map(|p| {
                let n = if p.havips >= 1000 { format!("{}k", p.havips / 1000) } else { p.havips.to_string() };
                [(format!("{n} hot"), p.hot_mpps), (format!("{n} spread"), p.spread_mpps)]
            })
            .collect()),
        None => Err(r.unmeasured(Part::Scale.title())),
    };
    let vxlan: Bars = match &r.encap {
        Some(e) => {
            let short = ["limit enc", "havip enc", "kernel vxlan", "limit dec", "havip dec"];
            Ok(e.encap_mpps
                .iter()
                .chain(&e.decap_mpps)
                .zip(short)
                .map(|(p, s)| (s.to_owned(), p.value))
                .collect())
        }
        None => Err(r.unmeasured(Part::Encap.title())),
    };
    let ymax =
        [&paths, &scale, &vxlan].into_iter().flatten().flatten().map(|(_, s)| s.max).fold(1.0, f64::max)
            * 1.12;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif"><rect width="{W}" height="{H}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{}" font-size="12" transform="rotate(-90 14 {})" text-anchor="middle">Mpps (median, min–max)</text>"#,
        (TOP + BOTTOM) / 2.0,
        (TOP + BOTTOM) / 2.0
    );
    panel(
        &mut svg,
        (60.0, 330.0),
        "limit / havip / kernel: real traffic (2c), one core (1c)",
        &paths,
        &PATH_COLORS,
        ymax,
    );
    panel(
        &mut svg,
        (450.0, 450.0),
        "havip VIP hit vs HAVIPs: one hot VIP / spread over all",
        &scale,
        &SCALE_COLORS,
        ymax,
    );
    panel(
        &mut svg,
        (940.0, 340.0),
        "VXLAN, one core: encapsulate / decapsulate",
        &vxlan,
        &VXLAN_COLORS,
        ymax,
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{} × {}, kernel {}, {} rounds</text></svg>"#,
        W / 2.0,
        H - 12.0,
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.kernel,
        r.settings.rounds
    );
    fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
}
