//! A job's processes die with their node (src/node/watchdog.rs): real `cronlease` nodes on the file
//! store (no server needed), jobs whose processes carry a unique number in their command line,
//! found through /proc.
//!
//! - `kill -9` of a node running a job with background children and a grandchild: every one of
//!   them is gone within 2 s (the time is printed), and so is the watchdog. Without the
//!   watchdog this test fails: the processes live on in their own process group.
//! - SIGTERM: the running job still finishes within `shutdown_grace` (`ok`, its last line
//!   printed) and the watchdog exits with the node, killing nothing.
//! - Ctrl-C (SIGINT to the node's whole process group): the watchdog ignores it, the node stops
//!   gracefully and the watchdog exits with it.
//! - An idle node killed with `kill -9`: its watchdog exits, with nothing to kill.
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{poll_for, wait_until, write_config, Backend, Node};
use serde_json::Value;

const HEADER: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
                      [node]\nshutdown_grace = \"10s\"\n";
/// How long a node may take to start and run its first tick.
const FIRST_RUN: Duration = Duration::from_secs(15);

fn config(backend: &Backend, dir: &Path, jobs: &str) -> PathBuf {
    write_config(dir, &format!("{}{HEADER}\n{jobs}", backend.store_table()))
}

/// Six digits no other process of this machine is likely to have in its command line.
fn nonce() -> String {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_micros() as u64;
    format!(
        "{:06}",
        (std::process::id() as u64 * 7919 + micros) % 1_000_000
    )
}

/// Every pid in /proc.
fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// (state, ppid, pgrp) of a process, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(String, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_string();
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` exists and is not a zombie (orphans may never be reaped in a container).
fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _, _)| !matches!(state.as_str(), "Z" | "X" | "x"))
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Live processes whose command line contains `marker`.
fn with_marker(marker: &str) -> Vec<(i32, String)> {
    pids()
        .into_iter()
        .filter(|&pid| alive(pid))
        .map(|pid| (pid, cmdline(pid)))
        .filter(|(_, cmd)| cmd.contains(marker))
        .collect()
}

/// The live `__watchdog` child of `node`.
fn watchdog_of(node: i32) -> Option<i32> {
    pids().into_iter().find(|&pid| {
        stat(pid).is_some_and(|(_, ppid, _)| ppid == node)
            && alive(pid)
            && cmdline(pid).contains("__watchdog")
    })
}

/// Waits for the node's watchdog: it starts before the node reaches its store.
fn wait_for_watchdog(node: &Node) -> i32 {
    poll_for(Duration::from_secs(10), || watchdog_of(node.pid))
        .unwrap_or_else(|| panic!("no __watchdog child of node {}", node.pid))
}

/// Whether process `pid` (the same one, not a reuse of its number) is gone.
fn watchdog_gone(pid: i32) -> bool {
    !alive(pid) || !cmdline(pid).contains("__watchdog")
}

/// Where /proc/PID/fd/* of `pid` point (`pipe:[1234]`, paths, ...).
fn fd_links(pid: i32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .collect()
}

/// SIGKILLs, when dropped, whatever still carries the marker: a failing test (or one run with
/// the watchdog disabled) leaves nothing behind. Those processes are in process groups of
/// their own, out of reach of the harness's cleanup.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        for (pid, _) in with_marker(&self.0) {
            // SAFETY: plain syscall.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

/// The first `job_output` line of `job`, waiting up to `within`.
fn first_output(node: &Node, job: &str, within: Duration) -> Value {
    node.wait_for(within, |e| e["event"] == "job_output" && e["job"] == job)
        .unwrap_or_else(|| panic!("{job} printed nothing within {within:?}"))
}

const KILL_LINE: &str = "cronlease watchdog: node";

#[test]
fn kill_9_of_a_node_kills_its_running_jobs_processes() {
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("3{}", nonce());
    let _sweep = Sweep(marker.clone());
    // Two background children (one of them a subshell with a child of its own, a grandchild
    // of the job) and the shell itself turned into a third sleep: about a year each.
    let job = format!(
        "[[job]]\nname = \"long\"\nschedule = \"* * * * * *\"\n\
         shell = \"echo started; sleep {marker}1 & (sleep {marker}2; true) & exec sleep {marker}3\"\n"
    );
    let cfg = config(&backend, dir.path(), &job);
    let mut node = Node::spawn_on(&backend, &cfg, "kill9-node");
    let watchdog = wait_for_watchdog(&node);
    first_output(&node, "long", FIRST_RUN);
    // The shell's `exec sleep`, both background sleeps and the subshell.
    let mut running = Vec::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            running = with_marker(&marker);
            running.len() >= 4
        }),
        "the job's processes did not all start: {running:?}"
    );

    // The watchdog leads a group of its own (a signal to the node's group does not reach it),
    // no job process is in the node's group; none of them holds the pipe to the watchdog
    // (else it would never see end of file).
    let (_, _, node_group) = stat(node.pid).unwrap();
    let (_, _, watchdog_group) = stat(watchdog).unwrap();
    assert_eq!(watchdog_group, watchdog);
    assert_ne!(watchdog_group, node_group);
    let pipe = std::fs::read_link(format!("/proc/{watchdog}/fd/0"))
        .unwrap()
        .display()
        .to_string();
    assert!(pipe.starts_with("pipe:"), "the watchdog's stdin is {pipe}");
    assert!(
        fd_links(node.pid).contains(&pipe),
        "the node does not hold the watchdog's pipe {pipe}"
    );
    for (pid, cmd) in &running {
        let (_, _, group) = stat(*pid).unwrap();
        assert_ne!(group, node_group, "{pid} {cmd} is in the node's group");
        assert!(
            !fd_links(*pid).contains(&pipe),
            "job process {pid} ({cmd}) inherited the watchdog's pipe {pipe}"
        );
    }

    let t0 = Instant::now();
    node.kill9();
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(2), || {
        left = with_marker(&marker);
        left.is_empty()
    });
    let took = t0.elapsed();
    assert!(
        gone,
        "2 s after kill -9 of the node, its job's processes still run: {left:?}"
    );
    eprintln!(
        "kill -9 -> no process of the job left: {:.1} ms ({} processes)",
        took.as_secs_f64() * 1000.0,
        running.len()
    );
    assert!(
        wait_until(Duration::from_secs(2), || watchdog_gone(watchdog)),
        "the watchdog {watchdog} outlived its job's processes"
    );
    node.wait_exit(Duration::from_secs(5))
        .expect("the node was killed");
    let stderr = node.stderr_text();
    assert!(
        stderr.contains(KILL_LINE) && stderr.contains("sent SIGKILL"),
        "the watchdog said nothing on stderr: {stderr}"
    );
}

#[test]
fn sigterm_lets_the_running_job_finish_and_the_watchdog_exits_with_the_node() {
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("2.{}", nonce());
    let _sweep = Sweep(marker.clone());
    let job = format!(
        "[[job]]\nname = \"finishes\"\nschedule = \"* * * * * *\"\n\
         shell = \"echo started; sleep {marker}; echo done\"\n"
    );
    let cfg = config(&backend, dir.path(), &job);
    let mut node = Node::spawn_on(&backend, &cfg, "sigterm-node");
    let watchdog = wait_for_watchdog(&node);
    let started = first_output(&node, "finishes", FIRST_RUN);
    let fire_time = started["fire_time"].clone();

    node.signal(libc::SIGTERM);
    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        node.stderr_text()
    );

    // The run that was going on at SIGTERM finished on its own, within the grace.
    let finished = node
        .events_named("job_finished")
        .into_iter()
        .find(|e| e["fire_time"] == fire_time)
        .unwrap_or_else(|| panic!("no job_finished for {fire_time}: {}", node.output_text()));
    assert_eq!(finished["outcome"], "ok", "{finished}");
    assert!(
        node.events_named("job_output")
            .iter()
            .any(|e| e["fire_time"] == fire_time && e["line"] == "done"),
        "the job did not get to print its last line"
    );
    assert!(
        wait_until(Duration::from_secs(2), || watchdog_gone(watchdog)),
        "the watchdog {watchdog} outlived its node"
    );
    assert!(
        !node.stderr_text().contains(KILL_LINE),
        "the watchdog killed something at a graceful stop: {}",
        node.stderr_text()
    );
    assert_eq!(with_marker(&marker), Vec::new());
}

#[test]
fn ctrl_c_to_the_nodes_group_stops_it_gracefully_and_the_watchdog_with_it() {
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("2.{}", nonce());
    let _sweep = Sweep(marker.clone());
    let job = format!(
        "[[job]]\nname = \"finishes\"\nschedule = \"* * * * * *\"\n\
         shell = \"echo started; sleep {marker}; echo done\"\n"
    );
    let cfg = config(&backend, dir.path(), &job);
    let mut node = Node::spawn_on(&backend, &cfg, "ctrl-c-node");
    let watchdog = wait_for_watchdog(&node);
    let started = first_output(&node, "finishes", FIRST_RUN);
    let fire_time = started["fire_time"].clone();

    // What a terminal's Ctrl-C does: SIGINT to the foreground process group, the node's (the
    // harness's guard ignores it, as a background job of a non-interactive shell).
    // SAFETY: plain syscall; the node is our unreaped child and leads its group.
    unsafe {
        libc::killpg(node.pid, libc::SIGINT);
    }
    // The node took the signal (it says so first thing), and drains rather than exits.
    node.wait_for(Duration::from_secs(5), |e| {
        e["event"] == "signal" && e["signal"] == "SIGINT"
    })
    .expect("the node logged the SIGINT");
    assert!(
        node.is_running(),
        "the node should still be draining its job"
    );
    assert!(alive(watchdog), "the watchdog did not ignore SIGINT");

    let status = node
        .wait_exit(Duration::from_secs(20))
        .expect("the node exits after SIGINT");
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        node.stderr_text()
    );
    let finished = node
        .events_named("job_finished")
        .into_iter()
        .find(|e| e["fire_time"] == fire_time)
        .unwrap_or_else(|| panic!("no job_finished for {fire_time}: {}", node.output_text()));
    assert_eq!(finished["outcome"], "ok", "{finished}");
    assert!(
        wait_until(Duration::from_secs(2), || watchdog_gone(watchdog)),
        "the watchdog {watchdog} outlived its node"
    );
    assert!(!node.stderr_text().contains(KILL_LINE));
}

#[test]
fn an_idle_nodes_watchdog_exits_after_kill_9_with_nothing_to_kill() {
    let backend = Backend::file();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &backend,
        dir.path(),
        "[[job]]\nname = \"quiet\"\nschedule = \"* * * * * *\"\nsay = \"hi\"\n",
    );
    let mut node = Node::spawn_on(&backend, &cfg, "idle-node");
    let watchdog = wait_for_watchdog(&node);
    first_output(&node, "quiet", FIRST_RUN);
    node.kill9();
    assert!(
        wait_until(Duration::from_secs(2), || watchdog_gone(watchdog)),
        "the watchdog {watchdog} outlived its node"
    );
    node.wait_exit(Duration::from_secs(5))
        .expect("the node was killed");
    assert!(!node.stderr_text().contains(KILL_LINE));
}
