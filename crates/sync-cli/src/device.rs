//! What every command works with: the settings of the global options ([`Ctx`]), this device's
//! store with the group and the relay it keeps, and a session with that relay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use sync_client::{
    ClientConfig, ClientOptions, GroupChoice, GroupMaterial, IrohConfig, IrohTransport,
    STORE_FILE_NAME, Store, StoreLocation, StoreSync, SyncClient,
};
use sync_core::ConnectionStatus;
use sync_crypto::{AdmissionToken, DeviceKey};
use sync_types::GroupId;
use zeroize::Zeroizing;

use crate::fail::{Failure, Kind, from_client, from_store};
use crate::relay::{self, RelayAddr};

/// Store setting holding the relay this device syncs through (`ID@HOST:PORT,…`).
pub(crate) const RELAY_SETTING: &str = "relay";
/// Store setting holding the relay operator's admission token (text form), once given.
const TOKEN_SETTING: &str = "admission_token";
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
}

impl Ctx {
    /// The settings from the global options; timeouts out of range are bad input.
    pub(crate) fn new(
        data_dir: Option<PathBuf>,
        json: bool,
        connect_timeout: f64,
        wait: f64,
        token: Option<&str>,
    ) -> Result<Self, Failure> {
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

    /// The device, its group and its relay, checked before touching the network (the store is
    /// closed again: the client opens its own).
    pub(crate) fn ready(&self) -> Result<(DeviceKey, GroupId, RelayAddr), Failure> {
        let (store, device) = self.open_device()?;
        let (group_id, _) = stored_group(&store)?;
        let relay = stored_relay(&store)?;
        Ok((device, group_id, relay))
    }

    /// The transport to `relay`; resolving its addresses is bounded by --connect-timeout.
    pub(crate) async fn transport(&self, relay: &RelayAddr) -> Result<Arc<IrohTransport>, Failure> {
        let addrs = relay::socket_addrs(relay, self.connect_timeout).await?;
        Ok(Arc::new(IrohTransport::new(IrohConfig::new(
            relay.id, addrs,
        ))))
    }

    /// Connects to the relay (bounded by --connect-timeout); `online` tells whether a session
    /// is up.
    pub(crate) async fn connect(&self, relay: &RelayAddr) -> Result<(SyncClient, bool), Failure> {
        let mut options = ClientOptions::default();
        options.connection.connect_timeout = self.connect_timeout;
        options.connection.handshake_timeout = self.connect_timeout;
        options.admission_token = self.admission_token()?;
        let config = ClientConfig::new(
            StoreLocation::Dir(self.data_dir.clone()),
            self.transport(relay).await?,
            GroupChoice::Stored(None),
        )
        .with_options(options);
        let client = SyncClient::connect(config)
            .await
            .map_err(|e| from_client(e, &relay.to_string()))?;
        let status = client.status();
        if status.wrong_relay {
            client.close().await;
            return Err(Failure::new(
                Kind::Refused,
                format!(
                    "the endpoint at {} is not relay {}, the one this device pinned: its key changed, or another relay answers there; nothing was sent to it (if the relay's identity changed on purpose, pair again with its new id)",
                    relay.addrs.join(","),
                    relay.id
                ),
            ));
        }
        let online = status.connection == ConnectionStatus::Connected;
        Ok((client, online))
    }

    /// Lets queued pushes reach the relay (bounded by --wait), then closes.
    pub(crate) async fn finish(&self, client: &SyncClient, online: bool) {
        if online {
            let _ = client.flush(self.wait).await;
        }
        client.close().await;
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

/// The relay this device syncs through; `NotInitialised` before `pair`.
pub(crate) fn stored_relay(store: &Store) -> Result<RelayAddr, Failure> {
    match store.setting(RELAY_SETTING).map_err(from_store)? {
        Some(text) => text.parse().map_err(|e| {
            Failure::bad_input(format!(
                "the relay stored on this device (`{text}`) is not valid: {e}"
            ))
        }),
        None => Err(Failure::new(
            Kind::NotInitialised,
            "no relay known on this device: run `sync-cli pair` first",
        )),
    }
}

/// Saves `group` and the relay it syncs through; returns the group's id.
pub(crate) fn save_membership(
    store: &Store,
    group: &GroupMaterial,
    relay: &RelayAddr,
) -> Result<GroupId, Failure> {
    let group_id = store.save_group(group).map_err(from_store)?;
    store
        .set_setting(RELAY_SETTING, &relay.to_string())
        .map_err(from_store)?;
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
