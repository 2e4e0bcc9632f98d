//! jobs.toml → Config. (stub: helper fills in)
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::schedule::Schedule;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    #[error("{file}:{line}:{column}: {message}")]
    At {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub source: PathBuf,
    pub store: StoreConfig,
    pub election: ElectionConfig,
    pub node: NodeConfig,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Datastore,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    pub project: Option<String>,
    pub namespace: String,
}

#[derive(Debug, Clone, Copy)]
pub struct ElectionConfig {
    pub lease: Duration,
    pub renew: Duration,
    pub poll: Duration,
}

impl ElectionConfig {
    /// How long a leader keeps acting after its last successful renewal started:
    /// halfway between `renew` and `lease`.
    pub fn renew_deadline(&self) -> Duration {
        (self.lease + self.renew) / 2
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NodeConfig {
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    pub timeout: Option<Duration>,
    pub action: Action,
}

#[derive(Debug, Clone)]
pub enum Action {
    Say {
        text: String,
        repeat: u32,
        pause: Duration,
    },
    Command {
        argv: Vec<String>,
    },
    Shell {
        script: String,
    },
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let _ = path;
    todo!()
}

pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let _ = (file, text);
    todo!()
}
