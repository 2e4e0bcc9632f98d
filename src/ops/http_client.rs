//! Reading another node's HTTP interface: the output relay of the dashboard
//! ([`crate::ops::run_detail`]) and `cronlease logs --follow` ([`crate::ops::follow`]).
//!
//! A node's record names its interface as `host:port` (plain HTTP) or `https://host:port`
//! ([`crate::ops::http_options::PreparedHttp::advertised`]). Over HTTPS the node's certificate
//! is checked against the system's roots plus any `--http-tls-ca`, and must name the address
//! the record gives (an IP address needs an IP entry in the certificate's subjectAltName).
use std::time::Duration;

/// The base URL of a node's interface as its record names it; an address bound to every
/// interface (`0.0.0.0:9100`) is tried on this host's loopback, the best guess there is.
pub fn node_base(addr: &str) -> Result<reqwest::Url, String> {
    let text = match addr.strip_prefix("https://") {
        Some(rest) => format!("https://{}/", crate::ops::follow::reachable(rest)),
        None => format!("http://{}/", crate::ops::follow::reachable(addr)),
    };
    reqwest::Url::parse(&text).map_err(|e| format!("its address {addr:?} is not one: {e}"))
}

/// The URL of a run's output stream on the node at `addr`.
pub fn output_url(addr: &str, job: &str, run_key: &str) -> Result<reqwest::Url, String> {
    let mut url = node_base(addr)?;
    if let Ok(mut path) = url.path_segments_mut() {
        path.clear().extend(["runs", job, run_key, "output"]);
    }
    Ok(url)
}

/// A client for nodes: reached directly as their records name them (no proxy), no redirect
/// followed (a node never answers one), `extra_roots` trusted besides the system's.
pub fn client(
    connect_timeout: Duration,
    extra_roots: &[reqwest::Certificate],
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_merge(extra_roots.iter().cloned())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_http_or_https() {
        assert_eq!(
            output_url("10.0.0.5:9100", "backup", "1800000000")
                .unwrap()
                .as_str(),
            "http://10.0.0.5:9100/runs/backup/1800000000/output"
        );
        assert_eq!(
            output_url("https://0.0.0.0:9100", "a b", "1")
                .unwrap()
                .as_str(),
            "https://127.0.0.1:9100/runs/a%20b/1/output"
        );
        assert!(node_base("https://").is_err());
    }
}
