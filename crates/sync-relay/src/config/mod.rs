//! Relay configuration: one list of keys, read from a TOML file, environment variables and
//! command-line flags (in that order of precedence: a flag beats an env var beats the file beats
//! the built-in default).
//!
//! Every key is declared once, in the `config_keys!` list below, with its doc text, type,
//! default and environment variable. The list generates [`RelayConfig`] (the TOML schema, unknown
//! keys are an error), [`ConfigOverrides`] (clap flags with `env`), `RelayConfig::apply` and the
//! `--help` text, so a key cannot be documented in one place and forgotten in another.
//!
//! Durations are written as `250ms`, `10s`, `5m`, `2h`, `7d` or combinations like `1h30m`
//! (a bare number means seconds; see `duration`).

mod duration;

pub use duration::{format_duration, parse_duration};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sync_crypto::OperatorPublicKey;

use crate::storage::Synchronous;
use duration::duration_text;

/// Name of the relay's data directory under the platform data dir.
pub const DATA_DIR_NAME: &str = "0k-sync-relay";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema (syntax error, unknown key, wrong type).
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser reported (with line and column).
        message: String,
    },
    /// A value is out of range or contradicts another one.
    #[error("invalid config value `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// How durable a commit is, as the configuration spells it (`normal` or `full`); the storage
/// maps it onto SQLite's `synchronous` pragma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// `synchronous=NORMAL`: a commit survives a crash of the relay process (WAL default).
    #[default]
    Normal,
    /// `synchronous=FULL`: a commit also survives power loss (one fsync per commit).
    Full,
}

impl From<Durability> for Synchronous {
    fn from(d: Durability) -> Self {
        match d {
            Durability::Normal => Self::Normal,
            Durability::Full => Self::Full,
        }
    }
}

/// Where the relay keeps its data, as the configuration spells it (`sqlite` or `postgres`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// One SQLite file in `data_dir` (embedded; one relay).
    #[default]
    Sqlite,
    /// The PostgreSQL database at `postgres_url`, which several relays may share.
    Postgres,
}

/// TLS to PostgreSQL, as the configuration spells it (`disable` or `require`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PostgresTlsMode {
    /// Plain TCP.
    #[default]
    Disable,
    /// TLS, with the server's certificate checked (against `postgres_ca_file`, or the system's
    /// trust store).
    Require,
}

/// Whether log lines are human-readable text or one JSON object per line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Who may open sessions, as the configuration spells it (`open` or `token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// Any device that proves membership of its group (the Hello signature).
    #[default]
    Open,
    /// Also an admission token signed by the operator key (`admission_key`) in the Hello.
    Token,
}

/// The platform default data directory: `$XDG_DATA_HOME/0k-sync-relay` (an absolute
/// `XDG_DATA_HOME` only), else `~/.local/share/0k-sync-relay` on Linux (the platform's data
/// directory elsewhere), else `./0k-sync-relay` when there is no home directory.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir().map_or_else(|| PathBuf::from(DATA_DIR_NAME), |d| d.join(DATA_DIR_NAME))
}

macro_rules! config_keys {
    ($(
        $(#[doc = $doc:literal])+
        $(#[serde($($serde:tt)*)])?
        #[arg($($arg:tt)*)]
        $name:ident : $ty:ty = $default:expr, env $env:literal;
    )+) => {
        /// The relay's configuration. `Default` is the embedded default configuration; a TOML
        /// file may set any subset of the keys (unknown keys are an error).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct RelayConfig {
            $(
                $(#[doc = $doc])+
                $(#[serde($($serde)*)])?
                pub $name: $ty,
            )+
        }

        impl Default for RelayConfig {
            fn default() -> Self {
                Self { $( $name: $default, )+ }
            }
        }

        /// Per-key overrides from command-line flags and `SYNC_RELAY_*` environment variables
        /// (clap reads both; a flag beats its env var). `None` keeps the file's value.
        #[derive(Debug, Clone, Default, PartialEq, clap::Args)]
        pub struct ConfigOverrides {
            $(
                $(#[doc = $doc])+
                #[arg(long, env = $env, $($arg)*)]
                pub $name: Option<$ty>,
            )+
        }

        impl RelayConfig {
            /// Replaces every key that `overrides` sets.
            pub fn apply(&mut self, overrides: ConfigOverrides) {
                $( if let Some(v) = overrides.$name { self.$name = v; } )+
            }

            /// Every key with its environment variable, in declaration order (for docs and
            /// tests).
            pub const KEYS: &'static [(&'static str, &'static str)] = &[
                $( (stringify!($name), $env), )+
            ];
        }
    };
}

config_keys! {
    /// Directory holding the database (`relay.db`) and the relay's secret key (`relay.key`).
    /// Default: `$XDG_DATA_HOME/0k-sync-relay`, else `~/.local/share/0k-sync-relay`.
    #[arg(value_name = "PATH")]
    data_dir: PathBuf = default_data_dir(), env "SYNC_RELAY_DATA_DIR";

    /// UDP socket address of the QUIC endpoint (devices dial this). Default `0.0.0.0:7440`.
    #[arg(value_name = "ADDR")]
    bind: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 7440)), env "SYNC_RELAY_BIND";

    /// TCP socket address of the HTTP server (`/health`, `/metrics`, `/.well-known/0k-sync`).
    /// Default `127.0.0.1:7441` (local only; put a reverse proxy in front to publish it).
    #[arg(value_name = "ADDR")]
    http_bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7441)), env "SYNC_RELAY_HTTP_BIND";

    /// Use iroh's public relay servers and n0's address lookup, so devices behind NAT can reach
    /// the relay by id alone. Default `false`: the relay contacts nothing on the internet and
    /// devices dial its direct addresses.
    #[arg(value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    public_discovery: bool = false, env "SYNC_RELAY_PUBLIC_DISCOVERY";

    /// SQLite durability: `normal` (a commit survives a crash of the relay process) or `full`
    /// (it also survives power loss; one fsync per commit). Default `normal`.
    #[arg(value_name = "MODE", value_enum)]
    synchronous: Durability = Durability::Normal, env "SYNC_RELAY_SYNCHRONOUS";

    /// Where blobs, cursors, invites and membership live: `sqlite` (one file in `data_dir`;
    /// the default) or `postgres` (the database at `postgres_url`, shared by every relay that
    /// names it). The relay's secret key stays in `data_dir` either way.
    #[arg(value_name = "BACKEND", value_enum)]
    storage: StorageBackend = StorageBackend::Sqlite, env "SYNC_RELAY_STORAGE";

    /// PostgreSQL connection string for `storage = "postgres"`: a URL
    /// (`postgres://user:password@host:5432/db`) or key-value pairs (`host=… dbname=…`). It
    /// may carry a password; the relay never logs it and `--print-config` masks it. Default
    /// empty.
    #[arg(value_name = "URL")]
    postgres_url: String = String::new(), env "SYNC_RELAY_POSTGRES_URL";

    /// Most connections this relay opens to PostgreSQL (reads, removals, membership, plus one
    /// per push writer and one that listens for the other relays). Default 16.
    #[arg(value_name = "N")]
    postgres_pool: u32 = 16, env "SYNC_RELAY_POSTGRES_POOL";

    /// TLS to PostgreSQL: `disable` or `require` (the server's certificate must chain to
    /// `postgres_ca_file`, or to the system's trust store, and name the host dialled).
    /// Default `disable`.
    #[arg(value_name = "MODE", value_enum)]
    postgres_tls: PostgresTlsMode = PostgresTlsMode::Disable, env "SYNC_RELAY_POSTGRES_TLS";

    /// CA certificates (PEM) the PostgreSQL server's certificate must chain to with
    /// `postgres_tls = "require"`; empty: the system's trust store. Default empty.
    #[arg(value_name = "PATH")]
    postgres_ca_file: PathBuf = PathBuf::new(), env "SYNC_RELAY_POSTGRES_CA_FILE";

    /// Push writers of this relay on PostgreSQL: each commits the pushes of its share of the
    /// groups in batches, so pushes to different groups commit in parallel. Default 4.
    #[arg(value_name = "N")]
    postgres_writers: u32 = 4, env "SYNC_RELAY_POSTGRES_WRITERS";

    /// Most concurrent sessions; a session slot is taken only after a valid `Hello`, and
    /// further sessions are refused with `TooManySessions` and a retry hint. Default 10000.
    #[arg(value_name = "N")]
    max_sessions: u32 = 10_000, env "SYNC_RELAY_MAX_SESSIONS";

    /// Most concurrent sessions from one network address (an IPv4 address, an IPv6 /64, or
    /// one iroh relay server for relayed connections); beyond, `TooManySessions`. 0 disables.
    /// Default 1000.
    #[arg(value_name = "N")]
    max_sessions_per_ip: u32 = 1000, env "SYNC_RELAY_MAX_SESSIONS_PER_IP";

    /// Most concurrent sessions of one device (`DeviceId`); beyond, `TooManySessions`.
    /// 0 disables. Default 16.
    #[arg(value_name = "N")]
    max_sessions_per_device: u32 = 16, env "SYNC_RELAY_MAX_SESSIONS_PER_DEVICE";

    /// Most connections at once that have not sent a valid `Hello` yet (TLS handshake, stream,
    /// first frame); further connections are refused at once, before any TLS work. Default
    /// 1000.
    #[arg(value_name = "N")]
    max_pre_auth: u32 = 1000, env "SYNC_RELAY_MAX_PRE_AUTH";

    /// Most connections at once without a valid `Hello` from one network address (as for
    /// `max_sessions_per_ip`). 0 disables. Default 64.
    #[arg(value_name = "N")]
    max_pre_auth_per_ip: u32 = 64, env "SYNC_RELAY_MAX_PRE_AUTH_PER_IP";

    /// Time a new connection has, from its first packet, to finish the TLS handshake, open its
    /// stream and send a valid `Hello` (or `InviteGet`); then it is closed (with `HelloTimeout`
    /// once its stream is open). Default `10s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    hello_timeout: Duration = Duration::from_secs(10), env "SYNC_RELAY_HELLO_TIMEOUT";

    /// QUIC idle timeout: a connection whose peer sends no packet (not even the transport's
    /// keep-alives) for this long is gone. Default `30s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    transport_idle_timeout: Duration = Duration::from_secs(30), env "SYNC_RELAY_TRANSPORT_IDLE_TIMEOUT";

    /// Who may open sessions: `open` (any device that proves membership of its group) or
    /// `token` (also an admission token signed by the operator key). Default `open`.
    #[arg(value_name = "MODE", value_enum)]
    admission: AdmissionMode = AdmissionMode::Open, env "SYNC_RELAY_ADMISSION";

    /// The operator's public key (64 hex digits, printed by `sync-relay token keygen`) that
    /// admission tokens must be signed with; required with `admission = "token"`. Default
    /// empty.
    #[arg(value_name = "HEX")]
    admission_key: String = String::new(), env "SYNC_RELAY_ADMISSION_KEY";

    /// New groups (groups the relay holds nothing for) one network address may open sessions
    /// for per hour (a bucket of this size, refilled evenly); beyond, `TooManyGroups` with a
    /// retry hint. 0 disables. Default 100.
    #[arg(value_name = "N")]
    ip_new_groups_per_hour: u32 = 100, env "SYNC_RELAY_IP_NEW_GROUPS_PER_HOUR";

    /// A session that sends nothing for this long is closed with `IdleTimeout` (clients send
    /// `Ping` before). Default `60s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: Duration = Duration::from_secs(60), env "SYNC_RELAY_IDLE_TIMEOUT";

    /// On shutdown, how long sessions get to finish their requests before they are cut.
    /// Default `10s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    drain_timeout: Duration = Duration::from_secs(10), env "SYNC_RELAY_DRAIN_TIMEOUT";

    /// Largest sealed blob a push may carry, in bytes (1 ..= 64 MiB); the frame limit follows
    /// from it. Default 1048576 (1 MiB).
    #[arg(value_name = "BYTES")]
    max_blob_bytes: u32 = 1 << 20, env "SYNC_RELAY_MAX_BLOB_BYTES";

    /// TTL of a push that asks for none. Default `7d`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    default_ttl: Duration = Duration::from_secs(7 * 86_400), env "SYNC_RELAY_DEFAULT_TTL";

    /// Longest TTL a push may ask for (longer ones get `TtlTooLong`). Default `30d`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    max_ttl: Duration = Duration::from_secs(30 * 86_400), env "SYNC_RELAY_MAX_TTL";

    /// Most payload bytes one group may hold at once (`QuotaExceeded` beyond). Default
    /// 1073741824 (1 GiB).
    #[arg(value_name = "BYTES")]
    group_max_bytes: u64 = 1 << 30, env "SYNC_RELAY_GROUP_MAX_BYTES";

    /// Most blobs one group may hold at once (`QuotaExceeded` beyond). Default 100000.
    #[arg(value_name = "N")]
    group_max_blobs: u64 = 100_000, env "SYNC_RELAY_GROUP_MAX_BLOBS";

    /// Serve and accept large content: `ContentRef` reservations over the session protocol and
    /// the sealed content itself over iroh-blobs on the same endpoint, kept in
    /// `<data_dir>/content/` (local to this relay, whatever `storage` says). `false`: such
    /// requests get `NotSupported`. Default `true`.
    #[arg(value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    content_store: bool = true, env "SYNC_RELAY_CONTENT_STORE";

    /// Most bytes of large content one group may have reserved at once (the sum of the sizes
    /// of its live reservations; `QuotaExceeded` beyond, before anything is uploaded). Default
    /// 4294967296 (4 GiB).
    #[arg(value_name = "BYTES")]
    content_group_bytes: u64 = 4 << 30, env "SYNC_RELAY_CONTENT_GROUP_BYTES";

    /// How long large content is kept after its reservation (a repeated `ContentRef` renews
    /// it); then the cleanup removes it. Default `7d`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    content_ttl: Duration = Duration::from_secs(7 * 86_400), env "SYNC_RELAY_CONTENT_TTL";

    /// Most entries in one pull response (a larger `Pull.limit` is clamped). Default 1000.
    #[arg(value_name = "N")]
    max_pull_count: u32 = 1000, env "SYNC_RELAY_MAX_PULL_COUNT";

    /// Most payload bytes in one pull response (the first entry is always sent). Responses are
    /// also bounded by the frame size. Default 1048576.
    #[arg(value_name = "BYTES")]
    max_pull_bytes: u32 = 1 << 20, env "SYNC_RELAY_MAX_PULL_BYTES";

    /// Most unanswered requests per session; the relay stops reading a session's frames while
    /// it has this many open (QUIC flow control then holds the client back). Default 256.
    #[arg(value_name = "N")]
    max_in_flight: u32 = 256, env "SYNC_RELAY_MAX_IN_FLIGHT";

    /// Outgoing frames queued per session. A notification that finds the queue full is
    /// coalesced into one later `Notify`; the queue never grows beyond this. Default 1024.
    #[arg(value_name = "N")]
    session_queue: u32 = 1024, env "SYNC_RELAY_SESSION_QUEUE";

    /// Bytes of outgoing frames queued per session (answers, pull pages, notifications). An
    /// answer waits for room, a notification is coalesced; a frame larger than this waits for
    /// an empty queue. Default 4194304 (4 MiB).
    #[arg(value_name = "BYTES")]
    session_queue_bytes: u32 = 4 << 20, env "SYNC_RELAY_SESSION_QUEUE_BYTES";

    /// Payload bytes of one session's pushes read and not yet committed; beyond this the relay
    /// stops reading the session's frames until commits catch up. Default 8388608 (8 MiB).
    #[arg(value_name = "BYTES")]
    session_push_bytes: u32 = 8 << 20, env "SYNC_RELAY_SESSION_PUSH_BYTES";

    /// Pulls of one session that read storage or wait to queue their page at once; further
    /// pulls wait their turn, so one session never holds every storage reader. Default 2.
    #[arg(value_name = "N")]
    session_pulls: u32 = 2, env "SYNC_RELAY_SESSION_PULLS";

    /// A session whose device accepts none of its frames for this long (it stopped reading) is
    /// closed, and what it had queued is released. Default `30s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    write_stall_timeout: Duration = Duration::from_secs(30), env "SYNC_RELAY_WRITE_STALL_TIMEOUT";

    /// Sustained pushes per second one session may make (token bucket); 0 disables the limit.
    /// Default 1000.
    #[arg(value_name = "N")]
    session_push_rate: u32 = 1000, env "SYNC_RELAY_SESSION_PUSH_RATE";

    /// Burst size of the per-session push bucket. Default 2000.
    #[arg(value_name = "N")]
    session_push_burst: u32 = 2000, env "SYNC_RELAY_SESSION_PUSH_BURST";

    /// Sustained pushes per second over all sessions (token bucket); 0 disables the limit.
    /// Default 50000.
    #[arg(value_name = "N")]
    global_push_rate: u32 = 50_000, env "SYNC_RELAY_GLOBAL_PUSH_RATE";

    /// Burst size of the global push bucket. Default 100000.
    #[arg(value_name = "N")]
    global_push_burst: u32 = 100_000, env "SYNC_RELAY_GLOBAL_PUSH_BURST";

    /// New connections per second from one network address (token bucket), counted before
    /// any TLS work: beyond, a connection is refused at once, so a flood of handshakes from
    /// one address costs the relay almost nothing; 0 disables the limit. Default 50.
    #[arg(value_name = "N")]
    ip_connect_rate: u32 = 50, env "SYNC_RELAY_IP_CONNECT_RATE";

    /// Burst size of the per-address connection bucket. Default 200.
    #[arg(value_name = "N")]
    ip_connect_burst: u32 = 200, env "SYNC_RELAY_IP_CONNECT_BURST";

    /// Sustained pushes per second from one network address, over all its sessions (token
    /// bucket); 0 disables the limit. Default 10000.
    #[arg(value_name = "N")]
    ip_push_rate: u32 = 10_000, env "SYNC_RELAY_IP_PUSH_RATE";

    /// Burst size of the per-address push bucket. Default 40000.
    #[arg(value_name = "N")]
    ip_push_burst: u32 = 40_000, env "SYNC_RELAY_IP_PUSH_BURST";

    /// Lifetime of an invite mailbox entry whose `InvitePut` asks for none. Default `10m`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    invite_default_ttl: Duration = Duration::from_secs(600), env "SYNC_RELAY_INVITE_DEFAULT_TTL";

    /// Longest lifetime an `InvitePut` may ask for (longer ones get `TtlTooLong`). Default `1h`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    invite_max_ttl: Duration = Duration::from_secs(3600), env "SYNC_RELAY_INVITE_MAX_TTL";

    /// Lookups of an invite that find it but cannot take it (it expired) before it is deleted;
    /// the lookup that reaches the count is answered `TooManyAttempts`. Default 5.
    #[arg(value_name = "N")]
    invite_max_attempts: u32 = 5, env "SYNC_RELAY_INVITE_MAX_ATTEMPTS";

    /// `InviteGet` lookups per minute one session may make (a bucket of this size, refilled
    /// evenly); beyond, `RateLimited` with a retry hint. 0 disables. Default 10.
    #[arg(value_name = "N")]
    session_invite_lookups_per_min: u32 = 10, env "SYNC_RELAY_SESSION_INVITE_LOOKUPS_PER_MIN";

    /// `InviteGet` lookups per minute from one network address (sessions and first frames
    /// together). 0 disables. Default 30.
    #[arg(value_name = "N")]
    ip_invite_lookups_per_min: u32 = 30, env "SYNC_RELAY_IP_INVITE_LOOKUPS_PER_MIN";

    /// `InviteGet` lookups per minute over the whole relay. 0 disables. Default 600.
    #[arg(value_name = "N")]
    global_invite_lookups_per_min: u32 = 600, env "SYNC_RELAY_GLOBAL_INVITE_LOOKUPS_PER_MIN";

    /// How often expired blobs and invites are removed. Default `60s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    cleanup_interval: Duration = Duration::from_secs(60), env "SYNC_RELAY_CLEANUP_INTERVAL";

    /// A group that holds no blob and had no session for this long is deleted with its
    /// counters by the cleanup (once the ids of its removed blobs are forgotten). Default `7d`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    group_idle_ttl: Duration = Duration::from_secs(7 * 86_400), env "SYNC_RELAY_GROUP_IDLE_TTL";

    /// How often a stats line (sessions, rates, storage) is logged. Default `60s`.
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Duration = Duration::from_secs(60), env "SYNC_RELAY_STATS_INTERVAL";

    /// How often the status page (`/` on the HTTP port) gets a point; it keeps the last 720
    /// (an hour at the default `5s`).
    #[serde(with = "duration_text")]
    #[arg(value_name = "DURATION", value_parser = parse_duration)]
    status_interval: Duration = Duration::from_secs(5), env "SYNC_RELAY_STATUS_INTERVAL";

    /// Log line format: `text` or `json`. The level comes from `RUST_LOG` (default `info`).
    #[arg(value_name = "FORMAT", value_enum)]
    log_format: LogFormat = LogFormat::Text, env "SYNC_RELAY_LOG_FORMAT";
}

/// A connection string with its password replaced by `***` (URL or key-value form).
pub fn mask_password(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:***{}",
                &url[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Largest accepted `max_blob_bytes` (64 MiB): larger content is not carried as a single blob.
pub const MAX_BLOB_BYTES_LIMIT: u32 = 64 << 20;
const _: () = assert!(MAX_BLOB_BYTES_LIMIT as usize == sync_types::MAX_PAYLOAD_LIMIT);

impl RelayConfig {
    /// A configuration for tests: data in `data_dir`, both sockets on `127.0.0.1:0`, everything
    /// else at its default.
    pub fn for_tests(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// Parses a TOML document (keys missing from it keep their defaults).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse_toml(text, Path::new("<string>"))
    }

    /// Reads and parses a TOML file (keys missing from it keep their defaults).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_toml(&text, path)
    }

    fn parse_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// The configuration as a TOML document (every key).
    pub fn to_toml(&self) -> String {
        // Every field serializes to a TOML scalar, so this cannot fail; an empty document would
        // still be a valid (all-defaults) configuration.
        let mut shown = self.clone();
        shown.postgres_url = mask_password(&self.postgres_url);
        toml::to_string(&shown).unwrap_or_default()
    }

    /// The effective configuration: defaults, then the file (if any), then `overrides` (flags
    /// and env vars), then validated.
    pub fn load(file: Option<&Path>, overrides: ConfigOverrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                reason: reason.into(),
            })
        }
        let u32_secs = |d: Duration| d.as_secs() <= u64::from(u32::MAX);
        if self.max_sessions == 0 {
            return invalid("max_sessions", "must be at least 1");
        }
        if self.storage == StorageBackend::Postgres {
            if self.postgres_url.trim().is_empty() {
                return invalid("postgres_url", "required with storage = \"postgres\"");
            }
            if let Err(e) = self.postgres_url.parse::<tokio_postgres::Config>() {
                let why = crate::storage::error_chain(&e);
                return invalid("postgres_url", crate::storage::redact_password(&why));
            }
        }
        if self.postgres_writers == 0 || self.postgres_writers > 64 {
            return invalid("postgres_writers", "must be between 1 and 64");
        }
        if self.postgres_pool == 0 {
            return invalid("postgres_pool", "must be at least 1");
        }
        if self.max_pre_auth == 0 {
            return invalid("max_pre_auth", "must be at least 1");
        }
        for (key, d) in [
            ("hello_timeout", self.hello_timeout),
            ("transport_idle_timeout", self.transport_idle_timeout),
            ("idle_timeout", self.idle_timeout),
            ("cleanup_interval", self.cleanup_interval),
            ("stats_interval", self.stats_interval),
            ("status_interval", self.status_interval),
            ("default_ttl", self.default_ttl),
            ("invite_default_ttl", self.invite_default_ttl),
            ("write_stall_timeout", self.write_stall_timeout),
            ("group_idle_ttl", self.group_idle_ttl),
            ("content_ttl", self.content_ttl),
        ] {
            if d.is_zero() {
                return invalid(key, "must be longer than 0");
            }
        }
        if !u32_secs(self.idle_timeout) {
            return invalid("idle_timeout", "must fit in u32 seconds");
        }
        if self.max_blob_bytes == 0 || self.max_blob_bytes > MAX_BLOB_BYTES_LIMIT {
            return invalid(
                "max_blob_bytes",
                format!("must be between 1 and {MAX_BLOB_BYTES_LIMIT}"),
            );
        }
        if !u32_secs(self.max_ttl) {
            return invalid("max_ttl", "must fit in u32 seconds (about 136 years)");
        }
        if self.default_ttl > self.max_ttl {
            return invalid("default_ttl", "must not be longer than max_ttl");
        }
        if self.content_store && self.content_group_bytes == 0 {
            return invalid(
                "content_group_bytes",
                "must be at least 1 with content_store = true",
            );
        }
        if !u32_secs(self.invite_max_ttl) {
            return invalid("invite_max_ttl", "must fit in u32 seconds");
        }
        if self.invite_default_ttl > self.invite_max_ttl {
            return invalid(
                "invite_default_ttl",
                "must not be longer than invite_max_ttl",
            );
        }
        for (key, v) in [
            ("max_pull_count", self.max_pull_count),
            ("max_pull_bytes", self.max_pull_bytes),
            ("max_in_flight", self.max_in_flight),
            ("session_queue", self.session_queue),
            ("session_queue_bytes", self.session_queue_bytes),
            ("session_push_bytes", self.session_push_bytes),
            ("session_pulls", self.session_pulls),
        ] {
            if v == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if self.session_push_rate > 0 && self.session_push_burst == 0 {
            return invalid(
                "session_push_burst",
                "must be at least 1 when a rate is set",
            );
        }
        if self.global_push_rate > 0 && self.global_push_burst == 0 {
            return invalid("global_push_burst", "must be at least 1 when a rate is set");
        }
        if self.ip_connect_rate > 0 && self.ip_connect_burst == 0 {
            return invalid("ip_connect_burst", "must be at least 1 when a rate is set");
        }
        if self.ip_push_rate > 0 && self.ip_push_burst == 0 {
            return invalid("ip_push_burst", "must be at least 1 when a rate is set");
        }
        // QUIC carries the idle timeout in milliseconds below 2^62.
        if self.transport_idle_timeout > Duration::from_secs(86_400) {
            return invalid("transport_idle_timeout", "must be at most 1d");
        }
        if !self.admission_key.is_empty() || self.admission == AdmissionMode::Token {
            self.operator_key()?;
        }
        Ok(())
    }

    /// The operator public key of `admission_key`, if one is set.
    pub fn operator_key(&self) -> Result<Option<OperatorPublicKey>, ConfigError> {
        if self.admission_key.is_empty() {
            if self.admission == AdmissionMode::Token {
                return Err(ConfigError::Invalid {
                    key: "admission_key",
                    reason: "required with admission = \"token\": the operator public key \
                             printed by `sync-relay token keygen`"
                        .into(),
                });
            }
            return Ok(None);
        }
        self.admission_key
            .parse()
            .map(Some)
            .map_err(|e: sync_crypto::TokenError| ConfigError::Invalid {
                key: "admission_key",
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests;
