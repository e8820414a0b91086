//! `hab`: the ha-balancer operator CLI (see docs/hab.md)
//!
//! A thin wrapper: everything lives in the `hab` library so it can be
//! tested without spawning processes.

use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let code = hab::main_to(
        std::env::args_os(),
        &mut stdout.lock(),
        &mut std::io::stderr().lock(),
        terminal,
    );
    ExitCode::from(code)
}
