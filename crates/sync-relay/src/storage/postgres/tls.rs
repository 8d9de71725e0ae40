//! TLS to the database: off, or required with the server's certificate checked against the
//! system's trust store or a CA file of the operator's (rustls, ring provider).

use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::StorageError;

/// Whether and how connections to PostgreSQL are encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PostgresTls {
    /// Plain TCP (a database on the same host or a private network).
    #[default]
    Disable,
    /// TLS required; the server's certificate must chain to `ca_file` (PEM) when given, else
    /// to the system's trust store, and name the host dialled.
    Require {
        /// CA certificates (PEM); `None`: the system's.
        ca_file: Option<PathBuf>,
    },
}

/// What the pool and the listener connect with.
#[derive(Clone)]
pub(super) enum Connector {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

fn tls_error(what: impl std::fmt::Display) -> StorageError {
    StorageError::Tls(what.to_string())
}

/// The connector for `tls`.
pub(super) fn connector(tls: &PostgresTls) -> Result<Connector, StorageError> {
    let PostgresTls::Require { ca_file } = tls else {
        return Ok(Connector::Plain);
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_error(format!("cannot read CA file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    tls_error(format!("bad certificate in {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    tls_error(format!("unusable certificate in {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(tls_error(format!(
                    "no certificate in CA file {}",
                    path.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A system store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls_error(
                    "the system trust store holds no usable certificate; set postgres_ca_file",
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_error)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Connector::Rustls(
        tokio_postgres_rustls::MakeRustlsConnect::new(config),
    ))
}
