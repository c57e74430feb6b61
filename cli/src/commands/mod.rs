//! The commands, one file per area; [`run`] dispatches.

mod account;
mod apply;
mod build;
pub(crate) mod complete;
mod confirm;
mod context;
mod deploys;
mod domains;
mod env;
mod exec;
mod ids;
mod jobs;
mod logs;
mod node;
mod project;
pub(crate) mod quota;
mod script;
mod service;
mod service_body;
mod status;

use crate::args::Command;
use crate::error::Result;
use crate::session::Session;

/// Runs one command.
pub async fn run(session: &mut Session, command: Command) -> Result<()> {
    match command {
        Command::Context(cmd) => context::run(session, cmd),
        Command::Signup(args) => account::signup(session, args).await,
        Command::Login(args) => account::login(session, args).await,
        Command::Logout => account::logout(session),
        Command::Whoami => account::whoami(session).await,
        Command::Token(cmd) => account::token(session, cmd).await,
        Command::Project(cmd) => project::run(session, cmd).await,
        Command::Service(cmd) => service::run(session, cmd).await,
        Command::Scale { service, replicas } => service::scale(session, &service, replicas).await,
        Command::Restart { service } => service::action(session, &service, "restart").await,
        Command::Pause { service } => service::action(session, &service, "pause").await,
        Command::Resume { service } => service::action(session, &service, "resume").await,
        Command::Replicas { service } => service::replicas(session, &service).await,
        Command::Rollback { service, build } => service::rollback(session, &service, build).await,
        Command::Node(cmd) => node::run(session, cmd).await,
        Command::Quota(args) => quota::run(session, args).await,
        Command::Build(cmd) => build::run(session, cmd).await,
        Command::Deploy {
            service,
            commit,
            detach,
            timeout,
        } => build::deploy(session, &service, commit, detach, timeout).await,
        Command::Deploys { service } => deploys::list(session, &service).await,
        Command::Logs {
            service,
            follow,
            tail,
            replica,
            timestamps,
        } => {
            let how = logs::How {
                follow,
                tail,
                timestamps,
            };
            logs::run(session, &service, how, replica).await
        }
        Command::Exec(args) => exec::run(session, args).await,
        Command::Script(cmd) => script::run(session, cmd).await,
        Command::Domains(cmd) => domains::run(session, cmd).await,
        Command::Open { service } => domains::open(session, &service).await,
        Command::Completion { .. } => unreachable!("handled before the session is loaded"),
        Command::Status { service } => status::run(session, service.as_deref()).await,
        Command::Env(cmd) => env::run(session, cmd).await,
        Command::Apply(args) => apply::run(session, args, false).await,
        Command::Diff(args) => apply::run(session, args, true).await,
        Command::Run(args) => jobs::run(session, args).await,
        Command::Job(cmd) => jobs::job(session, cmd).await,
        Command::Cron(cmd) => jobs::cron(session, cmd).await,
        Command::Complete { what } => complete::run(session, &what).await,
    }
}
