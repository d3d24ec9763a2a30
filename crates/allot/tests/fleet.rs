//! Fleet file parsing and validation: the fixed base shape, every error with
//! its location, and no panic on any input.
#![allow(clippy::unwrap_used)]

use allot::fleet::{FleetError, parse};
use allot_core::limits::Action;
use allot_core::{AgentId, Resource};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../../../examples/basic.toml");

fn errors(text: &str) -> Vec<FleetError> {
    match parse(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

fn rendered(text: &str) -> Vec<String> {
    errors(text).iter().map(ToString::to_string).collect()
}

/// As many errors as expected, each starting with its expected text.
fn assert_starts(errors: &[String], expected: &[&str]) {
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "got {got:?}\nwant prefix {want:?}");
    }
}

#[test]
fn the_example_fleet_of_allot_up_is_valid() {
    let fleet = parse(include_str!("../../../examples/fleet.toml")).unwrap();
    assert_eq!(fleet.agents.len(), 10);
    assert_eq!(fleet.settings.policy.delay(Action::Throttle), std::time::Duration::from_secs(5));
    assert_eq!(fleet.settings.sample_interval, std::time::Duration::from_millis(500));
}

#[test]
fn the_shipped_example_is_valid_and_merges_overrides() {
    let fleet = parse(EXAMPLE).unwrap();
    assert_eq!(fleet.agents.len(), 3);
    let indexer = fleet.ledger.quota(&AgentId::new("indexer").unwrap()).unwrap();
    assert_eq!(indexer.limits[&Resource::Memory].hard, 300 << 20);
    assert_eq!(indexer.limits[&Resource::Memory].action, Action::Throttle);
    assert_eq!(indexer.limits[&Resource::Cpu].hard, 300, "group default kept");
    assert_eq!(indexer.priority.get(), 7);
    let sandbox = fleet.ledger.quota(&AgentId::new("sandbox-1").unwrap()).unwrap();
    assert_eq!(sandbox.group, "tool_sandbox");
    assert_eq!(sandbox.limits[&Resource::Memory].burst, 160 << 20);
    assert_eq!(sandbox.limits[&Resource::Files].hard, 256);
    assert_eq!(sandbox.limits[&Resource::Processes].hard, 20, "extends lightweight_agent");
    assert_eq!(fleet.agents[1].env["LOG_LEVEL"], "info");
    assert_eq!(fleet.agents[0].command, ["sh", "-c", "while :; do sleep 1; done"]);
}

#[test]
fn every_error_is_reported_with_line_column_and_field() {
    let text = r#"
[[agents]]
name = "a"
group = "standard_agent"
command = ["x"]
limits.memory = { soft = "12XB", hard = "300Mi", action = "explode" }
colour = "blue"

[[agents]]
name = "b"
group = "standard_agent"
priority = 11

[[agents]]
name = "a"
group = "standard_agent"
command = ["y"]

[[agents]]
name = "c"
group = "no_such_group"
command = ["z"]

[[agents]]
name = "d"
group = "standard_agent"
command = ["z"]
limits.cpu = { soft = "900m" }
"#;
    let expected = [
        "6:26: agents[0].limits.memory.soft: \"12XB\" is not a valid byte size: unknown unit \"XB\"",
        "6:59: agents[0].limits.memory.action: unknown action \"explode\"",
        "7:1: agents[0].colour: unknown key",
        "9:1: agents[1]: missing command",
        "12:12: agents[1].priority: invalid priority 11: use 1..10",
        "15:8: agents[2].name: duplicate agent name \"a\"",
        "21:9: agents[3].group: unknown quota group \"no_such_group\"",
        "28:14: agents[4].limits.cpu: soft (900m) must not exceed hard (300m)",
    ];
    assert_starts(&rendered(text), &expected);
}

#[test]
fn group_errors() {
    let e = rendered(
        r#"
[groups.Bad-Name]
description = "x"

[groups.g1]
extends = "nope"

[groups.g2]
scaling_policy = "elastic"
limits.memory = { soft = "1Gi" }
totals = { memory = "lots" }

[groups.g3]
limits.cpu = { hard = "1", action = "custom" }
"#,
    );
    assert!(e[0].starts_with("2:9: groups.Bad-Name: invalid group name"), "{e:#?}");
    assert!(e[1].starts_with("6:11: groups.g1.extends: unknown group \"nope\""), "{e:#?}");
    assert!(e[2].starts_with("9:18: groups.g2.scaling_policy: unknown scaling policy \"elastic\""), "{e:#?}");
    assert!(e[3].contains("groups.g2.limits.memory: the group has no limit for this resource, so hard must be given"), "{e:#?}");
    assert!(e[4].starts_with("11:21: groups.g2.totals.memory: \"lots\""), "{e:#?}");
    assert!(e[5].contains("groups.g3.limits.cpu: action is custom but no custom_handler"), "{e:#?}");
    assert_eq!(e.len(), 6, "{e:#?}");
}

#[test]
fn a_custom_action_with_a_handler_and_custom_resources_with_windows() {
    // The agent `llm`; each case adds its limits.
    let llm = "[[agents]]\nname = \"llm\"\ngroup = \"standard_agent\"\ncommand = [\"agent\"]\n";
    let limits = r#"custom_handler = { url = "http://127.0.0.1:9000/violations" }
limits.tokens = { soft = "80k/min", hard = "100k/min", action = "custom" }
limits.usd_micros = { hard = "5M/day" }
"#;
    let fleet = parse(&[llm, limits].concat()).unwrap();
    let q = fleet.ledger.quota(&AgentId::new("llm").unwrap()).unwrap();
    let tokens = &q.limits[&Resource::Custom("tokens".into())];
    assert_eq!((tokens.soft, tokens.hard, tokens.action), (80_000, 100_000, Action::Custom));
    assert_eq!(q.limits[&Resource::Custom("usd_micros".into())].window, Some(allot_core::quantity::Window::Day));
    let e = rendered(&[llm, r#"limits.tokens = { soft = "80k/min", hard = "1M/day" }"#].concat());
    assert_eq!(e, ["5:44: agents[0].limits.tokens: all values of a limit must use one window; found per min and per day"], "{e:#?}");
}

#[test]
fn custom_handler_urls_are_those_the_run_time_can_call() {
    let fleet = parse(
        r#"
[groups.hooked]
extends = "standard_agent"
custom_handler = { url = "http://relay:8080/violations?from=allot" }

[[agents]]
name = "a"
group = "hooked"
command = ["agent"]
"#,
    )
    .unwrap();
    let a = fleet.ledger.quota(&AgentId::new("a").unwrap()).unwrap();
    assert_eq!(a.custom_handler, Some(allot_core::group::CustomHandler::Url("http://relay:8080/violations?from=allot".into())));
    let e = rendered(
        r#"
[groups.g1]
custom_handler = { url = "https://hooks.example.com/allot" }

[groups.g2]
custom_handler = { url = "http:///violations" }

[[agents]]
name = "b"
group = "standard_agent"
command = ["agent"]
custom_handler = { url = "https://hooks.example.com/allot" }
"#,
    );
    let https = "https is not supported by the run-time; use http:// (for example a local relay) or a command";
    assert_eq!(e[0], format!("3:26: groups.g1.custom_handler.url: {https}"), "{e:#?}");
    assert!(e[1].starts_with("6:26: groups.g2.custom_handler.url: has no host"), "{e:#?}");
    assert_eq!(e[2], format!("12:26: agents[0].custom_handler.url: {https}"), "{e:#?}");
    assert_eq!(e.len(), 3, "{e:#?}");
}

#[test]
fn wrong_choices_and_ranges_name_what_is_expected() {
    let text = r#"
[policy]
slow_every = 0
delays = { explode = "1s" }

[groups.g]
scaling_policy = "elastic"

[[agents]]
name = "a"
group = "standard_agent"
command = ["x"]
restart = "always"
max_restarts = 1001
notify_signal = "SIGKILL"
env = { "A=B" = "1", OK = 5 }
user = "1:x"
"#;
    let expected = [
        "3:14: policy.slow_every: use 1..3600",
        "4:12: policy.delays.explode: unknown action \"explode\"",
        "7:18: groups.g.scaling_policy: unknown scaling policy \"elastic\": expected fixed or proportional",
        "13:11: agents[0].restart: unknown restart policy \"always\": expected never or on-failure",
        "14:16: agents[0].max_restarts: use 0..1000",
        "15:17: agents[0].notify_signal: unknown signal \"SIGKILL\": expected SIGUSR1, SIGUSR2 or SIGHUP",
        "16:9: agents[0].env.A=B: invalid environment variable name",
        "16:27: agents[0].env.OK: expected a string, found an integer",
        "17:8: agents[0].user: \"1:x\" is not uid:gid",
    ];
    assert_starts(&rendered(text), &expected);
}

#[test]
fn toml_syntax_errors_have_a_location() {
    let e = errors("[[agents]]\nname = \"a\nx = 1\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, 2, "{e:?}");
    assert!(e[0].message.starts_with("invalid TOML"), "{e:?}");
    let e = rendered("agents = 5\n");
    assert!(e[0].starts_with("1:10: agents: expected an array of tables"), "{e:?}");
}

#[test]
fn an_empty_file_is_a_valid_empty_fleet() {
    let f = parse("").unwrap();
    assert!(f.agents.is_empty() && f.groups.is_empty());
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = parse(&text);
    }

    #[test]
    fn mutated_example_never_panics(pos in 0usize..2000, insert in "[ -~\n]{0,12}", cut in 0usize..20) {
        let mut s = EXAMPLE.to_string();
        let mut p = pos.min(s.len());
        while !s.is_char_boundary(p) { p -= 1; }
        let end = (p + cut).min(s.len());
        let mut e = end;
        while !s.is_char_boundary(e) { e -= 1; }
        s.replace_range(p..e, &insert);
        if let Err(errors) = parse(&s) {
            prop_assert!(!errors.is_empty());
            for err in errors {
                prop_assert!(err.line >= 1 && err.column >= 1);
                prop_assert!(!err.message.is_empty());
            }
        }
    }
}

#[test]
fn durations_longer_than_a_year_are_refused_naming_the_bound() {
    // An escalation delay this long used to validate and then panic the governor at the first hard violation.
    let text = r#"
[policy]
delays = { terminate = "1000000000h" }
terminate_grace = "366d"
analytics_window = 31622400

[[agents]]
name = "a"
group = "standard_agent"
command = ["x"]
limits.memory = { soft = "1Mi", hard = "2Mi", burst = "3Mi", burst_window = "9999999d" }
"#;
    let expected = [
        "3:24: policy.delays.terminate: \"1000000000h\" is not a valid duration: it is longer than the most allowed, 365d",
        "4:19: policy.terminate_grace: \"366d\" is not a valid duration: it is longer than the most allowed, 365d",
        "5:20: policy.analytics_window: \"31622400\" is not a valid duration: it is longer than the most allowed, 365d",
        "11:77: agents[0].limits.memory.burst_window: \"9999999d\" is not a valid duration: it is longer than the most allowed, 365d",
    ];
    assert_starts(&rendered(text), &expected);
    let at_the_bound = "[policy]\ndelays = { terminate = \"365d\" }\nterminate_grace = \"8760h\"\n";
    assert_eq!(parse(at_the_bound).unwrap().settings.policy.terminate_grace, std::time::Duration::from_secs(365 * 86_400));
}

#[test]
fn the_llm_example_declares_group_and_pool_budgets_and_the_pools_its_agents_draw_on() {
    use allot_core::budget::{BudgetSpec, Calendar, Expiry, Period, WindowSpec};
    let fleet = parse(include_str!("../../../examples/llm-fleet.toml")).unwrap();
    let tokens = Resource::Custom("tokens".into());
    let usd = Resource::Custom("usd_micros".into());
    let llm = fleet.groups.iter().find(|g| g.name == "llm").unwrap();
    assert_eq!(llm.budgets[&tokens], BudgetSpec::rolling(5_000_000, allot_core::quantity::Window::Day), "the window is kept");
    assert!(!llm.totals.contains_key(&tokens), "a custom total is a budget, not a kernel total");
    assert_eq!(fleet.ledger.group("llm").unwrap().budgets, llm.budgets, "registered as parsed");
    let month = Calendar::parse("x", Period::Month { day: 1 }, "00:00", "UTC").unwrap();
    let openai = BudgetSpec { hard: 50_000_000, soft: None, window: WindowSpec::Calendar(month), on_expiry: Expiry::Charge };
    assert_eq!(fleet.pools.keys().collect::<Vec<_>>(), ["openai"]);
    assert_eq!(fleet.pools["openai"], [(usd, openai)].into_iter().collect());
    assert_eq!(fleet.agents.len(), 3);
    for a in &fleet.agents {
        assert_eq!(a.spec.pools, ["openai"], "{}", a.spec.id);
        let q = fleet.ledger.quota(&a.spec.id).unwrap();
        assert_eq!((q.limits[&tokens].soft, q.limits[&tokens].hard), (80_000, 100_000));
    }
}

#[test]
fn a_group_budget_takes_the_table_form_and_replaces_an_inherited_one() {
    let fleet = parse(
        r#"
[groups.base]
totals = { tokens = "1M/h", memory = "1Gi" }

[groups.child]
extends = "base"
totals = { tokens = { hard = "2M", soft = "1500k", calendar = "day", at = "06:00", tz = "+02:00", on_expiry = "release" } }
"#,
    )
    .unwrap();
    let tokens = Resource::Custom("tokens".into());
    let child = &fleet.groups[1];
    let b = &child.budgets[&tokens];
    assert_eq!((b.hard, b.soft, b.on_expiry), (2_000_000, Some(1_500_000), allot_core::budget::Expiry::Release));
    assert_eq!(allot_core::budget::text::describe(b), "2M per day from 06:00 +02:00 (soft 1500k), expiries released");
    assert_eq!(child.totals[&Resource::Memory], 1 << 30, "kernel totals inherited");
    assert_eq!(allot_core::budget::text::describe(&fleet.groups[0].budgets[&tokens]), "1M/h");
}

#[test]
fn budget_errors_are_reported_at_the_key_with_line_column_and_field() {
    let e = rendered(
        r#"[groups.llm]
totals = { tokens = "5M/week", usd_micros = { hard = "5M/day", calendar = "month" } }

[groups.g2]
totals = { tokens = { soft = "1M" }, memory = { hard = "1G" } }

[pools.Bad-Name]
tokens = "1M"

[pools.p1]
usd_micros = { hard = "50M", calendar = "month", tz = "Europe/Paris" }
memory = "1G"
tokens = { hard = "1M", per = "day", calendar = "day" }
cost = { hard = "1M", colour = "red" }

[pools.p2]
tokens = { hard = "1M", day = 40, calendar = "month" }
other = { hard = "2M", soft = "1M/h", per = "day" }
third = 0

[pools.empty]

[[agents]]
name = "a"
group = "standard_agent"
command = ["x"]
pools = ["p1", "nope", "p1", 3]

[[agents]]
name = "b"
group = "standard_agent"
command = ["x"]
pools = "p1"
"#,
    );
    assert_starts(
        &e,
        &[
            "2:21: groups.llm.totals.tokens: \"5M/week\" is not a valid count per window: unknown window \"week\": use s, min, h or day (accepted forms: 100k/min",
            "2:54: groups.llm.totals.usd_micros.hard: a window suffix (/day) with calendar: write the count alone, the calendar is the window",
            "5:21: groups.g2.totals.tokens: missing hard (accepted forms: \"100k/min\", \"5M/day\"",
            "5:47: groups.g2.totals.memory: expected a quantity, found a table",
            "7:8: pools.Bad-Name: invalid pool name \"Bad-Name\": use 1..64 characters from [a-z0-9_], as for groups",
            "11:55: pools.p1.usd_micros.tz: time zone \"Europe/Paris\": IANA zone names are not supported, give the fixed UTC offset in force (accepted forms: UTC, Z, +02:00",
            "12:10: pools.p1.memory: budgets are for custom resources (tokens, usd_micros, ...), not memory",
            "13:49: pools.p1.tokens.calendar: give per (a rolling window) or calendar (a calendar window), not both",
            "14:23: pools.p1.cost.colour: unknown key; expected one of hard, soft, per, calendar, day, at, tz, on_expiry",
            "17:31: pools.p2.tokens.day: day 40 of the month: use 1..=28 (every month has it)",
            "18:31: pools.p2.other.soft: per h here but per = \"day\": a budget has one window",
            "19:9: pools.p2.third: must be greater than 0",
            "21:1: pools.empty: a pool needs at least one budget",
            "27:16: agents[0].pools[1]: unknown pool \"nope\": declared pools are empty, p1, p2",
            "27:24: agents[0].pools[2]: pool \"p1\" is named twice",
            "27:30: agents[0].pools[3]: expected a string, found an integer",
            "33:9: agents[1].pools: expected an array of pool names, found a string",
        ],
    );
    let e = rendered("[[agents]]\nname = \"a\"\ngroup = \"standard_agent\"\ncommand = [\"x\"]\npools = [\"shared\"]\n");
    assert_eq!(e, ["5:10: agents[0].pools[0]: unknown pool \"shared\": the file declares none ([pools.NAME])"]);
}

#[test]
fn the_readme_llm_fleet_is_valid_and_the_same_as_the_example_file() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("An LLM agent fleet under token and dollar budgets").unwrap();
    let block = &readme[start..];
    let body = block.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let from_readme = parse(body).unwrap();
    let example = parse(include_str!("../../../examples/llm-fleet.toml")).unwrap();
    assert_eq!(from_readme.groups, example.groups);
    assert_eq!(from_readme.pools, example.pools);
    let specs = |f: &allot::fleet::Fleet| f.agents.iter().map(|a| a.spec.clone()).collect::<Vec<_>>();
    assert_eq!(specs(&from_readme), specs(&example), "the same agents, limits and pools (commands aside)");
}
