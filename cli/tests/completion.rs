//! `lbc completion bash` in a real bash: the script is sourced in
//! `bash --norc --noprofile`, the function `complete -p lbc` names is
//! called with COMP_WORDS/COMP_CWORD/COMP_LINE/COMP_POINT set as bash sets
//! them on TAB, and COMPREPLY must hold the project and service names of a
//! real `lb up` (only those matching the typed prefix). With the API
//! unreachable or silent, completion offers nothing, prints nothing on
//! stderr and exits 0. zsh and fish are not installed on the test machine:
//! their scripts are only checked as text (src/commands/complete.rs).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{lbc_bin, lbc_in, run_with_stdin, Up};

/// Sources the completion script, simulates TAB at the end of `$1` (split
/// on blanks, as bash splits it) and prints the completion function's name,
/// then COMPREPLY one a line.
const DRIVER: &str = r#"
source <(lbc completion bash) || exit 90
spec=$(complete -p lbc) || exit 91
fn=${spec##*-F }
fn=${fn%% *}
COMP_LINE=$1
COMP_POINT=${#COMP_LINE}
COMP_TYPE=9
COMP_KEY=9
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMPREPLY=()
"$fn" lbc "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
echo "$fn"
if (( ${#COMPREPLY[@]} )); then printf '%s\n' "${COMPREPLY[@]}"; fi
"#;

/// What bash offers for `line` (TAB at its end) with `home` as HOME and
/// lbc first on PATH; asserts bash exits 0 with nothing on stderr.
fn complete_in(home: &Path, line: &str) -> Vec<String> {
    let out = bash(home, line);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "completing {line:?}: {:?}, stderr: {stderr}, stdout: {stdout}",
        out.status
    );
    let mut lines = stdout.lines().map(str::to_owned);
    let function = lines.next().unwrap_or_default();
    assert_eq!(function, "_lbc_dynamic", "complete -p lbc names it");
    lines.collect()
}

fn bash(home: &Path, line: &str) -> Output {
    let bin_dir = lbc_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", DRIVER, "driver", line])
        .env("PATH", path)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("LB_API")
        .env_remove("LB_TOKEN")
        .env_remove("LB_CONTEXT")
        .env_remove("LB_PROJECT")
        .env_remove("BASH_ENV");
    run_with_stdin(cmd, "")
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn strings(names: &[&str]) -> Vec<String> {
    sorted(names.iter().map(|s| (*s).to_owned()).collect())
}

/// A HOME whose config is the logged-in one with the API moved to `api`.
fn home_with_api(up: &Up, name: &str, api: &str) -> std::path::PathBuf {
    let home = up.dir.path().join(name);
    let config = std::fs::read_to_string(up.config_file()).unwrap();
    assert!(config.contains(&up.url), "{config}");
    let file = home.join(".config/lbc/config.toml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, config.replace(&up.url, api)).unwrap();
    home
}

#[test]
fn bash_completes_names_from_the_api() {
    let image = lb_testing::busybox_image();
    let up = Up::start();
    up.ok(&["project", "create", "app"]);
    up.ok(&["project", "create", "other"]);
    up.ok(&["project", "use", "app"]);
    // Names are all that matters here: no replica needs to run.
    for name in ["web", "worker", "api"] {
        up.ok(&["service", "create", name, "--image", image, "-r", "0"]);
    }
    up.ok(&[
        "service",
        "create",
        "db",
        "--image",
        image,
        "-r",
        "0",
        "--project",
        "other",
    ]);
    let home = up.home();
    let complete = |line: &str| sorted(complete_in(&home, line));

    // Every name: bare ones of the default project, then PROJECT/SERVICE.
    let all = strings(&[
        "web",
        "worker",
        "api",
        "app/web",
        "app/worker",
        "app/api",
        "other/db",
    ]);
    assert_eq!(complete("lbc service rm "), all);
    assert_eq!(complete("lbc status "), all);
    // Only those matching what is typed.
    assert_eq!(complete("lbc status w"), strings(&["web", "worker"]));
    assert_eq!(
        complete("lbc svc get app/w"),
        strings(&["app/web", "app/worker"])
    );
    assert_eq!(complete("lbc logs -f wo"), strings(&["worker"]));
    assert_eq!(
        complete("lbc -o json status a"),
        strings(&["api", "app/web", "app/worker", "app/api"])
    );
    assert_eq!(complete("lbc status nope"), Vec::<String>::new());
    // --project picks the project of bare names.
    assert_eq!(
        complete("lbc --project other service get "),
        strings(&["db", "app/web", "app/worker", "app/api", "other/db"])
    );
    // Projects.
    assert_eq!(complete("lbc project rm "), strings(&["app", "other"]));
    assert_eq!(complete("lbc --project o"), strings(&["other"]));
    // A new name is not completed; commands still come from clap's part.
    let create = complete("lbc service create ");
    assert!(!create.iter().any(|w| w == "web"), "{create:?}");
    let commands = complete("lbc serv");
    assert!(commands.iter().any(|w| w == "service"), "{commands:?}");

    // The API refusing connections: nothing offered, nothing said.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        home_with_api(&up, "refused", &format!("http://127.0.0.1:{port}"))
    };
    // The API taking the connection and never answering: the same, within
    // lbc's budget of 3 s.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_home = home_with_api(
        &up,
        "silent",
        &format!("http://{}", silent.local_addr().unwrap()),
    );
    for home in [&refused, &silent_home] {
        let started = Instant::now();
        let out = run_with_stdin(lbc_in(home, &["__complete", "services"]), "");
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "{}: {out:?}",
            home.display()
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}: took {:?}",
            home.display(),
            started.elapsed()
        );
        assert_eq!(complete_in(home, "lbc status "), Vec::<String>::new());
        assert_eq!(complete_in(home, "lbc project rm a"), Vec::<String>::new());
    }
    drop(silent);
}
