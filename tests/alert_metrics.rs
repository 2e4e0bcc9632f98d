//! The alert-ready metrics on real nodes against a real emulator (lease 3 s, poll 250 ms):
//! `cronlease_job_leader` follows the lease, the last-success gauge survives a failover (the
//! new leader seeds it from the store's history before it ran anything), and the fire times a
//! frozen leader let pass are counted once, by the node that takes the lease over.
mod common;

use std::path::Path;
use std::time::Duration;

use common::{http, wait_until, write_config, Emulator, Node};

const CONFIG: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"beat\"\nschedule = \"* * * * * *\"\nsay = \"beat\"\ncatch_up = \"none\"\n";

/// The value of `name{job="beat"}` on `port`'s /metrics, if it is there.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http(port, "GET", "/metrics", Duration::from_secs(2)).ok()?;
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{{job=\"beat\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn cli(emu: &Emulator, cfg: &Path, args: &[&str]) {
    let out = common::cli(emu, cfg, args);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
}

#[test]
fn leader_last_success_and_missed_ticks_survive_a_failover() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let (a, pa) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    let (b, pb) = Node::spawn_with_http(&emu, &cfg, "b", &[]);
    let leader = || {
        [(&a, pa), (&b, pb)]
            .into_iter()
            .find(|(_, p)| metric(*p, "cronlease_job_leader") == Some(1.0))
    };
    assert!(wait_until(Duration::from_secs(20), || leader()
        .is_some_and(|(_, p)| {
            metric(p, "cronlease_job_last_success_timestamp_seconds").is_some()
        })));
    let (first, first_port) = leader().unwrap();
    let (second, second_port) = if first.id == "a" { (&b, pb) } else { (&a, pa) };
    assert_eq!(
        metric(second_port, "cronlease_job_leader").unwrap_or(0.0),
        0.0
    );

    // Paused, then the leader freezes: the other node takes over without running anything,
    // and reports the last success at once, from the store's history.
    cli(&emu, &cfg, &["pause", "beat"]);
    assert!(wait_until(Duration::from_secs(5), || first
        .events_named("tick_paused")
        .iter()
        .any(|e| e["job"] == "beat")));
    let success = metric(first_port, "cronlease_job_last_success_timestamp_seconds").unwrap();
    first.stop();
    assert!(
        wait_until(Duration::from_secs(15), || metric(
            second_port,
            "cronlease_job_leader"
        ) == Some(1.0)),
        "{} did not take over",
        second.id
    );
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            second_port,
            "cronlease_job_last_success_timestamp_seconds"
        ) == Some(success)),
        "the last success did not survive the failover: {:?} vs {success}",
        metric(second_port, "cronlease_job_last_success_timestamp_seconds")
    );
    // A pause's fire times are not missed.
    assert_eq!(metric(second_port, "cronlease_ticks_missed_total"), None);
    first.cont();
    assert!(wait_until(Duration::from_secs(10), || metric(
        first_port,
        "cronlease_job_leader"
    ) == Some(0.0)));

    // Resumed; now the new leader freezes: the fire times that pass until the first node takes
    // over are counted once, by it.
    cli(&emu, &cfg, &["resume", "beat"]);
    assert!(wait_until(Duration::from_secs(10), || metric(
        second_port,
        "cronlease_job_last_success_timestamp_seconds"
    )
    .is_some_and(|s| s > success)));
    second.stop();
    assert!(wait_until(Duration::from_secs(15), || metric(
        first_port,
        "cronlease_job_leader"
    ) == Some(1.0)));
    let missed = || metric(first_port, "cronlease_ticks_missed_total").unwrap_or(0.0);
    assert!(wait_until(Duration::from_secs(5), || missed() >= 1.0));
    assert!(
        missed() <= 6.0,
        "a 3 s lease lets 2-4 fire times pass: {}",
        missed()
    );
    second.cont();
    assert!(wait_until(Duration::from_secs(10), || metric(
        second_port,
        "cronlease_job_leader"
    ) == Some(0.0)));
    assert_eq!(metric(second_port, "cronlease_ticks_missed_total"), None);
}
