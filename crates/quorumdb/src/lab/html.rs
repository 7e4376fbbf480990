//! `report.html`: the report as one self-contained page. Charts are inline SVG drawn here (no
//! scripts, no external assets), so the file opens anywhere, offline, and can be attached to
//! an incident review as is.
//!
//! Charts: latency over time (p50 and p99 of successful operations per time bin, log scale,
//! fault windows shaded, failed or unknown operations per bin in a strip below), stale-read
//! fraction per setting and phase, the t-visibility curve per setting (stale fraction by time
//! since the write's acknowledgement), and for lineage runs the updates lost per phase.

use quorumdb_lab::report::{LabReport, PhaseReport};
use quorumdb_lab::{History, OpResult};
use std::fmt::Write;

/// Chart width in SVG user units (px); tables below use the same width.
const WIDTH: f64 = 960.0;
/// Left margin for the y-axis labels.
const MARGIN_LEFT: f64 = 56.0;
const MARGIN_RIGHT: f64 = 16.0;
/// Fewest and most time bins of the latency chart: enough resolution to see a fault's edges,
/// few enough that every bin of a default run holds dozens of operations.
const TIME_BINS_MAX: usize = 300;
const TIME_BIN_S_MIN: f64 = 0.25;
/// Series colours (colour-blind-safe Okabe–Ito palette).
const COLORS: [&str; 8] =
    ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#000000"];

/// The head of a special scenario's page (log, sink, coordination): the title, its one-line
/// description, the seed and the replay command; the caller closes `</body></html>`.
pub(crate) fn page_head(scenario: &str, description: &str, seed: u64, command: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#eee}}.bad{{color:#b00;font-weight:bold}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body><h1>{0}</h1><p>{1}</p><p>seed {2}; replay: <code>{3}</code></p>",
        esc(scenario),
        esc(description),
        seed,
        esc(command)
    )
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn color(i: usize) -> &'static str {
    COLORS[i % COLORS.len()]
}

/// Five horizontal gridlines from 0 to `vmax`, labelled by `label`: the y axis of the bar and
/// t-visibility charts, drawn by one function so the two axes look alike.
fn y_grid(s: &mut String, vmax: f64, y: impl Fn(f64) -> f64, label: impl Fn(f64) -> String) {
    for i in 0..=4 {
        let v = vmax * i as f64 / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{MARGIN_LEFT}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/><text x="{2}" y="{3:.1}" font-size="10" text-anchor="end">{4}</text>"##,
            WIDTH - MARGIN_RIGHT,
            y(v),
            MARGIN_LEFT - 4.0,
            y(v) + 3.0,
            label(v)
        );
    }
}

/// Legend entry `si` (a colour swatch and `name`) in the row at `row_y` below a chart: the
/// legend of the bar and t-visibility charts, one function so both lay out entries alike.
fn legend_entry(s: &mut String, si: usize, name: &str, row_y: f64) {
    let lx = MARGIN_LEFT + 130.0 * si as f64;
    let _ = write!(
        s,
        r#"<rect x="{lx}" y="{0}" width="10" height="10" fill="{1}"/><text x="{2}" y="{3}" font-size="11">{4}</text>"#,
        row_y,
        color(si),
        lx + 14.0,
        row_y + 9.0,
        esc(name)
    );
}

/// The latency-over-time chart.
fn latency_chart(r: &LabReport, history: &History) -> String {
    let ops = &history.ops;
    let end_s = r
        .timeline
        .iter()
        .map(|w| w.end_s)
        .chain(ops.iter().map(|o| o.complete_ns as f64 / 1e9))
        .fold(1.0_f64, f64::max);
    let bin_s = (end_s / TIME_BINS_MAX as f64).max(TIME_BIN_S_MIN);
    let bins = (end_s / bin_s).ceil() as usize + 1;
    let mut ok: Vec<Vec<f64>> = vec![Vec::new(); bins];
    let mut bad = vec![0u64; bins];
    for op in ops {
        let b = ((op.invoke_ns as f64 / 1e9) / bin_s) as usize;
        let Some(slot) = ok.get_mut(b) else { continue };
        if op.result == OpResult::Ok {
            slot.push((op.complete_ns - op.invoke_ns) as f64 / 1e6);
        } else if let Some(n) = bad.get_mut(b) {
            *n += 1;
        }
    }
    let pick = |v: &mut Vec<f64>, q: f64| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v.get(rank - 1).copied()
    };
    let mut p50 = Vec::with_capacity(bins);
    let mut p99 = Vec::with_capacity(bins);
    for v in &mut ok {
        p50.push(pick(v, 0.5));
        p99.push(pick(v, 0.99));
    }
    let max_ms = p99.iter().flatten().fold(1.0_f64, |a, &b| a.max(b));
    let min_ms = p50.iter().flatten().fold(max_ms, |a, &b| a.min(b)).max(0.01);
    let (lo, hi) = (min_ms.log10().floor(), max_ms.log10().ceil().max(min_ms.log10().floor() + 1.0));
    let (top, plot_h, strip_h) = (24.0, 220.0, 50.0);
    let height = top + plot_h + 16.0 + strip_h + 28.0;
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let x = |s: f64| MARGIN_LEFT + plot_w * (s / end_s).clamp(0.0, 1.0);
    let y = |ms: f64| top + plot_h * (1.0 - ((ms.max(1e-3).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = write!(s, r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"#);
    for f in &r.fault_windows {
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{plot_h}" fill="#D55E00" fill-opacity="0.13"><title>{}</title></rect>"##,
            x(f.start_s),
            (x(f.end_s) - x(f.start_s)).max(1.0),
            esc(&f.label)
        );
    }
    // Phase boundaries, labelled with the phase; settings that run one after another are named
    // above their first phase.
    let mut seen_starts: Vec<f64> = Vec::new();
    let mut seen_settings: Vec<&str> = Vec::new();
    let sequential = r.timeline.windows(2).all(|w| w[0].start_s != w[1].start_s);
    for w in &r.timeline {
        if seen_starts.iter().any(|&t| (t - w.start_s).abs() < 1e-9) {
            continue;
        }
        seen_starts.push(w.start_s);
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}" stroke="#999" stroke-dasharray="2,3"/><text x="{2:.1}" y="{3}" font-size="10" fill="#555">{4}</text>"##,
            x(w.start_s),
            top + plot_h,
            x(w.start_s) + 3.0,
            top + plot_h - 4.0,
            esc(&w.phase)
        );
        if sequential && !seen_settings.contains(&w.setting.as_str()) {
            seen_settings.push(&w.setting);
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" font-size="12" font-weight="bold">{}</text>"#,
                x(w.start_s) + 3.0,
                top - 8.0,
                esc(&w.setting)
            );
        }
    }
    // y axis: decades.
    let mut d = lo;
    while d <= hi + 1e-9 {
        let ms = 10f64.powf(d);
        let label = if ms < 1.0 { format!("{ms}") } else { format!("{ms:.0}") };
        let _ = write!(
            s,
            r##"<line x1="{MARGIN_LEFT}" x2="{0:.1}" y1="{1:.1}" y2="{1:.1}" stroke="#eee"/><text x="{2}" y="{3:.1}" font-size="10" text-anchor="end">{label} ms</text>"##,
            WIDTH - MARGIN_RIGHT,
            y(ms),
            MARGIN_LEFT - 4.0,
            y(ms) + 3.0
        );
        d += 1.0;
    }
    for (series, name, c) in [(&p50, "p50", color(0)), (&p99, "p99", color(1))] {
        let mut path = String::new();
        let mut pen_down = false;
        for (b, v) in series.iter().enumerate() {
            match v {
                Some(ms) => {
                    let _ = write!(
                        path,
                        "{}{:.1},{:.1} ",
                        if pen_down { "L" } else { "M" },
                        x((b as f64 + 0.5) * bin_s),
                        y(*ms)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        let _ = write!(
            s,
            r#"<path d="{path}" fill="none" stroke="{c}" stroke-width="1.3"><title>{name}</title></path>"#
        );
    }
    let legend_y = top + 12.0;
    let _ = write!(
        s,
        r##"<rect x="{0}" y="{1}" width="10" height="3" fill="{2}"/><text x="{3}" y="{4}" font-size="11">p50</text><rect x="{5}" y="{1}" width="10" height="3" fill="{6}"/><text x="{7}" y="{4}" font-size="11">p99 (ok ops per {8:.2} s bin)</text><rect x="{9}" y="{10}" width="10" height="8" fill="#D55E00" fill-opacity="0.25"/><text x="{11}" y="{4}" font-size="11">fault in force</text>"##,
        WIDTH - 330.0,
        legend_y - 4.0,
        color(0),
        WIDTH - 316.0,
        legend_y,
        WIDTH - 280.0,
        color(1),
        WIDTH - 266.0,
        bin_s,
        WIDTH - 110.0,
        legend_y - 8.0,
        WIDTH - 96.0
    );
    // Strip: failed or unknown operations per bin.
    let strip_top = top + plot_h + 16.0;
    let _ = write!(
        s,
        r##"<text x="{MARGIN_LEFT}" y="{:.1}" font-size="10" fill="#555">not ok per bin</text>"##,
        strip_top - 2.0
    );
    let bad_max = bad.iter().copied().max().unwrap_or(0).max(1);
    for (b, &n) in bad.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let h = strip_h * n as f64 / bad_max as f64;
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#D55E00"><title>{n} failed or unknown</title></rect>"##,
            x(b as f64 * bin_s),
            strip_top + strip_h - h,
            (x(bin_s) - x(0.0)).max(1.0)
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{MARGIN_LEFT}" x2="{0}" y1="{1}" y2="{1}" stroke="#999"/><text x="{2}" y="{3}" font-size="10" text-anchor="end">{bad_max}</text><text x="{2}" y="{1}" font-size="10" text-anchor="end">0</text>"##,
        WIDTH - MARGIN_RIGHT,
        strip_top + strip_h,
        MARGIN_LEFT - 4.0,
        strip_top + 8.0
    );
    // Time axis.
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0]
        .into_iter()
        .find(|st| end_s / st <= 16.0)
        .unwrap_or(1200.0);
    let mut t = 0.0;
    while t <= end_s {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{t:.0}s</text>"#,
            x(t),
            strip_top + strip_h + 14.0
        );
        t += step;
    }
    s.push_str("</svg>");
    s
}

/// A grouped bar chart: one group per category, one bar per series.
fn bar_chart(
    categories: &[String],
    series: &[String],
    value: impl Fn(usize, usize) -> Option<f64>,
    unit: &str,
    percent: bool,
) -> String {
    let (top, plot_h, bottom) = (28.0, 180.0, 40.0);
    let height = top + plot_h + bottom;
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let vmax = (0..categories.len())
        .flat_map(|c| (0..series.len()).map(move |s| (c, s)))
        .filter_map(|(c, s)| value(c, s))
        .fold(0.0_f64, f64::max);
    let vmax = if vmax <= 0.0 {
        if percent {
            0.01
        } else {
            1.0
        }
    } else {
        vmax * 1.15
    };
    let y = |v: f64| top + plot_h * (1.0 - v / vmax);
    let fmt = |v: f64| if percent { format!("{:.2}%", v * 100.0) } else { format!("{v:.0}") };
    let mut s = String::new();
    let _ = write!(s, r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"#);
    y_grid(&mut s, vmax, y, fmt);
    let group_w = plot_w / categories.len().max(1) as f64;
    let bar_w = (group_w * 0.8 / series.len().max(1) as f64).min(60.0);
    for (c, cat) in categories.iter().enumerate() {
        let gx = MARGIN_LEFT + group_w * c as f64 + (group_w - bar_w * series.len() as f64) / 2.0;
        for (si, name) in series.iter().enumerate() {
            let Some(v) = value(c, si) else { continue };
            let bx = gx + bar_w * si as f64;
            let _ = write!(
                s,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                y(v),
                bar_w - 2.0,
                (top + plot_h - y(v)).max(0.0),
                color(si),
                esc(cat),
                esc(name),
                fmt(v),
                bx + bar_w / 2.0 - 1.0,
                y(v) - 3.0,
                fmt(v)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            MARGIN_LEFT + group_w * (c as f64 + 0.5),
            top + plot_h + 16.0,
            esc(cat)
        );
    }
    for (si, name) in series.iter().enumerate() {
        legend_entry(&mut s, si, name, top + plot_h + 26.0);
    }
    let _ = write!(s, r##"<text x="{MARGIN_LEFT}" y="14" font-size="11" fill="#555">{}</text>"##, esc(unit));
    s.push_str("</svg>");
    s
}

/// The t-visibility curves: stale fraction per Δt bucket, one line per setting.
fn t_visibility_chart(r: &LabReport) -> String {
    let Some(buckets) = r.settings.iter().map(|s| &s.t_visibility).find(|b| !b.is_empty()) else {
        return "<p>No read had an acknowledged write before it.</p>".into();
    };
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| match b.to_ms {
            Some(to) => format!("{}–{to}", b.from_ms),
            None => format!("≥{}", b.from_ms),
        })
        .collect();
    let (top, plot_h, bottom) = (20.0, 200.0, 56.0);
    let height = top + plot_h + bottom;
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let vmax = r
        .settings
        .iter()
        .flat_map(|s| s.t_visibility.iter().filter(|b| b.reads > 0).map(|b| b.stale_fraction))
        .fold(0.0_f64, f64::max);
    let vmax = if vmax <= 0.0 { 0.01 } else { (vmax * 1.15).min(1.0) };
    let x = |i: usize| MARGIN_LEFT + plot_w * (i as f64 + 0.5) / labels.len() as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / vmax);
    let mut s = String::new();
    let _ = write!(s, r#"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"#);
    y_grid(&mut s, vmax, y, |v| format!("{:.2}%", v * 100.0));
    for (i, l) in labels.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
            x(i),
            top + plot_h + 14.0,
            esc(l)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">ms between the write's acknowledgement and the read's start</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        top + plot_h + 30.0
    );
    for (si, setting) in r.settings.iter().enumerate() {
        let mut path = String::new();
        let mut dots = String::new();
        for (i, b) in setting.t_visibility.iter().enumerate().filter(|(_, b)| b.reads > 0) {
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if path.is_empty() { "M" } else { "L" },
                x(i),
                y(b.stale_fraction)
            );
            let _ = write!(
                dots,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {} of {} reads stale</title></circle>"#,
                x(i),
                y(b.stale_fraction),
                color(si),
                esc(&setting.name),
                b.stale,
                b.reads
            );
        }
        let _ =
            write!(s, r#"<path d="{path}" fill="none" stroke="{}" stroke-width="1.5"/>{dots}"#, color(si));
        legend_entry(&mut s, si, &setting.name, top + plot_h + 40.0);
    }
    s.push_str("</svg>");
    s
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|v| format!("{v:.digits$}")).unwrap_or_else(|| "–".into())
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

fn phase_row(s: &mut String, setting: &str, p: &PhaseReport) {
    let _ = write!(
        s,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(setting),
        esc(&p.name),
        p.ops,
        p.ok,
        p.failed,
        p.unknown,
        pct(p.read_availability),
        pct(p.write_availability),
        cell(p.p50_ms, 2),
        cell(p.p99_ms, 1),
        p.stale_reads,
        p.reads_checked,
        p.lost_writes,
        p.updates_lost.map(|u| u.to_string()).unwrap_or_else(|| "–".into()),
    );
}

/// Each fault window against the baseline phase: what the clients lost while it lasted.
fn fault_impact_table(s: &mut String, r: &LabReport) {
    let fi = &r.fault_impact;
    let _ = write!(
        s,
        "<h2>Fault windows</h2><p>Operations invoked while each fault was in force{}. Latency percentiles and max are of successful operations; <i>longest wait</i> includes failed and unknown ones. <i>Duplicate siblings</i>: items a read returned with two siblings of one value (every written value is unique, so each is one write applied twice); {} such items in the whole run.</p>",
        fi.baseline_phase
            .as_deref()
            .map(|b| format!(", with throughput (successful operations per second) relative to phase <b>{}</b>", esc(b)))
            .unwrap_or_default(),
        r.duplicate_siblings.items
    );
    s.push_str("<table><tr><th>window</th><th>kind</th><th>s</th><th>ops</th><th>ok</th><th>fail</th><th>unknown</th><th>ok/s</th><th>throughput</th><th>reads</th><th>writes</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th><th>longest wait ms</th><th>duplicate siblings</th></tr>");
    for w in fi.baseline.iter().chain(&fi.windows) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&w.label),
            w.kind.map(|k| k.name()).unwrap_or("baseline"),
            w.end_s - w.start_s,
            w.ops,
            w.ok,
            w.failed,
            w.unknown,
            w.ok_per_s,
            pct(w.throughput_relative),
            pct(w.read_throughput_relative),
            pct(w.write_throughput_relative),
            cell(w.p50_ms, 2),
            cell(w.p99_ms, 1),
            cell(w.max_ms, 0),
            cell(w.wait_max_ms, 0),
            if w.duplicate_siblings == 0 { "ok" } else { "bad" },
            w.duplicate_siblings
        );
    }
    s.push_str("</table>");
}

/// The whole page.
pub fn render(r: &LabReport, history: &History) -> String {
    let mut s = String::new();
    let violated = r.violations > 0;
    let _ = write!(
        s,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>QuorumDB lab: {name} seed {seed}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:{WIDTH}px;margin:1.5em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px;margin:.5em 0}}td,th{{border:1px solid #ddd;padding:3px 7px;text-align:right}}
td:first-child,td:nth-child(2),th{{text-align:left}}.ok{{color:#087f23}}.bad{{color:#b00020;font-weight:bold}}
pre{{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}}h2{{margin-top:1.6em}}svg{{display:block}}</style></head><body>
<h1>{name} <small>seed {seed}</small></h1>
<p class="{cls}">{verdict}</p>
<p>Replay the workload choices: <code>{cmd}</code><br>{ops} operations, {phase_s} s per phase, {wall:.0} s wall time.</p>"#,
        name = esc(&r.scenario),
        seed = r.seed,
        cls = if violated { "bad" } else { "ok" },
        verdict = if violated {
            format!("{} guarantee(s) the README claims were VIOLATED", r.violations)
        } else {
            "Every guarantee the README claims held in this run.".into()
        },
        cmd = esc(&r.command),
        ops = r.ops,
        phase_s = r.phase_s,
        wall = r.wall_s,
    );
    for n in &r.notes {
        let _ = write!(s, "<p>{}</p>", esc(n));
    }

    s.push_str("<h2>Latency over time</h2><p>Successful operations only; shaded: a fault in force. The strip below counts operations that failed or ended unknown (503, 504, timeouts).</p>");
    s.push_str(&latency_chart(r, history));

    s.push_str("<h2>Per setting and phase</h2><table><tr><th>setting</th><th>phase</th><th>ops</th><th>ok</th><th>fail</th><th>unknown</th><th>read avail.</th><th>write avail.</th><th>p50 ms</th><th>p99 ms</th><th>stale reads</th><th>reads judged</th><th>lost writes</th><th>updates lost</th></tr>");
    for setting in &r.settings {
        for p in &setting.phases {
            phase_row(&mut s, &setting.name, p);
        }
    }
    s.push_str("</table>");

    if !r.fault_impact.windows.is_empty() {
        fault_impact_table(&mut s, r);
    }

    let names: Vec<String> = r.settings.iter().map(|x| x.name.clone()).collect();
    let phases: Vec<String> =
        r.settings.first().map(|x| x.phases.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
    s.push_str("<h2>Stale reads</h2><p>Fraction of reads that missed the latest write acknowledged before they started (reads with such a write only).</p>");
    s.push_str(&bar_chart(
        &names,
        &phases,
        |c, p| {
            r.settings
                .get(c)
                .and_then(|x| x.phases.get(p))
                .filter(|p| p.reads_checked > 0)
                .map(|p| p.stale_fraction)
        },
        "stale fraction",
        true,
    ));
    s.push_str("<h2>t-visibility</h2><p>Stale fraction by the time between the write's acknowledgement and the read's invocation (PBS), all phases of each setting.</p>");
    s.push_str(&t_visibility_chart(r));
    if r.settings.iter().any(|x| x.updates_lost.is_some()) {
        s.push_str("<h2>Acknowledged updates lost</h2><p>Acknowledged writes that no value in the final state builds on (value lineage), by the phase that wrote them.</p>");
        s.push_str(&bar_chart(
            &phases,
            &names,
            |p, c| {
                r.settings.get(c).and_then(|x| x.phases.get(p)).and_then(|p| p.updates_lost.map(|u| u as f64))
            },
            "updates lost",
            false,
        ));
    }

    s.push_str("<h2>Guarantees the README claims</h2><table><tr><th>claim</th><th>setting</th><th>result</th><th>observed</th></tr>");
    for g in &r.guarantees {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td class="{}">{}</td><td style="text-align:left">{}</td></tr>"#,
            esc(&g.readme),
            esc(g.setting.as_deref().unwrap_or("all")),
            if g.held { "ok" } else { "bad" },
            if g.held { "held" } else { "VIOLATED" },
            esc(&g.observed)
        );
    }
    s.push_str("</table><h2>Measurements</h2><p>Numbers the README promises nothing about: never a failure.</p><table><tr><th>setting</th><th>what</th><th>observed</th></tr>");
    for m in &r.measurements {
        let _ = write!(
            s,
            r#"<tr><td>{}</td><td>{}</td><td style="text-align:left">{}</td></tr>"#,
            esc(&m.setting),
            esc(&m.what),
            esc(&m.observed)
        );
    }
    s.push_str("</table><h2>Linearizability</h2>");
    for setting in &r.settings {
        let lin = &setting.linearizability;
        let _ = write!(
            s,
            "<p><b>{}</b>: {} ({} keys, {} not linearizable, {} undecided){}</p>",
            esc(&setting.name),
            esc(&lin.verdict),
            lin.keys_checked,
            lin.keys_not_linearizable,
            lin.keys_unknown,
            lin.explanation
                .as_ref()
                .map(|e| format!(" — {}: {}", esc(lin.key.as_deref().unwrap_or("?")), esc(e)))
                .unwrap_or_default()
        );
        if let Some(c) = &lin.counterexample {
            let json = serde_json::to_string_pretty(c).unwrap_or_default();
            let _ =
                write!(s, "<details><summary>counterexample</summary><pre>{}</pre></details>", esc(&json));
        }
    }
    let _ = write!(
        s,
        "<h2>Convergence</h2><p>After healing, one anti-entropy pass on every node moved {} keys; {} of {} keys still differed between replicas before the final read.</p>",
        r.convergence.repair_keys_moved, r.convergence.diverged, r.convergence.keys
    );
    for e in &r.convergence.diverged_examples {
        let _ = write!(s, "<pre>{}</pre>", esc(e));
    }
    let _ = write!(
        s,
        "<h2>Cluster</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(&r.cluster).unwrap_or_default())
    );
    s
}
