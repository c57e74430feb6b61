//! `lbc`, the command-line client of lb: contexts, accounts, projects,
//! services, builds, logs and exec against the REST API.
//!
//! Only `lbc --version` and `--help` exist yet (issue 8 builds the rest).

use clap::Parser;

/// The lb command-line client.
#[derive(Parser)]
#[command(
    name = "lbc",
    version,
    about = "lbc: the lb command-line client (commands arrive with issue 8)"
)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    eprintln!("lbc: no commands yet; see `lbc --help`");
    std::process::exit(2);
}
