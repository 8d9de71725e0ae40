//! Scaffolding: replaced by the real subcommand (work in progress, not wired to anything yet).

use std::process::ExitCode;

/// Arguments (none yet).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Not built yet: fails with a clear message.
pub(crate) async fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this subcommand is not built yet")
}
