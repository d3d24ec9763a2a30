//! `allot budget [AGENT | --pool P] [--json]`: the budgets on custom
//! resources of a running daemon (window, limit, spent, reserved, remaining,
//! when the counted spend next drops) and the open reservations; and the
//! budget cell of `allot ps` ([`use_cell`]). Amounts are counts of the
//! resource's unit (`tokens`, `usd_micros`), written as in the rest of the
//! CLI ([`crate::output::human`]: exact when short, `10k`, else rounded,
//! `12.3k`).

use super::ctl::{ok, socket};
use super::{Error, print};
use crate::cli::BudgetArgs;
use crate::client::request;
use crate::output::table;
use allot_core::Unit;
use serde_json::Value;
use std::process::ExitCode;

/// `GET /v1/budgets` lists at most this many open reservations.
const LISTED_RESERVATIONS: usize = 1000;

/// The resources the `ps` cell shows before it says how many more there are.
const PS_RESOURCES: usize = 2;

pub(crate) fn run(args: &BudgetArgs) -> Result<ExitCode, Error> {
    let of = match (&args.agent, &args.pool) {
        (Some(a), _) => Of::Agent(a),
        (None, Some(p)) => Of::Pool(p),
        (None, None) => Of::All,
    };
    let path = match of {
        Of::All => "/v1/budgets".to_owned(),
        Of::Agent(a) => format!("/v1/agents/{}/budgets", super::report::encode(a)),
        Of::Pool(p) => format!("/v1/pools/{}", super::report::encode(p)),
    };
    let (st, v) = request(&socket(&args.socket)?, "GET", &path, None)?;
    let v = ok(st, v)?;
    if args.json {
        print(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
    } else {
        print(&render(&v, of))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What was asked for.
#[derive(Clone, Copy, Debug)]
enum Of<'a> {
    All,
    Agent(&'a str),
    Pool(&'a str),
}

/// An amount of a custom resource.
pub(crate) fn amount(v: &Value) -> String {
    v.as_u64().map_or_else(|| "-".to_owned(), |n| crate::output::human(Unit::Count, n))
}

/// A time to come, roughly, to two units at most: `42s`, `1m30s`, `42m`, `2h5m`, `5h`, `3d4h`.
fn roughly(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    let two = |a: u64, ua: &str, b: u64, ub: &str| if b == 0 { format!("{a}{ua}") } else { format!("{a}{ua}{b}{ub}") };
    match s {
        0..60 => format!("{s}s"),
        60..600 => two(s / 60, "m", sec, "s"),
        600..3600 => format!("{m}m"),
        3600..36_000 => two(s / 3600, "h", m, "m"),
        36_000..86_400 => format!("{}h", s / 3600),
        _ => two(d, "d", h, "h"),
    }
}

/// When a budget's counted spend next drops: relative, then the time in UTC
/// (to the second when it is on the day of `now`, else the date and minute).
pub(crate) fn resets(b: &Value, now: &str) -> String {
    let (Some(in_ms), Some(at)) = (b["resets_in_ms"].as_u64(), b["resets_at"].as_str()) else { return "-".to_owned() };
    let (date, time) = at.split_once('T').unwrap_or((at, ""));
    let when = if now.split_once('T').is_some_and(|(d, _)| d == date) {
        format!("{} UTC", time.get(..8).unwrap_or(time))
    } else {
        format!("{date} {} UTC", time.get(..5).unwrap_or(time))
    };
    format!("in {} ({when})", roughly(in_ms))
}

/// The limit: hard, with soft in brackets when set (`, over` when spent and
/// reserved are above it), and this node's slice in cluster mode.
fn limit(b: &Value) -> String {
    let hard = match b["soft"].as_u64() {
        Some(_) => format!("{} (soft {}{})", amount(&b["hard"]), amount(&b["soft"]), if b["over_soft"] == true { ", over" } else { "" }),
        None => amount(&b["hard"]),
    };
    match b["cap"].as_u64() {
        Some(_) => format!("{hard}, this node's slice {}", amount(&b["cap"])),
        None => hard,
    }
}

/// The milliseconds since the epoch of the daemon's `at` (RFC 3339).
fn epoch_ms(at: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339(at).ok()?;
    t.duration_since(std::time::UNIX_EPOCH).ok().map(allot_core::time::duration_millis)
}

/// A reservation's amounts: `tokens 4k, usd_micros 12k`.
fn held(r: &Value) -> String {
    let parts: Vec<String> = r["resources"].as_object().into_iter().flatten().map(|(name, n)| format!("{name} {}", amount(n))).collect();
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

/// How many reservations are open (`open`: the daemon's count, when it gives
/// one) when `listed` are in the answer.
fn count_line(open: Option<usize>, listed: usize) -> String {
    match (open, listed) {
        (Some(n), l) if n > l => format!("{n} open reservations ({l} listed)\n"),
        (None, l) if l >= LISTED_RESERVATIONS => {
            format!("{l} or more open reservations (the daemon lists at most {LISTED_RESERVATIONS})\n")
        }
        (_, 0) => "no open reservations\n".to_owned(),
        (_, 1) => "1 open reservation\n".to_owned(),
        (_, l) => format!("{l} open reservations\n"),
    }
}

/// The text of an answer of `GET /v1/budgets`, `/v1/agents/{id}/budgets` or `/v1/pools/{name}`.
fn render(v: &Value, of: Of<'_>) -> String {
    let now = v["at"].as_str().unwrap_or("");
    let budgets: Vec<&Value> = v["budgets"].as_array().into_iter().flatten().collect();
    let reservations: Vec<&Value> = v["reservations"].as_array().into_iter().flatten().collect();
    let open = v["open_reservations"].as_u64().and_then(|n| usize::try_from(n).ok());
    let mut out = String::new();
    if budgets.is_empty() {
        out.push_str(&match of {
            Of::All => {
                "no budgets (budgets are limits on custom resources such as tokens: an agent's, its group's totals, pools)\n".to_owned()
            }
            Of::Agent(a) => format!("no budget applies to agent {a}\n"),
            Of::Pool(p) => format!("pool {p} has no budgets\n"),
        });
    } else {
        let mut rows =
            vec![["level", "resource", "window", "limit", "spent", "reserved", "remaining", "resets"].map(String::from).to_vec()];
        for b in &budgets {
            rows.push(vec![
                b["level"].as_str().unwrap_or("?").to_owned(),
                b["resource"].as_str().unwrap_or("?").to_owned(),
                b["window"]["text"].as_str().unwrap_or("?").to_owned(),
                limit(b),
                amount(&b["spent"]),
                amount(&b["reserved"]),
                amount(&b["remaining"]),
                resets(b, now),
            ]);
        }
        out.push_str(&table(&rows));
    }
    match of {
        Of::Agent(_) if !reservations.is_empty() => {
            let now_ms = epoch_ms(now);
            let mut rows = vec![["reservation", "resources", "expires"].map(String::from).to_vec()];
            for r in &reservations {
                let expires = match (r["expires_ms"].as_u64(), now_ms) {
                    (Some(e), Some(n)) if e > n => format!("in {}", roughly(e - n)),
                    (Some(_), Some(_)) => "now (due)".to_owned(),
                    _ => r["expires_at"].as_str().unwrap_or("?").to_owned(),
                };
                rows.push(vec![r["id"].to_string(), held(r), expires]);
            }
            out.push('\n');
            out.push_str(&table(&rows));
            if open.is_some_and(|n| n > reservations.len()) || reservations.len() >= LISTED_RESERVATIONS {
                out.push_str(&count_line(open, reservations.len()));
            }
        }
        _ => out.push_str(&count_line(open, reservations.len())),
    }
    out
}

/// The budget cell of `allot ps` from an agent's `budgets`
/// (`{RESOURCE: {"level", "spent", "reserved", "hard", "remaining"}}`, the
/// tightest level per resource): `tokens 3100/10k, usd_micros 2.50M/50M`;
/// `-` when none applies.
pub(crate) fn use_cell(budgets: &Value) -> String {
    let Some(m) = budgets.as_object().filter(|m| !m.is_empty()) else { return "-".to_owned() };
    let mut parts: Vec<String> =
        m.iter().take(PS_RESOURCES).map(|(r, b)| format!("{r} {}/{}", amount(&b["spent"]), amount(&b["hard"]))).collect();
    if m.len() > PS_RESOURCES {
        parts.push(format!("+{} more", m.len() - PS_RESOURCES));
    }
    parts.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budget(level: &str, soft: Option<u64>, spent: u64, reserved: u64, resets: Option<(&str, u64)>) -> Value {
        json!({"level": level, "resource": "tokens", "window": {"kind": "rolling", "length_ms": 60_000, "text": "rolling 1m"},
            "hard": 10_000, "soft": soft, "spent": spent, "reserved": reserved, "remaining": 10_000 - spent - reserved,
            "over_soft": soft.is_some_and(|s| spent + reserved > s),
            "resets_at": resets.map(|r| r.0), "resets_in_ms": resets.map(|r| r.1), "on_expiry": "charge"})
    }

    #[test]
    fn durations_read_roughly_in_two_units() {
        assert_eq!(roughly(0), "0s");
        assert_eq!(roughly(41_200), "42s");
        assert_eq!(roughly(90_000), "1m30s");
        assert_eq!(roughly(120_000), "2m");
        assert_eq!(roughly(42 * 60_000 + 17_000), "42m");
        assert_eq!(roughly(2 * 3_600_000 + 5 * 60_000), "2h5m");
        assert_eq!(roughly(11 * 3_600_000), "11h");
        assert_eq!(roughly(3 * 86_400_000 + 4 * 3_600_000 + 1), "3d4h");
        assert_eq!(roughly(30 * 86_400_000), "30d");
    }

    #[test]
    fn every_budget_as_a_table_with_the_reservation_count() {
        let v = json!({"at": "2026-03-01T10:00:00.000Z",
            "budgets": [budget("agent:writer", Some(8000), 4100, 4000, Some(("2026-03-01T10:00:42.500Z", 42_500))),
                        budget("group:g", None, 0, 0, None)],
            "reservations": [{"id": 7, "agent": "writer", "resources": {"tokens": 4000}, "expires_ms": 1}]});
        let text = render(&v, Of::All);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let head: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(head, ["level", "resource", "window", "limit", "spent", "reserved", "remaining", "resets"]);
        let cols = |l: &str| l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            cols(lines[1]),
            ["agent:writer", "tokens", "rolling 1m", "10k (soft 8k, over)", "4100", "4k", "1900", "in 43s (10:00:42 UTC)"]
        );
        assert_eq!(cols(lines[2]), ["group:g", "tokens", "rolling 1m", "10k", "0", "0", "10k", "-"]);
        assert_eq!(lines[3], "1 open reservation");
        // Columns line up: every row's window starts where the header's does.
        let at = lines[0].find("window").unwrap();
        assert!(lines[1..3].iter().all(|l| l[at..].starts_with("rolling 1m")), "{text}");
    }

    #[test]
    fn an_agent_gets_its_reservations_and_a_far_reset_shows_its_date() {
        let v = json!({"at": "2026-03-01T10:00:00.000Z",
            "budgets": [json!({"level": "pool:shared", "resource": "usd_micros",
                "window": {"kind": "calendar", "text": "monthly on day 1 at 00:00 UTC+00:00"},
                "hard": 50_000_000, "soft": null, "spent": 12_345_678, "reserved": 12_000, "remaining": 37_642_322, "over_soft": false,
                "resets_at": "2026-04-01T00:00:00.000Z", "resets_in_ms": 30 * 86_400_000u64 + 14 * 3_600_000, "on_expiry": "charge"})],
            "reservations": [
                {"id": 12, "agent": "writer", "resources": {"tokens": 4000, "usd_micros": 12_000},
                 "expires_at": "2026-03-01T10:01:00.000Z", "expires_ms": epoch_ms("2026-03-01T10:01:00.000Z").unwrap()},
                {"id": 13, "agent": "writer", "resources": {"tokens": 1},
                 "expires_at": "2026-03-01T09:59:59.000Z", "expires_ms": epoch_ms("2026-03-01T09:59:59.000Z").unwrap()}]});
        let text = render(&v, Of::Agent("writer"));
        assert!(text.contains("12.3M"), "rounded when long: {text}");
        assert!(text.contains("in 30d14h (2026-04-01 00:00 UTC)"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "");
        assert_eq!(lines[3].split_whitespace().collect::<Vec<_>>(), ["reservation", "resources", "expires"]);
        assert!(lines[4].starts_with("12 ") && lines[4].contains("tokens 4k, usd_micros 12k") && lines[4].ends_with("in 1m"), "{text}");
        assert!(lines[5].starts_with("13 ") && lines[5].ends_with("now (due)"), "{text}");
        assert_eq!(lines.len(), 6, "no count line under the agent's own list: {text}");
    }

    #[test]
    fn nothing_to_show_says_so() {
        let v = json!({"at": "2026-03-01T10:00:00.000Z", "budgets": [], "reservations": []});
        assert_eq!(render(&v, Of::Agent("w")), "no budget applies to agent w\nno open reservations\n");
        assert!(render(&v, Of::All).starts_with("no budgets ("));
        assert!(render(&v, Of::All).ends_with("no open reservations\n"));
        assert_eq!(count_line(None, 1000), "1000 or more open reservations (the daemon lists at most 1000)\n");
        assert_eq!(count_line(Some(4321), 1000), "4321 open reservations (1000 listed)\n");
        assert_eq!(count_line(Some(2), 2), "2 open reservations\n");
    }

    #[test]
    fn the_ps_cell_is_the_tightest_spent_over_hard() {
        assert_eq!(use_cell(&Value::Null), "-");
        assert_eq!(use_cell(&json!({})), "-");
        let one = json!({"tokens": {"level": "agent:w", "spent": 3100, "reserved": 0, "hard": 10_000, "remaining": 6900}});
        assert_eq!(use_cell(&one), "tokens 3100/10k");
        let three = json!({
            "calls": {"level": "agent:w", "spent": 2, "reserved": 0, "hard": 100, "remaining": 98},
            "tokens": {"level": "group:g", "spent": 123_456, "reserved": 0, "hard": 1_000_000, "remaining": 876_544},
            "usd_micros": {"level": "pool:p", "spent": 1, "reserved": 0, "hard": 5, "remaining": 4}});
        assert_eq!(use_cell(&three), "calls 2/100, tokens 123k/1M, +1 more");
    }
}
