//! HTTPS for the HTTP interface: the certificate and key (`--http-tls-cert`, `--http-tls-key`,
//! PEM), served through rustls (no OpenSSL), and the roots a node or `cronlease logs
//! --follow` trusts when it reads another node (the system's, plus `--http-tls-ca`).
//!
//! The pair is loaded whole and checked (the key must be the certificate's) before it replaces
//! the one in force, so a rotation that writes the two files one after the other, or a bad
//! file, keeps serving the old pair until a good one is there ([`crate::ops::http_secrets`]
//! re-reads them on SIGHUP and when they change). Each new connection is handshaken with the
//! pair in force at that moment; connections already open keep theirs.
//!
//! Only HTTP/1.1 is offered (ALPN), as on plain HTTP. TLS 1.2 and 1.3, with rustls' default
//! cipher suites. A client certificate is not asked for: the tokens are the authentication.
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: cannot read it: {message}")]
    Read {
        flag: &'static str,
        path: String,
        message: String,
    },
    #[error("{flag} {path}: no PEM {what} in it")]
    Missing {
        flag: &'static str,
        path: String,
        what: &'static str,
    },
    #[error("--http-tls-key {key}: {message} (is it the key of --http-tls-cert {cert}?)")]
    Pair {
        cert: String,
        key: String,
        message: String,
    },
    #[error("--http-tls-cert and --http-tls-key go together: give both or neither")]
    Half,
}

/// Where the pair is read from.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        flag,
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The certificates of a PEM file (a chain: the server's first).
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Missing {
            flag,
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

impl CertFiles {
    /// Read and check the pair.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = certificates("--http-tls-cert", &self.cert)?;
        let pem = read("--http-tls-key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Missing {
            flag: "--http-tls-key",
            path: self.key.display().to_string(),
            what: if pem.windows(9).any(|w| w == b"ENCRYPTED") {
                "unencrypted private key (it is encrypted: `openssl pkey -in KEY -out PLAIN`)"
            } else {
                "private key"
            },
        })?;
        let pair_error = |e: rustls::Error| TlsError::Pair {
            cert: self.cert.display().to_string(),
            key: self.key.display().to_string(),
            message: e.to_string(),
        };
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(pair_error)?;
        Ok(Arc::new(certified))
    }
}

/// The pair in force, replaced whole on a reload.
#[derive(Debug)]
pub struct CertSlot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertSlot {
    pub fn new(pair: Arc<CertifiedKey>) -> Arc<CertSlot> {
        Arc::new(CertSlot {
            current: RwLock::new(pair),
        })
    }

    /// Serve `pair` to the connections from now on.
    pub fn replace(&self, pair: Arc<CertifiedKey>) {
        *self.current.write().unwrap() = pair;
    }

    /// The server's TLS configuration, which asks this slot for the pair at every handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

/// The certificates of `--http-tls-ca` (PEM, one or more), trusted besides the system's roots
/// when this process reads another node over HTTPS.
pub fn extra_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let certs = certificates("--http-tls-ca", path)?;
    certs
        .iter()
        .map(|der| reqwest::Certificate::from_der(der.as_ref()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Read {
            flag: "--http-tls-ca",
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_pem_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let files = CertFiles {
            cert: junk.clone(),
            key: junk.clone(),
        };
        let e = files.load().unwrap_err().to_string();
        assert!(
            e.contains("--http-tls-cert") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = extra_roots(&dir.path().join("absent.pem"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--http-tls-ca ") && e.contains("cannot read it"),
            "{e}"
        );
    }
}
