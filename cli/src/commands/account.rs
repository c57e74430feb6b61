//! `lbc signup | login | logout | whoami` and `lbc token create | ls | revoke`.
//!
//! Passwords come from a prompt without echo (on the terminal) or from stdin
//! with `--password-stdin`; they are never printed nor kept. Tokens are kept
//! only in the config file (mode 0600) and printed only when `token create`
//! makes one.

use std::io::{BufRead, IsTerminal, Read, Write};

use lb_model::views::{Credentials, List, LoginResponse, TokenCreate, TokenView, UserView};
use reqwest::Method;
use serde_json::{json, Value};

use crate::args::{Login, TokenCmd};
use crate::client::{segment, typed, Client};
use crate::config::{check_context_name, normalize_api, DEFAULT_CONTEXT};
use crate::error::{Error, Result};
use crate::output::{age, text, word, Shown, Table};
use crate::session::Session;

/// The context login writes to, and the client of its API.
fn login_target(session: &mut Session, args: &Login) -> Result<(String, Client)> {
    let name = session
        .context_name()
        .unwrap_or_else(|| DEFAULT_CONTEXT.to_owned());
    check_context_name(&name)?;
    match &args.api {
        Some(api) => {
            let api = normalize_api(api)?;
            let entry = session.config.contexts.entry(name.clone()).or_default();
            if entry.api != api {
                entry.api = api.clone();
                entry.token = None;
                entry.project = None;
            }
            Ok((name, Client::new(&api, None)?))
        }
        None => {
            let context = session.config.contexts.get(&name).ok_or_else(|| {
                Error::usage(format!(
                    "context {name:?} does not exist: pass --api URL to create it"
                ))
            })?;
            let api = normalize_api(&context.api)?;
            Ok((name, Client::new(&api, None)?))
        }
    }
}

fn ask_username(args: &Login) -> Result<String> {
    if let Some(u) = &args.username {
        return Ok(u.clone());
    }
    if args.password_stdin || !std::io::stdin().is_terminal() {
        return Err(Error::usage(
            "no user name: pass --username (stdin is not a terminal to ask on)",
        ));
    }
    eprint!("Username: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::usage(format!("cannot read the user name: {e}")))?;
    let name = line.trim().to_owned();
    if name.is_empty() {
        return Err(Error::usage("no user name given"));
    }
    Ok(name)
}

fn ask_password(args: &Login, confirm: bool) -> Result<String> {
    if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::usage(format!("cannot read the password from stdin: {e}")))?;
        let s = s.strip_suffix('\n').unwrap_or(&s);
        let s = s.strip_suffix('\r').unwrap_or(s);
        if s.is_empty() {
            return Err(Error::usage("stdin held no password"));
        }
        return Ok(s.to_owned());
    }
    let no_tty = |e: std::io::Error| {
        Error::usage(format!(
            "cannot ask for the password ({e}): use --password-stdin"
        ))
    };
    let password = rpassword::prompt_password("Password: ").map_err(no_tty)?;
    if confirm {
        let again = rpassword::prompt_password("Password (again): ").map_err(no_tty)?;
        if again != password {
            return Err(Error::usage("the passwords do not match"));
        }
    }
    if password.is_empty() {
        return Err(Error::usage("no password given"));
    }
    Ok(password)
}

/// The body of signup and login.
fn credentials(username: &str, password: &str) -> Value {
    json!(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

async fn log_in(
    session: &mut Session,
    context: &str,
    client: &Client,
    username: &str,
    password: &str,
) -> Result<()> {
    let answer = client
        .call_public(
            Method::POST,
            "/auth/login",
            &credentials(username, password),
        )
        .await?;
    let token = typed::<LoginResponse>(&answer)
        .map_err(|_| Error::server("the login answer holds no token"))?
        .token;
    let entry = session
        .config
        .contexts
        .entry(context.to_owned())
        .or_default();
    entry.token = Some(token);
    if session.config.current_context.is_none() || session.context_flag.is_none() {
        session.config.current_context = Some(context.to_owned());
    }
    session.save()?;
    session.out.show(Shown::Message {
        value: json!({"username": username, "context": context, "api": client.api()}),
        text: format!(
            "Logged in as {username} at {} (context {context:?}).",
            client.api()
        ),
    })
}

/// `lbc signup`: creates the account, then logs in.
pub async fn signup(session: &mut Session, args: Login) -> Result<()> {
    let (context, client) = login_target(session, &args)?;
    let username = ask_username(&args)?;
    let password = ask_password(&args, true)?;
    client
        .call_public(
            Method::POST,
            "/auth/signup",
            &credentials(&username, &password),
        )
        .await?;
    log_in(session, &context, &client, &username, &password).await
}

/// `lbc login`.
pub async fn login(session: &mut Session, args: Login) -> Result<()> {
    let (context, client) = login_target(session, &args)?;
    let username = ask_username(&args)?;
    let password = ask_password(&args, false)?;
    log_in(session, &context, &client, &username, &password).await
}

/// `lbc logout`: forgets the token of the chosen context. Access tokens are
/// signed and expire on their own; the API has no session to end.
pub fn logout(session: &mut Session) -> Result<()> {
    let name = session
        .context_name()
        .ok_or_else(|| Error::usage("no current context: nothing to log out of"))?;
    let context = session.config.context_mut(&name)?;
    let was = context.token.take().is_some();
    session.save()?;
    session.out.show(Shown::Message {
        value: json!({"context": name, "logged_out": was}),
        text: if was {
            format!("Logged out of context {name:?}.")
        } else {
            format!("Context {name:?} was not logged in.")
        },
    })
}

/// `lbc whoami`.
pub async fn whoami(session: &mut Session) -> Result<()> {
    let client = session.client()?;
    let value = client.get("/me").await?;
    let me: UserView = typed(&value)?;
    let fields = vec![
        ("Username", me.username),
        ("Role", word(&me.role)),
        ("Id", me.id.clone()),
        ("API", client.api().to_owned()),
        ("Context", session.context_name().unwrap_or_default()),
    ];
    session.out.show(Shown::One {
        id: me.id,
        fields,
        value,
    })
}

/// `lbc token ...`.
pub async fn token(session: &mut Session, cmd: TokenCmd) -> Result<()> {
    let client = session.client()?;
    match cmd {
        TokenCmd::Create { name } => {
            let value = client.post("/tokens", &json!(TokenCreate { name })).await?;
            let token: TokenView = typed(&value)?;
            if session.out.quiet {
                return crate::write_stdout(format!("{}\n", token.id).as_bytes());
            }
            if session.out.format == crate::output::Format::Table {
                // The token alone on stdout, so `$(lbc token create ci)` works.
                crate::write_stdout(format!("{}\n", text(&token.token)).as_bytes())?;
                eprintln!(
                    "Token {:?} created (id {}). Keep it now: it is not shown again.",
                    token.name, token.id
                );
                return Ok(());
            }
            session.out.show(Shown::Message {
                value,
                text: String::new(),
            })
        }
        TokenCmd::Ls => {
            let list = client.get("/tokens").await?;
            let items = typed::<List<TokenView>>(&list)?.items;
            let table = Table {
                headers: vec!["ID", "NAME", "AGE"],
                rows: items
                    .iter()
                    .map(|t| vec![t.id.clone(), t.name.clone(), age(t.created)])
                    .collect(),
            };
            let ids = items.into_iter().map(|t| t.id).collect();
            session.out.show(Shown::List {
                value: list,
                table,
                ids,
            })
        }
        TokenCmd::Revoke { id, yes } => {
            super::confirm::confirm(
                yes,
                &format!("revoke API token {id} (what uses it stops working)"),
            )?;
            client
                .call(Method::DELETE, &format!("/tokens/{}", segment(&id)), None)
                .await?;
            session.out.show(Shown::Message {
                value: json!({"revoked": id}),
                text: format!("Token {id} revoked."),
            })
        }
    }
}
