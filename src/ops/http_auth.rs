//! Who may read and who may act through the HTTP interface: one guard in front of every
//! endpoint.
//!
//! | endpoint | needs |
//! |---|---|
//! | `/healthz`, `/readyz`, `/.well-known/{live,ready}`, `/` and its script and style | nothing (they hold no data) |
//! | `/metrics` | a read token, unless `--http-public-metrics` |
//! | every other `GET` (status, cluster, jobs, runs, output, live output) | a read token, unless `--http-public-read` |
//! | `POST /api/jobs/{job}/{pause,resume,trigger}` | an operate token |
//!
//! With no token configured, reads are open (the node binds loopback, or was told
//! `--http-public-read`: a node on another address without a token does not start) and every
//! write answers 403. With tokens ([`crate::ops::token`]): a missing or wrong token gets 401
//! with `WWW-Authenticate: Bearer`; a read token on a write gets 403. After
//! [`FAILURES_PER_WINDOW`](crate::ops::auth_limit::FAILURES_PER_WINDOW) wrong tokens from one
//! address in a minute, its requests that need a token get 429 with `Retry-After`
//! ([`crate::ops::auth_limit`]). Each refusal is counted in
//! `cronlease_http_auth_failures_total{reason}`; wrong tokens are logged (`http_auth_failed`)
//! once per address per minute, never with the token.
//!
//! On a loopback bind (and on any bind given `--http-allowed-host`), a request whose `Host`
//! names neither the bound address, `localhost`, nor a name given with `--http-allowed-host`
//! is refused (403): a page of another site whose name was made to resolve to the node's
//! address (DNS rebinding) cannot read the node from a browser that reaches it.
//!
//! Under `--http-public-read` a read without a token is served; a read with a wrong token is
//! refused and counted like any other (a guess must not be free), a right one tells the page
//! what it may do. The write handlers also demand the guard's [`Operate`] grant, so a route
//! mounted without the guard fails closed.
//!
//! Every answer carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer` and a Content-Security-Policy that lets a page load only its
//! own script, style and data ([`CSP`]); guarded answers also carry [`ACTIONS_HEADER`], which
//! the dashboard reads to show or hide its buttons.
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::ops::auth_limit::{AuthLimiter, Verdict};
use crate::ops::http::{NodeState, NODE_HEADER};
use crate::ops::token::{Presented, Role, Tokens};

/// The Content-Security-Policy of every answer: the dashboard loads its own script and style
/// and reads its own node; nothing inline, nothing from elsewhere, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                       connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// What the caller may do from the dashboard, on every guarded answer: `allowed` (its token
/// operates), `login` (it gave no token and this node has operate tokens: the buttons ask for
/// one), `none` (a read token, or a node whose writes are off).
pub const ACTIONS_HEADER: &str = "x-cronlease-actions";

/// Paths served to anyone: no data in them.
const PUBLIC: [&str; 7] = [
    "/healthz",
    "/readyz",
    "/.well-known/live",
    "/.well-known/ready",
    "/",
    "/dashboard.js",
    "/dashboard.css",
];

/// How the HTTP interface is opened (the `--http*` options) and the tokens in force.
pub struct HttpAccess {
    tokens: RwLock<Option<Arc<Tokens>>>,
    /// `--http-public-read`: reads need no token.
    public_read: bool,
    /// `--http-public-metrics`: `/metrics` needs no token.
    public_metrics: bool,
    /// On a loopback bind: the `Host` names served (lowercase, without port); else `None`.
    hosts: Option<Vec<String>>,
    limiter: AuthLimiter,
}

/// How the interface is to be opened, from the command line.
#[derive(Debug, Clone, Default)]
pub struct AccessOptions {
    pub public_read: bool,
    pub public_metrics: bool,
    /// `--http-allowed-host`, repeatable.
    pub allowed_hosts: Vec<String>,
}

/// Why the HTTP interface may not be opened as asked.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(
        "--http {addr} serves beyond this host, and no token is configured: every status, \
         run and output would be readable by anyone who reaches the port. Configure tokens \
         (--http-token-file FILE with `read TOKEN` / `operate TOKEN` lines, or \
         CRONLEASE_HTTP_TOKEN), or pass --http-public-read to serve reads openly on purpose"
    )]
    OpenOnNetwork { addr: SocketAddr },
    #[error("--http-allowed-host {name:?}: expected a host name or address without a port")]
    BadHost { name: String },
}

impl HttpAccess {
    /// Check the options against the bound address (`addr` as given to `--http`).
    pub fn new(
        addr: SocketAddr,
        tokens: Option<Tokens>,
        options: AccessOptions,
    ) -> Result<HttpAccess, AccessError> {
        let loopback = addr.ip().is_loopback();
        if !loopback && tokens.is_none() && !options.public_read {
            return Err(AccessError::OpenOnNetwork { addr });
        }
        for name in &options.allowed_hosts {
            if name.is_empty() || name.contains(['/', ' ', '@']) || host_part(name) != Some(name) {
                return Err(AccessError::BadHost { name: name.clone() });
            }
        }
        let hosts = (loopback || !options.allowed_hosts.is_empty()).then(|| {
            let mut hosts = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            if !addr.ip().is_unspecified() {
                hosts.push(addr.ip().to_string());
            }
            hosts.extend(options.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
            hosts
        });
        Ok(HttpAccess {
            tokens: RwLock::new(tokens.map(Arc::new)),
            public_read: options.public_read,
            public_metrics: options.public_metrics,
            hosts,
            limiter: AuthLimiter::new(),
        })
    }

    /// An interface open to reads, for a node bound to loopback without options.
    pub fn open() -> HttpAccess {
        HttpAccess::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            None,
            AccessOptions::default(),
        )
        .expect("loopback without tokens is allowed")
    }

    /// The tokens in force.
    pub fn tokens(&self) -> Option<Arc<Tokens>> {
        self.tokens.read().unwrap().clone()
    }

    /// Use `tokens` from now on (a reload of the token file).
    pub fn set_tokens(&self, tokens: Tokens) {
        *self.tokens.write().unwrap() = Some(Arc::new(tokens));
    }

    /// Whether the `Host` of a request may be served.
    fn host_allowed(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(hosts) = &self.hosts else {
            return Ok(());
        };
        // HTTP/1.0 without Host: not a browser (rebinding needs one).
        let Some(host) = headers.get(header::HOST) else {
            return Ok(());
        };
        let host = host.to_str().unwrap_or_default();
        match host_part(host).map(|n| n.to_ascii_lowercase()) {
            Some(name) if hosts.contains(&name) => Ok(()),
            Some(name) => Err(name),
            None => Err(host.chars().take(100).collect()),
        }
    }
}

/// The name of a `Host` value: without its port, an IPv6 address without its brackets;
/// `None` when it is not `name`, `name:port`, `[v6]` or `[v6]:port`.
fn host_part(host: &str) -> Option<&str> {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        return (after.is_empty() || after.strip_prefix(':').is_some_and(digits)).then_some(v6);
    }
    match host.split_once(':') {
        None => Some(host),
        Some((name, port)) if digits(port) => Some(name),
        // A bare IPv6 address (not valid in a Host header, but unambiguous).
        Some(_) => host.parse::<std::net::Ipv6Addr>().is_ok().then_some(host),
    }
}

/// What the guard puts in a write's request: an operate token was shown (or the guard let it
/// through on purpose). The write handlers demand it, so without the guard they refuse.
#[derive(Debug, Clone, Copy)]
pub struct Operate;

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Role(Role),
}

fn need(access: &HttpAccess, method: &Method, path: &str) -> Need {
    if *method != Method::GET && *method != Method::HEAD {
        return Need::Role(Role::Operate);
    }
    if PUBLIC.contains(&path) || (path == "/metrics" && access.public_metrics) {
        return Need::Nothing;
    }
    Need::Role(Role::Read)
}

/// An answer that refuses, in the JSON the endpoints use for errors.
fn refusal(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

fn unauthorized(message: &str, error: Option<&str>) -> Response {
    let mut r = refusal(StatusCode::UNAUTHORIZED, message);
    let challenge = match error {
        Some(e) => format!("Bearer realm=\"cronlease\", error=\"{e}\""),
        None => "Bearer realm=\"cronlease\"".to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The guard (see the module docs), in front of every route.
pub async fn guard(
    State(state): State<Arc<NodeState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut response = match admit(&state, peer.ip(), &request) {
        Ok(actions) => {
            if actions == Some("allowed") {
                request.extensions_mut().insert(Operate);
            }
            let mut r = next.run(request).await;
            if let Some(a) = actions {
                r.headers_mut()
                    .insert(ACTIONS_HEADER, HeaderValue::from_static(a));
            }
            r
        }
        Err(refused) => *refused,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    if let Ok(node) = HeaderValue::from_str(&state.node) {
        headers.insert(NODE_HEADER, node);
    }
    response
}

/// Let the request through (with the [`ACTIONS_HEADER`] value for a guarded one), or the
/// answer that refuses it.
fn admit(
    state: &NodeState,
    ip: IpAddr,
    request: &Request,
) -> Result<Option<&'static str>, Box<Response>> {
    let access = &state.access;
    if let Err(name) = access.host_allowed(request.headers()) {
        return Err(Box::new(refusal(
            StatusCode::FORBIDDEN,
            &format!(
                "Host {name:?} is not a name of this node (a page of another site whose name \
                 leads here could be reading it); to serve it under that name, start the node \
                 with --http-allowed-host {name}"
            ),
        )));
    }
    let path = request.uri().path();
    let needed = match need(access, request.method(), path) {
        Need::Nothing => return Ok(None),
        Need::Role(role) => role,
    };
    let Some(tokens) = access.tokens() else {
        return match needed {
            Role::Read => Ok(Some("none")),
            Role::Operate => Err(Box::new(refusal(
                StatusCode::FORBIDDEN,
                "read-only: this node was started without --http-token-file or \
                 CRONLEASE_HTTP_TOKEN",
            ))),
        };
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let presented = tokens.check(authorization);
    let open_actions = if tokens.any_operate() {
        "login"
    } else {
        "none"
    };
    // Reads served openly on purpose: no token, or a right one that says what the buttons
    // may do. A wrong one is refused and counted below: guessing is not free here either.
    if needed == Role::Read && access.public_read && presented != Presented::Wrong {
        return Ok(Some(match presented {
            Presented::Valid(Role::Operate) => "allowed",
            Presented::Valid(Role::Read) => "none",
            _ => open_actions,
        }));
    }
    let now = Instant::now();
    if let Verdict::Limited(wait) = access.limiter.check(ip, now) {
        state.metrics.http_auth_failure("limited");
        let secs = wait.as_secs().max(1);
        let mut r = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many wrong tokens from {ip}: try again in {secs} s"),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Err(Box::new(r));
    }
    match presented {
        Presented::Missing => {
            state.metrics.http_auth_failure("missing");
            tracing::debug!(event = "http_auth_failed", addr = %ip, reason = "missing", path);
            Err(Box::new(unauthorized(
                "this node's HTTP interface needs a token: send `Authorization: Bearer TOKEN` \
                 (one of --http-token-file's)",
                None,
            )))
        }
        Presented::Wrong => {
            state.metrics.http_auth_failure("wrong");
            let failure = access.limiter.failed(ip, now);
            if failure.first {
                tracing::warn!(
                    event = "http_auth_failed",
                    addr = %ip,
                    reason = "wrong",
                    path,
                    "a wrong token from {ip} (further ones from it this minute are counted, \
                     not logged)"
                );
            }
            if failure.now_limited {
                tracing::warn!(
                    event = "http_auth_limited",
                    addr = %ip,
                    "{} wrong tokens from {ip} within {} s: its requests get 429 until then",
                    crate::ops::auth_limit::FAILURES_PER_WINDOW,
                    crate::ops::auth_limit::WINDOW.as_secs()
                );
            }
            Err(Box::new(unauthorized(
                "the token is not one of this node's",
                Some("invalid_token"),
            )))
        }
        Presented::Valid(role) if role >= needed => Ok(Some(match role {
            Role::Operate => "allowed",
            Role::Read => "none",
        })),
        Presented::Valid(role) => {
            state.metrics.http_auth_failure("role");
            let mut r = refusal(
                StatusCode::FORBIDDEN,
                &format!(
                    "a {} token cannot {}: this needs an operate token",
                    role.as_str(),
                    request.method()
                ),
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(
                    "Bearer realm=\"cronlease\", error=\"insufficient_scope\"",
                ),
            );
            Err(Box::new(r))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(addr: &str, allowed: &[&str]) -> HttpAccess {
        HttpAccess::new(
            addr.parse().unwrap(),
            None,
            AccessOptions {
                public_read: true,
                allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn host(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn loopback_binds_serve_their_own_names_only() {
        let a = access("127.0.0.1:9100", &["cron.internal"]);
        for ok in [
            "127.0.0.1:9100",
            "localhost:9100",
            "LOCALHOST",
            "[::1]:9100",
            "cron.internal:9100",
        ] {
            assert_eq!(a.host_allowed(&host(ok)), Ok(()), "{ok}");
        }
        assert_eq!(
            a.host_allowed(&host("evil.example:9100")),
            Err("evil.example".to_string())
        );
        assert_eq!(a.host_allowed(&HeaderMap::new()), Ok(()));
        assert!(a.host_allowed(&host("[::1]junk")).is_err());
        let any = access("0.0.0.0:9100", &[]);
        assert_eq!(any.host_allowed(&host("evil.example")), Ok(()));
        // Names given: checked on any bind.
        let named = access("0.0.0.0:9100", &["cron.internal"]);
        assert_eq!(named.host_allowed(&host("cron.internal:9100")), Ok(()));
        assert!(named.host_allowed(&host("evil.example")).is_err());
    }

    #[test]
    fn a_network_bind_needs_a_token_or_public_read() {
        let e = HttpAccess::new(
            "0.0.0.0:9100".parse().unwrap(),
            None,
            AccessOptions::default(),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("--http-public-read"), "{e}");
        assert!(HttpAccess::new(
            "[::1]:9100".parse().unwrap(),
            None,
            AccessOptions::default()
        )
        .is_ok());
        let bad = HttpAccess::new(
            "127.0.0.1:9100".parse().unwrap(),
            None,
            AccessOptions {
                allowed_hosts: vec!["cron.internal:80".into()],
                ..Default::default()
            },
        );
        assert!(matches!(bad, Err(AccessError::BadHost { .. })));
    }

    #[test]
    fn what_each_request_needs() {
        let a = access("127.0.0.1:9100", &[]);
        assert_eq!(need(&a, &Method::GET, "/healthz"), Need::Nothing);
        assert_eq!(need(&a, &Method::GET, "/"), Need::Nothing);
        assert_eq!(need(&a, &Method::GET, "/metrics"), Need::Role(Role::Read));
        assert_eq!(
            need(&a, &Method::GET, "/api/cluster"),
            Need::Role(Role::Read)
        );
        assert_eq!(
            need(&a, &Method::POST, "/api/jobs/x/pause"),
            Need::Role(Role::Operate)
        );
        assert_eq!(
            need(&a, &Method::POST, "/healthz"),
            Need::Role(Role::Operate)
        );
        assert_eq!(host_part("[::1]:80"), Some("::1"));
        assert_eq!(host_part("[::1]"), Some("::1"));
        assert_eq!(host_part("::1"), Some("::1"));
        assert_eq!(host_part("a.b:80"), Some("a.b"));
        assert_eq!(host_part("a.b"), Some("a.b"));
        assert_eq!(host_part("[::1]junk"), None);
        assert_eq!(host_part("a.b:x"), None);
        assert_eq!(host_part("a.b:"), None);
    }
}
