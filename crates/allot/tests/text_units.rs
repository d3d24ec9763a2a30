//! Text outputs read in units: `allot history` details after a governor run
//! (scripted backend, paused time).
#![allow(clippy::unwrap_used)]

mod common;

use common::{FakeBackend, Log};
use std::time::Duration;

#[tokio::test(start_paused = true)]
async fn history_details_are_in_units() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    // 30Mi of memory against 10Mi soft and 20Mi hard; cpu 1119m against 300m hard.
    let fleet = common::fleet("sample_interval = \"1s\"\n", &[("a", &common::memory_limit("warn"))]);
    common::governor(&fleet, FakeBackend::new(|_| (30 << 20, 1119, 1), Log::default()), state.clone())
        .run(Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_allot")).args(["history", "--state", state.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("memory 30Mi over hard limit 20Mi"), "{text}");
    assert!(text.contains("cpu 1119m over hard limit 300m"), "{text}");
    assert!(!text.contains("31457280"), "{text}");
}
