//! The PostgreSQL store against a real server of the test's own: what `cronlease` says for bad
//! input (an unreachable server, wrong credentials, a database that does not exist, a schema it
//! may not use), and a drill of faults of its own (a node's connections terminated with
//! `pg_terminate_backend`, every connection terminated, a crash and restart of the server
//! mid-run): no fire time is run twice and every run is closed.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

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
            vec!["password authentication failed", "app", "check the user and password"],
        ),
        (
            "unknown user",
            format!("postgres://nobody@127.0.0.1:{port}/postgres"),
            "",
            vec!["role \"nobody\" does not exist", "check the user and password"],
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
            vec!["permission denied for schema theirs", "GRANT USAGE ON SCHEMA theirs"],
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
            assert!(!stderr.contains("wrong@"), "{name}: the password shown: {stderr}");
            assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{name}: {stderr}");
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
    let mut node = Node::spawn_args(
        "waiting",
        &[
            "run".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--node-id".into(),
            "waiting".into(),
            "--log-format".into(),
            "json".into(),
        ],
        &[],
    );
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
