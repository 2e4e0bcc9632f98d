//! The HTTP write endpoints (pause, resume, trigger) on a real node against a real emulator:
//! read-only (403) without a token; 401 without the right bearer token; with it, each acts
//! through the store like its CLI counterpart and shows up in status and history with the
//! caller; a bad token file (short, readable by others, an unknown role) stops the node from
//! starting (exit 2). Roles, TLS and the rest of the guard: tests/http_security.rs.
mod common;

use std::time::Duration;

use common::{wait_until, write_config, Emulator, Node};

const CONFIG: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nshell = \"echo ran by request, token ${CRONLEASE_HTTP_TOKEN:-unset}\"\n\n\
    [[job]]\nname = \"off\"\nschedule = \"0 0 3 * * *\"\nsay = \"x\"\nenabled = false\n";

const TOKEN: &str = "test-token-0123456789";

/// `POST path` with an optional bearer token and body: (status, body).
fn post(port: u16, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(10))
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("the node answers");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    })
}

fn ready(port: u16) -> bool {
    common::http(port, "GET", "/readyz", Duration::from_secs(2)).is_ok_and(|(s, _)| s == 200)
}

#[test]
fn without_a_token_the_write_endpoints_answer_403() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    assert!(wait_until(Duration::from_secs(20), || ready(port)));
    for action in ["pause", "resume", "trigger"] {
        let (status, body) = post(
            port,
            &format!("/api/jobs/nightly/{action}"),
            Some(TOKEN),
            "",
        );
        assert_eq!(status, 403, "{action}: {body}");
        assert!(body.contains("read-only"), "{body}");
    }
    // Nothing changed in the store.
    let out = common::cli(&emu, &cfg, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["jobs"][0]["paused"].is_null(), "{v}");
}

#[test]
fn with_a_token_pause_resume_and_trigger_act_like_the_cli() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    set_mode(&token_file, 0o600);
    let port = common::free_port();
    let mut env = emu.env();
    env.push((
        "CRONLEASE_HTTP_TOKEN".into(),
        "not-this-one-but-the-file".into(),
    ));
    let node = Node::spawn_args(
        "a",
        &[
            "run".into(),
            "--config".into(),
            cfg.display().to_string(),
            "--node-id".into(),
            "a".into(),
            "--log-format".into(),
            "json".into(),
            "--http".into(),
            format!("127.0.0.1:{port}"),
            "--http-token-file".into(),
            token_file.display().to_string(),
        ],
        &env,
    );
    assert!(wait_until(Duration::from_secs(20), || ready(port)));

    // No token, a wrong one, the environment's (the file wins): 401, nothing done.
    for token in [
        None,
        Some("wrong-token-0123456789"),
        Some("not-this-one-but-the-file"),
    ] {
        let (status, body) = post(port, "/api/jobs/nightly/pause", token, "");
        assert_eq!(status, 401, "{token:?}: {body}");
    }
    // Unknown job, bad body, disabled job.
    assert_eq!(post(port, "/api/jobs/nosuch/pause", Some(TOKEN), "").0, 404);
    assert_eq!(
        post(
            port,
            "/api/jobs/nightly/pause",
            Some(TOKEN),
            "{\"nope\": 1}"
        )
        .0,
        400
    );
    assert_eq!(post(port, "/api/jobs/off/trigger", Some(TOKEN), "").0, 409);

    // Pause with a note: in the store, by the caller.
    let (status, body) = post(
        port,
        "/api/jobs/nightly/pause",
        Some(TOKEN),
        "{\"note\": \"db migration\"}",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"result\":\"paused\""), "{body}");
    let status_json = || -> serde_json::Value {
        serde_json::from_str(&common::cli(&emu, &cfg, &["status", "--json"]).stdout).unwrap()
    };
    let v = status_json();
    assert_eq!(v["jobs"][0]["paused"]["by"], "http@127.0.0.1", "{v}");
    assert_eq!(v["jobs"][0]["paused"]["note"], "db migration", "{v}");
    let (_, body) = post(port, "/api/jobs/nightly/pause", Some(TOKEN), "");
    assert!(body.contains("already_paused"), "{body}");
    let (status, body) = post(port, "/api/jobs/nightly/resume", Some(TOKEN), "");
    assert_eq!(
        (status, body.contains("\"resumed\"")),
        (200, true),
        "{body}"
    );
    assert!(status_json()["jobs"][0]["paused"].is_null());

    // Trigger: 202, and the run shows up in the job's history as requested by the caller.
    let (status, body) = post(port, "/api/jobs/nightly/trigger", Some(TOKEN), "");
    assert_eq!(status, 202, "{body}");
    let mut logs = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            logs = common::cli(&emu, &cfg, &["logs", "nightly"]).stdout;
            logs.contains(": ok") && logs.contains("manual by http@127.0.0.1")
        }),
        "{logs}"
    );
    // The node's token (here from its environment) is not handed to its jobs.
    assert!(logs.contains("ran by request, token unset"), "{logs}");
    // Every action is logged with the caller's address.
    let actions = node.events_named("http_action");
    assert_eq!(actions.len(), 4, "{actions:?}");
    assert!(actions
        .iter()
        .all(|e| e["caller"].as_str().unwrap().starts_with("127.0.0.1:")));
}

#[test]
fn a_bad_token_file_stops_the_node_from_starting() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let token_file = dir.path().join("token");
    // Too short; other users may read it; a role that is not one.
    for (text, mode, says) in [
        ("short\n", 0o600, "at least 16"),
        (
            "s3cret-s3cret-s3cret\n",
            0o644,
            "other users can read or write it (mode 0644)",
        ),
        (
            "admin s3cret-s3cret-s3cret\n",
            0o600,
            "\"admin\" is not a role",
        ),
    ] {
        std::fs::write(&token_file, text).unwrap();
        set_mode(&token_file, mode);
        let mut node = Node::spawn_args(
            "a",
            &[
                "run".into(),
                "--config".into(),
                cfg.display().to_string(),
                "--http".into(),
                "127.0.0.1:0".into(),
                "--http-token-file".into(),
                token_file.display().to_string(),
            ],
            &emu.env(),
        );
        let status = node.wait_exit(Duration::from_secs(20)).expect("it exits");
        assert_eq!(status.code(), Some(2));
        assert!(
            node.stderr_text().contains(says),
            "{says}: {}",
            node.stderr_text()
        );
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
