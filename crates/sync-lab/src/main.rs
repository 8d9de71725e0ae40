//! `sync-stress`: the 0k-sync lab — responder, campaign, impairment proxy, multi-client load,
//! relay benchmark.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use sync_lab::campaign;

mod bench_cmd;
mod impair_cmd;
mod load;
mod responder;

/// The 0k-sync lab: proves a relay and its devices under load, faults and hostile networks.
#[derive(Debug, Parser)]
#[command(name = "sync-stress", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A device that answers PING/BURST/other messages (the campaign's peer).
    Responder(responder::Args),
    /// Runs the campaign phases against a responder and writes the reports.
    Campaign(campaign::Args),
    /// A user-space UDP impairment proxy (delay, jitter, loss, reorder, duplicate, rate, partition).
    Impair(impair_cmd::Args),
    /// Many devices against one relay: fan-out latency, refusals, connection churn.
    Load(load::Args),
    /// End-to-end relay benchmark: throughput, latency, a large group, same-run baselines.
    Bench(bench_cmd::Args),
    /// The echo process of the benchmark's QUIC baselines (started by `bench`).
    #[command(hide = true)]
    BenchEcho,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sync-stress: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Responder(args) => responder::run(args).await,
            Command::Campaign(args) => {
                responder::init_logging();
                campaign::run(args).await.map_err(Into::into)
            }
            Command::Impair(args) => impair_cmd::run(args).await,
            Command::Load(args) => load::run(args).await,
            Command::Bench(args) => bench_cmd::run(args).await,
            Command::BenchEcho => bench_cmd::echo().await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sync-stress: {e:#}");
            ExitCode::FAILURE
        }
    }
}
