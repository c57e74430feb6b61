//! Shell completion: `lbc completion bash|zsh|fish|...` prints clap's
//! script for every command and flag, and for bash, zsh and fish adds the
//! names of projects and services read from the API when the cursor is at a
//! command's SERVICE (or a project command's NAME, or `--project`'s value).
//! The scripts get the names from the hidden `lbc __complete projects|
//! services`, which prints one a line and stays silent on any failure (no
//! API, not logged in, slow network: completion must never print errors).
//!
//! Which command paths take a service or a project is read from the clap
//! definitions (a first positional named `service`; `name` under
//! `project`), so commands added later are completed too.

use std::time::Duration;

use clap::CommandFactory;
use clap_complete::Shell;
use lb_model::views::{List, ProjectView};

use crate::args::Cli;
use crate::client::{segment, typed};
use crate::error::Result;
use crate::session::Session;

/// How long `lbc __complete` may take before it prints what it has.
const BUDGET: Duration = Duration::from_secs(3);

/// Runs `lbc __complete projects|services`.
pub async fn run(session: &mut Session, what: &str) -> Result<()> {
    let names = match tokio::time::timeout(BUDGET, names(session, what)).await {
        Ok(Ok(names)) => names,
        _ => Vec::new(),
    };
    let mut text = names.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    crate::write_stdout(text.as_bytes())
}

/// Project names, or service names: bare ones of the default project
/// first, then `PROJECT/SERVICE` of every project.
async fn names(session: &Session, what: &str) -> Result<Vec<String>> {
    let client = session.client()?;
    let projects = typed::<List<ProjectView>>(&client.get("/projects?limit=1000").await?)?.items;
    let projects: Vec<String> = projects.into_iter().map(|p| p.name).collect();
    if what == "projects" {
        return Ok(projects);
    }
    let default = session.project().ok();
    let reads = projects.iter().map(|project| {
        let client = client.clone();
        async move {
            let path = format!("/projects/{}/services?limit=1000", segment(project));
            let names: Vec<String> = match client.get(&path).await {
                Ok(list) => list["items"]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|s| s["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            (project.clone(), names)
        }
    });
    let all = futures::future::join_all(reads).await;
    let mut out = Vec::new();
    for (project, names) in &all {
        if default.as_deref() == Some(project.as_str()) {
            out.extend(names.iter().cloned());
        }
    }
    for (project, names) in &all {
        out.extend(names.iter().map(|n| format!("{project}/{n}")));
    }
    Ok(out)
}

/// What a command path completes from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services,
    Projects,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::Projects => "projects",
        }
    }
}

/// Every command path (with aliases: `svc get`, `services get`) whose first
/// positional is a service or a project, and every option taking a value.
fn paths() -> (Vec<(String, Kind)>, Vec<String>) {
    fn walk(
        cmd: &clap::Command,
        prefixes: &[String],
        in_project: bool,
        out: &mut Vec<(String, Kind)>,
        flags: &mut Vec<(String, bool)>,
    ) {
        for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
            let takes = arg.get_action().takes_values();
            if let Some(long) = arg.get_long() {
                flags.push((format!("--{long}"), takes));
            }
            if let Some(short) = arg.get_short() {
                flags.push((format!("-{short}"), takes));
            }
        }
        // A new name is not completed.
        let create = cmd.get_name() == "create";
        if let Some(first) = cmd.get_positionals().next().filter(|_| !create) {
            let kind = match first.get_id().as_str() {
                "service" => Some(Kind::Services),
                "name" if in_project => Some(Kind::Projects),
                _ => None,
            };
            if let Some(kind) = kind {
                out.extend(prefixes.iter().map(|p| (p.clone(), kind)));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() {
                continue;
            }
            let names: Vec<&str> = std::iter::once(sub.get_name())
                .chain(sub.get_all_aliases())
                .collect();
            let next: Vec<String> = prefixes
                .iter()
                .flat_map(|p| {
                    names.iter().map(move |n| {
                        if p.is_empty() {
                            (*n).to_owned()
                        } else {
                            format!("{p} {n}")
                        }
                    })
                })
                .collect();
            let in_project = in_project || (prefixes == [""] && sub.get_name() == "project");
            walk(sub, &next, in_project, out, flags);
        }
    }
    let mut out = Vec::new();
    let mut flags = Vec::new();
    walk(
        &Cli::command(),
        &[String::new()],
        false,
        &mut out,
        &mut flags,
    );
    // Options that take a value everywhere they exist (`-f` is a value
    // somewhere and a switch elsewhere: left out, so `logs -f web` works).
    let mut valued: Vec<String> = flags
        .iter()
        .filter(|(name, _)| flags.iter().filter(|(n, _)| n == name).all(|(_, t)| *t))
        .map(|(name, _)| name.clone())
        .collect();
    valued.sort();
    valued.dedup();
    (out, valued)
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> Vec<u8> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "lbc", &mut script);
    let (paths, valued) = paths();
    let mut script = String::from_utf8_lossy(&script).into_owned();
    match shell {
        Shell::Bash => script.push_str(&bash(&paths, &valued)),
        Shell::Fish => script.push_str(&fish(&paths, &valued)),
        Shell::Zsh => script = zsh(&script),
        _ => {}
    }
    script.into_bytes()
}

fn bash(paths: &[(String, Kind)], valued: &[String]) -> String {
    let case = |kind: Kind| {
        paths
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(p, _)| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join("|")
    };
    format!(
        r#"
# Project and service names from the API (lbc __complete).
_lbc_dynamic() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local kind=""
    if [[ "$prev" == "--project" ]]; then
        kind=projects
    elif [[ "$cur" != -* ]]; then
        local valued=" {valued} " path="" skip=0 w i
        for ((i = 1; i < COMP_CWORD; i++)); do
            w="${{COMP_WORDS[i]}}"
            if ((skip)); then skip=0; continue; fi
            if [[ "$valued" == *" $w "* ]]; then skip=1; continue; fi
            [[ "$w" == -* ]] && continue
            path="${{path:+$path }}$w"
        done
        case "$path" in
            {services}) kind=services ;;
            {projects}) kind=projects ;;
        esac
    fi
    if [[ -n "$kind" ]]; then
        # A --project on the line picks the project of bare names.
        local project=() j
        for ((j = 1; j < COMP_CWORD; j++)); do
            case "${{COMP_WORDS[j]}}" in
                --project) project=(--project "${{COMP_WORDS[j+1]}}") ;;
                --project=*) project=("${{COMP_WORDS[j]}}") ;;
            esac
        done
        local IFS=$'\n'
        COMPREPLY=($(compgen -W "$(lbc "${{project[@]}}" __complete "$kind" 2>/dev/null)" -- "$cur"))
        return 0
    fi
    _lbc "$@"
}}
complete -F _lbc_dynamic -o bashdefault -o default lbc
"#,
        valued = valued.join(" "),
        services = case(Kind::Services),
        projects = case(Kind::Projects),
    )
}

fn fish(paths: &[(String, Kind)], valued: &[String]) -> String {
    let mut out = format!(
        r#"
# Project and service names from the API (lbc __complete).
function __lbc_path
    set -l valued {valued}
    set -l words (commandline -opc)
    set -e words[1]
    set -l path
    set -l skip 0
    for w in $words
        if test $skip = 1
            set skip 0
            continue
        end
        if contains -- $w $valued
            set skip 1
            continue
        end
        if string match -q -- '-*' $w
            continue
        end
        set path $path $w
    end
    string join ' ' $path
end
complete -c lbc -f -l project -r -a '(lbc __complete projects 2>/dev/null)'
"#,
        valued = valued.join(" ")
    );
    for kind in [Kind::Services, Kind::Projects] {
        let quoted: Vec<String> = paths
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(p, _)| format!("'{p}'"))
            .collect();
        out.push_str(&format!(
            "complete -c lbc -f -n 'contains -- (__lbc_path) {}' -a '(lbc __complete {} 2>/dev/null)'\n",
            quoted.join(" ").replace('\'', "\\'"),
            kind.word()
        ));
    }
    out
}

/// clap's zsh script with the SERVICE positionals, project NAMEs and
/// `--project` values completed from the API.
fn zsh(script: &str) -> String {
    let mut out = String::new();
    for line in script.lines() {
        let line = if line.contains("':service -- ") && line.contains(":_default'") {
            line.replace(":_default'", ":_lbc_services'")
        } else if line.contains("':name -- ") && line.contains(":_default'") {
            line.replace(":_default'", ":_lbc_project_names'")
        } else if line.contains("'--project=[") && line.contains(":_default'") {
            line.replace(":_default'", ":_lbc_projects'")
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    // Defined before clap's last line (`compdef`/`_lbc "$@"`) runs them.
    let helpers = r#"
# Project and service names from the API (lbc __complete).
_lbc_services() {
    # A new name (`service create`) is not completed.
    if (( ${words[(I)create]} )); then
        _default
        return
    fi
    local -a names
    names=(${(f)"$(lbc __complete services 2>/dev/null)"})
    compadd -a names
}
_lbc_projects() {
    local -a names
    names=(${(f)"$(lbc __complete projects 2>/dev/null)"})
    compadd -a names
}
# NAME of `lbc project ...` is a project; other NAMEs (nodes) are not.
_lbc_project_names() {
    if (( ${words[(I)project|projects]} )) && ! (( ${words[(I)create]} )); then
        _lbc_projects
    else
        _default
    fi
}
"#;
    match out.find("\n(( $+functions[_lbc_commands] ))") {
        Some(at) => out.insert_str(at + 1, helpers.trim_start()),
        None => out = helpers.to_owned() + &out,
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_the_clap_definitions() {
        let (paths, valued) = paths();
        let has = |p: &str, k: Kind| paths.iter().any(|(q, kind)| q == p && *kind == k);
        assert!(has("logs", Kind::Services), "{paths:?}");
        assert!(has("service get", Kind::Services), "{paths:?}");
        assert!(has("svc get", Kind::Services), "{paths:?}");
        assert!(has("status", Kind::Services), "{paths:?}");
        assert!(has("env set", Kind::Services), "{paths:?}");
        assert!(has("project rm", Kind::Projects), "{paths:?}");
        assert!(has("projects get", Kind::Projects), "{paths:?}");
        assert!(!paths.iter().any(|(p, _)| p == "node get"), "{paths:?}");
        assert!(
            !paths.iter().any(|(p, _)| p.ends_with("create")),
            "{paths:?}"
        );
        assert!(!paths.iter().any(|(p, _)| p.starts_with("__complete")));
        for v in ["--project", "-o", "--output", "--tail", "--context"] {
            assert!(valued.iter().any(|x| x == v), "{v} in {valued:?}");
        }
        assert!(
            !valued.iter().any(|x| x == "-f" || x == "--yes"),
            "{valued:?}"
        );
    }

    #[test]
    fn scripts_call_lbc_complete() {
        for shell in [Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(script(shell)).unwrap();
            assert!(text.contains("lbc __complete services"), "{shell}: {text}");
            assert!(text.contains("lbc __complete projects"), "{shell}");
        }
        let bash = String::from_utf8(script(Shell::Bash)).unwrap();
        assert!(
            bash.contains(r#"lbc "${project[@]}" __complete "$kind""#),
            "{bash}"
        );
        assert!(bash.contains(r#""svc get"|"#), "{bash}");
        assert!(bash.contains(r#"|"project rm"|"#), "{bash}");
        let zsh = String::from_utf8(script(Shell::Zsh)).unwrap();
        assert!(
            zsh.contains(":_lbc_services'"),
            "zsh SERVICE arguments use the helper"
        );
        let helper = zsh.find("\n_lbc_services() {").expect("the helper");
        let guard = zsh
            .find("(( $+functions[_lbc_commands] ))")
            .expect("clap's layout");
        assert!(
            helper < guard,
            "helpers defined unconditionally, before clap's functions"
        );
    }
}
