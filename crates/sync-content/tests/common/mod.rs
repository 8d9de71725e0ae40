//! What the content tests share: self-hosted iroh endpoints on 127.0.0.1, content nodes, test
//! files, the stored `.data` files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use iroh::endpoint::presets;
use iroh::{Endpoint, RelayMode, SecretKey};
use sync_content::{ContentNode, ContentStore};

/// An iroh endpoint with secret key `[seed; 32]` on 127.0.0.1 that reaches nothing beyond the
/// addresses it is given.
pub(crate) async fn endpoint(seed: u8) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .secret_key(SecretKey::from_bytes(&[seed; 32]))
        .relay_mode(RelayMode::Disabled)
        .clear_address_lookup()
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr"))
        .expect("bind addr")
        .bind()
        .await
        .expect("bind")
}

/// A content node with its store in `dir/node-<seed>`, serving on [`endpoint`].
pub(crate) async fn node(seed: u8, dir: &Path) -> ContentNode {
    let store = ContentStore::open(&dir.join(format!("node-{seed}")))
        .await
        .expect("store");
    ContentNode::serve(store, endpoint(seed).await)
}

/// Writes `len` pseudo-random bytes (not compressible, not repeating) to `dir/name`, with
/// `marker` every 1 MiB if given.
pub(crate) fn write_file(dir: &Path, name: &str, len: usize, marker: Option<&[u8]>) -> PathBuf {
    let mut data = sync_testkit::pattern_bytes(len, 0x2545_f491_4f6c_dd1d);
    if let Some(marker) = marker {
        for at in (0..len.saturating_sub(marker.len())).step_by(1 << 20) {
            data[at..at + marker.len()].copy_from_slice(marker);
        }
    }
    let path = dir.join(name);
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(&path, data).expect("write");
    path
}

/// The `.data` files under `dir` (content above the inline size lives in one each).
pub(crate) fn data_files(dir: &Path) -> Vec<PathBuf> {
    sync_testkit::files_with_extension(dir, "data")
        .into_iter()
        .map(|(p, _)| p)
        .collect()
}
