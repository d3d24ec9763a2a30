//! `allot validate FILE`: exit 0 valid, 1 invalid, 2 unreadable.

use super::print;
use crate::cli::ValidateArgs;
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
            let msg = format!("{path}: valid ({} group definition(s), {} agent(s))\n", fleet.groups.len(), fleet.agents.len());
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
