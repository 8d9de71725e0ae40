//! `sync-stress impair`: runs the UDP impairment proxy ([`sync_lab::impair`]) until Ctrl-C, with
//! an HTTP control on loopback and counters printed as JSON lines.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use sync_lab::impair::{DirectionConfig, ImpairConfig, Proxy, ProxyHandle, control};
use sync_lab::values::{parse_byte_rate, parse_duration, parse_probability};

/// Overwrites `slot` with the flag's value when the flag was given.
fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *slot = v;
    }
}

/// One direction's impairments as flags; `prefix` is empty (both), `up-` or `down-`.
macro_rules! direction_args {
    ($name:ident, $help:literal, $delay:literal, $jitter:literal, $loss:literal, $reorder:literal,
     $gap:literal, $dup:literal, $rate:literal, $queue:literal, $part:literal) => {
        #[doc = $help]
        #[derive(Debug, Clone, clap::Args)]
        pub(crate) struct $name {
            /// Fixed one-way delay (e.g. 20ms, 0.5s; a bare number is ms).
            #[arg(long = $delay, id = $delay, value_name = "DURATION", value_parser = parse_duration)]
            delay: Option<Duration>,
            /// Uniform jitter around the delay (delay ± jitter, never below 0).
            #[arg(long = $jitter, id = $jitter, value_name = "DURATION", value_parser = parse_duration)]
            jitter: Option<Duration>,
            /// Packet loss probability (5% or 0.05).
            #[arg(long = $loss, id = $loss, value_name = "P", value_parser = parse_probability)]
            loss: Option<f64>,
            /// Probability that a packet is held back so later ones overtake it.
            #[arg(long = $reorder, id = $reorder, value_name = "P", value_parser = parse_probability)]
            reorder: Option<f64>,
            /// How long a reordered packet is held back (default 10ms).
            #[arg(long = $gap, id = $gap, value_name = "DURATION", value_parser = parse_duration)]
            reorder_gap: Option<Duration>,
            /// Probability that a packet is sent twice.
            #[arg(long = $dup, id = $dup, value_name = "P", value_parser = parse_probability)]
            duplicate: Option<f64>,
            /// Bandwidth in bytes/s (500k, 2M, 8mbit); unlimited when absent.
            #[arg(long = $rate, id = $rate, value_name = "RATE", value_parser = parse_byte_rate)]
            rate: Option<u64>,
            /// Longest wait for the rate limiter before a packet is tail-dropped (default 500ms).
            #[arg(long = $queue, id = $queue, value_name = "DURATION", value_parser = parse_duration)]
            queue: Option<Duration>,
            /// Start partitioned (drop everything) until healed through the control.
            #[arg(long = $part, id = $part)]
            partition: bool,
        }

        impl $name {
            fn apply(&self, d: &mut DirectionConfig) {
                set(&mut d.delay, self.delay);
                set(&mut d.jitter, self.jitter);
                set(&mut d.loss, self.loss);
                set(&mut d.reorder, self.reorder);
                set(&mut d.reorder_gap, self.reorder_gap);
                set(&mut d.duplicate, self.duplicate);
                set(&mut d.rate, self.rate.map(Some));
                set(&mut d.queue, self.queue);
                d.partition |= self.partition;
            }
        }
    };
}

direction_args!(
    Both,
    "Impairments of both directions.",
    "delay",
    "jitter",
    "loss",
    "reorder",
    "reorder-gap",
    "duplicate",
    "rate",
    "queue",
    "partition"
);
direction_args!(
    Up,
    "Client → upstream only (applied after the both-direction flags).",
    "up-delay",
    "up-jitter",
    "up-loss",
    "up-reorder",
    "up-reorder-gap",
    "up-duplicate",
    "up-rate",
    "up-queue",
    "up-partition"
);
direction_args!(
    Down,
    "Upstream → client only (applied after the both-direction flags).",
    "down-delay",
    "down-jitter",
    "down-loss",
    "down-reorder",
    "down-reorder-gap",
    "down-duplicate",
    "down-rate",
    "down-queue",
    "down-partition"
);

/// Forwards UDP datagrams from `--listen` to `--upstream` (a relay's QUIC port) with delay,
/// jitter, loss, reorder, duplicates, a rate limit or a partition, per direction ("up" = client →
/// upstream, "down" = upstream → client). Loopback addresses only.
///
/// Runtime control (HTTP on --control): GET /stats, GET /config, PUT /config (whole
/// configuration), POST /config (patch, e.g. {"both":{"loss":0.05},"up":{"delay_ms":40}}),
/// POST /partition, POST /heal. Counters print as JSON lines every --stats-every and on Ctrl-C.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address clients send to (loopback), e.g. 127.0.0.1:7450.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// Address datagrams are forwarded to (loopback), e.g. `[::1]:7440`.
    #[arg(long, value_name = "ADDR")]
    upstream: SocketAddr,
    /// HTTP control address (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Seed of the loss/jitter/duplicate decisions (reproducible runs).
    #[arg(long)]
    seed: Option<u64>,
    /// Interval of the counter lines (0 = only on exit).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    stats_every: Duration,
    // Boxed: three sets of nine flags would make this the largest subcommand by far.
    #[command(flatten)]
    both: Box<Both>,
    #[command(flatten)]
    up: Box<Up>,
    #[command(flatten)]
    down: Box<Down>,
}

impl Args {
    fn config(&self) -> ImpairConfig {
        let mut c = ImpairConfig {
            seed: self.seed,
            ..ImpairConfig::default()
        };
        self.both.apply(&mut c.up);
        self.both.apply(&mut c.down);
        self.up.apply(&mut c.up);
        self.down.apply(&mut c.down);
        c
    }
}

fn stats_line(proxy: &ProxyHandle, event: &str) -> String {
    serde_json::json!({ "event": event, "stats": proxy.stats() }).to_string()
}

/// Runs the proxy until Ctrl-C.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !args.control.ip().is_loopback() {
        anyhow::bail!(
            "--control {} is not a loopback address (the control is local only)",
            args.control
        );
    }
    let config = args.config();
    let proxy = Proxy::start(args.listen, args.upstream, config.clone())
        .await
        .context("impairment proxy")?;
    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("cannot bind the control address {}", args.control))?;
    let control_addr = listener.local_addr().context("control address")?;
    println!("listen:    {}", proxy.local_addr());
    println!("upstream:  {}", proxy.upstream());
    println!("control:   http://{control_addr}/");
    println!(
        "config:    {}",
        serde_json::to_string(&config).unwrap_or_default()
    );
    let server = tokio::spawn(control::serve(listener, proxy.clone()));
    let every = args.stats_every;
    let ticker = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            if every.is_zero() {
                return;
            }
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                println!("{}", stats_line(&proxy, "stats"));
            }
        })
    };
    let outcome = tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C").map(|()| ExitCode::SUCCESS),
        r = server => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the control server stopped")),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context("control server")),
            Err(e) => Err(anyhow::anyhow!("control server task: {e}")),
        },
    };
    ticker.abort();
    println!("{}", stats_line(&proxy, "final"));
    proxy.shutdown();
    outcome
}
