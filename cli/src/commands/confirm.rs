//! Asking before destructive commands (`service rm`, `project rm`,
//! `domains rm`): a `[y/N]` prompt when stdin is a terminal, `--yes` to skip
//! it; without a terminal and without `--yes` the command refuses (exit 2),
//! so a script never deletes by accident nor hangs on a prompt.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::{Error, Result};

/// What the user answered, or could not be asked.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Yes,
    No,
}

/// Goes on when `yes` was given or the user answers `y`; `action` says what
/// happens, e.g. `delete service "web" with its replicas and builds`.
pub fn confirm(yes: bool, action: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Error::usage(format!(
            "refusing to {action} without confirmation: stdin is not a terminal \
             (pass --yes to go ahead)"
        )));
    }
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{} [y/N] ", capitalized(action));
    let _ = err.flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    match answer(&line) {
        Answer::Yes => Ok(()),
        Answer::No => Err(Error::failed(format!("not confirmed: did not {action}"))),
    }
}

fn answer(line: &str) -> Answer {
    match line.trim().to_lowercase().as_str() {
        "y" | "yes" => Answer::Yes,
        _ => Answer::No,
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + "?",
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        for (line, want) in [
            ("y\n", Answer::Yes),
            ("YES\n", Answer::Yes),
            (" yes ", Answer::Yes),
            ("\n", Answer::No),
            ("", Answer::No),
            ("n\n", Answer::No),
            ("yep\n", Answer::No),
        ] {
            assert_eq!(answer(line), want, "{line:?}");
        }
        assert_eq!(capitalized("delete it"), "Delete it?");
    }

    #[test]
    fn yes_skips_the_question() {
        assert!(confirm(true, "delete it").is_ok());
    }
}
