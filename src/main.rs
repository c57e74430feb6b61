//! `lb`, the server binary: parses flags and wires the roles from the library
//! crates. `lb up` runs everything on one machine; `lb api | scheduler |
//! builder | node` run one role each for a cluster.

mod backup;
mod cli;
mod ingress;
mod shutdown;
mod supervise;
mod up;
mod vendors;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LB_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lb: error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line naming the problem, with its causes.
            eprintln!("lb: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
