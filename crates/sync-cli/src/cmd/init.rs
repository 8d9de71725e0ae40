//! `init`: this device's identity (key and name) in a new or existing data directory.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};

use clap::Args;
use serde_json::json;
use sync_client::{Store, StoreSync};

use crate::device::Ctx;
use crate::fail::{Failure, Kind, from_store};
use crate::lock;
use crate::out::{self, outln};

/// Arguments of `init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// A name for this device (shown by `devices` on this device).
    #[arg(long)]
    name: String,
}

/// Creates the data directory (0700), the device key, and (re)names the device.
pub(crate) fn run(ctx: &Ctx, args: &InitArgs) -> Result<(), Failure> {
    let name = args.name.trim();
    if name.is_empty() || name.len() > 64 {
        return Err(Failure::bad_input(
            "the device name must be 1 to 64 characters",
        ));
    }
    let existed = ctx.has_store();
    let dir_failure =
        |e: std::io::Error| Failure::new(Kind::Other, format!("{}: {e}", ctx.data_dir.display()));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&ctx.data_dir)
        .map_err(dir_failure)?;
    let _lock = lock::lock(&ctx.data_dir)?;
    let store = Store::open_dir(&ctx.data_dir, StoreSync::Normal).map_err(from_store)?;
    // An existing directory keeps its mode unless we tighten it: it holds secrets.
    std::fs::set_permissions(&ctx.data_dir, std::fs::Permissions::from_mode(0o700))
        .map_err(dir_failure)?;
    let created = store.device_key().map_err(from_store)?.is_none();
    let device = store.device_key_or_create().map_err(from_store)?;
    store.set_device_name(name).map_err(from_store)?;
    if ctx.json {
        out::json(&json!({
            "device_id": device.device_id().to_string(),
            "name": name,
            "data_dir": ctx.data_dir.display().to_string(),
            "created": created,
        }))?;
    } else if created || !existed {
        outln!("Device \"{name}\" created: {}", device.device_id())?;
        outln!("Data directory: {}", ctx.data_dir.display())?;
        outln!(
            "Next: `sync-cli pair --create --relay RELAY` (first device) or `sync-cli pair --join …`"
        )?;
    } else {
        outln!("Device renamed to \"{name}\": {}", device.device_id())?;
    }
    Ok(())
}
