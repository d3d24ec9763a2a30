//! The stored shapes of budgets (issue 12): open reservations with their
//! holds, spend per level, window and bucket, and budgets declared through
//! the API. Errors name the field at fault.

use super::DtoError;
use allot_core::budget::{BudgetSpec, Calendar, Expiry, Hold, Level, Period, Reservation, Rolling, WindowSpec};
use allot_core::{AgentId, Resource, Time};
use serde::{Deserialize, Serialize};
use std::time::Duration;

fn level(text: &str, field: &str) -> Result<Level, DtoError> {
    text.parse().map_err(|e| DtoError::new(field, e))
}

fn custom(name: &str, field: &str) -> Result<Resource, DtoError> {
    match name.parse::<Resource>() {
        Ok(r) if r.is_custom() => Ok(r),
        Ok(r) => Err(DtoError::new(field, format!("{r} is not a custom resource: budgets are on custom resources only"))),
        Err(e) => Err(DtoError::new(field, e)),
    }
}

/// One resource of an open reservation, as stored (one row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBudgetHold {
    /// The resource's name.
    pub resource: String,
    /// The amount held at each level.
    pub amount: u64,
    /// The levels holding it (`agent:a`, `group:g`, `pool:p`), in order.
    pub levels: Vec<String>,
}

/// An open reservation, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReservation {
    /// Its id.
    pub id: u64,
    /// The agent.
    pub agent: String,
    /// When it was made (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it expires.
    pub expires_ms: u64,
    /// What it holds.
    pub holds: Vec<StoredBudgetHold>,
}

impl StoredReservation {
    /// The stored form of a core reservation.
    pub fn from_core(r: &Reservation) -> StoredReservation {
        StoredReservation {
            id: r.id,
            agent: r.agent.to_string(),
            created_ms: r.created.as_millis(),
            expires_ms: r.expires.as_millis(),
            holds: r
                .holds
                .iter()
                .map(|h| StoredBudgetHold {
                    resource: h.resource.name().to_owned(),
                    amount: h.amount,
                    levels: h.levels.iter().map(Level::to_string).collect(),
                })
                .collect(),
        }
    }

    /// The core reservation, every field checked.
    pub fn to_core(&self) -> Result<Reservation, DtoError> {
        let agent = AgentId::new(self.agent.clone()).map_err(|e| DtoError::new("agent", e))?;
        let mut holds = Vec::with_capacity(self.holds.len());
        for h in &self.holds {
            let f = format!("holds.{}", h.resource);
            let resource = custom(&h.resource, &f)?;
            let levels = h.levels.iter().map(|l| level(l, &format!("{f}.levels"))).collect::<Result<_, _>>()?;
            holds.push(Hold { resource, amount: h.amount, levels });
        }
        Ok(Reservation {
            id: self.id,
            agent,
            created: Time::from_millis(self.created_ms),
            expires: Time::from_millis(self.expires_ms),
            holds,
        })
    }
}

/// A budget's window, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredWindow {
    /// The spend of the last `length_ms`, in `buckets` buckets.
    Rolling {
        /// The window's length.
        length_ms: u64,
        /// The number of buckets.
        buckets: u32,
    },
    /// The spend since the last reset.
    Calendar {
        /// `day` or `month`.
        period: String,
        /// For `month`: the day of the month of the reset (1..=28).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        day: Option<u8>,
        /// Minutes after local midnight of the reset.
        at_minute: u16,
        /// The local time's offset from UTC, in minutes.
        offset_minutes: i16,
    },
}

impl StoredWindow {
    /// The stored form of a core window.
    pub fn from_core(w: &WindowSpec) -> StoredWindow {
        match w {
            WindowSpec::Rolling(r) => {
                StoredWindow::Rolling { length_ms: allot_core::time::duration_millis(r.length()), buckets: r.buckets() }
            }
            WindowSpec::Calendar(c) => {
                let (period, day) = match c.period() {
                    Period::Day => ("day", None),
                    Period::Month { day } => ("month", Some(day)),
                };
                StoredWindow::Calendar { period: period.to_owned(), day, at_minute: c.at_minute(), offset_minutes: c.offset_minutes() }
            }
        }
    }

    /// The core window, checked; `field` names it.
    pub fn to_core(&self, field: &str) -> Result<WindowSpec, DtoError> {
        let e = |e: allot_core::budget::WindowError| DtoError { field: e.field, problem: e.problem };
        Ok(match self {
            StoredWindow::Rolling { length_ms, buckets } => {
                WindowSpec::Rolling(Rolling::new(field, Duration::from_millis(*length_ms), *buckets).map_err(e)?)
            }
            StoredWindow::Calendar { period, day, at_minute, offset_minutes } => {
                let period = match (period.as_str(), day) {
                    ("day", _) => Period::Day,
                    ("month", Some(day)) => Period::Month { day: *day },
                    ("month", None) => return Err(DtoError::new(format!("{field}.day"), "a monthly window needs its day")),
                    (other, _) => {
                        return Err(DtoError::new(format!("{field}.period"), format!("unknown period {other:?}: expected day or month")));
                    }
                };
                WindowSpec::Calendar(Calendar::new(field, period, *at_minute, *offset_minutes).map_err(e)?)
            }
        })
    }
}

/// A budget declared through the API, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBudget {
    /// The hard limit.
    pub hard: u64,
    /// The soft limit, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<u64>,
    /// The window.
    pub window: StoredWindow,
    /// `charge` or `release`.
    pub on_expiry: String,
}

impl StoredBudget {
    /// The stored form of a core budget.
    pub fn from_core(s: &BudgetSpec) -> StoredBudget {
        StoredBudget { hard: s.hard, soft: s.soft, window: StoredWindow::from_core(&s.window), on_expiry: s.on_expiry.name().to_owned() }
    }

    /// The core budget, checked.
    pub fn to_core(&self) -> Result<BudgetSpec, DtoError> {
        let on_expiry: Expiry = self.on_expiry.parse().map_err(|e| DtoError::new("on_expiry", e))?;
        if self.hard == 0 {
            return Err(DtoError::new("hard", "must be greater than 0"));
        }
        if let Some(soft) = self.soft.filter(|s| *s > self.hard) {
            return Err(DtoError::new("soft", format!("{soft} must not exceed hard ({})", self.hard)));
        }
        Ok(BudgetSpec { hard: self.hard, soft: self.soft, window: self.window.to_core("window")?, on_expiry })
    }
}

/// Spend of one budget in one bucket of one window, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSpend {
    /// The level (`agent:a`, `group:g`, `pool:p`).
    pub level: String,
    /// The resource.
    pub resource: String,
    /// The window's identity (`WindowSpec::key`).
    pub window: String,
    /// The bucket (rolling: its number; calendar: the period's start in ms).
    pub bucket: u64,
    /// The amount.
    pub amount: u64,
}

impl StoredSpend {
    /// The level and resource, checked.
    pub fn key(&self) -> Result<(Level, Resource), DtoError> {
        Ok((level(&self.level, "level")?, custom(&self.resource, "resource")?))
    }
}
