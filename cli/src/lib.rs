//! `lbc`, the command-line client of lb: contexts, accounts, projects,
//! services, replicas, domains, nodes, builds, logs and exec against the REST API.
//!
//! `main.rs` only calls [`main`]; each command lives in `commands/`, the
//! flags in `args.rs`, the config file in `config.rs`, HTTP and websockets in
//! `client.rs`, printing in `output.rs`, failures and exit codes in `error.rs`.

pub mod args;
pub mod client;
mod commands;
pub mod config;
pub mod error;
pub mod output;
mod session;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::error::{code, Error};
use crate::output::Output;
use crate::session::Session;

/// Runs lbc with the process's arguments; answers the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let out = Output::new(cli.output, cli.quiet, cli.no_color);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("lbc: error: cannot start the runtime: {e}");
            return code::FAILED;
        }
    };
    let result = runtime.block_on(run(cli, out));
    // Streams may leave a blocking stdin read behind: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => code::OK,
        Err(Error::Exit(code)) => code,
        Err(e) => {
            if out.color_err {
                eprintln!("lbc: \x1b[31merror:\x1b[0m {e}");
            } else {
                eprintln!("lbc: error: {e}");
            }
            e.exit_code()
        }
    }
}

/// Prints a clap error as one line (help and version as they are).
fn usage_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if !e.use_stderr() {
        let _ = e.print();
        return code::OK;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return code::USAGE;
    }
    // The first paragraph is the error (with the missing arguments, if any).
    let text = e.render().to_string();
    let paragraph: Vec<&str> = text
        .lines()
        .skip_while(|l| l.trim().is_empty())
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = paragraph.join(" ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    let message = if message.is_empty() {
        "invalid arguments"
    } else {
        message
    };
    eprintln!("lbc: error: {message} (see --help)");
    code::USAGE
}

/// Writes to stdout; a closed pipe (`lbc ... | head`) is not an error.
pub(crate) fn write_stdout(bytes: &[u8]) -> error::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

async fn run(cli: Cli, out: Output) -> error::Result<()> {
    if let Command::Completion { shell } = &cli.command {
        return write_stdout(&commands::complete::script(*shell));
    }
    let mut session = Session::load(cli.context.clone(), cli.project.clone(), out)?;
    commands::run(&mut session, cli.command).await
}
