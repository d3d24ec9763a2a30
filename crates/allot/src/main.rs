//! `allot`: a resource governor for multi-agent systems.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    allot::main()
}
