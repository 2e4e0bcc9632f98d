//! Rotation without a restart: the HTTP interface's certificate, key and token file are read
//! again on SIGHUP and when one of them changes on disk (the same cheap `stat` every
//! [`CHECK_EVERY`] as the jobs file, [`crate::node::reload`]; applied once the files have
//! stayed the same for one more check).
//!
//! A pair or token file that cannot be used is refused with the reason
//! (`http_tls_rejected`, `http_tokens_rejected`) and the one in force stays; a good one
//! replaces it for the connections and requests from then on (`http_tls_reloaded`,
//! `http_tokens_reloaded`, with the count of tokens per role, never the tokens).
//! `CRONLEASE_HTTP_TOKEN` is read once, at start.
use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::Signal;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::node::reload::{Watched, CHECK_EVERY};
use crate::ops::http_auth::HttpAccess;
use crate::ops::http_tls::{CertFiles, CertSlot};
use crate::ops::token::Tokens;

/// What is watched, and where it goes.
pub struct Secrets {
    pub tls: Option<(CertFiles, Arc<CertSlot>)>,
    pub token_file: Option<PathBuf>,
    pub access: Arc<HttpAccess>,
}

impl Secrets {
    /// Whether there is anything to watch.
    pub fn any(&self) -> bool {
        self.tls.is_some() || self.token_file.is_some()
    }

    /// Read the pair again and serve it if it is good.
    fn reload_tls(&self, trigger: &'static str) {
        let Some((files, slot)) = &self.tls else {
            return;
        };
        match files.load() {
            Ok(pair) => {
                slot.replace(pair);
                info!(event = "http_tls_reloaded", trigger, cert = %files.cert.display(),
                    "serving the certificate of {}", files.cert.display());
            }
            Err(e) => warn!(
                event = "http_tls_rejected",
                trigger, "{e}; still serving the certificate loaded before"
            ),
        }
    }

    /// Read the token file again and use it if it is good.
    fn reload_tokens(&self, trigger: &'static str) {
        let Some(path) = &self.token_file else {
            return;
        };
        match Tokens::from_file(path) {
            Ok(tokens) => {
                let (read, operate) = tokens.counts();
                self.access.set_tokens(tokens);
                info!(
                    event = "http_tokens_reloaded",
                    trigger,
                    read,
                    operate,
                    "{}: {read} read and {operate} operate tokens",
                    path.display()
                );
            }
            Err(e) => warn!(
                event = "http_tokens_rejected",
                trigger, "{e}; the tokens loaded before stay in force"
            ),
        }
    }

    /// Watch for SIGHUP (everything is read again) and for changes of the files (what changed
    /// is read again) until `stop`.
    pub async fn run(self, mut hangup: Signal, stop: CancellationToken) {
        let mut tls = self
            .tls
            .as_ref()
            .map(|(f, _)| Watched::new(vec![f.cert.clone(), f.key.clone()]));
        let mut tokens = self.token_file.clone().map(|p| Watched::new(vec![p]));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                s = hangup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    tls.iter_mut().chain(tokens.iter_mut()).for_each(Watched::reset);
                    self.reload_tls("sighup");
                    self.reload_tokens("sighup");
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    if tls.as_mut().is_some_and(Watched::settled) {
                        self.reload_tls("file_changed");
                    }
                    if tokens.as_mut().is_some_and(Watched::settled) {
                        self.reload_tokens("file_changed");
                    }
                }
            }
        }
    }
}
