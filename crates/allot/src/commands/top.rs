//! `allot top`: a live terminal view of a running daemon (ratatui): agents
//! sorted by pressure (the highest usage/hard ratio over their resources),
//! usage bars against the soft (`|`) and hard (`]`) limits, recent actions.

use super::Error;
use crate::cli::TopArgs;
use crate::client::{default_socket, failure, request};
use allot_core::Resource;
use allot_core::quantity::format_approx;
use crossterm::event::{self, Event, KeyCode};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Style};
use ratatui::widgets::{Block, Borders, List, ListItem, Paragraph, Row, Table};
use serde_json::Value;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const SHOWN: [Resource; 3] = [Resource::Memory, Resource::Cpu, Resource::Processes];

/// The highest usage / hard limit over the agent's limited resources.
pub(crate) fn pressure(agent: &Value) -> f64 {
    let mut p: f64 = 0.0;
    if let Some(limits) = agent["quota"]["limits"].as_object() {
        for (r, l) in limits {
            if let (Some(u), Some(h)) = (agent["usage"][r].as_u64(), l["hard"].as_u64()) {
                if h > 0 {
                    p = p.max(u as f64 / h as f64);
                }
            }
        }
    }
    p
}

/// A text bar `width` wide for `usage` against `hard`, with the soft limit
/// marked `|` and the hard limit the right edge `]`; `>` when over hard.
pub(crate) fn bar(usage: u64, soft: u64, hard: u64, width: usize) -> String {
    if hard == 0 {
        return format!("[{}]", " ".repeat(width));
    }
    let fill = ((usage as f64 / hard as f64) * width as f64).round() as usize;
    let soft_at = ((soft as f64 / hard as f64) * width as f64).round() as usize;
    let mut s = String::from("[");
    for i in 0..width {
        let c = if i < fill.min(width) {
            '#'
        } else if i == soft_at.min(width.saturating_sub(1)) {
            '|'
        } else {
            ' '
        };
        s.push(c);
    }
    s.push(if usage > hard { '>' } else { ']' });
    s
}

/// Draw one frame from the daemon's agents and recent history.
pub(crate) fn draw(f: &mut Frame, socket: &str, agents: &[Value], history: &[Value]) {
    let mut sorted: Vec<&Value> = agents.iter().collect();
    sorted.sort_by(|a, b| pressure(b).total_cmp(&pressure(a)));
    let [head, body, foot] = Layout::vertical([Constraint::Length(1), Constraint::Min(5), Constraint::Length(10)]).areas(f.area());
    f.render_widget(Paragraph::new(format!("allot top: {} agents on {socket}   (q quits)", agents.len())), head);
    let rows: Vec<Row> = sorted
        .iter()
        .map(|a| {
            let mut cells = vec![
                a["id"].as_str().unwrap_or("?").to_owned(),
                a["state"].as_str().unwrap_or("?").to_owned(),
                format!("{:.0}%", pressure(a) * 100.0),
            ];
            for r in SHOWN {
                let u = a["usage"][r.name()].as_u64().unwrap_or(0);
                let l = &a["quota"]["limits"][r.name()];
                let text = match (l["soft"].as_u64(), l["hard"].as_u64()) {
                    (Some(s), Some(h)) => format!("{} {}", bar(u, s, h, 10), format_approx(r.unit(), u)),
                    _ => format_approx(r.unit(), u),
                };
                cells.push(text);
            }
            let style = if pressure(a) > 1.0 { Style::default().fg(Color::Red) } else { Style::default() };
            Row::new(cells).style(style)
        })
        .collect();
    let widths = [
        Constraint::Length(14),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Min(22),
        Constraint::Min(22),
        Constraint::Min(18),
    ];
    let header = Row::new(["agent", "state", "pressure", "memory", "cpu", "processes"]).style(Style::default().fg(Color::Yellow));
    f.render_widget(
        Table::new(rows, widths).header(header).block(Block::default().borders(Borders::ALL).title("agents by pressure")),
        body,
    );
    let items: Vec<ListItem> = history
        .iter()
        .rev()
        .take(8)
        .map(|h| {
            let at = crate::governor::clock::rfc3339(allot_core::Time::from_millis(h["at_ms"].as_u64().unwrap_or(0)));
            ListItem::new(format!(
                "{} {} {} {} {}",
                &at[11..19],
                h["agent"].as_str().unwrap_or("-"),
                h["action"].as_str().unwrap_or("?"),
                h["resource"].as_str().unwrap_or("-"),
                h["outcome"].as_str().unwrap_or("?")
            ))
        })
        .collect();
    f.render_widget(List::new(items).block(Block::default().borders(Borders::ALL).title("recent actions")), foot);
}

fn fetch(sock: &std::path::Path) -> Result<(Vec<Value>, Vec<Value>), Error> {
    let (st, agents) = request(sock, "GET", "/v1/agents", None)?;
    if st != 200 {
        return Err(failure(st, &agents).into());
    }
    let (st, history) = request(sock, "GET", "/v1/history", None)?;
    if st != 200 {
        return Err(failure(st, &history).into());
    }
    Ok((agents.as_array().cloned().unwrap_or_default(), history.as_array().cloned().unwrap_or_default()))
}

pub(crate) fn run(args: &TopArgs) -> Result<ExitCode, Error> {
    let sock = match &args.socket {
        Some(s) => s.clone(),
        None => default_socket()?,
    };
    let interval = allot_core::quantity::parse_duration("--interval", &args.interval)?.max(Duration::from_millis(100));
    // Fail before taking over the terminal when no daemon answers.
    let mut data = fetch(&sock)?;
    let mut terminal = ratatui::init();
    let shown = sock.display().to_string();
    let result = (|| -> Result<(), Error> {
        let mut last = Instant::now();
        loop {
            terminal.draw(|f| draw(f, &shown, &data.0, &data.1))?;
            if event::poll(Duration::from_millis(100))? {
                if let Event::Key(k) = event::read()? {
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
            }
            if last.elapsed() >= interval {
                data = fetch(&sock)?;
                last = Instant::now();
            }
        }
    })();
    ratatui::restore();
    result.map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn agent(id: &str, mem: u64, hard: u64) -> Value {
        json!({"id": id, "state": "running", "usage": {"memory": mem, "cpu": 50, "processes": 2},
            "quota": {"limits": {"memory": {"soft": hard / 2, "hard": hard}, "cpu": {"soft": 100, "hard": 200}, "processes": {"soft": 10, "hard": 20}}}})
    }

    #[test]
    fn bars_mark_soft_and_hard() {
        assert_eq!(bar(0, 50, 100, 10), "[     |    ]");
        assert_eq!(bar(60, 50, 100, 10), "[######    ]");
        assert_eq!(bar(150, 50, 100, 10), "[##########>");
        assert_eq!(bar(5, 0, 0, 4), "[    ]");
    }

    #[test]
    fn agents_are_drawn_by_pressure_with_recent_actions() {
        let agents = vec![agent("calm", 10 << 20, 100 << 20), agent("hot", 150 << 20, 100 << 20)];
        let history =
            vec![json!({"at_ms": 1_795_000_000_000u64, "agent": "hot", "action": "throttle", "resource": "memory", "outcome": "success"})];
        let mut t = Terminal::new(TestBackend::new(120, 24)).unwrap();
        t.draw(|f| draw(f, "/run/allot/allot.sock", &agents, &history)).unwrap();
        let text: String = t.backend().buffer().content().iter().map(|c| c.symbol()).collect::<String>();
        let hot = text.find("hot").unwrap();
        let calm = text.find("calm").unwrap();
        assert!(hot < calm, "the agent over its hard limit comes first");
        assert!(text.contains("150%") && text.contains("##########>"), "{text}");
        assert!(text.contains("throttle memory success"), "{text}");
    }
}
