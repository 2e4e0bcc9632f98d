//! The HTTP interface on a network, through the real binary over HTTPS with certificates made
//! here (`openssl`): every endpoint with no token, a wrong one, a read and an operate token;
//! plain HTTP to the TLS port; certificate and token rotation on SIGHUP and on a file change;
//! the output relay and `logs --follow` across two TLS nodes (one published by name with
//! `--http-advertise`, its certificate holding only that name); the refusal to serve a network
//! address without a token; a rebinding `Host` on loopback; the rate limit on wrong tokens.
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::test_ca::TestCa;
use common::{wait_until, write_config, Emulator, Node};

const READ: &str = "read-token-0123456789";
const OPERATE: &str = "operate-token-0123456789";
const WRONG: &str = "wrong-token-0123456789";

const CONFIG: &str = "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
    [[job]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nsay = \"nightly ran\"\n\n\
    [[job]]\nname = \"slow\"\nschedule = \"0 0 3 * * *\"\n\
    shell = \"for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 1; done\"\n";

/// A token file with mode 600.
fn token_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// An HTTPS client that trusts only `ca`, and a runtime to drive it from a test.
struct Https {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl Https {
    fn new(ca: &Path, port: u16) -> Https {
        Https::named(ca, "127.0.0.1", port)
    }

    /// A client of `https://{host}:{port}`.
    fn named(ca: &Path, host: &str, port: u16) -> Https {
        let pem = std::fs::read(ca).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap();
        Https {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client,
            base: format!("https://{host}:{port}"),
        }
    }

    fn send(&self, method: &str, path: &str, token: Option<&str>) -> Result<Answer, String> {
        self.rt.block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = self.client.request(method, format!("{}{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.map_err(|e| format!("{e:?}"))?;
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            let body = r.text().await.unwrap_or_default();
            Ok(Answer {
                status,
                headers,
                body,
            })
        })
    }

    fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The first `bytes` of a streamed body (or what came within `wait`).
    fn stream_head(&self, path: &str, token: Option<&str>, want: &str, wait: Duration) -> String {
        self.rt.block_on(async {
            let mut req = self.client.get(format!("{}{path}", self.base));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let Ok(mut r) = req.timeout(wait).send().await else {
                return String::new();
            };
            let mut text = format!("{} ", r.status().as_u16());
            let deadline = tokio::time::Instant::now() + wait;
            while !text.contains(want) {
                match tokio::time::timeout_at(deadline, r.chunk()).await {
                    Ok(Ok(Some(b))) => text.push_str(&String::from_utf8_lossy(&b)),
                    _ => break,
                }
            }
            text
        })
    }
}

/// A node serving HTTPS on a free port with `cert`/`key` and the token file: (node, port).
fn tls_node(
    emu: &Emulator,
    cfg: &Path,
    id: &str,
    (cert, key): &(PathBuf, PathBuf),
    tokens: &Path,
    more: &[&str],
) -> (Node, u16) {
    let mut args = vec![
        "--http-tls-cert",
        cert.to_str().unwrap(),
        "--http-tls-key",
        key.to_str().unwrap(),
        "--http-token-file",
        tokens.to_str().unwrap(),
    ];
    args.extend_from_slice(more);
    Node::spawn_with_http_args(emu, cfg, id, &[], &args)
}

/// Wait until `path` answers 200 over plain HTTP on `port`.
fn wait_answering(port: u16, path: &str, node: &Node) {
    assert!(
        wait_until(Duration::from_secs(20), || common::http(
            port,
            "GET",
            path,
            Duration::from_secs(2)
        )
        .is_ok_and(|(s, _)| s == 200)),
        "{path} never answered: {}",
        node.stderr_text()
    );
}

fn wait_ready(https: &Https, node: &Node) {
    assert!(
        wait_until(Duration::from_secs(30), || https
            .send("GET", "/readyz", None)
            .is_ok_and(|a| a.status == 200)),
        "never ready over HTTPS: {}",
        node.stderr_text()
    );
}

#[test]
fn every_endpoint_answers_each_token_as_its_role_over_https() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let ca = TestCa::new(dir.path(), "one");
    let pair = ca.issue("node", "IP:127.0.0.1,DNS:localhost");
    let tokens = token_file(
        dir.path(),
        "tokens",
        &format!("# ops\nread {READ}\noperate {OPERATE}\n"),
    );
    let (node, port) = tls_node(&emu, &cfg, "a", &pair, &tokens, &[]);
    let https = Https::new(&ca.cert(), port);
    wait_ready(&https, &node);

    // Public: health, readiness, the page and its assets, whatever the token.
    for path in [
        "/healthz",
        "/readyz",
        "/.well-known/live",
        "/.well-known/ready",
        "/",
        "/dashboard.js",
        "/dashboard.css",
    ] {
        for token in [None, Some(WRONG), Some(READ), Some(OPERATE)] {
            let a = https.get(path, token);
            assert_eq!(a.status, 200, "{path} {token:?}: {}", a.body);
        }
    }
    let page = https.get("/", None);
    assert!(
        page.header("content-security-policy")
            .contains("script-src 'self'"),
        "{:?}",
        page.headers
    );
    assert_eq!(page.header("x-frame-options"), "DENY");
    assert_eq!(page.header("x-content-type-options"), "nosniff");

    // Reads: 401 without a right token, served to both roles (a run that never was: 404 from
    // the endpoint itself, past the guard).
    let run_key = "1800000000";
    let reads = [
        ("/status".to_string(), 200),
        ("/metrics".to_string(), 200),
        ("/api/cluster".to_string(), 200),
        ("/api/jobs/nightly".to_string(), 200),
        (format!("/api/runs/nightly/{run_key}"), 404),
        (format!("/api/runs/nightly/{run_key}/live"), 404),
        (format!("/runs/nightly/{run_key}/output"), 404),
    ];
    for (path, served) in &reads {
        for token in [None, Some(WRONG)] {
            let a = https.get(path, token);
            assert_eq!(a.status, 401, "{path} {token:?}: {}", a.body);
            assert!(
                a.header("www-authenticate").starts_with("Bearer"),
                "{path}: {:?}",
                a.headers
            );
        }
        for (token, actions) in [(READ, "none"), (OPERATE, "allowed")] {
            let a = https.get(path, Some(token));
            assert_eq!(a.status, *served, "{path} with {token}: {}", a.body);
            assert_eq!(a.header("x-cronlease-actions"), actions, "{path}");
        }
    }
    // Other methods and spellings of a path are not a way round: 401 before anything else.
    for (method, path) in [
        ("HEAD", "/status"),
        ("OPTIONS", "/status"),
        ("GET", "/status/"),
        ("GET", "//status"),
        ("GET", "/%73tatus"),
        ("GET", "/nosuch"),
        ("PUT", "/api/jobs/nightly/pause"),
    ] {
        let a = https.send(method, path, None).unwrap();
        assert_eq!(a.status, 401, "{method} {path}: {}", a.body);
    }
    let metrics = https.get("/metrics", Some(READ)).body;
    assert!(
        metrics.contains("cronlease_http_auth_failures_total{reason=\"missing\"} 14"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cronlease_http_auth_failures_total{reason=\"wrong\"} 7"),
        "{metrics}"
    );

    // Writes: 401 without a right token, 403 for a read token, done for an operate token.
    for (action, done) in [("pause", 200), ("resume", 200), ("trigger", 202)] {
        let path = format!("/api/jobs/nightly/{action}");
        assert_eq!(
            https.send("POST", &path, None).unwrap().status,
            401,
            "{path}"
        );
        let read = https.send("POST", &path, Some(READ)).unwrap();
        assert_eq!(read.status, 403, "{path}: {}", read.body);
        assert!(read.body.contains("operate token"), "{}", read.body);
        let ok = https.send("POST", &path, Some(OPERATE)).unwrap();
        assert_eq!(ok.status, done, "{path}: {}", ok.body);
    }

    // Plain HTTP to the TLS port (open: it accepts the connection) gets no page.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the port is open");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain HTTP was answered: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    // Nor does a client that does not trust the certificate.
    let untrusting = Https::new(&TestCa::new(dir.path(), "other").cert(), port);
    let refused = untrusting
        .send("GET", "/healthz", None)
        .err()
        .unwrap_or_default();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // The tokens never reach the logs.
    let logs = format!("{}{}", node.output_text(), node.stderr_text());
    for t in [READ, OPERATE, WRONG] {
        assert!(!logs.contains(t), "{t} in the logs");
    }
}

#[test]
fn a_rotated_certificate_and_token_file_apply_after_sighup_and_a_bad_one_is_refused() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let (old_ca, new_ca) = (
        TestCa::new(dir.path(), "old"),
        TestCa::new(dir.path(), "new"),
    );
    let served = (dir.path().join("served.crt"), dir.path().join("served.key"));
    let install = |(cert, key): &(PathBuf, PathBuf)| {
        std::fs::copy(cert, &served.0).unwrap();
        std::fs::copy(key, &served.1).unwrap();
    };
    install(&old_ca.issue("first", "IP:127.0.0.1"));
    let tokens = token_file(dir.path(), "tokens", &format!("read {READ}\n"));
    let (node, port) = tls_node(&emu, &cfg, "a", &served, &tokens, &[]);
    let (old, new) = (
        Https::new(&old_ca.cert(), port),
        Https::new(&new_ca.cert(), port),
    );
    wait_ready(&old, &node);
    assert_eq!(old.get("/status", Some(READ)).status, 200);
    assert!(new.send("GET", "/healthz", None).is_err());

    // A new pair from another CA and a new token, then SIGHUP.
    install(&new_ca.issue("second", "IP:127.0.0.1"));
    token_file(dir.path(), "tokens", &format!("read {OPERATE}\n"));
    node.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || new
            .send("GET", "/status", Some(OPERATE))
            .is_ok_and(|a| a.status == 200)),
        "the new certificate and token are not served: {}",
        node.stderr_text()
    );
    assert_eq!(new.get("/status", Some(READ)).status, 401, "the old token");
    // A new connection gets the new certificate (open ones keep theirs: a fresh client).
    let old = Https::new(&old_ca.cert(), port);
    assert!(
        old.send("GET", "/healthz", None).is_err(),
        "the old certificate"
    );

    // A key that is not the certificate's, and a token file others can read: refused with
    // the reason, the ones in force stay.
    let other = new_ca.issue("third", "IP:127.0.0.1");
    std::fs::copy(&other.1, &served.1).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    node.signal(libc::SIGHUP);
    assert!(node
        .wait_for(Duration::from_secs(10), |e| e["event"]
            == "http_tokens_rejected")
        .is_some());
    // A line whose token comes first: refused, and the message does not repeat the token.
    token_file(
        dir.path(),
        "tokens",
        &format!("read {OPERATE}\n{READ} read\n"),
    );
    node.signal(libc::SIGHUP);
    let rejected = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "http_tokens_rejected" && e["msg"].as_str().unwrap_or("").contains(":2:")
        })
        .expect("the reversed line is refused");
    assert!(!node.output_text().contains(READ), "{rejected}");
    let tls = node
        .wait_for(Duration::from_secs(10), |e| {
            e["event"] == "http_tls_rejected"
        })
        .expect("the bad pair is refused");
    assert!(
        tls["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("--http-tls-key"),
        "{tls}"
    );
    assert_eq!(new.get("/status", Some(OPERATE)).status, 200);

    // A token file changed on disk, without a signal: applied within a few checks.
    // (Waited for in the log: polling with a token not yet valid would be rate-limited.)
    token_file(dir.path(), "tokens", &format!("operate {WRONG}\n"));
    assert!(node
        .wait_for(Duration::from_secs(10), |e| e["event"]
            == "http_tokens_reloaded"
            && e["trigger"] == "file_changed")
        .is_some());
    let paused = new
        .send("POST", "/api/jobs/nightly/pause", Some(WRONG))
        .unwrap();
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(new.get("/status", Some(OPERATE)).status, 401);
}

#[test]
fn the_relay_and_logs_follow_read_a_run_across_two_tls_nodes() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let ca = TestCa::new(dir.path(), "cluster");
    let tokens = token_file(
        dir.path(),
        "tokens",
        &format!("read {READ}\noperate {OPERATE}\n"),
    );
    // b first: it leads every job; a follows and relays. b's certificate names only
    // `localhost`, which b publishes (--http-advertise): a and logs --follow check that name.
    let port_b = common::free_port();
    let (cert_b, key_b) = ca.issue("b", "DNS:localhost");
    let advertised = format!("localhost:{port_b}");
    let b = Node::spawn_with_http_on(
        &emu,
        &cfg,
        "b",
        &[],
        port_b,
        &[
            "--http-tls-cert",
            cert_b.to_str().unwrap(),
            "--http-tls-key",
            key_b.to_str().unwrap(),
            "--http-token-file",
            tokens.to_str().unwrap(),
            "--http-advertise",
            &advertised,
        ],
    );
    let at_b = Https::named(&ca.cert(), "localhost", port_b);
    wait_ready(&at_b, &b);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let s: serde_json::Value =
                serde_json::from_str(&at_b.get("/status", Some(READ)).body).unwrap_or_default();
            s["jobs"]
                .as_array()
                .is_some_and(|jobs| !jobs.is_empty() && jobs.iter().all(|j| j["role"] == "leader"))
        }),
        "b never led"
    );
    let status = common::cli(&emu, &cfg, &["status", "--json"]).stdout;
    assert!(
        status.contains(&format!("\"https://{advertised}\"")),
        "b's record names its interface as published: {status}"
    );
    let ca_path = ca.cert();
    let (a, port_a) = tls_node(
        &emu,
        &cfg,
        "a",
        &ca.issue("a", "IP:127.0.0.1"),
        &tokens,
        &["--http-tls-ca", ca_path.to_str().unwrap()],
    );
    let at_a = Https::new(&ca.cert(), port_a);
    wait_ready(&at_a, &a);

    let out = common::cli(&emu, &cfg, &["trigger", "slow"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let mut fire = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let report: serde_json::Value =
                serde_json::from_str(&at_a.get("/api/cluster", Some(READ)).body)
                    .unwrap_or_default();
            let runs = report["jobs"]
                .as_array()
                .and_then(|jobs| jobs.iter().find(|j| j["name"] == "slow"))
                .map(|j| j["runs"][0].clone())
                .unwrap_or_default();
            if runs["outcome"] == "running" && runs["node"] == "b" {
                fire = runs["fire_time"].as_str().unwrap().to_string();
                true
            } else {
                false
            }
        }),
        "slow never ran on b"
    );

    // Node a relays b's stream over HTTPS, with the caller's token; none: refused at a.
    let live = format!("/api/runs/slow/{fire}/live");
    let relayed = at_a.stream_head(&live, Some(READ), "line 2", Duration::from_secs(15));
    assert!(
        relayed.starts_with("200 ") && relayed.contains("line 1\nline 2"),
        "{relayed}\n{}",
        a.stderr_text()
    );
    assert_eq!(at_a.get(&live, None).status, 401);

    // logs --follow over HTTPS: with the CA and a token, the lines and the outcome.
    let follow = |extra: &[&str]| {
        let mut args = vec!["logs", "slow", "--follow"];
        args.extend_from_slice(extra);
        common::cli(&emu, &cfg, &args)
    };
    let tokens_arg = tokens.to_str().unwrap();
    let out = follow(&[
        "--http-token-file",
        tokens_arg,
        "--http-tls-ca",
        ca_path.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("line 8\n") && out.stdout.contains(": ok, exit code 0, node b"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stderr.contains("answered"), "{}", out.stderr);
}

#[test]
fn logs_follow_without_the_ca_or_the_token_says_why_and_shows_the_store() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let ca = TestCa::new(dir.path(), "c");
    let tokens = token_file(dir.path(), "tokens", &format!("operate {OPERATE}\n"));
    let (b, port) = tls_node(
        &emu,
        &cfg,
        "b",
        &ca.issue("b", "IP:127.0.0.1"),
        &tokens,
        &[],
    );
    let https = Https::new(&ca.cert(), port);
    wait_ready(&https, &b);
    let started = |emu: &Emulator| {
        let out = common::cli(emu, &cfg, &["trigger", "slow"]);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert!(wait_until(Duration::from_secs(20), || common::cli(
            emu,
            &cfg,
            &["logs", "slow"]
        )
        .stdout
        .contains(": running on b")));
    };
    started(&emu);
    // No CA: the certificate is named; no token: 401 and how to give one. Either way the
    // run's outcome still comes from the store.
    let out = common::cli(&emu, &cfg, &["logs", "slow", "--follow"]);
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains(": ok, exit code 0, node b"),
        "{}",
        out.stdout
    );
    started(&emu);
    let ca_path = ca.cert();
    let out = common::cli(
        &emu,
        &cfg,
        &[
            "logs",
            "slow",
            "--follow",
            "--http-tls-ca",
            ca_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.stderr.contains("401") && out.stderr.contains("--http-token-file"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_network_address_without_a_token_refuses_to_start_unless_reads_are_public_on_purpose() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let run = |extra: &[&str]| {
        let port = common::free_port();
        let mut args: Vec<String> = ["run", "--config", cfg.to_str().unwrap(), "--http"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("0.0.0.0:{port}"));
        args.extend(extra.iter().map(|s| s.to_string()));
        (Node::spawn_args("n", &args, &emu.env()), port)
    };
    // Exit 2, the stderr saying each of `says`.
    let refused = |extra: &[&str], says: &[&str]| {
        let (mut node, _) = run(extra);
        let status = node.wait_exit(Duration::from_secs(20)).expect("it exits");
        assert_eq!(status.code(), Some(2), "{extra:?}");
        let err = node.stderr_text();
        assert!(says.iter().all(|s| err.contains(s)), "{extra:?}: {err}");
    };
    refused(&[], &["--http-token-file", "--http-public-read"]);

    // An advertised address that is not HOST:PORT: exit 2, named.
    refused(
        &[
            "--http-public-read",
            "--http-advertise",
            "https://node1:9100",
        ],
        &["expected HOST:PORT"],
    );

    // A certificate without its key, or a key that is not PEM: exit 2, named.
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    let junk = junk.to_str().unwrap();
    refused(&["--http-public-read", "--http-tls-cert", junk], &[]);
    refused(
        &[
            "--http-public-read",
            "--http-tls-cert",
            junk,
            "--http-tls-key",
            junk,
        ],
        &["no PEM certificate"],
    );

    // An encrypted key: exit 2, saying so.
    let ca = TestCa::new(dir.path(), "n");
    let (cert, key) = ca.issue("n", "IP:127.0.0.1");
    let encrypted = dir.path().join("encrypted.key");
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:secret", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    refused(
        &[
            "--http-public-read",
            "--http-tls-cert",
            cert.to_str().unwrap(),
            "--http-tls-key",
            encrypted.to_str().unwrap(),
        ],
        &["it is encrypted"],
    );

    // On purpose: reads open, writes refused; a wrong token is still refused (and counted).
    let tokens = token_file(dir.path(), "tokens", &format!("operate {OPERATE}\n"));
    let (with_tokens, tport) = run(&[
        "--http-public-read",
        "--http-token-file",
        tokens.to_str().unwrap(),
    ]);
    wait_answering(tport, "/status", &with_tokens);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let with = |token: &str| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{tport}/status"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let actions = r.headers().get("x-cronlease-actions").cloned();
            (r.status().as_u16(), actions)
        })
    };
    assert_eq!(with(WRONG).0, 401);
    let (status, actions) = with(OPERATE);
    assert_eq!(
        (status, actions.unwrap().to_str().unwrap()),
        (200, "allowed")
    );
    let open_read =
        common::http_with_head(tport, "GET", "/status", Duration::from_secs(5)).unwrap();
    assert!(
        open_read.1.contains("x-cronlease-actions: login"),
        "{}",
        open_read.1
    );
    let (open, port) = run(&["--http-public-read"]);
    wait_answering(port, "/status", &open);
    let (status, body) = common::http(
        port,
        "POST",
        "/api/jobs/nightly/pause",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 403, "{body}");
}

/// `GET path` on loopback with `Host: host`: the status.
fn get_with_host(port: u16, path: &str, host: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_loopback_node_serves_only_its_own_names_and_slows_wrong_tokens() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let tokens = token_file(dir.path(), "tokens", &format!("read {READ}\n"));
    let (node, port) = Node::spawn_with_http_args(
        &emu,
        &cfg,
        "a",
        &[],
        &[
            "--http-allowed-host",
            "cron.internal",
            "--http-token-file",
            tokens.to_str().unwrap(),
            "--http-public-metrics",
        ],
    );
    wait_answering(port, "/readyz", &node);
    // DNS rebinding: a page of another site whose name resolves to 127.0.0.1.
    assert_eq!(
        get_with_host(port, "/healthz", &format!("evil.example:{port}")),
        403
    );
    assert_eq!(
        get_with_host(port, "/metrics", &format!("localhost:{port}")),
        200
    );
    assert_eq!(
        get_with_host(port, "/metrics", &format!("cron.internal:{port}")),
        200
    );
    assert_eq!(get_with_host(port, "/metrics", "[::1]"), 200);

    // Ten wrong tokens a minute, then 429 with Retry-After, even for the right token.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |token: &str| {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(format!("http://127.0.0.1:{port}/status"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            (r.status().as_u16(), retry)
        })
    };
    for i in 0..10 {
        assert_eq!(get(WRONG).0, 401, "wrong token {i}");
    }
    let (status, retry) = get(WRONG);
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    assert_eq!(get(READ).0, 429, "the right token waits too");
    let metrics = common::http(port, "GET", "/metrics", Duration::from_secs(5))
        .unwrap()
        .1;
    assert!(
        metrics.contains("cronlease_http_auth_failures_total{reason=\"wrong\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cronlease_http_auth_failures_total{reason=\"limited\"} 2"),
        "{metrics}"
    );
    // Logged once for the address (and once when it was limited), never with the token.
    assert_eq!(node.events_named("http_auth_failed").len(), 1);
    assert_eq!(node.events_named("http_auth_limited").len(), 1);
    assert!(!node.output_text().contains(WRONG));
}

#[test]
fn one_address_holds_a_bounded_number_of_connections() {
    use std::io::Read;
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), CONFIG);
    let (node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    wait_answering(port, "/readyz", &node);
    // Connections that send nothing (a slow client's), up to the bound: each held open.
    let held: Vec<std::net::TcpStream> = (0..256)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // One more is closed at once: end of stream, no answer.
    let closed_at_once = wait_until(Duration::from_secs(10), || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut byte = [0u8; 1];
        matches!(s.read(&mut byte), Ok(0))
            || s.read(&mut byte)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
    });
    assert!(
        closed_at_once,
        "a connection beyond the bound was kept open"
    );
    // Given back as they close.
    drop(held);
    assert!(
        wait_until(Duration::from_secs(10), || common::http(
            port,
            "GET",
            "/healthz",
            Duration::from_secs(2)
        )
        .is_ok_and(|(s, _)| s == 200)),
        "the address's connections were not given back"
    );
}
