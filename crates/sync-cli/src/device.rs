//! What every command works with: the settings of the global options ([`Ctx`]), this device's
//! store with the group and the relays it keeps, and a session with one of those relays.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    BoxFuture, ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    STORE_FILE_NAME, Session, Store, StoreLocation, StoreSync, SyncClient, Transport,
    TransportError,
};
use sync_content::{ContentNode, ContentStore, Holder};
use sync_core::ConnectionStatus;
use sync_crypto::{AdmissionToken, DeviceKey};
use sync_types::{GroupId, RelayAddr, RelayId, bind_addr_for};
use zeroize::Zeroizing;

use crate::fail::{Failure, Kind, from_client, from_store};
use crate::out::note;
use crate::relay::{self, Relays};

/// Store setting holding the first relay this device syncs through (`ID@HOST:PORT,…`): the
/// only one before relay lists, kept in step with [`RELAYS_SETTING`] so that an older
/// `sync-cli` still finds a relay.
const RELAY_SETTING: &str = "relay";
/// Store setting holding every relay this device syncs through, in order of preference (a JSON
/// array of `ID@HOST:PORT,…` strings). A data dir without it uses [`RELAY_SETTING`] alone.
const RELAYS_SETTING: &str = "relays";
/// Store setting holding the id (hex) of the relay this device's last session went to.
const IN_USE_SETTING: &str = "relay_in_use";
/// Store setting holding the relay operator's admission token (text form), once given.
const TOKEN_SETTING: &str = "admission_token";
/// Store setting holding the UDP port this device's endpoint was bound to when it last served
/// large content: later commands bind it again when it is free, so the address this device
/// gives in the descriptors of its content stays valid for `watch` (which serves it) after the
/// sending command exited.
const PORT_SETTING: &str = "endpoint_port";
/// Name of the data directory under the platform data dir.
const DATA_DIR_NAME: &str = "0k-sync";
/// Longest --connect-timeout / --wait accepted: a day (larger values would overflow the
/// clock arithmetic, and no command should wait that long anyway).
const MAX_WAIT_SECS: f64 = 86_400.0;

/// Settings every command uses.
pub(crate) struct Ctx {
    /// The device's data directory.
    pub(crate) data_dir: PathBuf,
    /// Print data as JSON.
    pub(crate) json: bool,
    /// How long to try to reach the relay (--connect-timeout).
    pub(crate) connect_timeout: Duration,
    /// How long to wait for the relay's answers (--wait).
    pub(crate) wait: Duration,
    /// The admission token given with --token, if any.
    pub(crate) token: Option<AdmissionToken>,
    /// How long large content stays in this device's store after it was last sent or received
    /// (--keep-content); `None`: for ever.
    pub(crate) keep_content: Option<Duration>,
    /// The relay this process's last session went to, once one opened.
    in_use: Arc<Mutex<Option<RelayId>>>,
    /// The transport of the last [`Ctx::connect`] (its endpoint serves and fetches content).
    dialer: Mutex<Option<Arc<Dialer>>>,
}

impl Ctx {
    /// The settings from the global options; timeouts out of range are bad input.
    pub(crate) fn new(
        data_dir: Option<PathBuf>,
        json: bool,
        connect_timeout: f64,
        wait: f64,
        token: Option<&str>,
        keep_content_days: f64,
    ) -> Result<Self, Failure> {
        if !(keep_content_days.is_finite() && (0.0..=36_500.0).contains(&keep_content_days)) {
            return Err(Failure::bad_input(
                "--keep-content takes a number of days from 0 (keep for ever) to 36500",
            ));
        }
        let keep_content = (keep_content_days > 0.0)
            .then(|| Duration::from_secs_f64(keep_content_days * 86_400.0));
        let token = token
            .map(|t| {
                t.parse::<AdmissionToken>().map_err(|e| {
                    Failure::bad_input(format!("--token is not an admission token: {e}"))
                })
            })
            .transpose()?;
        Ok(Self {
            data_dir: data_dir.unwrap_or_else(default_data_dir),
            json,
            connect_timeout: secs("connect-timeout", connect_timeout)?,
            wait: secs("wait", wait)?,
            token,
            keep_content,
            in_use: Arc::default(),
            dialer: Mutex::default(),
        })
    }

    /// The admission token to send: the one given with --token (kept in the store for later
    /// commands), else the one kept earlier, else none.
    fn admission_token(&self) -> Result<Option<AdmissionToken>, Failure> {
        if !self.has_store() {
            return Ok(self.token.clone());
        }
        let store = Store::open_dir(&self.data_dir, StoreSync::Normal).map_err(from_store)?;
        if let Some(token) = &self.token {
            store
                .set_setting(TOKEN_SETTING, &token.to_text())
                .map_err(from_store)?;
            return Ok(Some(token.clone()));
        }
        match store.setting(TOKEN_SETTING).map_err(from_store)? {
            Some(text) => text.parse().map(Some).map_err(|e| {
                Failure::bad_input(format!("the admission token stored on this device is not valid ({e}): pass a new one with --token"),
                )
            }),
            None => Ok(None),
        }
    }

    /// Whether the data directory holds a store (`init` ran there).
    pub(crate) fn has_store(&self) -> bool {
        self.data_dir.join(STORE_FILE_NAME).exists()
    }

    /// The device's store; `NotInitialised` if `init` never ran in this data dir.
    pub(crate) fn open_device(&self) -> Result<(Store, DeviceKey), Failure> {
        let not_init = || {
            Failure::new(
                Kind::NotInitialised,
                format!(
                    "no device in {}: run `sync-cli init --name NAME` first (or pass the right --data-dir)",
                    self.data_dir.display()
                ),
            )
        };
        if !self.has_store() {
            return Err(not_init());
        }
        let store = Store::open_dir(&self.data_dir, StoreSync::Normal).map_err(from_store)?;
        let device = store
            .device_key()
            .map_err(from_store)?
            .ok_or_else(not_init)?;
        Ok((store, device))
    }

    /// The device, its group and its relays, checked before touching the network (the store is
    /// closed again: the client opens its own).
    pub(crate) fn ready(&self) -> Result<(DeviceKey, GroupId, Relays), Failure> {
        let (store, device) = self.open_device()?;
        let (group_id, _) = stored_group(&store)?;
        let relays = stored_relays(&store)?;
        Ok((device, group_id, relays))
    }

    /// How many pushes wait in the outbox now (read before connecting: a session sends them
    /// as soon as it opens, so the client's own count may already be lower).
    pub(crate) fn pending(&self, group: &GroupId) -> Result<usize, Failure> {
        let (store, _) = self.open_device()?;
        store.outbox_len(group).map_err(from_store)
    }

    /// The transport to `relays` (the first dialled first, the others when it fails or a
    /// session is lost); resolving their addresses is bounded by --connect-timeout. A relay
    /// whose addresses do not resolve is left out (and said so) unless none resolves.
    pub(crate) async fn transport(&self, relays: &Relays) -> Result<Arc<Dialer>, Failure> {
        let mut lookups = tokio::task::JoinSet::new();
        for (i, r) in relays.iter().enumerate() {
            let (r, timeout) = (r.clone(), self.connect_timeout);
            lookups.spawn(async move { (i, relay::socket_addrs(&r, timeout).await) });
        }
        let mut results = Vec::with_capacity(relays.len());
        while let Some(joined) = lookups.join_next().await {
            if let Ok(result) = joined {
                results.push(result);
            }
        }
        results.sort_by_key(|(i, _)| *i);
        let (mut resolved, mut first_failure) = (Vec::new(), None);
        for (r, (_, result)) in relays.iter().zip(results) {
            match result {
                Ok(addrs) => resolved.push(RelayAddr::new(r.id, &addrs)),
                Err(f) if relays.len() > 1 => {
                    note!("sync-cli: relay {r} left out: {}", f.msg);
                    first_failure.get_or_insert(f);
                }
                Err(f) => return Err(f),
            }
        }
        let all_addrs: Vec<_> = resolved.iter().flat_map(RelayAddr::socket_addrs).collect();
        let config = IrohConfig::for_relays(&resolved).ok_or_else(|| {
            first_failure.unwrap_or_else(|| {
                Failure::new(Kind::Unreachable, format!("no address found for {relays}"))
            })
        })?;
        let bind = self.stable_bind_addr(bind_addr_for(&all_addrs));
        Ok(Arc::new(Dialer {
            inner: IrohTransport::new(config.with_bind_addr(bind)),
            in_use: Arc::clone(&self.in_use),
            relays: resolved,
        }))
    }

    /// The relay this process's last session went to, if one opened.
    pub(crate) fn relay_in_use(&self) -> Option<RelayId> {
        *self.in_use.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `addr` with the port this device bound last, if that port is free now.
    fn stable_bind_addr(&self, addr: SocketAddr) -> SocketAddr {
        if !self.has_store() {
            return addr;
        }
        let port = Store::open_dir(&self.data_dir, StoreSync::Normal)
            .ok()
            .and_then(|s| s.setting(PORT_SETTING).ok().flatten())
            .and_then(|text| text.parse::<u16>().ok())
            .filter(|p| *p != 0);
        match port {
            // Free now (the data directory's lock keeps other sync-cli processes of this
            // device away; another program may have taken it meanwhile).
            Some(p) if std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), p)).is_ok() => {
                SocketAddr::new(addr.ip(), p)
            }
            _ => addr,
        }
    }

    /// Keeps the port the device's endpoint is bound to, for the next command (best effort):
    /// done once this device serves large content, whose descriptors name the address.
    pub(crate) async fn remember_port(&self) {
        let dialer = self
            .dialer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(endpoint) = (match dialer {
            Some(d) => d.inner.bound_endpoint().await,
            None => None,
        }) else {
            return;
        };
        let sockets = endpoint.bound_sockets();
        let port = sockets
            .iter()
            .find(|a| a.is_ipv4())
            .or(sockets.first())
            .map(SocketAddr::port);
        if let Some(port) = port
            && let Ok(store) = Store::open_dir(&self.data_dir, StoreSync::Normal)
        {
            let _ = store.set_setting(PORT_SETTING, &port.to_string());
        }
    }

    /// Serves `store` on this device's endpoint (the one of the last [`Ctx::connect`], bound
    /// once a connection was tried): `None` before that.
    pub(crate) async fn content_node(&self, store: ContentStore) -> Option<ContentNode> {
        let dialer = self
            .dialer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let endpoint = dialer.inner.bound_endpoint().await?;
        Some(ContentNode::serve(store, endpoint))
    }

    /// The relay of this process's session as a holder of large content (its id and the
    /// addresses it was dialled at), once a session opened.
    pub(crate) fn relay_holder(&self) -> Option<Holder> {
        let id = self.relay_in_use()?;
        let dialer = self
            .dialer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        let relay = dialer.relays.iter().find(|r| r.id == id)?;
        Some(Holder {
            id: *id.as_bytes(),
            addrs: relay.socket_addrs(),
            relay: true,
        })
    }

    /// Keeps [`Ctx::relay_in_use`] in the store for later commands (`relays list`). Best
    /// effort: it only informs.
    fn remember_relay_in_use(&self) {
        if let Some(id) = self.relay_in_use()
            && let Ok(store) = Store::open_dir(&self.data_dir, StoreSync::Normal)
        {
            let _ = store.set_setting(IN_USE_SETTING, &id.to_string());
        }
    }

    /// Connects to the relays (bounded by --connect-timeout); `online` tells whether a session
    /// is up.
    pub(crate) async fn connect(&self, relays: &Relays) -> Result<(SyncClient, bool), Failure> {
        let mut options = ClientOptions::default();
        options.connection.connect_timeout = self.connect_timeout;
        options.connection.handshake_timeout = self.connect_timeout;
        options.admission_token = self.admission_token()?;
        let dialer = self.transport(relays).await?;
        *self.dialer.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&dialer));
        let transport: Arc<dyn Transport> = dialer;
        let config = ClientConfig::new(
            StoreLocation::Dir(self.data_dir.clone()),
            transport,
            GroupChoice::Stored(None),
        )
        .with_options(options);
        let client = SyncClient::connect(config)
            .await
            .map_err(|e| from_client(e, &relays.to_string()))?;
        let status = client.status();
        if status.wrong_relay {
            client.close().await;
            let msg = if relays.rest().is_empty() {
                let relay = relays.first();
                format!(
                    "the endpoint at {} is not relay {}, the one this device pinned: its key changed, or another relay answers there; nothing was sent to it (if the relay's identity changed on purpose, pair again with its new id)",
                    relay.addrs.join(","),
                    relay.id
                )
            } else {
                format!(
                    "an endpoint at the address of one of this device's relays ({relays}) is not the relay pinned there: its key changed, or another relay answers there; nothing was sent to it (fix the list with `sync-cli relays`)"
                )
            };
            return Err(Failure::new(Kind::Refused, msg));
        }
        let online = status.connection == ConnectionStatus::Connected;
        if online {
            self.remember_relay_in_use();
        }
        Ok((client, online))
    }

    /// Lets queued pushes reach the relay (bounded by --wait), then closes.
    pub(crate) async fn finish(&self, client: &SyncClient, online: bool) {
        if online {
            let _ = client.flush(self.wait).await;
        }
        client.close().await;
    }

    /// Connects for a command that needs the relay now: when no relay answers, the client is
    /// closed and the command fails `Unreachable` with "relay unreachable at …", followed by
    /// `then` (what that means for the command, e.g. "; nothing pulled").
    pub(crate) async fn connect_online(
        &self,
        relays: &Relays,
        then: &str,
    ) -> Result<SyncClient, Failure> {
        let (client, online) = self.connect(relays).await?;
        if !online {
            client.close().await;
            return Err(Failure::new(
                Kind::Unreachable,
                format!("relay unreachable at {relays}{then}"),
            ));
        }
        Ok(client)
    }

    /// Runs `request` within --wait: a relay error becomes its failure, a request that takes
    /// longer fails `Unreachable` with "relay at … did not answer `asked` within --wait",
    /// followed by `then`.
    pub(crate) async fn within_wait<T>(
        &self,
        relays: &Relays,
        asked: &str,
        then: &str,
        request: impl std::future::Future<Output = Result<T, sync_client::ClientError>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.wait, request).await {
            Ok(r) => r.map_err(|e| from_client(e, &relays.to_string())),
            Err(_) => Err(Failure::new(
                Kind::Unreachable,
                format!(
                    "relay at {relays} did not answer {asked} within --wait {}s{then}",
                    self.wait.as_secs_f64()
                ),
            )),
        }
    }
}

/// `v` seconds as a duration: positive, at most [`MAX_WAIT_SECS`]; `what` names the option.
fn secs(what: &str, v: f64) -> Result<Duration, Failure> {
    Some(v)
        .filter(|v| *v <= MAX_WAIT_SECS)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            Failure::bad_input(format!(
                "--{what} must be a positive number of seconds, at most {MAX_WAIT_SECS} (a day)"
            ))
        })
}

/// `0k-sync` in the platform's data directory (on Linux `$XDG_DATA_HOME` when it is an absolute
/// path, else `$HOME/.local/share`, the home directory coming from the password database when
/// `$HOME` is unset or empty); `./0k-sync` when there is no home directory at all.
fn default_data_dir() -> PathBuf {
    dirs::data_dir().map_or_else(|| PathBuf::from(DATA_DIR_NAME), |d| d.join(DATA_DIR_NAME))
}

/// The group of this device (the CLI keeps one).
pub(crate) fn stored_group(store: &Store) -> Result<(GroupId, GroupMaterial), Failure> {
    let group = store.select_group(None).map_err(from_store)?;
    Ok((group.keys().group_id(), group))
}

/// The relays this device syncs through, in order of preference, if it knows any: the stored
/// list, or (a data dir from before relay lists) the one stored relay as a list of one.
pub(crate) fn stored_relays_opt(store: &Store) -> Result<Option<Relays>, Failure> {
    if let Some(text) = store.setting(RELAYS_SETTING).map_err(from_store)? {
        return Relays::from_stored(&text).map(Some).map_err(|e| {
            Failure::bad_input(format!(
                "the relay list stored on this device is not valid ({e}): set it again with `sync-cli relays add`"
            ))
        });
    }
    match store.setting(RELAY_SETTING).map_err(from_store)? {
        Some(text) => text.parse().map(|r| Some(Relays::one(r))).map_err(|e| {
            Failure::bad_input(format!(
                "the relay stored on this device (`{text}`) is not valid: {e}"
            ))
        }),
        None => Ok(None),
    }
}

/// [`stored_relays_opt`]; `NotInitialised` before `pair` or `relays add`.
pub(crate) fn stored_relays(store: &Store) -> Result<Relays, Failure> {
    stored_relays_opt(store)?.ok_or_else(|| {
        Failure::new(
            Kind::NotInitialised,
            "no relay known on this device: run `sync-cli pair` (or `sync-cli relays add`) first",
        )
    })
}

/// Stores `relays` as this device's relay list (the first one also alone, for older
/// `sync-cli` versions).
pub(crate) fn save_relays(store: &Store, relays: &Relays) -> Result<(), Failure> {
    store
        .set_setting(RELAYS_SETTING, &relays.to_stored())
        .map_err(from_store)?;
    store
        .set_setting(RELAY_SETTING, &relays.first().to_string())
        .map_err(from_store)
}

/// The relay this device's last session went to, as far as it was recorded.
pub(crate) fn stored_relay_in_use(store: &Store) -> Result<Option<RelayId>, Failure> {
    Ok(store
        .setting(IN_USE_SETTING)
        .map_err(from_store)?
        .and_then(|text| text.parse().ok()))
}

/// Saves `group` and the relays it syncs through; returns the group's id.
pub(crate) fn save_membership(
    store: &Store,
    group: &GroupMaterial,
    relays: &Relays,
) -> Result<GroupId, Failure> {
    let group_id = store.save_group(group).map_err(from_store)?;
    save_relays(store, relays)?;
    Ok(group_id)
}

/// Keeps what the invite a device joined with carries beyond the group: the key epoch of a group
/// that rotated, and the invite's id (named when the device enrolls, so the inviter grants it
/// the group's history).
pub(crate) fn remember_invite(
    store: &mut Store,
    group: GroupId,
    joined: &sync_client::InvitedGroup,
) -> Result<(), Failure> {
    if let Some(epoch) = joined.epoch.clone() {
        store
            .add_membership(&group, &[], &[epoch])
            .map_err(from_store)?;
    }
    store
        .note_joined_invite(&group, joined.invite_id)
        .map_err(from_store)
}

/// The transport to the device's relays ([`IrohTransport`], which fails over between them),
/// noting which relay each session went to.
pub(crate) struct Dialer {
    inner: IrohTransport,
    in_use: Arc<Mutex<Option<RelayId>>>,
    /// The relays at the addresses they resolved to.
    relays: Vec<RelayAddr>,
}

impl Transport for Dialer {
    fn connect<'a>(
        &'a self,
        device: &'a DeviceKey,
    ) -> BoxFuture<'a, Result<Session, TransportError>> {
        Box::pin(async move {
            let session = self.inner.connect(device).await?;
            *self.in_use.lock().unwrap_or_else(PoisonError::into_inner) = Some(session.relay_id);
            Ok(session)
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.inner.shutdown()
    }
}

/// A random number generator keyed from the operating system's randomness.
pub(crate) fn rng() -> Result<ChaCha20Rng, Failure> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|_| Failure::new(Kind::Other, "the OS random number generator failed"))?;
    Ok(ChaCha20Rng::from_seed(*seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dial(byte: u8) -> String {
        format!("{}@127.0.0.{byte}:7440", format!("{byte:02x}").repeat(32))
    }

    #[test]
    fn a_data_dir_with_one_stored_relay_reads_as_a_list_of_one_and_saving_keeps_it_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_dir(dir.path(), StoreSync::Normal).unwrap();
        let e = stored_relays(&store).unwrap_err();
        assert_eq!(e.kind, Kind::NotInitialised);
        assert!(stored_relays_opt(&store).unwrap().is_none());

        // As a sync-cli from before relay lists left it.
        store.set_setting(RELAY_SETTING, &dial(1)).unwrap();
        let old = stored_relays(&store).unwrap();
        assert_eq!(old, Relays::one(dial(1).parse().unwrap()));

        let two = Relays::new(vec![dial(2).parse().unwrap(), dial(1).parse().unwrap()]).unwrap();
        save_relays(&store, &two).unwrap();
        assert_eq!(stored_relays(&store).unwrap(), two);
        assert_eq!(
            store.setting(RELAY_SETTING).unwrap().as_deref(),
            Some(dial(2).as_str()),
            "the first relay alone, for an older sync-cli"
        );

        store.set_setting(RELAYS_SETTING, "[\"garbage\"]").unwrap();
        let e = stored_relays(&store).unwrap_err();
        assert_eq!(e.kind, Kind::BadInput);
        assert!(e.msg.contains("relays add"), "{}", e.msg);

        assert_eq!(stored_relay_in_use(&store).unwrap(), None);
        store.set_setting(IN_USE_SETTING, &"02".repeat(32)).unwrap();
        assert_eq!(
            stored_relay_in_use(&store).unwrap(),
            Some(RelayId::from_bytes([2; 32]))
        );
    }

    #[test]
    fn timeouts_are_positive_and_at_most_a_day() {
        assert_eq!(secs("wait", 1.5).unwrap(), Duration::from_millis(1500));
        assert_eq!(secs("wait", 86_400.0).unwrap(), Duration::from_secs(86_400));
        for bad in [0.0, -1.0, 86_400.5, 1e19, f64::INFINITY, f64::NAN] {
            let e = secs("wait", bad).unwrap_err();
            assert_eq!(e.kind, Kind::BadInput, "{bad}");
            assert!(e.msg.contains("--wait"), "{}", e.msg);
        }
    }
}
