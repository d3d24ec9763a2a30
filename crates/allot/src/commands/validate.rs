//! `allot validate FILE`: exit 0 valid, 1 invalid, 2 unreadable; a valid
//! file's budgets (group totals on custom resources, pools, and the pools
//! each agent draws on) are printed under the summary.

use super::groups::budgets_text;
use super::print;
use crate::cli::ValidateArgs;
use crate::fleet::Fleet;
use std::process::ExitCode;

pub(crate) fn run(args: &ValidateArgs) -> ExitCode {
    let path = args.file.display();
    let text = match std::fs::read(&args.file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("allot: cannot read {path}: not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to());
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("allot: cannot read {path}: {e}");
            return ExitCode::from(2);
        }
    };
    match crate::fleet::parse(&text) {
        Ok(fleet) => {
            let pools = if fleet.pools.is_empty() { String::new() } else { format!(", {} pool(s)", fleet.pools.len()) };
            let mut msg = format!("{path}: valid ({} group definition(s){pools}, {} agent(s))\n", fleet.groups.len(), fleet.agents.len());
            msg.push_str(&budgets(&fleet));
            if print(&msg).is_err() {
                return ExitCode::from(2);
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{path}:{e}");
            }
            eprintln!("{path}: invalid: {} error(s)", errors.len());
            ExitCode::from(1)
        }
    }
}

/// The budgets a valid fleet declares, one per line.
fn budgets(fleet: &Fleet) -> String {
    let mut out = String::new();
    for g in fleet.groups.iter().filter(|g| !g.budgets.is_empty()) {
        out.push_str(&format!("group {}:\n{}", g.name, budgets_text(&g.budgets, "  ")));
    }
    for (name, budgets) in &fleet.pools {
        out.push_str(&format!("pool {name}:\n{}", budgets_text(budgets, "  ")));
    }
    for a in fleet.agents.iter().filter(|a| !a.spec.pools.is_empty()) {
        out.push_str(&format!("agent {} draws on {}\n", a.spec.id, a.spec.pools.join(", ")));
    }
    out
}
