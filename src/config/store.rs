//! `[store]`: which backend a node uses and its settings, validated with the file's other
//! tables (see the parent module): the backend named, or implied by the keys given, and each
//! key checked against the backend it belongs to.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Validator, DEFAULT_HISTORY, DEFAULT_NAMESPACE, DEFAULT_SCHEMA, MAX_HISTORY};

#[derive(Debug, Clone, PartialEq, Eq, Copy)]
pub enum Backend {
    /// No `backend`, `path` or `project` given: Datastore if the environment names one, else
    /// the file store in the local state directory. Decided at connect time
    /// ([`crate::store::resolve`]), because it depends on the environment, not on the file.
    Auto,
    /// `backend = "datastore"`, or a `project` given.
    Datastore,
    /// `backend = "file"`, or a `path` given.
    File,
    /// `backend = "redis"`, or a `url` given.
    Redis,
    /// `backend = "zookeeper"`, or `hosts` given.
    ZooKeeper,
    /// `backend = "postgres"`, or a `postgres://` (`postgresql://`) `url` given.
    Postgres,
}

impl Backend {
    /// The name used in jobs.toml.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Datastore => "datastore",
            Backend::File => "file",
            Backend::Redis => "redis",
            Backend::ZooKeeper => "zookeeper",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub backend: Backend,
    /// The file store's base directory (the namespace is a subdirectory of it); a relative
    /// `path` is taken from the config file's directory, so that nodes started from different
    /// working directories still share one store. `None`: the local state directory.
    pub path: Option<PathBuf>,
    pub project: Option<String>,
    /// The Redis server, `redis://host:port[/db]` (redis backend), or the PostgreSQL database,
    /// `postgres://user@host:port/db` (postgres backend).
    pub url: Option<String>,
    /// The PostgreSQL schema of cronlease's tables (postgres backend; default `cronlease`).
    pub schema: String,
    /// The ZooKeeper ensemble, `host:port[,host:port...]` (zookeeper backend).
    pub hosts: Option<String>,
    pub namespace: String,
    /// How many runs per job the store keeps (newest first); older ones are deleted in the
    /// background.
    pub history: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) backend: Option<Spanned<String>>,
    pub(super) path: Option<Spanned<String>>,
    pub(super) project: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) hosts: Option<Spanned<String>>,
    pub(super) schema: Option<Spanned<String>>,
    pub(super) namespace: Option<Spanned<String>>,
    pub(super) history: Option<Spanned<i64>>,
}

impl Validator<'_> {
    /// `[store]`; `file` is the config file's path, which a relative `path` is taken from.
    pub(super) fn store(&mut self, raw: Option<RawStore>, file: &str) -> Option<StoreConfig> {
        let Some(raw) = raw else {
            return Some(StoreConfig {
                backend: Backend::Auto,
                path: None,
                project: None,
                url: None,
                hosts: None,
                schema: DEFAULT_SCHEMA.into(),
                namespace: DEFAULT_NAMESPACE.into(),
                history: DEFAULT_HISTORY,
            });
        };
        let mut ok = true;
        // A `path` only makes sense for files and a `project` only for Datastore, so either
        // one settles the backend as well as `backend` would.
        let backend = match &raw.backend {
            None if raw.path.is_some() => Backend::File,
            None if raw.project.is_some() => Backend::Datastore,
            // The url's scheme tells which server it is.
            None if raw
                .url
                .as_ref()
                .is_some_and(|u| crate::store::is_postgres_url(u.get_ref())) =>
            {
                Backend::Postgres
            }
            None if raw.url.is_some() => Backend::Redis,
            None if raw.schema.is_some() => Backend::Postgres,
            None if raw.hosts.is_some() => Backend::ZooKeeper,
            None => Backend::Auto,
            Some(b) if b.get_ref() == "datastore" => Backend::Datastore,
            Some(b) if b.get_ref() == "file" => Backend::File,
            Some(b) if b.get_ref() == "redis" => Backend::Redis,
            Some(b) if b.get_ref() == "zookeeper" => Backend::ZooKeeper,
            Some(b) if b.get_ref() == "postgres" || b.get_ref() == "postgresql" => {
                Backend::Postgres
            }
            Some(b) => {
                self.error(
                    b.span().start,
                    format!(
                        "unknown store backend {:?}: the backends are \"datastore\", \
                         \"file\", \"redis\", \"zookeeper\" and \"postgres\" (leave it out for Datastore \
                         when DATASTORE_PROJECT_ID, GOOGLE_CLOUD_PROJECT or \
                         DATASTORE_EMULATOR_HOST is set, else a file store in the local state \
                         directory)",
                        b.get_ref()
                    ),
                );
                ok = false;
                Backend::Auto
            }
        };
        if let Some(b) = &raw.backend {
            if !crate::store::compiled_in(&backend) {
                self.error(
                    b.span().start,
                    format!(
                        "this build of cronlease has no {:?} store (cargo feature {:?} is off)",
                        backend.name(),
                        backend.name()
                    ),
                );
                ok = false;
            }
        }
        // Each backend-specific key belongs to one backend.
        for (key, value, owners) in [
            ("path", &raw.path, &[Backend::File][..]),
            ("project", &raw.project, &[Backend::Datastore]),
            ("url", &raw.url, &[Backend::Redis, Backend::Postgres]),
            ("hosts", &raw.hosts, &[Backend::ZooKeeper]),
            ("schema", &raw.schema, &[Backend::Postgres]),
        ] {
            if let Some(v) = value {
                if !owners.contains(&backend) && backend != Backend::Auto {
                    let at = self.key_offset(&v.span(), key);
                    let names: Vec<String> =
                        owners.iter().map(|o| format!("{:?}", o.name())).collect();
                    self.error(
                        at,
                        format!(
                            "{key} is a setting of the {} backend, not of {:?}",
                            names.join(" and "),
                            backend.name()
                        ),
                    );
                    ok = false;
                }
            }
        }
        for (key, value, owner, example) in [
            ("url", &raw.url, Backend::Redis, "redis://127.0.0.1:6379"),
            (
                "url",
                &raw.url,
                Backend::Postgres,
                "postgres://cronlease@db.example:5432/cronlease",
            ),
            ("hosts", &raw.hosts, Backend::ZooKeeper, "127.0.0.1:2181"),
        ] {
            match (value, &raw.backend) {
                (Some(v), _) if v.get_ref().trim().is_empty() => {
                    self.error(v.span().start, format!("{key} must not be empty"));
                    ok = false;
                }
                (None, Some(b)) if backend == owner => {
                    self.error(
                        b.span().start,
                        format!(
                            "the {:?} backend needs {key}, e.g. {key} = {example:?}",
                            owner.name()
                        ),
                    );
                    ok = false;
                }
                _ => {}
            }
        }
        let path = match &raw.path {
            None => None,
            Some(p) if p.get_ref().trim().is_empty() || p.get_ref().contains('\0') => {
                self.error(
                    p.span().start,
                    "path must be a directory name, not empty (leave it out for the local \
                     state directory)"
                        .into(),
                );
                ok = false;
                None
            }
            // Relative to the config file, not to the working directory of each node.
            Some(p) => Some(
                Path::new(file)
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(p.get_ref()),
            ),
        };
        // A postgres url is parsed here, so `cronlease check` finds its mistakes without
        // connecting; the message never shows a password.
        if let (Backend::Postgres, Some(u)) = (backend, &raw.url) {
            if !u.get_ref().trim().is_empty() {
                let problem = if !crate::store::is_postgres_url(u.get_ref()) {
                    Some(format!(
                        "the postgres backend needs a postgres:// (or postgresql://) url, not \
                         {:?}",
                        crate::store::redact_url(u.get_ref())
                    ))
                } else {
                    crate::store::check_postgres_url(u.get_ref()).err()
                };
                if let Some(problem) = problem {
                    self.error(u.span().start, problem);
                    ok = false;
                }
            }
        }
        let schema = match &raw.schema {
            None => DEFAULT_SCHEMA.to_string(),
            Some(v) => {
                let s = v.get_ref();
                let fine = !s.is_empty()
                    && s.len() <= 63
                    && s.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !fine {
                    self.error(
                        v.span().start,
                        format!(
                            "schema {s:?} must be a plain PostgreSQL name: lowercase letters, \
                             digits and '_', starting with a letter or '_', at most 63 \
                             characters"
                        ),
                    );
                    ok = false;
                }
                s.clone()
            }
        };
        if let Some(p) = &raw.project {
            if p.get_ref().trim().is_empty() {
                self.error(
                    p.span().start,
                    "project must not be empty (leave it out to use DATASTORE_PROJECT_ID or GOOGLE_CLOUD_PROJECT)".into(),
                );
                ok = false;
            }
        }
        let namespace = match &raw.namespace {
            None => DEFAULT_NAMESPACE.to_string(),
            Some(ns) => {
                let s = ns.get_ref();
                let problem = if s.is_empty() {
                    Some("must not be empty")
                } else if s.chars().count() > 100 {
                    Some("must be at most 100 characters")
                } else if !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
                {
                    Some("may only contain letters, digits, '_', '.' and '-'")
                } else if s.starts_with("__") {
                    Some("must not start with \"__\" (reserved by Datastore)")
                } else if s == "." || s == ".." {
                    // The file store's directory is named after it.
                    Some("must not be \".\" or \"..\"")
                } else {
                    None
                };
                if let Some(problem) = problem {
                    self.error(ns.span().start, format!("namespace {s:?} {problem}"));
                    ok = false;
                }
                s.clone()
            }
        };
        let history = match &raw.history {
            None => DEFAULT_HISTORY,
            Some(h) => {
                let n = *h.get_ref();
                if !(1..=MAX_HISTORY).contains(&n) {
                    self.error(
                        h.span().start,
                        format!("history must be between 1 and {MAX_HISTORY}, got {n}"),
                    );
                    ok = false;
                }
                n.clamp(1, MAX_HISTORY) as usize
            }
        };
        ok.then(|| StoreConfig {
            backend,
            url: raw.url.map(|u| u.into_inner()),
            hosts: raw.hosts.map(|h| h.into_inner()),
            schema,
            path,
            project: raw.project.map(|p| p.into_inner()),
            namespace,
            history,
        })
    }
}
