//! Plain-text tables and quantities for the terminal.

use allot_core::Unit;
use allot_core::quantity::{Quantity, format, format_approx};

/// A value in its unit for a person: cpu in millicores (`250m`); others
/// exact when at most 4 digits (`200Mi`, `10k`, `125MB/s`), else rounded
/// (`52.4Mi`, memory in binary units);
/// counts per window without the window (it is the limit's).
pub(crate) fn human(unit: Unit, v: u64) -> String {
    match unit {
        Unit::Millicores | Unit::CountPerWindow => format_approx(unit, v),
        _ => {
            let exact = format(unit, Quantity::new(v));
            if exact.chars().take_while(char::is_ascii_digit).count() <= 4 { exact } else { format_approx(unit, v) }
        }
    }
}

/// A measured figure (a mean, a percentile) in its unit.
pub(crate) fn human_f(unit: Unit, v: f64) -> String {
    human(unit, v.max(0.0).round() as u64)
}

/// A rate of change of a resource per second, signed (`+97.7Ki/s`, `-3m/s`).
pub(crate) fn per_second(unit: Unit, v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    format!("{sign}{}/s", human_f(unit, v.abs()))
}

/// Seconds as a duration (`11m41s`), to the second.
pub(crate) fn secs(v: f64) -> String {
    allot_core::quantity::format_duration(std::time::Duration::from_secs(v.clamp(0.0, 1e12).round() as u64))
}

/// Render rows as columns separated by two spaces, the first row a header.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use allot_core::Unit;

    #[test]
    fn quantities_read_in_their_units() {
        assert_eq!(super::human(Unit::Bytes, 200 << 20), "200Mi");
        assert_eq!(super::human(Unit::Bytes, 104_857_601), "100Mi");
        assert_eq!(super::human(Unit::Millicores, 1119), "1119m");
        assert_eq!(super::human(Unit::BytesPerSecond, 125_000_000), "125MB/s");
        assert_eq!(super::per_second(Unit::Bytes, 100_005.0), "+97.7Ki/s");
        assert_eq!(super::per_second(Unit::Millicores, -3.0), "-3m/s");
        assert_eq!(super::secs(701.4), "11m41s");
    }

    #[test]
    fn columns_line_up() {
        let t = super::table(&[vec!["a".into(), "bb".into(), "c".into()], vec!["dddd".into(), "e".into(), "f".into()]]);
        assert_eq!(t, "a     bb  c\ndddd  e   f\n");
    }
}
