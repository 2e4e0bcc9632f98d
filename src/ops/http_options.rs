//! The `--http*` options of `cronlease run`, checked and loaded before the node starts: a bad
//! certificate, token file or combination is a configuration error (exit 2) with its reason,
//! not a node that runs without the protection it was asked for.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::ops::http_auth::{AccessError, AccessOptions, HttpAccess};
use crate::ops::http_tls::{CertFiles, CertSlot, TlsError};
use crate::ops::token::{TokenError, Tokens};

/// The options as given.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// `--http ADDR`.
    pub addr: Option<SocketAddr>,
    pub token_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// `--http-advertise HOST:PORT`.
    pub advertise: Option<String>,
    pub access: AccessOptions,
}

/// Why the HTTP interface cannot be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(
        "--http-advertise {given:?}: expected HOST:PORT (a name or address and a port, e.g. \
         node1.internal:9100 or [fd00::5]:9100), without a scheme"
    )]
    Advertise { given: String },
}

/// The interface ready to serve.
pub struct PreparedHttp {
    pub addr: SocketAddr,
    pub access: Arc<HttpAccess>,
    /// With `--http-tls-cert`: the files and the slot that serves their pair.
    pub tls: Option<(CertFiles, Arc<CertSlot>)>,
    /// Watched for rotation ([`crate::ops::http_secrets`]).
    pub token_file: Option<PathBuf>,
    /// `--http-advertise`, checked.
    pub advertise: Option<String>,
    /// Trusted besides the system's roots when relaying another node's output.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl PreparedHttp {
    /// How this node's record names its interface for the other nodes and `cronlease logs
    /// --follow`: `host:port`, or `https://host:port` when it serves TLS.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        let addr = self.advertise.clone().unwrap_or_else(|| bound.to_string());
        match self.tls {
            Some(_) => format!("https://{addr}"),
            None => addr,
        }
    }
}

/// Load and check everything; `None` without `--http`. `env_token`: `CRONLEASE_HTTP_TOKEN`.
pub fn prepare(
    options: HttpOptions,
    env_token: Option<String>,
) -> Result<Option<PreparedHttp>, HttpSetupError> {
    let Some(addr) = options.addr else {
        return Ok(None);
    };
    let tokens = Tokens::load(options.token_file.as_deref(), env_token)?;
    let tls = match (options.tls_cert, options.tls_key) {
        (Some(cert), Some(key)) => {
            let files = CertFiles { cert, key };
            let slot = CertSlot::new(files.load()?);
            Some((files, slot))
        }
        (None, None) => None,
        _ => return Err(TlsError::Half.into()),
    };
    let extra_roots = match &options.tls_ca {
        Some(path) => crate::ops::http_tls::extra_roots(path)?,
        None => Vec::new(),
    };
    let mut access_options = options.access;
    if let Some(given) = &options.advertise {
        let host = advertised_host(given).ok_or_else(|| HttpSetupError::Advertise {
            given: given.clone(),
        })?;
        // The name the other nodes use is one of this node's: the Host check of a loopback
        // bind lets it in (on another bind, it does not turn the check on).
        if addr.ip().is_loopback() {
            access_options.allowed_hosts.push(host.to_string());
        }
    }
    let access = Arc::new(HttpAccess::new(addr, tokens, access_options)?);
    Ok(Some(PreparedHttp {
        addr,
        access,
        tls,
        token_file: options.token_file,
        advertise: options.advertise,
        extra_roots,
    }))
}

/// The host of an `--http-advertise` value (`name:port`, `v4:port`, `[v6]:port`), if it is one.
fn advertised_host(given: &str) -> Option<&str> {
    let (host, port) = given.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p > 0)?;
    let host = match host.strip_prefix('[') {
        Some(v6) => {
            let v6 = v6.strip_suffix(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            v6
        }
        None => host,
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    (!host.is_empty() && host.chars().all(plain) && (!host.contains(':') || given.starts_with('[')))
        .then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertised_address_is_host_and_port() {
        assert_eq!(
            advertised_host("node1.internal:9100"),
            Some("node1.internal")
        );
        assert_eq!(advertised_host("10.0.0.5:9100"), Some("10.0.0.5"));
        assert_eq!(advertised_host("[fd00::5]:9100"), Some("fd00::5"));
        for bad in [
            "node1",
            "node1:",
            "node1:0",
            "https://node1:9100",
            "fd00::5:9100",
            "a b:1",
            "[x]:1",
        ] {
            assert_eq!(advertised_host(bad), None, "{bad}");
        }
    }
}
