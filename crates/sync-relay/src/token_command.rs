//! `sync-relay token`: the operator's side of token admission. `keygen` creates the operator key
//! file, whose public key a relay is configured with (`admission_key`); `issue` signs admission
//! tokens with it. Neither touches a running relay.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Subcommand;
use sync_crypto::{MAX_TOKEN_GROUPS, TokenClaims, TokenScope};
use sync_relay::{create_operator_key, format_duration, load_operator_key, parse_duration};
use sync_types::GroupId;

/// Operator admission tokens, for relays run with `admission = "token"`.
#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Creates an operator key file and prints its public key (the relay's `admission_key`).
    ///
    /// The file holds the 32-byte secret key, mode 0600; an existing file is never replaced.
    /// Keep it with the operator, off the relay.
    Keygen {
        /// Where to write the operator key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Prints an admission token (base64url) signed with the operator key.
    ///
    /// A device passes it in its Hello; the relay admits the device's sessions until the token
    /// expires, for the groups it names.
    Issue {
        /// The operator key file (from `sync-relay token keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// How long the token is valid, e.g. 30d, 12h.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Duration,
        /// A group the token admits, by its id (43 base64url characters, as `sync-cli status`
        /// shows it); repeat for more, at most 64. Without any, the token admits every group.
        #[arg(long = "group", value_name = "GROUP_ID")]
        groups: Vec<GroupId>,
        /// A byte quota for each group the token opens, below the relay's `group_max_bytes`.
        #[arg(long, value_name = "BYTES")]
        max_bytes: Option<NonZeroU64>,
    },
}

/// Runs a token command: exit 0, 1 when a file cannot be written or read, 2 for bad arguments.
pub(crate) fn run(command: TokenCommand) -> ExitCode {
    let result = match command {
        TokenCommand::Keygen { out } => keygen(&out),
        TokenCommand::Issue {
            key,
            expires_in,
            groups,
            max_bytes,
        } => {
            if expires_in.is_zero() {
                return usage("--expires-in must be longer than 0");
            }
            if groups.len() > MAX_TOKEN_GROUPS {
                return usage(&format!("a token names at most {MAX_TOKEN_GROUPS} groups"));
            }
            issue(&key, expires_in, groups, max_bytes)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync-relay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn usage(text: &str) -> ExitCode {
    eprintln!("sync-relay: {text}");
    ExitCode::from(2)
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let public = create_operator_key(out)?;
    println!("{public}");
    eprintln!(
        "operator key written to {} (keep it secret, and off the relay); configure the relay \
         with:\n  admission = \"token\"\n  admission_key = \"{public}\"",
        out.display()
    );
    Ok(())
}

fn issue(
    key: &std::path::Path,
    expires_in: Duration,
    groups: Vec<GroupId>,
    max_bytes: Option<NonZeroU64>,
) -> anyhow::Result<()> {
    let operator = load_operator_key(key)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    let expires_at_secs = now.saturating_add(expires_in).as_secs();
    let mut id = [0u8; 8];
    getrandom::fill(&mut id)
        .map_err(|_| anyhow::anyhow!("the OS random number generator failed"))?;
    let scope = if groups.is_empty() {
        TokenScope::AllGroups
    } else {
        TokenScope::Groups(groups)
    };
    let claims = TokenClaims {
        id,
        expires_at_secs,
        scope,
        max_bytes,
    };
    let token = operator.issue(&claims).context("cannot issue the token")?;
    println!("{}", token.to_text());
    let covers = match &claims.scope {
        TokenScope::AllGroups => "every group".to_string(),
        TokenScope::Groups(g) => format!("{} group(s)", g.len()),
    };
    eprintln!(
        "token {} for {covers}, valid for {} (until Unix time {expires_at_secs}){}",
        claims.short_id(),
        format_duration(expires_in),
        max_bytes.map_or(String::new(), |b| format!(", quota {b} bytes per group")),
    );
    Ok(())
}
