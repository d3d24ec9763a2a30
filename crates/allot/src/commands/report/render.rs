//! A report rendered as text, JSON, SVG charts (usage over time with the soft
//! and hard limits and the actions marked) or an HTML page.

use super::gather::{AgentReport, CAPS, ResourceReport, build};
use super::{Range, ReadError, resource};
use crate::output::table;
use allot_core::quantity::format_approx;
use allot_store::Store;
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One chart: usage over time, the soft and hard limits, the actions marked.
fn svg(agent: &str, r: &ResourceReport) -> String {
    let (w, h, l, rt, top, bot) = (760.0, 240.0, 70.0, 20.0, 30.0, 30.0);
    let res = resource(&r.resource);
    let t0 = r.series.first().map_or(0, |s| s.0).min(r.actions.first().map_or(u64::MAX, |a| a.at_ms));
    let t1 = r.series.last().map_or(1, |s| s.0).max(r.actions.last().map_or(0, |a| a.at_ms)).max(t0 + 1);
    let ymax = (r.max.max(r.hard.unwrap_or(0)) as f64 * 1.1).max(1.0);
    let x = |t: u64| l + (w - l - rt) * (t - t0) as f64 / (t1 - t0) as f64;
    let y = |v: f64| top + (h - top - bot) * (1.0 - v / ymax);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<title>{} {}</title><rect x="0" y="0" width="{w}" height="{h}" fill="white"/>"#, esc(agent), esc(&r.resource));
    let _ = write!(s, r#"<text x="{l}" y="18" font-size="13" font-weight="bold">{} — {}</text>"#, esc(agent), esc(&r.resource));
    let _ = write!(
        s,
        r##"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="#999"/><line x1="{l}" y1="{top}" x2="{l}" y2="{}" stroke="#999"/>"##,
        h - bot,
        w - rt,
        h - bot,
        h - bot
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = ymax * frac;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{}</text>"##,
            l - 4.0,
            y(v) + 4.0,
            esc(&format_approx(res.unit(), v as u64))
        );
    }
    let _ = write!(
        s,
        r##"<text x="{l}" y="{}" fill="#555">{}</text><text x="{}" y="{}" text-anchor="end" fill="#555">+{:.0} s</text>"##,
        h - 10.0,
        esc(&crate::governor::clock::rfc3339(allot_core::Time::from_millis(t0))),
        w - rt,
        h - 10.0,
        (t1 - t0) as f64 / 1000.0
    );
    let step = (r.series.len() / 1000).max(1);
    let pts: Vec<String> = r.series.iter().step_by(step).map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v as f64))).collect();
    let _ = write!(s, r##"<polyline class="usage" fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##, pts.join(" "));
    for (class, v, color) in [("limit-soft", r.soft, "#e6a100"), ("limit-hard", r.hard, "#d62728")] {
        if let Some(v) = v {
            let yy = y(v as f64);
            let _ = write!(
                s,
                r##"<line class="{class}" x1="{l}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="{color}" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" text-anchor="end" fill="{color}">{} {}</text>"##,
                w - rt,
                w - rt - 2.0,
                yy - 3.0,
                &class[6..],
                esc(&format_approx(res.unit(), v))
            );
        }
    }
    for a in &r.actions {
        let xx = x(a.at_ms);
        let _ = write!(
            s,
            r##"<g class="action" data-action="{0}" data-outcome="{1}"><title>{0} ({1}): {2}</title><line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{3}" stroke="#2ca02c" stroke-width="1"/><text x="{4:.1}" y="{5}" fill="#2ca02c" transform="rotate(-90 {4:.1} {5})">{0}</text></g>"##,
            esc(&a.action),
            esc(&a.outcome),
            esc(&a.detail),
            h - bot,
            xx + 3.0,
            top + 60.0
        );
    }
    s.push_str("</svg>");
    s
}

/// A row's figures in the resource's units: min, mean, p50, p95, max, soft and hard ("-" when there is none).
fn figures(r: &ResourceReport) -> [String; 7] {
    let unit = resource(&r.resource).unit();
    let f = |v: u64| format_approx(unit, v);
    [f(r.min), f(r.mean as u64), f(r.p50), f(r.p95), f(r.max), r.soft.map_or("-".into(), f), r.hard.map_or("-".into(), f)]
}

fn text(reports: &[AgentReport]) -> String {
    let mut out = String::new();
    for a in reports {
        let _ = writeln!(out, "{} ({}) {}{}", a.agent, a.group, a.state, a.exit.as_deref().map_or(String::new(), |e| format!(": {e}")));
        let mut rows = vec![
            ["  resource", "min", "mean", "p50", "p95", "max", "soft", "hard", "violations", "actions", "pattern", "recommendation"]
                .map(String::from)
                .to_vec(),
        ];
        for r in &a.resources {
            let mut row = vec![format!("  {}", r.resource)];
            row.extend(figures(r));
            row.extend([
                r.violations.to_string(),
                r.actions.iter().map(|x| x.action.clone()).collect::<Vec<_>>().join(","),
                r.pattern.clone().unwrap_or_else(|| "-".into()),
                r.recommendation.as_ref().and_then(|x| x["kind"].as_str()).unwrap_or("-").to_owned(),
            ]);
            rows.push(row);
        }
        out.push_str(&table(&rows));
        out.push('\n');
    }
    out
}

fn html(reports: &[AgentReport], range: &Range) -> String {
    let mut s = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>allot report</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}.chart{display:block;margin:.5em 0}</style></head><body>",
    );
    let _ = write!(s, "<h1>allot report</h1><p>From {}.</p>", esc(&range.describe()));
    for a in reports {
        let _ = write!(s, "<h2>{} <small>({}, {})</small></h2>", esc(&a.agent), esc(&a.group), esc(&a.state));
        if let Some(e) = &a.exit {
            let _ = write!(s, "<p>{}</p>", esc(e));
        }
        s.push_str("<table><tr><th>resource</th><th>min</th><th>mean</th><th>p50</th><th>p95</th><th>max</th><th>soft</th><th>hard</th><th>violations</th><th>actions</th><th>pattern</th><th>recommendation</th></tr>");
        for r in &a.resources {
            let figures: String = figures(r).iter().map(|v| format!("<td>{}</td>", esc(v))).collect();
            let rec = r
                .recommendation
                .as_ref()
                .map_or(String::from("-"), |x| format!("{}: {}", x["kind"].as_str().unwrap_or("?"), x["rationale"].as_str().unwrap_or("")));
            let _ = write!(
                s,
                "<tr><td>{}</td>{figures}<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r.resource),
                r.violations,
                r.actions.len(),
                esc(r.pattern.as_deref().unwrap_or("-")),
                esc(&rec)
            );
        }
        s.push_str("</table>");
        for r in &a.resources {
            s.push_str(&svg(&a.agent, r));
        }
    }
    s.push_str("</body></html>\n");
    s
}

/// A rendered report: its media type and body.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// `text/plain`, `application/json`, `image/svg+xml` or `text/html`.
    pub(crate) content_type: &'static str,
    /// The document.
    pub(crate) body: String,
}

/// The report of `agent` (every agent when `None`) over `range` in `format`
/// (text, json, svg or html; an error names `format_field`).
pub(crate) fn render(store: &Store, agent: Option<&str>, range: Range, format: &str, format_field: &str) -> Result<Rendered, ReadError> {
    let content_type = match format {
        "text" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "html" => "text/html; charset=utf-8",
        other => return Err(ReadError::invalid(format_field, format!("{format_field} {other:?}: use text, json, svg or html"))),
    };
    if let Some(a) = agent {
        if store.agent(a)?.is_none() {
            return Err(ReadError::NoAgent(a.to_owned()));
        }
    }
    let reports = build(store, agent, range, CAPS)?;
    let body = match format {
        "text" => format!("{}\n{}", range.describe(), text(&reports)),
        "json" => format!("{}\n", serde_json::to_string_pretty(&reports).map_err(|e| ReadError::Store(e.to_string()))?),
        "svg" => {
            let charts: Vec<String> = reports.iter().flat_map(|a| a.resources.iter().map(move |r| svg(&a.agent, r))).collect();
            if charts.is_empty() {
                return Err(ReadError::NoData(format!("no samples from {}: nothing to draw", range.describe())));
            }
            // One SVG document stacking every chart.
            let height = 240 * charts.len();
            let mut s = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height}">"#);
            for (i, c) in charts.iter().enumerate() {
                let _ = write!(s, r#"<g transform="translate(0 {})">{c}</g>"#, i * 240);
            }
            s.push_str("</svg>\n");
            s
        }
        _ => html(&reports, &range),
    };
    Ok(Rendered { content_type, body })
}
