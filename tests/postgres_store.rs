//! The PostgreSQL store against real servers of the test's own:
//! - what `cronlease` says for bad input (an unreachable server, wrong credentials, a database
//!   that does not exist, a schema it may not use, TLS the server lacks), and that a schema its
//!   DBA made and a Unix socket work;
//! - a drill of faults of its own (a node's connections terminated with `pg_terminate_backend`,
//!   every connection terminated, a crash and restart of the server mid-run, the server
//!   read-only): no fire time is run twice and every run is closed;
//! - a failover across hosts (`target_session_attrs=read-write`), a node frozen inside an
//!   acquisition, a cluster behind PgBouncer in transaction mode, and each `sslmode`.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};

use common::pgbouncer::PgBouncer;
use common::postgres_server::PostgresServer;
use common::{free_port, write_config, Node};

const JOB: &str = "[[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nsay = \"a\"\n";

/// `cronlease ARGS --config CFG` with no store environment: exit code and stderr.
fn one_shot(args: &[&str], cfg: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cronlease"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("DATASTORE_EMULATOR_HOST")
        .env_remove("DATASTORE_PROJECT_ID")
        .stdin(Stdio::null())
        .output()
        .expect("run cronlease");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cronlease run` on `cfg` (its `[store]` table names the server), with no store environment.
fn spawn(cfg: &Path, id: &str) -> Node {
    let args = [
        "run",
        "--config",
        &cfg.display().to_string(),
        "--node-id",
        id,
    ];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--log-format".to_string(), "json".to_string()]);
    Node::spawn_args(id, &args, &[])
}

fn config_for(dir: &Path, url: &str, extra: &str) -> std::path::PathBuf {
    write_config(dir, &format!("[store]\nurl = \"{url}\"\n{extra}\n{JOB}"))
}

#[test]
fn bad_input_says_which_and_what_to_do() {
    let pg = PostgresServer::start();
    pg.add_password_user("app", "right");
    pg.psql("CREATE ROLE guest LOGIN");
    pg.psql("CREATE SCHEMA theirs");
    let dir = tempfile::tempdir().unwrap();
    let port = pg.port;
    let cases = [
        (
            "wrong password",
            format!("postgres://app:wrong@127.0.0.1:{port}/postgres"),
            "",
            vec![
                "password authentication failed",
                "app",
                "check the user and password",
            ],
        ),
        (
            "unknown user",
            format!("postgres://nobody@127.0.0.1:{port}/postgres"),
            "",
            vec![
                "role \"nobody\" does not exist",
                "check the user and password",
            ],
        ),
        (
            "missing database",
            format!("postgres://postgres@127.0.0.1:{port}/nosuchdb"),
            "",
            vec!["database \"nosuchdb\" does not exist", "CREATE DATABASE"],
        ),
        (
            "schema of someone else",
            format!("postgres://guest@127.0.0.1:{port}/postgres"),
            "schema = \"theirs\"",
            vec![
                "permission denied for schema theirs",
                "GRANT USAGE ON SCHEMA theirs",
            ],
        ),
        (
            "TLS required of a server without it",
            format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=require"),
            "",
            vec!["server does not support TLS", "enable ssl on the server"],
        ),
        (
            "no right to create a schema",
            format!("postgres://guest@127.0.0.1:{port}/postgres"),
            "schema = \"mine\"",
            vec!["permission denied", "CREATE SCHEMA mine AUTHORIZATION"],
        ),
    ];
    pg.psql("CREATE TABLE theirs.meta (id int PRIMARY KEY, version int NOT NULL)");
    for (name, url, extra, wants) in cases {
        let cfg = config_for(dir.path(), &url, extra);
        for verb in [&["run", "--node-id", "bad"][..], &["status"][..]] {
            let (code, stderr) = one_shot(verb, &cfg);
            eprintln!("--- {name} / {verb:?}: exit {code:?}\n{stderr}");
            assert_eq!(code, Some(1), "{name}: {stderr}");
            for want in &wants {
                assert!(stderr.contains(want), "{name}: no {want:?} in {stderr}");
            }
            assert!(
                !stderr.contains("wrong@"),
                "{name}: the password shown: {stderr}"
            );
            assert!(
                stderr.contains(&format!("127.0.0.1:{port}")),
                "{name}: {stderr}"
            );
        }
    }

    // A schema its DBA made, with the tables' rights granted: a user that may create nothing
    // runs on it.
    let admin = config_for(
        dir.path(),
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        "schema = \"granted\"",
    );
    let (code, stderr) = one_shot(&["status"], &admin);
    assert_eq!(code, Some(0), "{stderr}");
    pg.psql(
        "GRANT USAGE ON SCHEMA granted TO guest; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA granted TO guest",
    );
    let guest = config_for(
        dir.path(),
        &format!("postgres://guest@127.0.0.1:{port}/postgres"),
        "schema = \"granted\"",
    );
    let (code, stderr) = one_shot(&["status"], &guest);
    assert_eq!(code, Some(0), "a guest on a granted schema: {stderr}");

    // A Unix socket (the host a path), with the default sslmode (prefer): no TLS is tried.
    let socket = pg.socket_dir().display().to_string().replace('/', "%2F");
    let local = config_for(
        dir.path(),
        &format!("postgres://postgres@{socket}:{port}/postgres"),
        "",
    );
    let (code, stderr) = one_shot(&["status"], &local);
    assert_eq!(code, Some(0), "over the Unix socket: {stderr}");
}

/// No server at the url: `status` says so and exits 1; `run` keeps trying, saying where, and
/// stops cleanly on SIGTERM.
#[test]
fn an_unreachable_server_is_named_and_waited_for() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_for(
        dir.path(),
        &format!("postgres://app:secret@127.0.0.1:{port}/jobs"),
        "",
    );
    let (code, stderr) = one_shot(&["status"], &cfg);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
    let mut node = spawn(&cfg, "waiting");
    let errors = common::poll_for(Duration::from_secs(10), || {
        let e = node.events_named("store_error");
        (e.len() >= 2).then_some(e)
    })
    .unwrap_or_else(|| panic!("no retries logged: {}", node.output_text()));
    let message = errors[0]["msg"].as_str().unwrap_or_default().to_string();
    eprintln!("{message}");
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("is the server running"), "{message}");
    assert!(message.contains("refused"), "the cause: {message}");
    assert!(!message.contains("secret"), "{message}");
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(10)).expect("it stops");
    assert!(status.success(), "{status:?}");
}

/// The `tick_run` lines of every process: (job, fire time, node).
fn tick_runs(nodes: &[Node]) -> Vec<(String, String, String)> {
    nodes
        .iter()
        .flat_map(|n| {
            n.events_named("tick_run").into_iter().map(move |e| {
                (
                    e["job"].as_str().unwrap_or_default().to_string(),
                    e["fire_time"].as_str().unwrap_or_default().to_string(),
                    n.id.clone(),
                )
            })
        })
        .collect()
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .with_timezone(&Utc)
}

/// Wait until every job in `jobs` has run a fire time after `after`; how long that took.
fn until_all_ran_after(
    nodes: &[Node],
    jobs: &[&str],
    after: DateTime<Utc>,
    fault: &str,
) -> Duration {
    let start = std::time::Instant::now();
    let later = |fire: &str| utc(fire) > after;
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            let runs = tick_runs(nodes);
            jobs.iter()
                .all(|job| runs.iter().any(|(j, fire, _)| j == job && later(fire)))
        }),
        "after {fault}, not every job ran again within 30 s: {:?}",
        tick_runs(nodes)
            .iter()
            .filter(|(_, fire, _)| later(fire))
            .collect::<Vec<_>>()
    );
    start.elapsed()
}

/// Three nodes, jobs every second and a slow one always in flight, through four faults of
/// PostgreSQL's own: one node's connections terminated (`pg_terminate_backend`), every node's
/// connections terminated, the server killed (-9) and restarted mid-run, and the server
/// read-only for a while (as a standby after a failover: nothing runs). After each, every job
/// runs again; across the drill no fire time runs twice, every node exits 0 on SIGTERM and
/// no run record is left `running`.
#[test]
fn terminated_connections_a_restart_and_a_read_only_server_run_no_fire_time_twice() {
    let mut pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["a", "b", "c", "slow"];
    let body = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
        [node]\nshutdown_grace = \"5s\"\n\n\
        [[job]]\nname = \"a\"\nschedule = \"* * * * * *\"\nsay = \"a\"\n\n\
        [[job]]\nname = \"b\"\nschedule = \"* * * * * *\"\nsay = \"b\"\n\n\
        [[job]]\nname = \"c\"\nschedule = \"* * * * * *\"\nsay = \"c\"\n\n\
        [[job]]\nname = \"slow\"\nschedule = \"*/2 * * * * *\"\n\
        shell = \"echo started; sleep 1.5; echo done\"\n";
    // One jobs file per node, each naming its connections (application_name), so the drill
    // can terminate one node's.
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| {
            let sub = dir.path().join(id);
            std::fs::create_dir_all(&sub).unwrap();
            let url = format!("{}?application_name=cronlease-{id}", pg.url());
            let cfg = write_config(&sub, &format!("[store]\nurl = \"{url}\"\n\n{body}"));
            spawn(&cfg, id)
        })
        .collect();
    until_all_ran_after(&nodes, &jobs, DateTime::<Utc>::MIN_UTC, "the start");

    // 1. One node's connections terminated.
    let t1 = Utc::now();
    let killed: u32 = pg
        .psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'cronlease-n1'",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(killed >= 1, "n1 had no connection to terminate");
    let back1 = until_all_ran_after(&nodes, &jobs, t1, "n1's connections were terminated");
    assert!(
        common::wait_until(Duration::from_secs(10), || pg
            .psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cronlease-n1'")
            .trim()
            != "0"),
        "n1 never connected again"
    );

    // 2. Every node's connections terminated.
    let t2 = Utc::now();
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name LIKE 'cronlease-%'",
    );
    let back2 = until_all_ran_after(&nodes, &jobs, t2, "every connection was terminated");

    // 3. The server killed and restarted while a run of `slow` is in flight.
    let seen = nodes
        .iter()
        .map(|n| n.events_named("job_output").len())
        .collect::<Vec<_>>();
    assert!(
        common::wait_until(Duration::from_secs(10), || nodes.iter().zip(&seen).any(
            |(n, from)| n.events_named("job_output")[*from..]
                .iter()
                .any(|e| e["job"] == "slow" && e["line"] == "started")
        )),
        "no run of slow started"
    );
    let t3 = Utc::now();
    pg.restart();
    let back3 = until_all_ran_after(&nodes, &jobs, t3, "the server restarted");

    // 4. The server turns read-only for 5 s (what a node meets on a standby after a failover:
    // 25006 on every write): nothing runs, leaders step down, and all comes back after.
    set_read_only(&pg, true);
    let read_only = Utc::now();
    assert!(
        common::wait_until(Duration::from_secs(10), || nodes
            .iter()
            .flat_map(|n| n.events_named("lease_lost"))
            .any(|e| utc(e["ts"].as_str().unwrap_or_default()) > read_only)),
        "no leader stepped down on a read-only server"
    );
    let stepped_down = Utc::now();
    // A fault's length, not a wait for an event.
    std::thread::sleep(Duration::from_secs(3));
    let ran_read_only: Vec<_> = tick_runs(&nodes)
        .into_iter()
        .filter(|(_, fire, _)| utc(fire) > stepped_down + chrono::Duration::seconds(1))
        .collect();
    assert!(
        ran_read_only.is_empty(),
        "ran on a read-only store: {ran_read_only:?}"
    );
    let said = nodes
        .iter()
        .flat_map(|n| n.events())
        .filter_map(|e| e["msg"].as_str().map(String::from))
        .any(|m| m.contains("read-only") && m.contains("25006"));
    assert!(said, "no node said the store is read-only (25006)");
    set_read_only(&pg, false);
    let t4 = Utc::now();
    let back4 = until_all_ran_after(&nodes, &jobs, t4, "the server turned writable again");
    eprintln!(
        "every job ran again: {back1:?} after n1's connections were terminated, {back2:?} \
         after all were, {back3:?} after the server's restart, {back4:?} after it was \
         writable again"
    );

    for node in nodes.iter() {
        node.signal(libc::SIGTERM);
    }
    for node in nodes.iter_mut() {
        let status = node.wait_exit(Duration::from_secs(20)).expect("it stops");
        assert!(status.success(), "{} exited {status:?}", node.id);
    }

    let runs = tick_runs(&nodes);
    let mut seen = std::collections::BTreeMap::new();
    for (job, fire, node) in &runs {
        if let Some(first) = seen.insert((job.clone(), fire.clone()), node.clone()) {
            panic!("{job} at {fire} ran twice: on {first} and on {node}");
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = cronlease::store::postgres::PostgresStore::connect(
            &pg.url(),
            "cronlease",
            "cronlease",
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        use cronlease::store::Store;
        for job in jobs {
            let records = store.runs(job).await.unwrap();
            let open: Vec<_> = records.iter().filter(|r| r.outcome == "running").collect();
            assert!(open.is_empty(), "{job}: runs left running: {open:?}");
        }
        let slow = store.runs("slow").await.unwrap();
        let around: Vec<_> = slow
            .iter()
            .filter(|r| r.outcome != "ok")
            .map(|r| (r.fire_time, r.outcome.clone(), r.reason.clone()))
            .collect();
        eprintln!(
            "{} runs in all; slow: {} records, not ok: {around:?}",
            runs.len(),
            slow.len()
        );
    });
}

/// Three nodes through PgBouncer in transaction mode with two server connections for their
/// twelve: each statement may run on another server connection than the last. Every job runs
/// every fire time once, with no gap, no store call fails, and `status` answers through it.
#[test]
fn three_nodes_run_every_fire_time_once_behind_pgbouncer_in_transaction_mode() {
    let pg = PostgresServer::start();
    let bouncer = PgBouncer::start(&pg, 2);
    let dir = tempfile::tempdir().unwrap();
    let jobs = ["a", "b", "c", "d"];
    let mut body = format!(
        "[store]\nurl = \"{}\"\n\n\
         [election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n",
        bouncer.url()
    );
    for job in jobs {
        body.push_str(&format!(
            "\n[[job]]\nname = \"{job}\"\nschedule = \"* * * * * *\"\nsay = \"{job}\"\n"
        ));
    }
    let cfg = write_config(dir.path(), &body);
    let mut nodes: Vec<Node> = ["p1", "p2", "p3"]
        .iter()
        .map(|id| spawn(&cfg, id))
        .collect();
    let ran = |job: &str, nodes: &[Node]| {
        tick_runs(nodes)
            .into_iter()
            .filter(|(j, _, _)| j == job)
            .count()
    };
    assert!(
        common::wait_until(Duration::from_secs(40), || jobs
            .iter()
            .all(|j| ran(j, &nodes) >= 8)),
        "not every job ran 8 times: {:?}",
        tick_runs(&nodes)
    );
    let (code, stderr) = one_shot(&["status"], &cfg);
    assert_eq!(code, Some(0), "status through pgbouncer: {stderr}");
    for node in nodes.iter() {
        node.signal(libc::SIGTERM);
    }
    for node in nodes.iter_mut() {
        let status = node.wait_exit(Duration::from_secs(20)).expect("it stops");
        assert!(status.success(), "{} exited {status:?}", node.id);
    }
    let failed: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.raw_lines())
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(failed.is_empty(), "store calls failed: {failed:#?}");
    let runs = tick_runs(&nodes);
    for job in jobs {
        let mut fires: Vec<DateTime<Utc>> = runs
            .iter()
            .filter(|(j, _, _)| j == job)
            .map(|(_, f, _)| utc(f))
            .collect();
        fires.sort();
        let n = fires.len();
        fires.dedup();
        assert_eq!(fires.len(), n, "{job}: a fire time ran twice: {runs:?}");
        let span = (fires[n - 1] - fires[0]).num_seconds() as usize + 1;
        assert_eq!(span, n, "{job}: a gap among {fires:?}");
    }
}

/// Turn `pg` read-only (as a standby is) or writable again, for new transactions.
fn set_read_only(pg: &PostgresServer, on: bool) {
    let value = if on { "on" } else { "off" };
    pg.psql(&format!(
        "ALTER SYSTEM SET default_transaction_read_only = {value}"
    ));
    pg.psql("SELECT pg_reload_conf()");
}

/// Run records on `pg` (0 before a node made the tables there).
fn runs_on(pg: &PostgresServer) -> usize {
    pg.try_psql("SELECT count(*) FROM cronlease.runs")
        .map(|n| n.trim().parse().unwrap_or(0))
        .unwrap_or(0)
}

/// A url of two hosts with `target_session_attrs=read-write`: the node writes to the one that
/// is not read-only; when that one turns read-only (a primary demoted in a failover), its
/// calls fail with 25006, are retried on new connections, and those go to the other host.
#[test]
fn a_primary_turned_read_only_sends_the_node_to_the_writable_host() {
    let first = PostgresServer::start();
    let second = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    // The second host has the schema, as a standby has its primary's (its data is not this
    // test's point: no replication here).
    let standby = write_config(
        dir.path(),
        &format!("[store]\nurl = \"{}\"\n\n{JOB}", second.url()),
    );
    assert_eq!(one_shot(&["status"], &standby).0, Some(0));
    set_read_only(&second, true);
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        first.port, second.port
    );
    let cfg = write_config(
        dir.path(),
        &format!(
            "[store]\nurl = \"{url}\"\n\n\
             [election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n{JOB}"
        ),
    );
    let mut node = spawn(&cfg, "mover");
    assert!(
        common::wait_until(Duration::from_secs(30), || runs_on(&first) >= 2),
        "no runs recorded on the writable first host: {}",
        node.output_text()
    );
    // The failover: the first host turns read-only, the second writable.
    set_read_only(&first, true);
    set_read_only(&second, false);
    let moved = Utc::now();
    assert!(
        common::wait_until(Duration::from_secs(30), || runs_on(&second) >= 2),
        "the node never wrote to the second host: {}",
        node.output_text()
    );
    let said = node
        .events()
        .iter()
        .filter(|e| utc(e["ts"].as_str().unwrap_or_default()) > moved)
        .filter_map(|e| e["msg"].as_str().map(String::from))
        .any(|m| m.contains("25006"));
    assert!(
        said,
        "the read-only host was not named: {}",
        node.output_text()
    );
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(20)).expect("it stops");
    assert!(status.success(), "{status:?}");
}

/// A server that refuses plain connections, with a certificate for `localhost` signed by a CA
/// of the test's own: each `sslmode` does what libpq's does. `disable` is refused by the
/// server; `require` encrypts without checking; `verify-ca` checks the CA, not the name;
/// `verify-full` checks both; a wrong CA or a wrong name stops the node at once (exit 1) with
/// what to check; a missing `sslrootcert` is refused by `check` (exit 2).
#[test]
fn each_sslmode_does_what_libpq_does() {
    let pg = PostgresServer::start();
    let ca = pg.require_tls();
    let other_server = PostgresServer::start();
    let other = other_server.require_tls();
    let dir = tempfile::tempdir().unwrap();
    let port = pg.port;
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");
    let ca_q = |mode: &str, ca: &Path| format!("sslmode={mode}&sslrootcert={}", ca.display());
    let cases = [
        (
            "disable",
            url("127.0.0.1", "sslmode=disable"),
            Some(1),
            "set sslmode=require",
        ),
        ("prefer", url("127.0.0.1", "sslmode=prefer"), Some(0), ""),
        ("require", url("127.0.0.1", "sslmode=require"), Some(0), ""),
        (
            "verify-ca by ip",
            url("127.0.0.1", &ca_q("verify-ca", &ca)),
            Some(0),
            "",
        ),
        (
            "verify-full by name",
            url("localhost", &ca_q("verify-full", &ca)),
            Some(0),
            "",
        ),
        (
            "verify-full by ip",
            url("127.0.0.1", &ca_q("verify-full", &ca)),
            Some(1),
            "names the host in the url",
        ),
        (
            "verify-full, another CA",
            url("localhost", &ca_q("verify-full", &other)),
            Some(1),
            "check sslrootcert",
        ),
        (
            "a missing sslrootcert",
            url(
                "localhost",
                "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            ),
            Some(2),
            "/nonexistent/ca.pem",
        ),
    ];
    for (name, url, code, says) in cases {
        let cfg = config_for(dir.path(), &url, "");
        let (got, stderr) = one_shot(&["status"], &cfg);
        eprintln!("--- {name}: exit {got:?}\n{stderr}");
        assert_eq!(got, code, "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: no {says:?} in {stderr}");
        if code == Some(1) {
            let (run, stderr) = one_shot(&["run", "--node-id", "tls"], &cfg);
            assert_eq!(run, Some(1), "{name}: run did not stop at once: {stderr}");
        }
    }
    // The node's connections are encrypted (and only encrypted ones are let in).
    let cfg = config_for(
        dir.path(),
        &url(
            "localhost",
            &format!("{}&application_name=tls-node", ca_q("verify-full", &ca)),
        ),
        "",
    );
    let mut node = spawn(&cfg, "tls-node");
    node.wait_for(Duration::from_secs(20), |e| e["event"] == "tick_run")
        .unwrap_or_else(|| panic!("no tick over TLS: {}", node.output_text()));
    let ssl = pg.psql(
        "SELECT DISTINCT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'tls-node'",
    );
    assert_eq!(ssl.trim(), "t", "the node's connections: {ssl}");
    node.signal(libc::SIGTERM);
    assert!(node.wait_exit(Duration::from_secs(20)).unwrap().success());
}

/// Sessions of `app` on `pg` idle inside a transaction that has locked rows (an xid: `FOR
/// UPDATE` takes one). One caught between its `BEGIN` and its first statement holds nothing,
/// and its transaction is not yet bounded (the bound is that first statement).
fn locking_sessions(pg: &PostgresServer, app: &str) -> usize {
    pg.psql(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' \
         AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
    ))
    .trim()
    .parse()
    .unwrap_or(0)
}

/// A node frozen (SIGSTOP) inside an acquisition's transaction holds row locks of the jobs
/// it was taking. The server ends that transaction after the store timeout (the transaction
/// bounds itself with `SET LOCAL idle_in_transaction_session_timeout`), so another node takes
/// every job within about a lease. Before, the other node's acquisitions of those rows waited
/// behind the locks for as long as the node stayed frozen.
#[test]
fn a_node_frozen_inside_an_acquisition_does_not_block_the_others() {
    let pg = PostgresServer::start();
    let dir = tempfile::tempdir().unwrap();
    let n = 3000;
    let mut jobs = String::new();
    for i in 0..n {
        jobs.push_str(&format!(
            "\n[[job]]\nname = \"f{i:04}\"\nschedule = \"0 0 1 1 *\"\nsay = \"x\"\n"
        ));
    }
    let cfg_for = |app: &str| {
        let sub = dir.path().join(app);
        std::fs::create_dir_all(&sub).unwrap();
        write_config(
            &sub,
            &format!(
                "[store]\nurl = \"{}?application_name={app}\"\n\n\
                 [election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n{jobs}",
                pg.url()
            ),
        )
    };
    let frozen_cfg = cfg_for("frozen-a");
    // Catch the node between two statements of an acquisition: watch the server for its
    // session idle in a transaction, stop the node, and check that it is still so. A node
    // that took every lease before being caught is restarted: a new session takes them all
    // again.
    let mut caught = None;
    for _ in 0..10 {
        let mut a = spawn(&frozen_cfg, "a");
        let found = common::wait_until(Duration::from_secs(20), || {
            if a.events_named("lease_acquired").len() >= n {
                return true;
            }
            if locking_sessions(&pg, "frozen-a") == 0 {
                return false;
            }
            a.stop();
            if locking_sessions(&pg, "frozen-a") > 0 {
                return true;
            }
            a.cont();
            false
        });
        assert!(found, "node a neither took every lease nor was caught");
        if a.events_named("lease_acquired").len() < n && locking_sessions(&pg, "frozen-a") > 0 {
            caught = Some(a);
            break;
        }
        a.kill9();
        let _ = a.wait_exit(Duration::from_secs(5));
    }
    let mut a = caught.expect("never caught node a inside an acquisition in 10 starts");
    let frozen_at = std::time::Instant::now();
    let b = spawn(&cfg_for("b"), "b");
    let mut held = common::Holdings::new(1);
    let all = common::wait_until(Duration::from_secs(40), || {
        held.update([&b]);
        held.count(0) == n
    });
    assert!(
        all,
        "b leads {} of {n} jobs {:?} after a froze inside an acquisition; a's sessions idle in \
         a transaction: {}",
        held.count(0),
        frozen_at.elapsed(),
        locking_sessions(&pg, "frozen-a")
    );
    eprintln!(
        "b led all {n} jobs {:?} after a froze inside an acquisition",
        frozen_at.elapsed()
    );
    // b may have led every job before the server's timeout fired (a was caught holding none
    // of the rows b took): the server ends it within the timeout all the same.
    assert!(
        common::wait_until(Duration::from_secs(15), || locking_sessions(
            &pg, "frozen-a"
        ) == 0
            && pg.log_text().contains("idle-in-transaction timeout")),
        "the server did not end the frozen transaction: {} session(s) still idle in one, \
         last statements: {}",
        locking_sessions(&pg, "frozen-a"),
        pg.psql(
            "SELECT string_agg(query, ' | ') FROM pg_stat_activity WHERE application_name = \
             'frozen-a' AND state = 'idle in transaction' AND backend_xid IS NOT NULL"
        )
    );
    a.cont();
    let mut b = b;
    for node in [&mut a, &mut b] {
        node.signal(libc::SIGTERM);
        assert!(node.wait_exit(Duration::from_secs(20)).unwrap().success());
    }
}
