//! The `http` action: the leader makes one HTTP request itself (no curl), as Cronicle's HTTP
//! plugin and Dkron's http executor do.
//!
//! ```toml
//! [[job]]
//! name = "warm-cache"
//! schedule = "*/5 * * * *"
//! http = { url = "https://app.internal/tasks/warm", method = "POST",
//!          headers = { Authorization = "Bearer ${WARM_TOKEN}" }, body = '{"all":true}',
//!          expect = "2xx", timeout = "30s" }
//! ```
//!
//! `method` defaults to GET; `expect` is a status class (`"2xx"`), a code (`204`), or a list of
//! them, default `"2xx"`; header values are templates (`${VAR}`, the node's environment, as
//! `[[notify]]` headers); `timeout` bounds the request (the job's own `timeout` bounds the
//! whole run, retries aside). How it runs: [`crate::node::http_run`].
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::context::variables;

/// The default request timeout.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body written in jobs.toml.
pub const MAX_BODY: usize = 1024 * 1024;

/// A validated `http` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAction {
    pub url: reqwest::Url,
    pub method: reqwest::Method,
    /// (name, template), sorted by name.
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub expect: Expect,
    pub timeout: Duration,
}

/// Which response statuses end the run `ok`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect(Vec<StatusSet>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusSet {
    /// `"2xx"`: 200..=299.
    Class(u16),
    Code(u16),
}

impl Default for Expect {
    fn default() -> Self {
        Expect(vec![StatusSet::Class(2)])
    }
}

impl Expect {
    pub fn accepts(&self, status: u16) -> bool {
        self.0.iter().any(|s| match s {
            StatusSet::Class(c) => status / 100 == *c,
            StatusSet::Code(code) => status == *code,
        })
    }

    /// `2xx`, `200, 204, 3xx`.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|s| match s {
                StatusSet::Class(c) => format!("{c}xx"),
                StatusSet::Code(code) => code.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl HttpAction {
    /// The header values with `${VAR}` replaced from `lookup`; an error names the variable.
    pub fn resolved_headers(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, String> {
        self.headers
            .iter()
            .map(|(name, template)| {
                crate::config::context::expand(template, &lookup)
                    .map(|v| (name.clone(), v))
                    .map_err(|var| {
                        format!("http header {name} uses ${{{var}}}, which is not set in this node's environment")
                    })
            })
            .collect()
    }

    /// The URL without user info or query (either may hold a secret): for logs, reasons and
    /// `check`.
    pub fn shown_url(&self) -> String {
        let mut u = self.url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        if u.query().is_some() {
            u.set_query(Some("..."));
        }
        u.to_string()
    }

    /// The canonical text for the job's digest (templates as written).
    pub fn digest_text(&self) -> String {
        format!(
            "http={} {}\nheaders={:?}\nbody={:?}\nexpect={}\nhttp_timeout={}\n",
            self.method,
            self.url,
            self.headers,
            self.body,
            self.expect.describe(),
            self.timeout.as_millis()
        )
    }
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawStatus {
    Code(i64),
    Text(String),
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawExpect {
    One(RawStatus),
    Many(Vec<RawStatus>),
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    url: Spanned<String>,
    method: Option<Spanned<String>>,
    headers: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    body: Option<Spanned<String>>,
    expect: Option<Spanned<RawExpect>>,
    timeout: Option<Spanned<String>>,
}

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Headers cronlease sets itself on every request.
const OWN_HEADERS: [&str; 4] = [
    "x-cronlease-job",
    "x-cronlease-fire-time",
    "x-cronlease-term",
    "idempotency-key",
];

/// Validates an `http` table; errors go to `error(offset, message)`.
pub(super) fn parse(raw: &RawHttp, error: &mut dyn FnMut(usize, String)) -> Option<HttpAction> {
    let mut ok = true;
    let url = match reqwest::Url::parse(raw.url.get_ref().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(u) => {
            error(
                raw.url.span().start,
                format!(
                    "http url {:?} must be an http:// or https:// URL with a host (scheme {:?})",
                    raw.url.get_ref(),
                    u.scheme()
                ),
            );
            None
        }
        Err(e) => {
            error(
                raw.url.span().start,
                format!("http url {:?} is not a URL: {e}", raw.url.get_ref()),
            );
            None
        }
    };
    let method = match &raw.method {
        None => Some(reqwest::Method::GET),
        Some(m) => {
            let upper = m.get_ref().trim().to_ascii_uppercase();
            if METHODS.contains(&upper.as_str()) {
                reqwest::Method::from_bytes(upper.as_bytes()).ok()
            } else {
                error(
                    m.span().start,
                    format!(
                        "unknown http method {:?}: it must be one of {}",
                        m.get_ref(),
                        METHODS.join(", ")
                    ),
                );
                None
            }
        }
    };
    let mut headers = Vec::new();
    for (name, value) in raw.headers.iter().flatten() {
        let n = name.get_ref();
        if reqwest::header::HeaderName::from_bytes(n.as_bytes()).is_err() {
            error(
                name.span().start,
                format!("http header name {n:?} is not valid"),
            );
            ok = false;
        } else if OWN_HEADERS.contains(&n.to_ascii_lowercase().as_str()) {
            error(
                name.span().start,
                format!("http header {n} is set by cronlease itself on every request"),
            );
            ok = false;
        } else if let Err(e) = variables(value.get_ref()) {
            error(value.span().start, format!("http header {n}: {e}"));
            ok = false;
        } else if value.get_ref().contains(['\r', '\n']) {
            error(
                value.span().start,
                format!("http header {n}: a value cannot hold a line break"),
            );
            ok = false;
        } else {
            headers.push((n.clone(), value.get_ref().clone()));
        }
    }
    if let Some(b) = &raw.body {
        if b.get_ref().len() > MAX_BODY {
            error(b.span().start, "http body is larger than 1 MiB".into());
            ok = false;
        }
    }
    let expect = match &raw.expect {
        None => Some(Expect::default()),
        Some(e) => {
            let items = match e.get_ref() {
                RawExpect::One(s) => vec![s.clone()],
                RawExpect::Many(list) => list.clone(),
            };
            let mut sets = Vec::new();
            for item in &items {
                match item {
                    RawStatus::Code(c) if (100..=599).contains(c) => {
                        sets.push(StatusSet::Code(*c as u16))
                    }
                    RawStatus::Text(t) if t.len() == 3 && t[1..].eq_ignore_ascii_case("xx") => {
                        match t[..1].parse::<u16>() {
                            Ok(c) if (1..=5).contains(&c) => sets.push(StatusSet::Class(c)),
                            _ => {
                                error(
                                    e.span().start,
                                    format!("http expect {t:?} is not a status class (1xx to 5xx)"),
                                );
                                ok = false;
                            }
                        }
                    }
                    RawStatus::Text(t)
                        if t.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c)) =>
                    {
                        sets.push(StatusSet::Code(t.parse().unwrap_or_default()))
                    }
                    other => {
                        let shown = match other {
                            RawStatus::Code(c) => c.to_string(),
                            RawStatus::Text(t) => format!("{t:?}"),
                        };
                        error(
                            e.span().start,
                            format!("http expect {shown} is neither a status code (100 to 599) nor a class like \"2xx\""),
                        );
                        ok = false;
                    }
                }
            }
            if sets.is_empty() && ok {
                error(
                    e.span().start,
                    "http expect must name at least one status".into(),
                );
                ok = false;
            }
            Some(Expect(sets))
        }
    };
    let timeout = match &raw.timeout {
        None => Some(DEFAULT_HTTP_TIMEOUT),
        Some(t) => match humantime::parse_duration(t.get_ref().trim()) {
            Ok(d) if d.is_zero() => {
                error(
                    t.span().start,
                    "http timeout must be longer than zero".into(),
                );
                None
            }
            Ok(d) if d > crate::config::MAX_DURATION => {
                error(
                    t.span().start,
                    format!("http timeout {:?} is too long", t.get_ref()),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                error(
                    t.span().start,
                    format!(
                        "http timeout: bad duration {:?} ({e}); write it like \"30s\"",
                        t.get_ref()
                    ),
                );
                None
            }
        },
    };
    if !ok {
        return None;
    }
    Some(HttpAction {
        url: url?,
        method: method?,
        headers,
        body: raw.body.as_ref().map(|b| b.get_ref().clone()),
        expect: expect?,
        timeout: timeout?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(http: &str) -> String {
        format!("[[job]]\nname = \"h\"\nschedule = \"* * * * *\"\nhttp = {http}\n")
    }

    fn action(http: &str) -> HttpAction {
        match crate::config::parse("jobs.toml", &job(http)) {
            Ok(c) => match &c.jobs[0].action {
                crate::config::Action::Http(h) => (**h).clone(),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults_and_expectations() {
        let a = action("{ url = \"https://example.com/x\" }");
        assert_eq!(a.method, reqwest::Method::GET);
        assert_eq!(a.timeout, DEFAULT_HTTP_TIMEOUT);
        assert!(a.expect.accepts(200) && a.expect.accepts(299) && !a.expect.accepts(300));
        let a = action(
            "{ url = \"http://h:8080/\", method = \"post\", expect = [204, \"3xx\", \"418\"], \
             headers = { Authorization = \"Bearer ${T}\" }, body = \"{}\", timeout = \"5s\" }",
        );
        assert_eq!(a.method, reqwest::Method::POST);
        assert!(a.expect.accepts(204) && a.expect.accepts(302) && a.expect.accepts(418));
        assert!(!a.expect.accepts(200));
        assert_eq!(a.expect.describe(), "204, 3xx, 418");
        assert_eq!(
            a.headers,
            [("Authorization".to_string(), "Bearer ${T}".to_string())]
        );
        let resolved = a
            .resolved_headers(|v| (v == "T").then(|| "tok".into()))
            .unwrap();
        assert_eq!(resolved[0].1, "Bearer tok");
        assert!(a.resolved_headers(|_| None).unwrap_err().contains("${T}"));
    }

    #[test]
    fn bad_input_is_refused_where_it_is_written() {
        for (http, needle) in [
            ("{ url = \"ftp://x/\" }", "http:// or https://"),
            ("{ url = \"not a url\" }", "not a URL"),
            (
                "{ url = \"http://x/\", method = \"FETCH\" }",
                "unknown http method",
            ),
            (
                "{ url = \"http://x/\", expect = \"6xx\" }",
                "not a status class",
            ),
            (
                "{ url = \"http://x/\", expect = 700 }",
                "neither a status code",
            ),
            (
                "{ url = \"http://x/\", expect = [] }",
                "at least one status",
            ),
            (
                "{ url = \"http://x/\", timeout = \"0s\" }",
                "longer than zero",
            ),
            (
                "{ url = \"http://x/\", headers = { \"Idempotency-Key\" = \"x\" } }",
                "set by cronlease",
            ),
            (
                "{ url = \"http://x/\", headers = { \"bad name\" = \"x\" } }",
                "not valid",
            ),
            (
                "{ url = \"http://x/\", headers = { A = \"${unclosed\" } }",
                "unclosed",
            ),
            ("{ url = \"http://x/\", verb = \"GET\" }", "unknown field"),
        ] {
            match crate::config::parse("jobs.toml", &job(http)) {
                Err(crate::config::ConfigError::At { line, message, .. }) => {
                    assert_eq!(line, 4, "{http}: {message}");
                    assert!(message.contains(needle), "{http}: {message}");
                }
                other => panic!("{http}: {other:?}"),
            }
        }
        // One action only.
        let two = format!("{}shell = \"x\"\n", job("{ url = \"http://x/\" }"));
        let e = crate::config::parse("jobs.toml", &two)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one action"), "{e}");
    }
}
