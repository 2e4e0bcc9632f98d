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

use crate::node::reload::{stamp, Stamp, CHECK_EVERY};
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

    /// The stamps of the pair's files, and of the token file.
    fn stamps(&self) -> (Vec<Stamp>, Option<Stamp>) {
        let tls = match &self.tls {
            Some((files, _)) => vec![stamp(&files.cert), stamp(&files.key)],
            None => Vec::new(),
        };
        (tls, self.token_file.as_deref().map(stamp))
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
        let (mut tls_seen, mut tokens_seen) = self.stamps();
        // Changes seen and not yet applied: applied once the stamps hold for one more check.
        let (mut tls_settling, mut tokens_settling) = (false, false);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                s = hangup.recv() => {
                    if s.is_none() {
                        return;
                    }
                    (tls_seen, tokens_seen) = self.stamps();
                    (tls_settling, tokens_settling) = (false, false);
                    self.reload_tls("sighup");
                    self.reload_tokens("sighup");
                }
                _ = tokio::time::sleep(CHECK_EVERY) => {
                    let (tls_now, tokens_now) = self.stamps();
                    if tls_now != tls_seen {
                        tls_seen = tls_now;
                        tls_settling = true;
                    } else if tls_settling {
                        tls_settling = false;
                        if !tls_now.contains(&Stamp::Missing) {
                            self.reload_tls("file_changed");
                        }
                    }
                    if tokens_now != tokens_seen {
                        tokens_seen = tokens_now;
                        tokens_settling = true;
                    } else if tokens_settling {
                        tokens_settling = false;
                        if tokens_now != Some(Stamp::Missing) {
                            self.reload_tokens("file_changed");
                        }
                    }
                }
            }
        }
    }
}
