//! The spanned-TOML context of a parse: every error with its line, column
//! and field, and readers for the value types the fleet file uses (strings,
//! integers, tables, arrays of strings, quantities in human units,
//! durations, resource names), each reporting a wrong type at its location.

use super::FleetError;
use allot_core::Resource;
use allot_core::quantity::{self, Quantity};
use std::borrow::Cow;
use std::fmt::Display;
use std::ops::Range;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A TOML table with the spans of its keys and values.
pub(super) type Table<'i> = DeTable<'i>;
/// A TOML value with its span.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;
/// A TOML key with its span.
pub(super) type Key<'i> = Spanned<Cow<'i, str>>;

/// The text being parsed and the errors found so far.
pub(super) struct Ctx<'t> {
    text: &'t str,
    pub(super) errors: Vec<FleetError>,
}

impl<'t> Ctx<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Ctx { text, errors: Vec::new() }
    }

    /// Report `message` about `field` at the start of `span`.
    pub(super) fn err(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let start = span.start.min(self.text.len());
        let before = &self.text[..start];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        self.errors.push(FleetError { line, column, field: field.to_owned(), message: message.into() });
    }

    /// The value of `checked`, or its error reported at `span`.
    pub(super) fn check<T, E: Display>(&mut self, span: Range<usize>, field: &str, checked: Result<T, E>) -> Option<T> {
        match checked {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(span, field, e.to_string());
                None
            }
        }
    }

    /// Report keys of `table` not in `known`.
    pub(super) fn only(&mut self, table: &Table<'_>, field: &str, known: &[&str]) {
        for (k, _) in table.iter() {
            if !known.contains(&k.get_ref().as_ref()) {
                let f = join(field, k.get_ref());
                self.err(k.span(), &f, format!("unknown key; expected one of {}", known.join(", ")));
            }
        }
    }

    /// Report that `v` is not `what`, naming what it is.
    pub(super) fn expected(&mut self, v: &Value<'_>, field: &str, what: &str) {
        self.err(v.span(), field, format!("expected {what}, found {}", kind(v.get_ref())));
    }

    pub(super) fn string(&mut self, v: &Value<'_>, field: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.expected(v, field, "a string");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, v: &Value<'_>, field: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.expected(v, field, "true or false");
                None
            }
        }
    }

    pub(super) fn integer(&mut self, v: &Value<'_>, field: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(&i.as_str().replace('_', ""), i.radix());
                self.check(v.span(), field, n.map_err(|_| "integer out of range"))
            }
            _ => {
                self.expected(v, field, "an integer");
                None
            }
        }
    }

    pub(super) fn table<'a, 'i>(&mut self, v: &'a Value<'i>, field: &str) -> Option<&'a Table<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.expected(v, field, "a table");
                None
            }
        }
    }

    pub(super) fn strings(&mut self, v: &Value<'_>, field: &str) -> Option<Vec<String>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.expected(v, field, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            out.push(self.string(item, &format!("{field}[{i}]"))?);
        }
        Some(out)
    }

    /// One of `choices` by its name; another string is reported as an
    /// unknown `what`, with the names expected.
    pub(super) fn choice<T: Copy>(&mut self, v: &Value<'_>, field: &str, what: &str, choices: &[(&str, T)]) -> Option<T> {
        let name = self.string(v, field)?;
        if let Some((_, c)) = choices.iter().find(|(n, _)| *n == name) {
            return Some(*c);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let expected = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        };
        self.err(v.span(), field, format!("unknown {what} {name:?}: expected {expected}"));
        None
    }

    /// The text of a string or number to be read in human units (`what`
    /// names the expected value in the error).
    fn units_text(&mut self, v: &Value<'_>, field: &str, what: &str, floats: bool) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            DeValue::Integer(i) => Some(i.to_string()),
            DeValue::Float(f) if floats => Some(f.to_string()),
            _ => {
                self.expected(v, field, what);
                None
            }
        }
    }

    /// A quantity for `resource`: a string in human units, or a number read the same way.
    pub(super) fn quantity(&mut self, v: &Value<'_>, resource: &Resource, field: &str) -> Option<Quantity> {
        let text = self.units_text(v, field, "a quantity", true)?;
        let parsed = quantity::parse(field, resource.unit(), &text);
        self.check(v.span(), field, parsed.map_err(|e| unprefixed(field, &e)))
    }

    pub(super) fn duration(&mut self, v: &Value<'_>, field: &str) -> Option<std::time::Duration> {
        let text = self.units_text(v, field, "a duration", false)?;
        let parsed = quantity::parse_duration(field, &text);
        self.check(v.span(), field, parsed.map_err(|e| unprefixed(field, &e)))
    }

    pub(super) fn resource(&mut self, key: &Key<'_>, field: &str) -> Option<Resource> {
        self.check(key.span(), field, key.get_ref().parse::<Resource>())
    }
}

/// An error of the quantity parser without the `field: ` it starts with (the field is reported apart).
fn unprefixed(field: &str, e: &impl Display) -> String {
    let msg = e.to_string();
    msg.strip_prefix(&format!("{field}: ")).unwrap_or(&msg).to_owned()
}

/// The span of `key`'s value in the table `v`, or of `v` itself when it is not a table or has no such key.
pub(super) fn key_span(v: &Value<'_>, key: &str) -> Range<usize> {
    match v.get_ref() {
        DeValue::Table(t) => t.get(key).map_or_else(|| v.span(), Spanned::span),
        _ => v.span(),
    }
}

/// `field.key`, or `key` at the root.
pub(super) fn join(field: &str, key: &str) -> String {
    if field.is_empty() { key.to_owned() } else { format!("{field}.{key}") }
}

fn kind(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}
