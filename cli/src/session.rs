//! What every command needs: the config with the chosen context, the client
//! for its API (overridden by `LB_API` and `LB_TOKEN`), the default project,
//! and how to print.

use std::path::PathBuf;

use crate::client::Client;
use crate::config::{self, Config, Context};
use crate::error::{Error, Result};
use crate::output::Output;

/// The state of one lbc run.
pub struct Session {
    /// The config file's path.
    pub config_path: PathBuf,
    /// The config as read.
    pub config: Config,
    /// `--context`.
    pub context_flag: Option<String>,
    /// `--project`.
    pub project_flag: Option<String>,
    /// How to print.
    pub out: Output,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Session {
    /// Reads the config.
    pub fn load(context: Option<String>, project: Option<String>, out: Output) -> Result<Self> {
        let config_path = config::path()?;
        let config = Config::load(&config_path)?;
        Ok(Self {
            config_path,
            config,
            context_flag: context.filter(|c| !c.is_empty()),
            project_flag: project.filter(|p| !p.is_empty()),
            out,
        })
    }

    /// Writes the config back.
    pub fn save(&self) -> Result<()> {
        self.config.save(&self.config_path)
    }

    /// The chosen context's name: `--context`, else the current one.
    pub fn context_name(&self) -> Option<String> {
        self.context_flag
            .clone()
            .or_else(|| self.config.current_context.clone())
    }

    /// The chosen context, if there is one (an unknown `--context` is an error).
    pub fn context(&self) -> Result<Option<&Context>> {
        match self.context_name() {
            Some(name) if self.context_flag.is_some() => self.config.context(&name).map(Some),
            Some(name) => Ok(self.config.contexts.get(&name)),
            None => Ok(None),
        }
    }

    /// The client of the chosen API with its token.
    pub fn client(&self) -> Result<Client> {
        let context = self.context()?;
        let api = match env("LB_API") {
            Some(api) => api,
            None => match context {
                Some(c) => c.api.clone(),
                None => {
                    return Err(Error::usage(
                        "no API configured: run `lbc login --api URL`, \
                         `lbc context add NAME --api URL`, or set LB_API",
                    ))
                }
            },
        };
        let api = config::normalize_api(&api)?;
        let token = env("LB_TOKEN").or_else(|| context.and_then(|c| c.token.clone()));
        Client::new(&api, token)
    }

    /// The project of bare service names.
    pub fn project(&self) -> Result<String> {
        if let Some(p) = &self.project_flag {
            return Ok(p.clone());
        }
        if let Some(p) = self.context()?.and_then(|c| c.project.clone()) {
            return Ok(p);
        }
        Err(Error::usage(
            "no project given: name the service PROJECT/SERVICE, pass --project, \
             or set a default with `lbc project use NAME`",
        ))
    }

    /// Splits `SERVICE` or `PROJECT/SERVICE` into project and service.
    pub fn service_ref(&self, reference: &str) -> Result<(String, String)> {
        match reference.split_once('/') {
            Some((p, s)) if !p.is_empty() && !s.is_empty() && !s.contains('/') => {
                Ok((p.to_owned(), s.to_owned()))
            }
            Some(_) => Err(Error::usage(format!(
                "{reference:?} is not SERVICE or PROJECT/SERVICE"
            ))),
            None if reference.is_empty() => Err(Error::usage("the service name is empty")),
            None => Ok((self.project()?, reference.to_owned())),
        }
    }

    /// The API path of a service: `/projects/{p}/services/{s}`.
    pub fn service_path(&self, reference: &str) -> Result<String> {
        let (p, s) = self.service_ref(reference)?;
        Ok(format!(
            "/projects/{}/services/{}",
            crate::client::segment(&p),
            crate::client::segment(&s)
        ))
    }
}
