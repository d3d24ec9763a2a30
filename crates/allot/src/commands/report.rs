//! `allot recommend` and `allot report`: read recorded usage, history and
//! analyses back from the state database (or, with `--socket`, from a
//! running daemon's `GET /v1/recommendations` and `GET /v1/report`, which
//! call the same functions); reports as text, JSON, SVG charts (usage over
//! time with the soft and hard limits and the actions marked) or an HTML
//! page holding tables and charts, over a range whose ends are RFC 3339
//! times or durations ago. Reads are bounded: per agent and resource at
//! most [`REPORT_MAX_SAMPLES`] raw samples, else the per-minute rollups (at
//! most [`REPORT_MAX_MINUTES`]), at most [`REPORT_MAX_POINTS`] in a report;
//! beyond that the range is refused, naming `since`.

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

/// Why a read of the state database (a report, an analysis, recommendations) has no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// No agent of that id in the store.
    #[error("no agent {0:?}")]
    NoAgent(String),
    /// A parameter is not acceptable (`field` names it).
    #[error("{message}")]
    Invalid {
        /// The parameter at fault (`--since` on the command line, `since` in a query).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Nothing to show (no samples in the range for a chart).
    #[error("{0}")]
    NoData(String),
    /// The store could not be read.
    #[error("{0}")]
    Store(String),
}

impl From<allot_store::StoreError> for ReadError {
    fn from(e: allot_store::StoreError) -> Self {
        ReadError::Store(e.to_string())
    }
}

impl ReadError {
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        ReadError::Invalid { field: field.to_owned(), message: message.into() }
    }
}

fn open(path: &std::path::Path) -> Result<Store, Error> {
    if !path.exists() {
        return Err(format!("no state database at {} (run `allot up FLEET.toml` first, or pass --state)", path.display()).into());
    }
    Ok(Store::open_read_only(path)?)
}

/// The wall-clock time now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis)
}

/// The latest recommendation per agent and resource (`agent`: only its own),
/// as `{agent, resource, at_ms, pattern, recommendation}`.
pub(crate) fn recommendations(store: &Store, agent: Option<&str>) -> Result<Vec<Value>, ReadError> {
    Ok(store
        .analyses(agent)?
        .into_iter()
        .filter(|r| r.4.is_some())
        .map(|(a, r, at, p, rec)| json!({"agent": a, "resource": r, "at_ms": at, "pattern": p["pattern"], "recommendation": rec}))
        .collect())
}

/// A query string value, percent-encoded (what is not unreserved).
pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Ask a daemon: the body of a 2xx answer, else its error.
pub(crate) fn ask_daemon(sock: &std::path::Path, path: &str) -> Result<Value, Error> {
    let (st, v) = crate::client::request(sock, "GET", path, None)?;
    if (200..300).contains(&st) { Ok(v) } else { Err(crate::client::failure(st, &v).into()) }
}

pub(crate) fn recommend(args: &RecommendArgs) -> Result<ExitCode, Error> {
    let rows: Vec<Value> = match &args.socket {
        Some(sock) => {
            let path = args
                .agent
                .as_ref()
                .map_or_else(|| "/v1/recommendations".to_owned(), |a| format!("/v1/agents/{}/recommendations", encode(a)));
            serde_json::from_value(ask_daemon(sock, &path)?)?
        }
        None => recommendations(&open(&args.state)?, args.agent.as_deref())?,
    };
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        print("no recommendations yet (analytics run every policy.analytics_interval while allot up runs, and at its end)\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = vec![["agent", "resource", "pattern", "recommendation", "suggested", "confidence", "rationale"].map(String::from).to_vec()];
    for row in &rows {
        let rec = &row["recommendation"];
        let r = row["resource"].as_str().unwrap_or("?");
        let res = resource(r);
        let suggested = match (rec["group"].as_str(), rec["suggested_hard"].as_u64()) {
            (Some(g), _) => format!("group {g}"),
            (None, Some(h)) => format!("hard {}", crate::output::human(res.unit(), h)),
            _ => "-".into(),
        };
        // An agent-wide answer (one group change for all resources) shows its resources' patterns.
        let (r, pattern) = match row["patterns"].as_object() {
            Some(all) if r == allot_core::analytics::AGENT_WIDE => {
                ("all".to_owned(), all.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?"))).collect::<Vec<_>>().join(", "))
            }
            _ => (r.to_owned(), row["pattern"].as_str().unwrap_or("?").to_owned()),
        };
        t.push(vec![
            row["agent"].as_str().unwrap_or("?").into(),
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

/// The time range of a report, in milliseconds since the Unix epoch, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Range {
    /// From.
    pub(crate) since_ms: u64,
    /// To.
    pub(crate) until_ms: u64,
}

impl Range {
    /// The range as text: `2026-12-03T10:00:00.000Z to 2026-12-03T12:00:00.000Z`.
    fn describe(&self) -> String {
        let at = |ms| crate::governor::clock::rfc3339(allot_core::Time::from_millis(ms));
        format!("{} to {}", at(self.since_ms), at(self.until_ms))
    }
}

/// One end of a range: an RFC 3339 time (`2026-12-03T10:00:00Z`) or a
/// duration that long before `now_ms` (`2h`); an error names `field`.
fn instant(field: &str, text: &str, now_ms: u64) -> Result<u64, ReadError> {
    let t = text.trim();
    if t.contains('T') || t.contains(':') || t.matches('-').count() >= 2 {
        let st = humantime::parse_rfc3339_weak(t).map_err(|e| {
            ReadError::invalid(field, format!("{field} {t:?}: not an RFC 3339 time ({e}); write it in UTC, such as 2026-12-03T10:00:00Z"))
        })?;
        let ms = st.duration_since(std::time::UNIX_EPOCH).map_or(0, allot_core::time::duration_millis);
        return Ok(ms);
    }
    let d = allot_core::quantity::parse_duration(field, t).map_err(|_| {
        ReadError::invalid(
            field,
            format!("{field} {t:?}: give a time (RFC 3339, such as 2026-12-03T10:00:00Z) or a duration ago (such as 2h, 30m)"),
        )
    })?;
    Ok(now_ms.saturating_sub(allot_core::time::duration_millis(d)))
}

/// The range from `since` to `until` (now when not given); each is a pair
/// (parameter name, text). The start must lie before the end.
pub(crate) fn range(since: (&str, &str), until: Option<(&str, &str)>, now_ms: u64) -> Result<Range, ReadError> {
    let since_ms = instant(since.0, since.1, now_ms)?;
    let until_ms = match until {
        Some((field, text)) => instant(field, text, now_ms)?,
        None => now_ms,
    };
    if since_ms >= until_ms {
        let (field, text) = until.unwrap_or((since.0, since.1));
        let at = |ms| crate::governor::clock::rfc3339(allot_core::Time::from_millis(ms));
        return Err(ReadError::invalid(
            field,
            format!("{field} {text:?}: the range is empty: it starts at {} and ends at {}", at(since_ms), at(until_ms)),
        ));
    }
    Ok(Range { since_ms, until_ms })
}

/// The most raw samples a report reads per agent and resource; a range
/// holding more is summarized from the per-minute rollups.
pub(crate) const REPORT_MAX_SAMPLES: usize = 100_000;
/// The most per-minute rollups a report reads per agent and resource (69
/// days); a range holding more samples and more minutes is refused
/// (`since` named).
pub(crate) const REPORT_MAX_MINUTES: usize = 100_000;
/// The most points (samples and minutes) a report reads over every agent
/// and resource (16 MB of them): a series beyond what is left is read from
/// the rollups, or refused (`since` named).
pub(crate) const REPORT_MAX_POINTS: usize = 1_000_000;

/// What a report may read: per agent and resource (`samples`, `minutes`),
/// and in all (`points`).
#[derive(Clone, Copy, Debug)]
struct Caps {
    samples: usize,
    minutes: usize,
    points: usize,
}

const CAPS: Caps = Caps { samples: REPORT_MAX_SAMPLES, minutes: REPORT_MAX_MINUTES, points: REPORT_MAX_POINTS };

/// One resource's readings over a report's range, read within the caps.
struct Read {
    /// The samples the range holds.
    samples: usize,
    /// `samples` (each raw sample read) or `rollups` (per-minute summaries).
    source: &'static str,
    min: u64,
    mean: f64,
    p50: u64,
    p95: u64,
    max: u64,
    /// The points drawn: each sample, or each minute's mean.
    series: Vec<(u64, u64)>,
}

/// An agent's readings of `resource` over `range`: the raw samples when
/// there are at most `caps.samples` (and `left`, what the report may still
/// read), else the per-minute rollups (min, max and mean exact; p50 and p95
/// those of the minutes' means and p95s) when there are at most
/// `caps.minutes` (and `left`), else an error naming `since`. What is read
/// is taken from `left`. `None`: nothing in the range.
fn read_series(store: &Store, agent: &str, resource: &str, range: Range, caps: Caps, left: &mut usize) -> Result<Option<Read>, ReadError> {
    let Range { since_ms, until_ms } = range;
    let max_samples = caps.samples.min(*left);
    let series = store.samples_between(agent, resource, since_ms, until_ms, max_samples + 1)?;
    if series.is_empty() {
        return Ok(None);
    }
    if series.len() <= max_samples {
        *left -= series.len();
        let mut sorted: Vec<u64> = series.iter().map(|s| s.1).collect();
        sorted.sort_unstable();
        return Ok(Some(Read {
            samples: series.len(),
            source: "samples",
            min: sorted[0],
            mean: sorted.iter().map(|v| *v as f64).sum::<f64>() / sorted.len() as f64,
            p50: pct(&sorted, 50.0),
            p95: pct(&sorted, 95.0),
            max: sorted[sorted.len() - 1],
            series,
        }));
    }
    drop(series);
    let too_long = |why: String| {
        ReadError::invalid(
            "since",
            format!(
                "since: the range {} holds more than {max_samples} samples of {agent}'s {resource} and {why}; \
                 give a later since (or an earlier until)",
                range.describe()
            ),
        )
    };
    let max_minutes = caps.minutes.min(*left);
    let rollups = store.rollups_between(agent, resource, since_ms / 60_000, until_ms / 60_000, max_minutes + 1)?;
    if rollups.is_empty() {
        return Err(too_long("no per-minute summaries to report it from".into()));
    }
    if rollups.len() > max_minutes {
        let why = if max_minutes < caps.minutes {
            format!("more per-minute summaries than the {max_minutes} points this report may still read (at most {} in all)", caps.points)
        } else {
            format!("more than {max_minutes} per-minute summaries (a report reads at most that many)")
        };
        return Err(too_long(why));
    }
    *left -= rollups.len();
    let count: u64 = rollups.iter().map(|r| r.count).sum();
    let mean = rollups.iter().map(|r| r.mean * r.count as f64).sum::<f64>() / count.max(1) as f64;
    let mut means: Vec<u64> = rollups.iter().map(|r| r.mean.round() as u64).collect();
    means.sort_unstable();
    let mut p95s: Vec<u64> = rollups.iter().map(|r| r.p95).collect();
    p95s.sort_unstable();
    Ok(Some(Read {
        samples: usize::try_from(count).unwrap_or(usize::MAX),
        source: "rollups",
        min: rollups.iter().map(|r| r.min).min().unwrap_or(0),
        mean,
        p50: pct(&means, 50.0),
        p95: pct(&p95s, 95.0),
        max: rollups.iter().map(|r| r.max).max().unwrap_or(0),
        series: rollups.iter().map(|r| (r.minute * 60_000, r.mean.round() as u64)).collect(),
    }))
}

#[derive(Debug, Serialize)]
struct ResourceReport {
    resource: String,
    unit: &'static str,
    samples: usize,
    /// Where the figures come from: `samples` (raw) or `rollups` (per-minute summaries).
    source: &'static str,
    /// The points read and drawn (samples, or minutes).
    points: usize,
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

fn build(store: &Store, agent: Option<&str>, range: Range, caps: Caps) -> Result<Vec<AgentReport>, ReadError> {
    let Range { since_ms, until_ms } = range;
    let mut left = caps.points;
    let history = store.history(agent)?;
    let analyses = store.analyses(agent)?;
    let mut out = Vec::new();
    for a in store.agents()?.into_iter().filter(|a| agent.is_none_or(|x| x == a.id)) {
        let mut resources = Vec::new();
        for r in store.sampled_resources(&a.id)? {
            let Some(read) = read_series(store, &a.id, &r, range, caps, &mut left)? else { continue };
            let limit = &a.spec["quota"]["limits"][&r];
            let mine = |h: &&allot_store::EnforcementRecord| h.agent == a.id && h.resource == r && (since_ms..=until_ms).contains(&h.at_ms);
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
                samples: read.samples,
                source: read.source,
                points: read.series.len(),
                min: read.min,
                mean: read.mean,
                p50: read.p50,
                p95: read.p95,
                max: read.max,
                soft: limit["soft"].as_u64(),
                hard: limit["hard"].as_u64(),
                violations,
                actions,
                pattern: analysis.and_then(|x| x.3["pattern"].as_str().map(str::to_owned)),
                recommendation: analysis.and_then(|x| x.4.clone()),
                resource: r,
                series: read.series,
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

pub(crate) fn report(args: &ReportArgs) -> Result<ExitCode, Error> {
    let body = match &args.socket {
        Some(sock) => {
            let mut path = match &args.agent {
                Some(a) => format!("/v1/agents/{}/report", encode(a)),
                None => "/v1/report".to_owned(),
            };
            path.push_str(&format!("?since={}&format={}", encode(&args.since), encode(&args.format)));
            if let Some(u) = &args.until {
                path.push_str(&format!("&until={}", encode(u)));
            }
            match ask_daemon(sock, &path)? {
                Value::String(s) => s,
                v => format!("{}\n", serde_json::to_string_pretty(&v)?),
            }
        }
        None => {
            let store = open(&args.state)?;
            let range = range(("--since", &args.since), args.until.as_deref().map(|u| ("--until", u)), now_ms())?;
            match render(&store, args.agent.as_deref(), range, &args.format, "--format") {
                Err(ReadError::NoAgent(a)) => return Err(format!("no agent {a:?} in {}", args.state.display()).into()),
                r => r?.body,
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_294_400_000; // 2026-12-03T10:40:00Z

    /// A store with 120 memory samples of `a` (one a second over two whole
    /// minutes, 1..=120) with their two rollups, and the same cpu samples without rollups.
    fn two_minutes() -> (tempfile::TempDir, Store, Range) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut store = Store::open(&dir.path().join("state.db")).unwrap_or_else(|e| panic!("{e}"));
        let t0 = NOW - 10 * 60_000;
        let rows: Vec<(String, String, u64, u64)> =
            (0..120).flat_map(|i| ["memory", "cpu"].map(|r| ("a".to_owned(), r.to_owned(), t0 + i * 1000, i + 1))).collect();
        store.put_samples(&rows).unwrap_or_else(|e| panic!("{e}"));
        for m in 0..2u64 {
            let values: Vec<u64> = (m * 60 + 1..=m * 60 + 60).collect();
            let r = allot_store::rollup::summarize(t0 / 60_000 + m, &values).unwrap_or_else(|| panic!("a rollup"));
            store.put_rollup("a", "memory", &r).unwrap_or_else(|e| panic!("{e}"));
        }
        (dir, store, Range { since_ms: t0 - 60_000, until_ms: NOW })
    }

    fn since_error(r: Result<Option<Read>, ReadError>) -> String {
        match r {
            Err(ReadError::Invalid { field, message }) if field == "since" => message,
            Err(e) => panic!("not an error naming since: {e:?}"),
            Ok(v) => panic!("read: {:?}", v.map(|r| (r.source, r.samples, r.series.len()))),
        }
    }

    #[test]
    fn a_report_reads_raw_samples_within_the_cap_else_rollups_else_refuses_naming_since() {
        let (_dir, store, range) = two_minutes();
        let caps = Caps { samples: 200, minutes: 10, points: 1000 };
        let mut left = caps.points;
        let raw =
            read_series(&store, "a", "memory", range, caps, &mut left).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!((raw.source, raw.samples, raw.series.len(), raw.min, raw.max, left), ("samples", 120, 120, 1, 120, 880));

        // Over the sample cap: from the two rollups, every sample counted, min, max and mean exact.
        let caps = Caps { samples: 100, ..caps };
        let mut left = caps.points;
        let r =
            read_series(&store, "a", "memory", range, caps, &mut left).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!((r.source, r.samples, r.series.len(), r.min, r.max, left), ("rollups", 120, 2, 1, 120, 998));
        assert!((r.mean - 60.5).abs() < 1e-9, "{}", r.mean);
        // Over the minute cap too, or without rollups: refused, naming since.
        let m = since_error(read_series(&store, "a", "memory", range, Caps { minutes: 1, ..caps }, &mut 1000));
        assert!(m.contains("more than 1 per-minute summaries"), "{m}");
        let m = since_error(read_series(&store, "a", "cpu", range, caps, &mut 1000));
        assert!(m.contains("no per-minute summaries"), "{m}");

        // What the report may still read bounds each series: 101 left reads the rollups, 1 left nothing.
        let caps = Caps { samples: 200, minutes: 10, points: 1000 };
        let mut left = 101;
        let r =
            read_series(&store, "a", "memory", range, caps, &mut left).unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("none"));
        assert_eq!((r.source, left), ("rollups", 99));
        let m = since_error(read_series(&store, "a", "memory", range, caps, &mut 1));
        assert!(m.contains("may still read") && m.contains("1000 in all"), "{m}");
        // Nothing in the range: nothing read.
        let empty = Range { since_ms: NOW - 60_000, until_ms: NOW };
        assert!(read_series(&store, "a", "memory", empty, caps, &mut 1000).unwrap_or_else(|e| panic!("{e}")).is_none());
    }

    #[test]
    fn ranges_take_times_or_durations_and_errors_name_the_parameter() {
        let r = range(("--since", "2026-12-03T10:00:00Z"), Some(("--until", "2026-12-03T10:30:00Z")), NOW).unwrap();
        assert_eq!((r.since_ms, r.until_ms), (NOW - 40 * 60_000, NOW - 10 * 60_000));
        let r = range(("since", "2h"), None, NOW).unwrap();
        assert_eq!((r.since_ms, r.until_ms), (NOW - 7_200_000, NOW));
        let r = range(("since", "2026-12-03T09:40:00Z"), Some(("until", "30m")), NOW).unwrap();
        assert_eq!((r.since_ms, r.until_ms), (NOW - 3_600_000, NOW - 1_800_000));
        for (since, until, field) in [
            ("yesterday", None, "--since"),
            ("2026-13-03T10:00:00Z", None, "--since"),
            ("2h", Some("soon"), "--until"),
            ("1h", Some("2h"), "--until"),
            ("2026-12-03T10:00:00Z", Some("2026-12-03T09:00:00Z"), "--until"),
        ] {
            match range(("--since", since), until.map(|u| ("--until", u)), NOW) {
                Err(ReadError::Invalid { field: f, message }) => {
                    assert_eq!(f, field, "{since} {until:?}: {message}");
                    assert!(message.starts_with(field), "{message}");
                }
                other => panic!("{since} {until:?}: {other:?}"),
            }
        }
    }
}
