//! Budgets in the governor under paused tokio time (issue 12): a rolling
//! window gives its spend back exactly when it leaves, a calendar window
//! resets at its stated time, a reservation left unsettled is charged at its
//! expiry on the governor's timer, and a budget spent at a steady rate is
//! forecast to be exhausted.
#![allow(clippy::unwrap_used)]

mod common;

use allot::governor::control::{Control, ControlError};
use allot_core::Resource;
use common::{FakeBackend, Log};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

const POLICY: &str = "sample_interval = \"1s\"\n";

fn tokens() -> Resource {
    Resource::Custom("tokens".into())
}

async fn ask<T>(tx: &mpsc::UnboundedSender<Control>, make: impl FnOnce(oneshot::Sender<T>) -> Control) -> T {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).unwrap();
    rx.await.unwrap()
}

async fn reserve(tx: &mpsc::UnboundedSender<Control>, amount: u64, ttl: Duration) -> Result<Value, ControlError> {
    ask(tx, |r| Control::Reserve("a".into(), BTreeMap::from([(tokens(), amount)]), ttl, r)).await
}

async fn settle(tx: &mpsc::UnboundedSender<Control>, id: u64, amount: u64) -> Result<Value, ControlError> {
    ask(tx, |r| Control::Settle(id, None, BTreeMap::from([(tokens(), amount)]), r)).await
}

/// The agent's tokens budget: (spent, reserved, resets_at).
async fn budget(tx: &mpsc::UnboundedSender<Control>) -> (u64, u64, Value) {
    let v = ask(tx, |r| Control::Budgets(allot::governor::budgets::BudgetQuery::Agent("a".into()), r)).await.unwrap();
    let b = v["budgets"].as_array().unwrap().iter().find(|b| b["resource"] == "tokens").unwrap().clone();
    (b["spent"].as_u64().unwrap(), b["reserved"].as_u64().unwrap(), b["resets_at"].clone())
}

/// Start a governor with one agent `a` whose settings are `limits` (and any
/// extra fleet text before it); its control channel.
fn start(extra: &str, limits: &str) -> (mpsc::UnboundedSender<Control>, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fleet = format!("{extra}\n{}", common::fleet(POLICY, &[("a", limits)]));
    let backend = FakeBackend::new(|_| (1 << 20, 10, 1), Log::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let g = common::governor(&fleet, backend, dir.path().join("state.db")).with_control(rx);
    let h = tokio::spawn(async move {
        g.run(Some(Duration::from_secs(3 * 86_400))).await.unwrap();
    });
    (tx, h, dir)
}

#[tokio::test(start_paused = true)]
async fn a_rolling_window_gives_spend_back_when_it_leaves_and_not_before() {
    let (tx, h, _dir) = start("", "limits.tokens = { hard = \"1000/min\" }");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = reserve(&tx, 600, Duration::from_secs(30)).await.unwrap();
    settle(&tx, r["id"].as_u64().unwrap(), 600).await.unwrap();
    let (spent, _, resets) = budget(&tx).await;
    assert_eq!(spent, 600);
    assert!(resets.is_string(), "{resets}");
    assert!(matches!(reserve(&tx, 500, Duration::from_secs(30)).await, Err(ControlError::Exhausted { .. })));
    // The spend's bucket (1 s of a 1 min window) leaves between 60 and 61 s after it.
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(budget(&tx).await.0, 600, "still in the window after 59 s");
    let refused = reserve(&tx, 500, Duration::from_secs(30)).await;
    let Err(ControlError::Exhausted { retry_after_ms: Some(ms), .. }) = refused else { panic!("{refused:?}") };
    assert!(ms <= 2000, "room within the bucket: {ms} ms");
    tokio::time::sleep(Duration::from_millis(ms)).await;
    assert_eq!(budget(&tx).await.0, 0, "gone when retry_after said");
    assert!(reserve(&tx, 1000, Duration::from_secs(30)).await.is_ok(), "the whole limit again");
    drop(tx);
    h.abort();
}

#[tokio::test(start_paused = true)]
async fn a_calendar_window_resets_at_its_time_and_an_expiry_is_charged_on_the_timer() {
    // A daily pool reset at the next whole hour (UTC), computed from the wall clock the governor starts at.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let mut next_hour_ms = (now_ms / 3_600_000 + 1) * 3_600_000;
    if next_hour_ms - now_ms < 60_000 {
        next_hour_ms += 3_600_000;
    }
    let at = format!("{:02}:00", (next_hour_ms / 3_600_000) % 24);
    let extra = format!("[pools.daily]\ntokens = {{ hard = \"1000\", calendar = \"day\", at = \"{at}\", tz = \"UTC\" }}\n");
    let (tx, h, _dir) = start(&extra, "pools = [\"daily\"]");
    let r = reserve(&tx, 700, Duration::from_secs(10)).await.unwrap();
    assert_eq!(r["levels"]["tokens"], serde_json::json!(["pool:daily"]), "{r}");
    // Left unsettled: charged in full at its expiry, by the governor's timer.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let (spent, reserved, resets) = budget(&tx).await;
    assert_eq!((spent, reserved), (700, 0));
    let reset_text = resets.as_str().unwrap().to_owned();
    assert!(reset_text.ends_with(&format!("T{at}:00.000Z")), "resets at the next {at} UTC: {reset_text}");
    // Just before the reset the spend is counted; at it, the budget is whole again.
    let before = next_hour_ms - now_ms - 10_500 - 1_000;
    tokio::time::sleep(Duration::from_millis(before)).await;
    assert_eq!(budget(&tx).await.0, 700, "a second before the reset");
    assert!(matches!(reserve(&tx, 301, Duration::from_secs(10)).await, Err(ControlError::Exhausted { .. })));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(budget(&tx).await.0, 0, "reset at {at}");
    assert!(reserve(&tx, 1000, Duration::from_secs(10)).await.is_ok());
    drop(tx);
    h.abort();
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_at_a_steady_rate_is_forecast_to_run_out() {
    // 100 tokens a second against 500k a day: exhausted after 5000 s (83 min);
    // with a 10 min horizon the warning comes at about 73 min.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let policy = format!("{POLICY}analytics_interval = \"1m\"\nanalytics_window = \"30m\"\nforecast_horizon = \"10m\"\n");
    let fleet = common::fleet(&policy, &[("a", "limits.tokens = { soft = \"400k/day\", hard = \"500k/day\", action = \"warn\" }")]);
    let backend = FakeBackend::new(|_| (1 << 20, 10, 1), Log::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let g = common::governor(&fleet, backend, state.clone()).with_control(rx);
    let h = tokio::spawn(g.run(Some(Duration::from_secs(80 * 60))));
    for _ in 0..(80 * 60 - 5) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let v = ask(&tx, |r| Control::Report("a".into(), tokens(), 100, None, r)).await.unwrap();
        assert!(v["usage"].as_u64().is_some(), "{v}");
    }
    drop(tx);
    h.await.unwrap().unwrap();
    let store = allot_store::Store::open_read_only(&state).unwrap();
    let events = store.events_since(0, 1_000_000).unwrap();
    let forecast = events.iter().find(|e| e.topic == "resource_management.alert.forecast" && e.data["resource"] == "tokens");
    let f = forecast.unwrap_or_else(|| panic!("no forecast of the budget"));
    let eta = f.data["eta_secs"].as_f64().unwrap();
    let at_s = (f.at_ms - events[0].at_ms) / 1000;
    // Exhausted at 5000 s of spending: the forecast's at + eta is within a minute of it.
    assert!(((at_s as f64 + eta) - 5000.0).abs() < 90.0, "warned at {at_s} s with eta {eta}");
    let detail = f.data["detail"].as_str().unwrap();
    assert!(detail.starts_with("tokens budget exhausted in about "), "{detail}");
}
