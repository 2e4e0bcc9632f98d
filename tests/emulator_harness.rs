//! The test harness itself: an emulator starts healthy on its own port and, once stopped,
//! leaves no port open and no process behind.
mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{wait_until, Emulator};

/// Live (non-zombie) processes whose process group is `pgid`: (pid, command line).
fn group_members(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may contain spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() < 3 || fields[0] == "Z" || fields[2].parse::<i32>() != Ok(pgid) {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        out.push((pid, cmd));
    }
    out
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

#[test]
fn emulator_starts_healthy_and_stops_without_leftovers() {
    let mut emu = Emulator::start_own();
    assert!(emu.healthy(), "GET / did not answer Ok");
    assert_eq!(emu.host(), format!("127.0.0.1:{}", emu.port));
    let env = emu.env();
    assert!(env.contains(&("DATASTORE_EMULATOR_HOST".into(), emu.host())));
    assert!(env.contains(&("DATASTORE_PROJECT_ID".into(), "cronlease-test".into())));
    emu.reset();

    let pgid = emu.pid().expect("running emulator has a pid");
    let members = group_members(pgid);
    assert!(
        members.iter().any(|(_, cmd)| cmd.contains("java")),
        "no java process in the emulator's process group {pgid}: {members:?}"
    );

    emu.stop();
    assert!(!emu.is_running());
    assert!(
        wait_until(Duration::from_secs(10), || !port_open(emu.port)),
        "port {} still open after stop",
        emu.port
    );
    assert!(
        wait_until(Duration::from_secs(10), || group_members(pgid).is_empty()),
        "processes left in group {pgid}: {:?}",
        group_members(pgid)
    );
    emu.stop(); // idempotent
}

#[test]
fn emulator_restarts_on_the_same_port() {
    let mut emu = Emulator::start_on_disk();
    let port = emu.port;
    let first = emu.pid().unwrap();
    emu.kill(); // an outage: no graceful shutdown
    assert!(wait_until(Duration::from_secs(10), || !port_open(port)));
    emu.restart();
    assert_eq!(emu.port, port);
    assert_ne!(emu.pid().unwrap(), first);
    assert!(emu.healthy());
    let second = emu.pid().unwrap();
    drop(emu);
    assert!(
        wait_until(Duration::from_secs(10), || group_members(second).is_empty()),
        "processes left in group {second} after drop: {:?}",
        group_members(second)
    );
}
