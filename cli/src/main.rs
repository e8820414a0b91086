//! `hab`: the ha-balancer operator CLI (see docs/hab.md)
//!
//! A thin wrapper: everything lives in the `hab` library so it can be
//! tested without spawning processes.

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = hab::main_with(
        std::env::args_os(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    ExitCode::from(code)
}
