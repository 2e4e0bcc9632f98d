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
}

/// The interface ready to serve.
pub struct PreparedHttp {
    pub addr: SocketAddr,
    pub access: Arc<HttpAccess>,
    /// With `--http-tls-cert`: the files and the slot that serves their pair.
    pub tls: Option<(CertFiles, Arc<CertSlot>)>,
    /// Watched for rotation ([`crate::ops::http_secrets`]).
    pub token_file: Option<PathBuf>,
    /// Trusted besides the system's roots when relaying another node's output.
    pub extra_roots: Vec<reqwest::Certificate>,
}

impl PreparedHttp {
    /// How this node's record names its interface for the other nodes and `cronlease logs
    /// --follow`: `host:port`, or `https://host:port` when it serves TLS.
    pub fn advertised(&self, bound: SocketAddr) -> String {
        match self.tls {
            Some(_) => format!("https://{bound}"),
            None => bound.to_string(),
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
    let access = Arc::new(HttpAccess::new(addr, tokens, options.access)?);
    Ok(Some(PreparedHttp {
        addr,
        access,
        tls,
        token_file: options.token_file,
        extra_roots,
    }))
}
