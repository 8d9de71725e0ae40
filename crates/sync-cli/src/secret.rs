//! Reading secrets without putting them in argv: a passphrase (prompted without echo on a
//! terminal, else the first line of standard input, or of `--passphrase-file FILE`, `-` =
//! standard input), and the invite or short code of `pair --join -`.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::Path;

use zeroize::Zeroizing;

use crate::fail::Failure;

/// What a passphrase is called in errors.
const PASSPHRASE: &str = "the passphrase";

fn first_line(mut text: Zeroizing<String>) -> Zeroizing<String> {
    let end = text.find(['\n', '\r']).unwrap_or(text.len());
    text.truncate(end);
    text
}

/// The first line of standard input; `what` names it in an error.
fn read_stdin_line(what: &str) -> Result<Zeroizing<String>, Failure> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::bad_input(format!("reading {what}: {e}")))?;
    Ok(first_line(line))
}

/// A line typed at `text` on the terminal, without echo; `what` names it in an error.
fn prompt(text: &str, what: &str) -> Result<Zeroizing<String>, Failure> {
    rpassword::prompt_password(text)
        .map(Zeroizing::new)
        .map_err(|e| Failure::bad_input(format!("reading {what}: {e}")))
}

/// The passphrase; with `confirm` (a new group, on a terminal) it is asked twice.
pub(crate) fn read_passphrase(
    file: Option<&Path>,
    confirm: bool,
) -> Result<Zeroizing<String>, Failure> {
    let passphrase = match file {
        Some(f) if f == Path::new("-") => read_stdin_line(PASSPHRASE)?,
        Some(f) => {
            first_line(Zeroizing::new(std::fs::read_to_string(f).map_err(|e| {
                Failure::bad_input(format!("{}: {e}", f.display()))
            })?))
        }
        None if std::io::stdin().is_terminal() => {
            let first = prompt("Group passphrase: ", PASSPHRASE)?;
            if confirm {
                let again = prompt("Repeat the passphrase: ", PASSPHRASE)?;
                if *again != *first {
                    return Err(Failure::bad_input("the passphrases do not match"));
                }
            }
            first
        }
        None => read_stdin_line(PASSPHRASE)?,
    };
    if passphrase.is_empty() {
        return Err(Failure::bad_input("the passphrase is empty"));
    }
    Ok(passphrase)
}

/// The invite or short code for `pair --join -`: prompted without echo on a terminal, else the
/// first line of standard input (so it never appears in argv, `ps` or the shell history).
pub(crate) fn read_join_input() -> Result<Zeroizing<String>, Failure> {
    let what = "the invite";
    let text = if std::io::stdin().is_terminal() {
        prompt("Invite or short code (hidden): ", what)?
    } else {
        read_stdin_line(what)?
    };
    if text.trim().is_empty() {
        return Err(Failure::bad_input(
            "`--join -` read no invite or short code (give it on standard input or at the prompt)",
        ));
    }
    Ok(text)
}
