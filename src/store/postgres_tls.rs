//! TLS to PostgreSQL with rustls (no OpenSSL), as libpq reads the url's `sslmode`:
//!
//! | `sslmode` | encrypted | server checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (default) | if the server offers it | no |
//! | `require` | always | no |
//! | `verify-ca` | always | its certificate chains to `sslrootcert` |
//! | `verify-full` | always | and names the host connected to |
//!
//! `sslrootcert` is a PEM file of trusted certificates, or `system` for the operating system's
//! store; without it, `verify-ca` and `verify-full` use the system's store (libpq would read
//! `~/.postgresql/root.crt`, which a service seldom has). tokio-postgres knows `disable`,
//! `prefer` and `require` only, so [`TlsSettings::from_url`] takes `sslmode` and `sslrootcert`
//! out of the url and hands it `require` for the two verifying modes; the checks are this
//! module's, in the rustls verifier it builds.
//!
//! Limits: no client certificates (`sslcert`, `sslkey`); no channel binding (SCRAM works
//! without it).
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

/// What the url asks of TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Where trusted certificates come from for the verifying modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The operating system's store.
    System,
    /// A PEM file.
    File(PathBuf),
}

/// The url's TLS settings, and the url without those tokio-postgres cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: Mode,
    pub roots: Roots,
    /// The url for tokio-postgres: `sslmode` as it knows it, no `sslrootcert`.
    pub url: String,
}

impl TlsSettings {
    /// Read `sslmode` and `sslrootcert` from the query of `url`. An unknown mode, or a mode or
    /// root given twice, is an error (the message does not show the url: it may hold a
    /// password).
    pub fn from_url(url: &str) -> Result<TlsSettings, String> {
        // The query starts at the first `?` after the credentials, which end at the first `@`
        // (tokio-postgres's reading: a password may hold an unencoded `?`).
        let from = url.find('@').map_or(0, |i| i + 1);
        let (base, query) = match url[from..].find('?') {
            Some(i) => (&url[..from + i], &url[from + i + 1..]),
            None => (url, ""),
        };
        let mut mode = None;
        let mut roots = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    let m = match decode(value)?.as_str() {
                        "disable" => Mode::Disable,
                        "prefer" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        "allow" => {
                            return Err("sslmode=allow is not supported: use disable, prefer, \
                                        require, verify-ca or verify-full"
                                .to_string())
                        }
                        other => {
                            return Err(format!(
                                "sslmode={other:?} is not one of disable, prefer, require, \
                                 verify-ca, verify-full"
                            ))
                        }
                    };
                    if mode.replace(m).is_some() {
                        return Err("sslmode is given twice".to_string());
                    }
                }
                "sslrootcert" => {
                    let v = decode(value)?;
                    let r = if v == "system" {
                        Roots::System
                    } else {
                        Roots::File(PathBuf::from(v))
                    };
                    if roots.replace(r).is_some() {
                        return Err("sslrootcert is given twice".to_string());
                    }
                }
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(format!(
                        "{key}: client certificates are not supported; authenticate with a \
                         password"
                    ))
                }
                "channel_binding" if decode(value)? == "require" => {
                    return Err("channel_binding=require is not supported (SCRAM works \
                                without it): use prefer or disable"
                        .to_string())
                }
                "sslnegotiation" if decode(value)? == "direct" => {
                    return Err(
                        "sslnegotiation=direct is not supported: use the default (postgres)"
                            .to_string(),
                    )
                }
                _ => kept.push(pair),
            }
        }
        let mode = mode.unwrap_or(Mode::Prefer);
        if roots.is_some() && !matches!(mode, Mode::VerifyCa | Mode::VerifyFull) {
            return Err(
                "sslrootcert is only read with sslmode=verify-ca or verify-full: with a \
                        weaker mode the server's certificate would not be checked against it"
                    .to_string(),
            );
        }
        let pg_mode = match mode {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            _ => "require",
        };
        kept.push(match pg_mode {
            "disable" => "sslmode=disable",
            "prefer" => "sslmode=prefer",
            _ => "sslmode=require",
        });
        Ok(TlsSettings {
            mode,
            roots: roots.unwrap_or(Roots::System),
            url: format!("{base}?{}", kept.join("&")),
        })
    }

    /// The connector for these settings, `None` for `disable`. Reads `sslrootcert` (or the
    /// system's store) for the verifying modes: an unreadable file, one with no certificate, or
    /// an empty system store is an error.
    pub fn connector(&self) -> Result<Option<Connector>, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            Mode::Disable => return Ok(None),
            Mode::Prefer | Mode::Require => Arc::new(Unchecked(provider.clone())),
            Mode::VerifyCa | Mode::VerifyFull => {
                let roots = self.root_store()?;
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| format!("the trusted certificates: {e}"))?;
                if self.mode == Mode::VerifyCa {
                    Arc::new(AnyName(webpki))
                } else {
                    webpki
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(Connector(Arc::new(config))))
    }

    fn root_store(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Roots::File(path) => {
                let shown = path.display();
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                if certs.is_empty() {
                    return Err(format!("sslrootcert {shown}: no PEM certificate in it"));
                }
                for cert in certs {
                    store
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {shown}: {e}"))?;
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(
                        "no trusted certificates in the system's store for sslmode=verify-ca \
                         or verify-full: give sslrootcert=/path/to/ca.pem in the url"
                            .to_string(),
                    );
                }
            }
        }
        Ok(store)
    }
}

/// Percent-decoding of a url query value (`%2F` in a path).
fn decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("a bad %-escape in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} is not UTF-8"))
}

/// `require` and `prefer`: the connection is encrypted, the server is not checked (libpq's
/// meaning). The handshake's signatures are still verified, so the session is with whoever
/// holds the key of the certificate shown.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain is checked against the trusted certificates, the host name is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A rustls connector for tokio-postgres: one per store, cloned per connection.
#[derive(Clone)]
pub struct Connector(Arc<rustls::ClientConfig>);

impl MakeTlsConnect<Socket> for Connector {
    type Stream = TlsStream;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, host: &str) -> io::Result<Connect> {
        // A Unix socket's host is empty (or a path): no TLS is asked of it (the server
        // answers a socket's TLS request with no), so only a handshake would need the name.
        Ok(Connect {
            config: self.0.clone(),
            name: ServerName::try_from(host.to_string()).ok(),
        })
    }
}

/// One TLS handshake to come.
pub struct Connect {
    config: Arc<rustls::ClientConfig>,
    /// `None`: the host is no DNS name or address (a Unix socket).
    name: Option<ServerName<'static>>,
}

impl TlsConnect<Socket> for Connect {
    type Stream = TlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsStream>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let name = self.name.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "TLS needs a host name or address",
                )
            })?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, socket)
                .await
                .map(|s| TlsStream(Box::new(s)))
        })
    }
}

/// An encrypted connection.
pub struct TlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> TlsSettings {
        TlsSettings::from_url(url).unwrap()
    }

    #[test]
    fn the_modes_tokio_postgres_lacks_are_taken_out_of_the_url() {
        let s = settings("postgres://a:b@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.roots, Roots::File(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            s.url,
            "postgres://a:b@h/db?application_name=x&sslmode=require"
        );
        let s = settings("postgres://h/db");
        assert_eq!(
            (s.mode, s.url.as_str()),
            (Mode::Prefer, "postgres://h/db?sslmode=prefer")
        );
        assert_eq!(
            settings("postgres://h/db?sslmode=disable").mode,
            Mode::Disable
        );
        assert_eq!(
            settings("postgres://h/db?sslmode=verify-ca").roots,
            Roots::System
        );
        // A `?` in a password is not the query's start (tokio-postgres reads the same way).
        let s = settings("postgres://u:p?w@h/db?sslmode=require");
        assert_eq!(s.mode, Mode::Require);
        assert_eq!(s.url, "postgres://u:p?w@h/db?sslmode=require");
        let s = settings("postgres://u:p?w@h/db");
        assert_eq!(s.mode, Mode::Prefer);
        assert_eq!(s.url, "postgres://u:p?w@h/db?sslmode=prefer");
        assert_eq!(
            settings("postgres://h/db?sslmode=verify-ca&sslrootcert=system").roots,
            Roots::System
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        for (url, says) in [
            ("postgres://h/db?sslmode=sometimes", "not one of"),
            ("postgres://h/db?sslmode=allow", "not supported"),
            ("postgres://h/db?sslmode=require&sslmode=disable", "twice"),
            (
                "postgres://h/db?sslmode=require&sslrootcert=/ca.pem",
                "only read with",
            ),
            ("postgres://h/db?sslcert=/c.pem", "client certificates"),
            ("postgres://h/db?channel_binding=require", "not supported"),
            ("postgres://h/db?sslnegotiation=direct", "not supported"),
        ] {
            let e = TlsSettings::from_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_unix_socket_host_makes_a_connector_that_needs_no_name() {
        let mut c = settings("postgres://u@h/db?sslmode=prefer")
            .connector()
            .unwrap()
            .unwrap();
        let connect = MakeTlsConnect::<Socket>::make_tls_connect(&mut c, "").unwrap();
        assert!(connect.name.is_none());
        let connect = MakeTlsConnect::<Socket>::make_tls_connect(&mut c, "db.internal").unwrap();
        assert!(connect.name.is_some());
    }

    #[test]
    fn a_root_file_without_certificates_is_an_error() {
        let dir = std::env::temp_dir().join(format!("cronlease-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let url = format!(
            "postgres://h/db?sslmode=verify-full&sslrootcert={}",
            empty.display()
        );
        let e = settings(&url).connector().err().unwrap();
        assert!(e.contains("no PEM certificate"), "{e}");
        let missing = "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
        let e = settings(missing).connector().err().unwrap();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
