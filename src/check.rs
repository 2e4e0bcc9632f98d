//! `cronlease check`: a validated config, described. (stub: helper fills in)
use chrono::{DateTime, Utc};

use crate::config::Config;

pub fn report(config: &Config, now: DateTime<Utc>) -> String {
    let _ = (config, now);
    todo!()
}
