//! `[[notify]]` tables (where events go) and the jobs' `notify` and `ping` keys.
//!
//! ```toml
//! [[notify]]
//! name = "ops"
//! on = ["failed", "timeout", "lost", "missed", "recovered", "stopped"]  # the default: all
//! webhook = "https://hooks.example.com/cron"      # POST of the event as JSON
//! headers = { Authorization = "Bearer ${OPS_HOOK_TOKEN}" }  # ${VAR}: from the node's environment
//! # command = ["/usr/local/bin/page-ops"]          # or: run it with the event JSON on stdin
//! timeout = "10s"                                   # per attempt
//! retry_for = "10m"                                 # then it is given up (counted, logged)
//!
//! [defaults]
//! notify = ["ops"]          # jobs that set no `notify` of their own
//!
//! [[job]]
//! name = "backup"
//! ping = "https://hc-ping.com/<uuid>"  # healthchecks.io-style pings: /start, ok, /fail
//! ```
//!
//! Header values are templates: `${NAME}` is replaced by the environment variable `NAME` of
//! the node when it starts (or reloads), so secrets stay out of the file. The file only says
//! which variable; a node that lacks it refuses to start ([`Sink::resolve_headers`]). The
//! commands that only read the store (`status`, `logs`, …) never need it.
use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::template::{expand, variables};

/// The events a sink can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A run ended `failed` (after its retries).
    Failed,
    /// A run ended `timeout` (after its retries).
    Timeout,
    /// A run's node died while it ran; the next leader closed it as `lost`.
    Lost,
    /// Fire times passed with nobody running them (found by the node that took the lease).
    Missed,
    /// The first `ok` run after a `failed`, `timeout` or `lost` one.
    Recovered,
    /// A run was stopped because its node lost the job's lease (`on_lease_lost = "stop"`).
    Stopped,
}

impl EventKind {
    pub const NAMES: [(&'static str, EventKind); 6] = [
        ("failed", EventKind::Failed),
        ("timeout", EventKind::Timeout),
        ("lost", EventKind::Lost),
        ("missed", EventKind::Missed),
        ("recovered", EventKind::Recovered),
        ("stopped", EventKind::Stopped),
    ];

    pub fn as_str(&self) -> &'static str {
        EventKind::NAMES
            .iter()
            .find(|(_, k)| k == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// The event a run's final outcome is, if any (`recovered` is decided with the history).
    pub fn of_outcome(outcome: &str) -> Option<EventKind> {
        match outcome {
            "failed" => Some(EventKind::Failed),
            "timeout" => Some(EventKind::Timeout),
            "lost" => Some(EventKind::Lost),
            "stopped" => Some(EventKind::Stopped),
            _ => None,
        }
    }
}

/// The default per-attempt timeout of a sink.
pub const DEFAULT_SINK_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a sink keeps trying one event.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(10 * 60);
/// The longest `retry_for`: past a day an alert is history.
pub const MAX_RETRY_FOR: Duration = Duration::from_secs(24 * 3600);

/// One `[[notify]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sink {
    pub name: String,
    /// Sorted, no duplicates.
    pub on: Vec<EventKind>,
    pub target: Target,
    /// Per attempt.
    pub timeout: Duration,
    /// How long an event is retried before it is given up.
    pub retry_for: Duration,
}

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// HTTP POST of the event JSON; header values are templates (module docs).
    Webhook {
        url: reqwest::Url,
        headers: Vec<(String, String)>,
    },
    /// The program and its arguments; the event JSON on its stdin; exit 0 is delivered.
    Command { argv: Vec<String> },
}

impl Sink {
    /// The webhook's headers with `${VAR}` replaced from `env`; an error names the variable
    /// that is not set.
    pub fn resolve_headers(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, String> {
        let Target::Webhook { headers, .. } = &self.target else {
            return Ok(Vec::new());
        };
        headers
            .iter()
            .map(|(name, template)| {
                expand(template, &env)
                    .map(|value| (name.clone(), value))
                    .map_err(|var| {
                        format!(
                            "notify {:?}: header {name} uses ${{{var}}}, which is not set in \
                             this node's environment",
                            self.name
                        )
                    })
            })
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSink {
    name: Spanned<String>,
    on: Option<Spanned<Vec<Spanned<String>>>>,
    webhook: Option<Spanned<String>>,
    headers: Option<Spanned<HashMap<String, Spanned<String>>>>,
    command: Option<Spanned<Vec<Spanned<String>>>>,
    timeout: Option<Spanned<String>>,
    retry_for: Option<Spanned<String>>,
}

impl RawSink {
    pub(super) fn name(&self) -> &str {
        self.name.get_ref()
    }
}

/// An http(s) URL, or why not.
pub fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| format!("{text:?} is not a URL ({e}); write it like \"https://host/path\""))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{text:?} is not an http or https URL (scheme {:?})",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(url)
}

impl super::Validator<'_> {
    /// The `[[notify]]` tables; `None` (errors recorded) if any is invalid.
    pub(super) fn sinks(&mut self, raw: Option<Vec<Spanned<RawSink>>>) -> Option<Vec<Sink>> {
        let mut sinks = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut ok = true;
        for raw in raw.unwrap_or_default() {
            let raw = raw.into_inner();
            let before = self.errors.len();
            let name = raw.name.get_ref().clone();
            let name_at = raw.name.span().start;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            {
                self.error(
                    name_at,
                    format!(
                        "notify name {name:?} must be letters, digits, '_', '.' or '-', not empty"
                    ),
                );
            } else if name == "ping" {
                self.error(
                    name_at,
                    "notify name \"ping\" is taken by the jobs' pings (metrics label sink=\"ping\")"
                        .into(),
                );
            } else if let Some(&first) = seen.get(&name) {
                let (line, _) = super::position(self.full, first);
                self.error(
                    name_at,
                    format!("duplicate notify name {name:?} (first defined on line {line})"),
                );
            } else {
                seen.insert(name.clone(), name_at);
            }
            let on = match &raw.on {
                None => EventKind::NAMES.iter().map(|(_, k)| *k).collect(),
                Some(list) => {
                    let mut on = Vec::new();
                    if list.get_ref().is_empty() {
                        self.error(
                            list.span().start,
                            "on must name at least one event (leave it out for all)".into(),
                        );
                    }
                    for item in list.get_ref() {
                        let as_option = Some(item.clone());
                        if let Some(k) = self.choice(&as_option, "event", &EventKind::NAMES) {
                            on.push(k);
                        }
                    }
                    on.sort();
                    on.dedup();
                    on
                }
            };
            let target = match (&raw.webhook, &raw.command) {
                (Some(_), Some(c)) => {
                    let at = self.key_offset(&c.span(), "command");
                    self.error(
                        at,
                        format!("notify {name:?} has both webhook and command: give exactly one"),
                    );
                    None
                }
                (None, None) => {
                    self.error(
                        name_at,
                        format!(
                            "notify {name:?} has no sink: give webhook = \"https://...\" or \
                             command = [\"/path/to/program\"]"
                        ),
                    );
                    None
                }
                (Some(url), None) => {
                    let url_parsed = match http_url(url.get_ref()) {
                        Ok(u) => Some(u),
                        Err(e) => {
                            self.error(url.span().start, format!("webhook: {e}"));
                            None
                        }
                    };
                    let mut headers = Vec::new();
                    if let Some(h) = &raw.headers {
                        let mut list: Vec<_> = h.get_ref().iter().collect();
                        list.sort_by_key(|(_, v)| v.span().start);
                        for (key, value) in list {
                            if reqwest::header::HeaderName::from_bytes(key.as_bytes()).is_err() {
                                let at = self.key_offset(&value.span(), key);
                                self.error(at, format!("{key:?} is not an HTTP header name"));
                                continue;
                            }
                            if let Err(e) = variables(value.get_ref()) {
                                self.error(value.span().start, format!("header {key}: {e}"));
                                continue;
                            }
                            headers.push((key.clone(), value.get_ref().clone()));
                        }
                    }
                    url_parsed.map(|url| Target::Webhook { url, headers })
                }
                (None, Some(cmd)) => {
                    if let Some(h) = &raw.headers {
                        let at = self.key_offset(&h.span(), "headers");
                        self.error(at, "headers are only allowed with webhook".into());
                    }
                    match cmd.get_ref().first() {
                        None => {
                            self.error(
                                cmd.span().start,
                                "command must not be empty: give the program and its arguments"
                                    .into(),
                            );
                            None
                        }
                        Some(p) if p.get_ref().is_empty() => {
                            self.error(
                                p.span().start,
                                "the program (first element of command) must not be empty".into(),
                            );
                            None
                        }
                        Some(_) => Some(Target::Command {
                            argv: cmd.get_ref().iter().map(|a| a.get_ref().clone()).collect(),
                        }),
                    }
                }
            };
            let timeout = self.duration_or(&raw.timeout, "timeout", DEFAULT_SINK_TIMEOUT);
            self.nonzero(&raw.timeout, timeout, "timeout");
            let retry_for = self.duration_or(&raw.retry_for, "retry_for", DEFAULT_RETRY_FOR);
            if let (Some(raw), Some(d)) = (&raw.retry_for, retry_for) {
                if d > MAX_RETRY_FOR {
                    self.error(raw.span().start, "retry_for must be at most 24h".into());
                }
            }
            if self.errors.len() > before {
                ok = false;
                continue;
            }
            if let (Some(target), Some(timeout), Some(retry_for)) = (target, timeout, retry_for) {
                sinks.push(Sink {
                    name,
                    on,
                    target,
                    timeout,
                    retry_for,
                });
            }
        }
        ok.then_some(sinks)
    }

    /// A `notify = [...]` list (a job's or `[defaults]`'s): names of `[[notify]]` tables.
    pub(super) fn notify_list(
        &mut self,
        raw: &Option<Spanned<Vec<Spanned<String>>>>,
        sinks: &[String],
    ) -> Option<Vec<String>> {
        let raw = raw.as_ref()?;
        let mut names = Vec::new();
        for item in raw.get_ref() {
            let name = item.get_ref();
            if sinks.contains(name) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            } else {
                let known: Vec<String> = sinks.iter().map(|s| format!("{s:?}")).collect();
                let hint = if known.is_empty() {
                    "there are no [[notify]] tables".to_string()
                } else {
                    format!("the [[notify]] names are {}", known.join(", "))
                };
                self.error(
                    item.span().start,
                    format!("unknown notify {name:?}: {hint}"),
                );
            }
        }
        Some(names)
    }

    /// A job's `ping` URL.
    pub(super) fn ping(&mut self, raw: &Option<Spanned<String>>) -> Option<reqwest::Url> {
        let raw = raw.as_ref()?;
        match http_url(raw.get_ref()) {
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                self.error(
                    raw.span().start,
                    "ping: a ping URL takes no query or fragment (/start and /fail are appended \
                     to its path)"
                        .into(),
                );
                None
            }
            Ok(url) => Some(url),
            Err(e) => {
                self.error(raw.span().start, format!("ping: {e}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_templates_take_the_environment() {
        let env = |k: &str| (k == "TOKEN").then(|| "s3cret".to_string());
        assert_eq!(expand("Bearer ${TOKEN}", &env).unwrap(), "Bearer s3cret");
        assert_eq!(
            expand("a${TOKEN}b${TOKEN}", &env).unwrap(),
            "as3cretbs3cret"
        );
        assert_eq!(expand("plain", &env).unwrap(), "plain");
        assert_eq!(expand("${NOPE}", &env).unwrap_err(), "NOPE");
        assert_eq!(variables("x ${A_1} ${_b}").unwrap(), vec!["A_1", "_b"]);
        assert!(variables("${").is_err());
        assert!(variables("${1A}").is_err());
        assert!(variables("${A B}").is_err());
    }

    const JOB: &str = "[[job]]\nname = \"a\"\nschedule = \"* * * * *\"\nsay = \"hi\"\n";

    fn err(text: &str) -> (usize, String) {
        match crate::config::parse("jobs.toml", text) {
            Err(crate::config::ConfigError::At { line, message, .. }) => (line, message),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn sinks_defaults_and_jobs() {
        let text = format!(
            "[[notify]]\nname = \"ops\"\nwebhook = \"https://hooks.example.com/x\"\n\
             headers = {{ Authorization = \"Bearer ${{TOKEN}}\" }}\non = [\"failed\", \"lost\"]\n\
             [[notify]]\nname = \"pager\"\ncommand = [\"/bin/cat\"]\nretry_for = \"1m\"\n\
             [defaults]\nnotify = [\"ops\"]\n{JOB}\
             [[job]]\nname = \"b\"\nschedule = \"* * * * *\"\nsay = \"b\"\nnotify = [\"pager\", \"ops\"]\n\
             ping = \"https://hc-ping.com/abc\"\n\
             [[job]]\nname = \"c\"\nschedule = \"* * * * *\"\nsay = \"c\"\nnotify = []\n"
        );
        let c = crate::config::parse("j", &text).unwrap();
        assert_eq!(c.notify.len(), 2);
        assert_eq!(c.notify[0].on, vec![EventKind::Failed, EventKind::Lost]);
        assert_eq!(c.notify[1].on.len(), 6, "all events by default");
        assert_eq!(c.notify[1].retry_for, Duration::from_secs(60));
        assert_eq!(c.notify[0].timeout, DEFAULT_SINK_TIMEOUT);
        assert_eq!(c.jobs[0].notify, vec!["ops"]);
        assert_eq!(c.jobs[1].notify, vec!["pager", "ops"]);
        assert_eq!(
            c.jobs[1].ping.as_ref().unwrap().as_str(),
            "https://hc-ping.com/abc"
        );
        assert!(
            c.jobs[2].notify.is_empty(),
            "notify = [] overrides [defaults]"
        );
    }

    #[test]
    fn bad_sinks_point_at_the_line() {
        let (line, m) = err(&format!("{JOB}notify = [\"nope\"]\n"));
        assert_eq!(line, 5);
        assert!(
            m.contains("unknown notify \"nope\"") && m.contains("no [[notify]]"),
            "{m}"
        );
        let sink = "[[notify]]\nname = \"ops\"\n";
        let (line, m) = err(&format!("{sink}webhook = \"not a url\"\n{JOB}"));
        assert_eq!(
            (line, m.contains("webhook: \"not a url\" is not a URL")),
            (3, true),
            "{m}"
        );
        let (line, m) = err(&format!("{sink}webhook = \"ftp://x/y\"\n{JOB}"));
        assert_eq!((line, m.contains("not an http")), (3, true), "{m}");
        let (line, m) = err(&format!(
            "{sink}webhook = \"http://x/\"\ncommand = [\"/bin/true\"]\n{JOB}"
        ));
        assert_eq!(
            (line, m.contains("both webhook and command")),
            (4, true),
            "{m}"
        );
        let (line, m) = err(&format!("{sink}{JOB}"));
        assert_eq!((line, m.contains("has no sink")), (2, true), "{m}");
        let (line, m) = err(&format!(
            "{sink}command = [\"/bin/true\"]\non = [\"exploded\"]\n{JOB}"
        ));
        assert_eq!(
            (line, m.contains("unknown event \"exploded\"")),
            (4, true),
            "{m}"
        );
        let (line, m) = err(&format!(
            "{sink}webhook = \"http://x/\"\nheaders = {{ X = \"${{bad name}}\" }}\n{JOB}"
        ));
        assert_eq!(
            (line, m.contains("not an environment variable name")),
            (4, true),
            "{m}"
        );
        let (line, m) = err(&format!(
            "{sink}command = [\"/bin/true\"]\n{sink}command = [\"/bin/true\"]\n{JOB}"
        ));
        assert_eq!(
            (line, m.contains("duplicate notify name")),
            (5, true),
            "{m}"
        );
        let (line, m) = err(&format!("{JOB}ping = \"https://hc-ping.com/x?a=1\"\n"));
        assert_eq!((line, m.contains("no query")), (5, true), "{m}");
        let (line, m) = err(&format!("{JOB}ping = \"hc-ping.com/x\"\n"));
        assert_eq!((line, m.contains("ping:")), (5, true), "{m}");
        let (line, m) = err(&format!(
            "{sink}command = [\"/bin/true\"]\nbogus = 1\n{JOB}"
        ));
        assert_eq!((line, m.contains("unknown field")), (4, true), "{m}");
    }

    #[test]
    fn urls_must_be_http() {
        assert!(http_url("https://hc-ping.com/abc").is_ok());
        assert!(http_url("http://127.0.0.1:8080/x").is_ok());
        assert!(http_url("ftp://x/y").unwrap_err().contains("not an http"));
        assert!(http_url("not a url").unwrap_err().contains("not a URL"));
    }
}
