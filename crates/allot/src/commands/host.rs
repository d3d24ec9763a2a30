//! `allot host`: SPEC section 3 for this machine.

use super::{Error, print};
use crate::cli::HostArgs;
use crate::output::table;
use allot_core::host::{HostSpec, Reservations};
use allot_core::quantity::{Quantity, format, format_approx, parse};
use allot_core::{Resource, Unit};
use allot_sys::Roots;
use allot_sys::host::read_host;
use serde_json::{Map, json};
use std::process::ExitCode;

fn reservations(args: &HostArgs) -> Result<Reservations, Error> {
    let mut r = Reservations::default();
    for item in &args.reserve {
        let Some((name, pct)) = item.split_once('=') else {
            return Err(format!("--reserve {item:?}: expected RESOURCE=PERCENT, such as memory=30").into());
        };
        let pct: u8 =
            pct.trim().trim_end_matches('%').parse().map_err(|_| format!("--reserve {item:?}: {pct:?} is not a percentage in 0..100"))?;
        let slot = match name.trim() {
            "memory" => &mut r.memory,
            "cpu" => &mut r.cpu,
            "processes" => &mut r.processes,
            "files" => &mut r.files,
            "network" => &mut r.network,
            other => {
                return Err(
                    format!("--reserve {item:?}: unknown resource {other:?}; expected memory, cpu, processes, files or network").into()
                );
            }
        };
        *slot = pct;
    }
    Ok(r)
}

pub(crate) fn run(args: &HostArgs) -> Result<ExitCode, Error> {
    let files = args.files.as_deref().map(|s| parse("--files", Unit::Count, s)).transpose()?.map(|q| q.value);
    let network = args.network.as_deref().map(|s| parse("--network", Unit::BytesPerSecond, s)).transpose()?.map(|q| q.value);
    let reading = read_host(&Roots::host(), files, network)?;
    let spec = HostSpec::new(&reading.totals, &reservations(args)?)?;
    let source = |r: &Resource| reading.sources.iter().find(|(n, _)| *n == r.name()).map(|(_, s)| s.clone()).unwrap_or_default();
    if args.json {
        let mut resources = Map::new();
        for (r, row) in &spec.rows {
            resources.insert(
                r.name().to_owned(),
                json!({"total": row.total, "reserved": row.reserved, "allocatable": row.allocatable, "unit": r.unit().name(), "source": source(r)}),
            );
        }
        let doc = json!({"cgroups": reading.mode.name(), "resources": resources});
        print(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        let mut rows = vec![vec!["resource".into(), "total".into(), "reserved".into(), "allocatable".into(), "source".into()]];
        for (r, row) in &spec.rows {
            // Exact when short (125MB/s, 1600m), else rounded (23.5Gi).
            let f = |v: u64| {
                let exact = format(r.unit(), Quantity::new(v));
                if exact.len() <= 8 { exact } else { format_approx(r.unit(), v) }
            };
            rows.push(vec![r.name().into(), f(row.total), f(row.reserved), f(row.allocatable), source(r)]);
        }
        print(&format!("cgroups: {}\n{}", reading.mode.name(), table(&rows)))?;
    }
    Ok(ExitCode::SUCCESS)
}
