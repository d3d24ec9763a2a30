//! What groups and agents share: limit tables (`limits.R = { soft, hard,
//! burst, burst_window, action }`) read into core `LimitOverride`s, and
//! custom handlers (a command, or an HTTP URL checked with the parser the
//! run-time uses).

use super::context::{Ctx, Table, Value, join};
use allot_core::Resource;
use allot_core::group::CustomHandler;
use allot_core::limits::{Action, LimitOverride};
use allot_core::quantity::Window;
use std::collections::BTreeMap;
use std::ops::Range;

impl Ctx<'_> {
    /// A `limits` table: an override per resource.
    pub(super) fn limits(&mut self, v: &Value<'_>, field: &str) -> BTreeMap<Resource, LimitOverride> {
        let mut out = BTreeMap::new();
        let Some(t) = self.table(v, field) else {
            return out;
        };
        for (k, lv) in t.iter() {
            let f = join(field, k.get_ref());
            let Some(resource) = self.resource(k, &f) else {
                continue;
            };
            let Some(lt) = self.table(lv, &f) else {
                continue;
            };
            let o = self.limit(lt, &resource, &f);
            out.insert(resource, o);
        }
        out
    }

    /// One resource's limit table.
    fn limit(&mut self, lt: &Table<'_>, resource: &Resource, f: &str) -> LimitOverride {
        self.only(lt, f, &["soft", "hard", "burst", "burst_window", "action"]);
        let mut o = LimitOverride::default();
        let mut windows: Vec<(Window, Range<usize>)> = Vec::new();
        for (name, slot) in [("soft", &mut o.soft), ("hard", &mut o.hard), ("burst", &mut o.burst)] {
            if let Some(qv) = lt.get(name) {
                if let Some(q) = self.quantity(qv, resource, &format!("{f}.{name}")) {
                    *slot = Some(q.value);
                    if let Some(w) = q.window {
                        windows.push((w, qv.span()));
                    }
                }
            }
        }
        if let Some((w, _)) = windows.first() {
            if let Some((other, span)) = windows.iter().find(|(x, _)| x != w) {
                self.err(span.clone(), f, format!("all values of a limit must use one window; found per {w} and per {other}"));
            }
            o.window = Some(*w);
        }
        if let Some(d) = lt.get("burst_window") {
            o.burst_window = self.duration(d, &format!("{f}.burst_window"));
        }
        if let Some(a) = lt.get("action") {
            let af = format!("{f}.action");
            o.action = self.string(a, &af).and_then(|s| self.check(a.span(), &af, s.parse::<Action>()));
        }
        o
    }

    /// A `custom_handler`: `{ command = [...] }` or `{ url = "http://..." }`.
    pub(super) fn handler(&mut self, v: &Value<'_>, field: &str) -> Option<CustomHandler> {
        let t = self.table(v, field)?;
        self.only(t, field, &["command", "url"]);
        match (t.get("command"), t.get("url")) {
            (Some(c), None) => {
                let cf = format!("{field}.command");
                let cmd = self.strings(c, &cf)?;
                if cmd.is_empty() {
                    self.err(c.span(), &cf, "must name a program");
                    return None;
                }
                Some(CustomHandler::Command(cmd))
            }
            (None, Some(u)) => {
                let uf = format!("{field}.url");
                let url = self.string(u, &uf)?;
                self.check(u.span(), &uf, crate::http::parse_http_url(&url))?;
                Some(CustomHandler::Url(url))
            }
            _ => {
                self.err(v.span(), field, "give exactly one of command or url");
                None
            }
        }
    }
}
