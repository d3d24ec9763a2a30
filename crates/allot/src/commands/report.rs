//! `allot recommend` and `allot report`: read recorded usage, history and
//! analyses back from the state database; reports as text, JSON, SVG charts
//! (usage over time with the soft and hard limits and the actions marked)
//! or an HTML page holding tables and charts.

use super::{Error, print};
use crate::cli::{RecommendArgs, ReportArgs};
use crate::output::table;
use allot_core::Resource;
use allot_core::quantity::format_approx;
use allot_store::Store;
use serde::Serialize;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::process::ExitCode;

fn open(path: &std::path::Path) -> Result<Store, Error> {
    if !path.exists() {
        return Err(format!("no state database at {} (run `allot up FLEET.toml` first, or pass --state)", path.display()).into());
    }
    Ok(Store::open_read_only(path)?)
}

pub(crate) fn recommend(args: &RecommendArgs) -> Result<ExitCode, Error> {
    let store = open(&args.state)?;
    let rows: Vec<_> = store.analyses(args.agent.as_deref())?.into_iter().filter(|r| r.4.is_some()).collect();
    if args.json {
        let arr: Vec<Value> = rows
            .iter()
            .map(|(a, r, at, p, rec)| json!({"agent": a, "resource": r, "at_ms": at, "pattern": p["pattern"], "recommendation": rec}))
            .collect();
        print(&format!("{}\n", serde_json::to_string_pretty(&arr)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        print("no recommendations yet (analytics run every policy.analytics_interval while allot up runs, and at its end)\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = vec![["agent", "resource", "pattern", "recommendation", "suggested", "confidence", "rationale"].map(String::from).to_vec()];
    for (a, r, _, p, rec) in &rows {
        let rec = rec.as_ref().unwrap_or(&Value::Null);
        let res = resource(r);
        let suggested = match (rec["group"].as_str(), rec["suggested_hard"].as_u64()) {
            (Some(g), _) => format!("group {g}"),
            (None, Some(h)) => format!("hard {}", crate::output::human(res.unit(), h)),
            _ => "-".into(),
        };
        // An agent-wide answer (one group change for all resources) shows its resources' patterns.
        let (r, pattern) = match p["patterns"].as_object() {
            Some(all) if r == allot_core::analytics::AGENT_WIDE => {
                ("all".to_owned(), all.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?"))).collect::<Vec<_>>().join(", "))
            }
            _ => (r.clone(), p["pattern"].as_str().unwrap_or("?").to_owned()),
        };
        t.push(vec![
            a.clone(),
            r,
            pattern,
            rec["kind"].as_str().unwrap_or("?").into(),
            suggested,
            format!("{:.2}", rec["confidence"].as_f64().unwrap_or(0.0)),
            rec["rationale"].as_str().unwrap_or("").into(),
        ]);
    }
    print(&table(&t))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct ResourceReport {
    resource: String,
    unit: &'static str,
    samples: usize,
    min: u64,
    mean: f64,
    p50: u64,
    p95: u64,
    max: u64,
    soft: Option<u64>,
    hard: Option<u64>,
    violations: usize,
    actions: Vec<Action>,
    pattern: Option<String>,
    recommendation: Option<Value>,
    #[serde(skip)]
    series: Vec<(u64, u64)>,
}

#[derive(Debug, Serialize, Clone)]
struct Action {
    at_ms: u64,
    action: String,
    outcome: String,
    detail: String,
}

#[derive(Debug, Serialize)]
struct AgentReport {
    agent: String,
    group: String,
    state: String,
    exit: Option<String>,
    resources: Vec<ResourceReport>,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize - 1;
    sorted[rank.min(sorted.len() - 1)]
}

fn build(store: &Store, agent: Option<&str>, since_ms: u64) -> Result<Vec<AgentReport>, Error> {
    let history = store.history(agent)?;
    let analyses = store.analyses(agent)?;
    let mut out = Vec::new();
    for a in store.agents()?.into_iter().filter(|a| agent.is_none_or(|x| x == a.id)) {
        let mut resources = Vec::new();
        for r in store.sampled_resources(&a.id)? {
            let series = store.samples(&a.id, &r, since_ms)?;
            if series.is_empty() {
                continue;
            }
            let mut sorted: Vec<u64> = series.iter().map(|s| s.1).collect();
            sorted.sort_unstable();
            let limit = &a.spec["quota"]["limits"][&r];
            let mine = |h: &&allot_store::EnforcementRecord| h.agent == a.id && h.resource == r && h.at_ms >= since_ms;
            let violations = history.iter().filter(mine).filter(|h| h.action == "warn").count();
            let actions = history
                .iter()
                .filter(mine)
                .filter(|h| h.action != "warn" && !h.action.ends_with("(scheduled)"))
                .map(|h| Action { at_ms: h.at_ms, action: h.action.clone(), outcome: h.outcome.clone(), detail: h.detail.clone() })
                .collect();
            let analysis = analyses.iter().find(|x| x.0 == a.id && x.1 == r);
            let res = resource(&r);
            resources.push(ResourceReport {
                unit: res.unit().name(),
                samples: series.len(),
                min: sorted[0],
                mean: sorted.iter().map(|v| *v as f64).sum::<f64>() / sorted.len() as f64,
                p50: pct(&sorted, 50.0),
                p95: pct(&sorted, 95.0),
                max: sorted[sorted.len() - 1],
                soft: limit["soft"].as_u64(),
                hard: limit["hard"].as_u64(),
                violations,
                actions,
                pattern: analysis.and_then(|x| x.3["pattern"].as_str().map(str::to_owned)),
                recommendation: analysis.and_then(|x| x.4.clone()),
                resource: r,
                series,
            });
        }
        out.push(AgentReport { agent: a.id, group: a.group, state: a.state, exit: a.exit, resources });
    }
    Ok(out)
}

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

/// A recorded resource name as a resource (a custom one when not built in).
fn resource(name: &str) -> Resource {
    name.parse().unwrap_or(Resource::Custom(name.to_owned()))
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

fn html(reports: &[AgentReport], since: &str) -> String {
    let mut s = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>allot report</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}.chart{display:block;margin:.5em 0}</style></head><body>",
    );
    let _ = write!(s, "<h1>allot report</h1><p>Last {}.</p>", esc(since));
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

pub(crate) fn report(args: &ReportArgs) -> Result<ExitCode, Error> {
    let store = open(&args.state)?;
    let since = allot_core::quantity::parse_duration("--since", &args.since)?;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis);
    let since_ms = now_ms.saturating_sub(allot_core::time::duration_millis(since));
    let reports = build(&store, args.agent.as_deref(), since_ms)?;
    if let Some(a) = &args.agent {
        if reports.is_empty() {
            return Err(format!("no agent {a:?} in {}", args.state.display()).into());
        }
    }
    let body = match args.format.as_str() {
        "text" => text(&reports),
        "json" => format!("{}\n", serde_json::to_string_pretty(&reports)?),
        "svg" => {
            let charts: Vec<String> = reports.iter().flat_map(|a| a.resources.iter().map(move |r| svg(&a.agent, r))).collect();
            if charts.is_empty() {
                return Err("no samples in the range: nothing to draw".into());
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
        "html" => html(&reports, &args.since),
        other => return Err(format!("--format {other:?}: use text, json, svg or html").into()),
    };
    match &args.output {
        Some(p) => {
            std::fs::write(p, body).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
        None => print(&body)?,
    }
    Ok(ExitCode::SUCCESS)
}
