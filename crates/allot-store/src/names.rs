//! Closed sets of names stored as text (outcomes, stages, agent states):
//! one macro gives each its text form, `Display`, `FromStr` (whose error
//! names the bad value) and its SQLite conversions, so a column holds exactly
//! the names that serde writes.

/// A name that is not one of a closed set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}: expected one of {}", .expected.join(", "))]
pub struct UnknownName {
    /// What the name was meant to be (`outcome`, `stage`, `agent state`).
    pub what: &'static str,
    /// The name given.
    pub value: String,
    /// The names accepted.
    pub expected: &'static [&'static str],
}

/// Implement `ALL`, `as_str`, `Display`, `FromStr`, `ToSql` and `FromSql` for
/// a fieldless enum whose variants map to the given names (which must be the
/// names its serde derive uses; a test checks that).
macro_rules! text_enum {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name as stored in the database and written in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::names::UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    _ => Err($crate::names::UnknownName { what: $what, value: s.to_owned(), expected: &[$($name),+] }),
                }
            }
        }

        impl rusqlite::types::ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }

        impl rusqlite::types::FromSql for $ty {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                v.as_str()?.parse().map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

pub(crate) use text_enum;
