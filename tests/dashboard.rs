//! The dashboard in a real headless Chromium (WebDriver through chromedriver, installed by
//! scripts/deps.sh). So far: the browser harness itself, against a real node's HTTP interface.
mod common;

use std::time::Duration;

use common::browser::Browser;
use common::{wait_until, write_config, Emulator, Node};

#[test]
fn a_headless_chromium_reads_a_nodes_http_interface() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"hello\"\nschedule = \"0 0 3 * * *\"\nsay = \"hi\"\n",
    );
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    assert!(wait_until(Duration::from_secs(20), || common::http(
        port,
        "GET",
        "/readyz",
        Duration::from_secs(2)
    )
    .is_ok_and(|(s, _)| s == 200)));
    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{port}/status");
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            browser.goto(&url);
            text = browser.text();
            text.contains("\"hello\"") && text.contains("\"role\":\"leader\"")
        }),
        "{text}"
    );
}

/// The leader the page shows for `job` (`None` until its row is there).
fn shown_leader(browser: &Browser, job: &str) -> Option<String> {
    browser.text_of(&format!("tr[data-job=\"{job}\"] td.leader"))
}

#[test]
fn the_page_shows_every_leader_and_follows_a_failover_without_reloading() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"alpha\"\nschedule = \"* * * * * *\"\nsay = \"a\"\n\n\
         [[job]]\nname = \"beta\"\nschedule = \"*/2 * * * * *\"\nsay = \"b\"\n\n\
         [[job]]\nname = \"gamma\"\nschedule = \"0 0 3 * * *\"\nsay = \"c\"\n",
    );
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(Node::spawn_with_http(&emu, &cfg, id, &[]));
    }
    // The page is served by c; the node to kill is a leader other than c.
    let port = nodes[2].1;
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    let jobs = ["alpha", "beta", "gamma"];
    let mut shown = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            shown = jobs.iter().map(|j| shown_leader(&browser, j)).collect();
            shown
                .iter()
                .all(|l| l.as_deref().is_some_and(|l| ["a", "b", "c"].contains(&l)))
        }),
        "leaders shown: {shown:?}\n{}",
        browser.text()
    );
    // What the page shows is what the store says (cronlease status), once leadership settled.
    let mut said = Vec::new();
    assert!(
        wait_until(Duration::from_secs(15), || {
            let status: serde_json::Value =
                serde_json::from_str(&common::cli(&emu, &cfg, &["status", "--json"]).stdout)
                    .unwrap_or_default();
            said = (0..jobs.len())
                .map(|i| status["jobs"][i]["leader"].as_str().map(String::from))
                .collect();
            shown = jobs.iter().map(|j| shown_leader(&browser, j)).collect();
            said == shown
        }),
        "page {shown:?} vs status {said:?}"
    );
    // The browser asked for gzip, and the report came compressed.
    let sizes = browser.eval(
        "const e = performance.getEntriesByType('resource').filter(r => r.name.endsWith('/api/cluster')); \
         const l = e[e.length - 1]; return [l.encodedBodySize, l.decodedBodySize];",
    );
    let (encoded, decoded) = (sizes[0].as_u64().unwrap(), sizes[1].as_u64().unwrap());
    assert!(encoded > 0 && encoded < decoded, "{sizes}");
    // kill -9 a node that leads something and is not the one serving the page.
    let (victim_job, victim) = jobs
        .iter()
        .zip(&shown)
        .find_map(|(j, l)| {
            l.as_deref()
                .filter(|l| *l != "c")
                .map(|l| (*j, l.to_string()))
        })
        .unwrap_or_else(|| panic!("c leads everything: {shown:?}"));
    let idx = ["a", "b", "c"].iter().position(|n| *n == victim).unwrap();
    nodes[idx].0.kill9();
    let mut now_shown = None;
    assert!(
        wait_until(Duration::from_secs(30), || {
            now_shown = shown_leader(&browser, victim_job);
            now_shown
                .as_deref()
                .is_some_and(|l| l != victim && l != "—")
        }),
        "{victim_job} still shows {now_shown:?} after {victim} was killed\n{}",
        browser.text()
    );
    // The nodes table lists the live nodes (the killed one's record may be gone by now).
    for id in ["a", "b", "c"].into_iter().filter(|id| *id != victim) {
        let row = browser.block_on(
            browser
                .client
                .find(fantoccini::Locator::Css(&format!("tr[data-node=\"{id}\"]"))),
        );
        assert!(row.is_ok(), "no row for node {id}: {}", browser.text());
    }
}

#[test]
fn buttons_only_with_a_token_and_run_now_runs_the_job_once() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"report\"\nschedule = \"0 0 3 * * *\"\nshell = \"echo from the page\"\n",
    );
    let token = "page-token-0123456789";
    let (_plain, plain_port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    // Reads open to all (--http-public-read): the buttons show, and ask for the token.
    let (_locked, port) = Node::spawn_with_http_args(
        &emu,
        &cfg,
        "b",
        &[("CRONLEASE_HTTP_TOKEN", token)],
        &["--http-public-read"],
    );
    let browser = Browser::start();
    let buttons = |browser: &Browser| -> usize {
        browser
            .block_on(browser.client.find_all(fantoccini::Locator::Css(
                "button[data-action]:not([hidden])",
            )))
            .map(|b| b.len())
            .unwrap_or(0)
    };
    // Without a token: rows, no buttons, no token field.
    browser.goto(&format!("http://127.0.0.1:{plain_port}/"));
    assert!(wait_until(Duration::from_secs(20), || shown_leader(
        &browser, "report"
    )
    .is_some_and(|l| l != "—")));
    assert_eq!(buttons(&browser), 0, "{}", browser.text());
    assert!(!browser.text().contains("Token"));

    // With one: the buttons; the token typed in; "Run now" runs it once.
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    assert!(wait_until(Duration::from_secs(20), || buttons(&browser) == 2));
    browser
        .block_on(async {
            let field = browser
                .client
                .find(fantoccini::Locator::Css("#token"))
                .await?;
            field.send_keys(token).await?;
            browser
                .client
                .find(fantoccini::Locator::Css(
                    "tr[data-job=\"report\"] button[data-action=\"trigger\"]",
                ))
                .await?
                .click()
                .await?;
            // "Run report now?"
            browser.client.accept_alert().await
        })
        .expect("click Run now and confirm");
    let mut logs = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            logs = common::cli(&emu, &cfg, &["logs", "report", "--last", "10"]).stdout;
            logs.contains(": ok") && logs.contains("manual by http@127.0.0.1")
        }),
        "{logs}\n{}",
        browser.text()
    );
    // Once: one manual run, and the page's strip shows it.
    assert_eq!(logs.matches("== report @ ").count(), 1, "{logs}");
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .block_on(
                browser
                    .client
                    .find_all(fantoccini::Locator::Css("tr[data-job=\"report\"] .run.ok"))
            )
            .is_ok_and(|r| r.len() == 1)),
        "the strip: {}\n{}",
        browser
            .block_on(browser.client.source())
            .unwrap_or_default(),
        common::http(port, "GET", "/api/cluster", Duration::from_secs(5))
            .map(|(_, b)| b)
            .unwrap_or_default()
    );
}

/// The first job's newest run once it is running, as the node on `port` reports it: (its
/// node, its fire time).
fn caught_running(port: u16) -> (String, String) {
    let mut report = serde_json::Value::Null;
    common::poll_for(Duration::from_secs(40), || {
        report = cluster(port);
        let run = &report["jobs"][0]["runs"][0];
        (run["outcome"] == "running").then(|| {
            let text = |field: &str| run[field].as_str().unwrap().to_string();
            (text("node"), text("fire_time"))
        })
    })
    .unwrap_or_else(|| panic!("no run caught running: {report}"))
}

/// The `/api/cluster` report of the node on `port`.
fn cluster(port: u16) -> serde_json::Value {
    common::http(port, "GET", "/api/cluster", Duration::from_secs(5))
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or_default()
}

#[test]
fn a_runs_mark_shows_its_output_and_follows_a_run_on_another_node_live() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // Runs of about 6 s every 15 s: long enough to be caught running, and the stored tail is
    // not refreshed during one (output_refresh 10 s), so lines seen while it runs came live.
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"slow.job\"\nschedule = \"*/15 * * * * *\"\n\
         shell = \"for i in $(seq 1 20); do echo line $i; sleep 0.3; done\"\n",
    );
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        nodes.push(Node::spawn_with_http(&emu, &cfg, id, &[]));
    }
    // The browser first: once a run is caught running there is no time to start one.
    let browser = Browser::start();
    // A run going on, and which node runs it: the page is served by another one.
    let (runner, fire) = caught_running(nodes[0].1);
    let server = ["a", "b", "c"].iter().position(|n| *n != runner).unwrap();
    // The relay itself, read beside the page: every line once, then the chunked end.
    let relayed = {
        let (port, path) = (nodes[server].1, format!("/api/runs/slow.job/{fire}/live"));
        std::thread::spawn(move || read_stream(port, &path))
    };
    browser.goto(&format!("http://127.0.0.1:{}/", nodes[server].1));
    let mark = format!("tr[data-job=\"slow.job\"] button.run[data-fire=\"{fire}\"]");
    assert!(
        wait_until(Duration::from_secs(10), || browser.click(&mark).is_ok()),
        "no mark for {fire}: {}",
        browser.text()
    );
    // Lines come in while the header still says the run is going on, on the other node.
    let mut seen_live = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let head = browser.text_of("#detail-head").unwrap_or_default();
            let out = browser.text_of("#detail-output").unwrap_or_default();
            if head.contains("running on") && out.contains("line 2\n") {
                seen_live = Some((head, out));
            }
            seen_live.is_some()
        }),
        "no live lines: {}",
        browser.text()
    );
    let (head, _) = seen_live.unwrap();
    assert!(head.contains(&format!("running on {runner}")), "{head}");
    // Then the outcome, and every line once.
    let mut out = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            out = browser.text_of("#detail-output").unwrap_or_default();
            browser
                .text_of("#detail-head")
                .is_some_and(|h| h.contains(": ok, exit code 0"))
        }),
        "no outcome: {}",
        browser.text()
    );
    for i in 1..=20 {
        assert_eq!(
            out.lines().filter(|l| *l == format!("line {i}")).count(),
            1,
            "{out:?}\n{}",
            common::cli(&emu, &cfg, &["logs", "slow.job", &fire]).stdout
        );
    }
    let (head, body, complete) = relayed.join().unwrap();
    // The body says why a relay failed (a 502 seen once under load in CI and locally).
    assert!(head.starts_with("HTTP/1.1 200"), "{head}{body}");
    assert!(complete, "the relay did not end with the run: {body:?}");
    for i in 1..=20 {
        assert_eq!(
            body.lines().filter(|l| *l == format!("line {i}")).count(),
            1,
            "{body:?}"
        );
    }
    // Closed with Escape; a finished run's mark shows its stored output at once.
    browser
        .block_on(async {
            browser
                .client
                .find(fantoccini::Locator::Css("#detail"))
                .await?
                .send_keys("\u{E00C}")
                .await
        })
        .expect("Escape");
    assert!(wait_until(Duration::from_secs(5), || browser
        .eval("return document.getElementById('detail').open")
        == serde_json::Value::Bool(false)));
    let done = format!("tr[data-job=\"slow.job\"] button.run.ok[data-fire=\"{fire}\"]");
    assert!(wait_until(Duration::from_secs(10), || browser
        .click(&done)
        .is_ok()));
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#detail-output")
            .is_some_and(|o| o.contains("line 1\n") && o.contains("line 20"))
            && browser
                .text_of("#detail-head")
                .is_some_and(|h| h.contains(&format!("node {runner}")))),
        "{}",
        browser.text()
    );
    // The record endpoint: 404 for no such run, 400 for a bad fire time.
    let port = nodes[server].1;
    let (code, _) = common::http(
        port,
        "GET",
        "/api/runs/slow.job/2001-01-01T00:00:00Z",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 404);
    let (code, _) = common::http(
        port,
        "GET",
        "/api/runs/slow.job/yesterday",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(code, 400);
}

#[test]
fn a_pause_note_is_shown_as_text_the_token_stays_for_the_tab_and_a_lost_store_is_said() {
    let mut emu = Emulator::start_own();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nsay = \"n\"\n",
    );
    let token = "page-token-0123456789";
    // Reads open to all (--http-public-read): the buttons show, and ask for the token.
    let (_node, port) = Node::spawn_with_http_args(
        &emu,
        &cfg,
        "a",
        &[("CRONLEASE_HTTP_TOKEN", token)],
        &["--http-public-read"],
    );
    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{port}/");
    browser.goto(&url);
    let pause = "tr[data-job=\"nightly\"] button[data-action=\"pause\"]";
    assert!(wait_until(Duration::from_secs(20), || browser
        .text_of("tr[data-job=\"nightly\"] td.leader")
        .is_some_and(|l| l == "a")));
    // A note that would be markup if the page put it in as HTML.
    let note = "<img src=x onerror=alert(1)> & \"disk\" full";
    browser
        .block_on(async {
            browser
                .client
                .find(fantoccini::Locator::Css("#token"))
                .await?
                .send_keys(token)
                .await?;
            browser
                .client
                .find(fantoccini::Locator::Css(pause))
                .await?
                .click()
                .await?;
            browser.client.send_alert_text(note).await?;
            browser.client.accept_alert().await
        })
        .expect("click Pause and give a note");
    let want = format!("paused by http@127.0.0.1: {note}");
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("tr[data-job=\"nightly\"] td.state")
            .is_some_and(|s| s == want)),
        "{}",
        browser.text()
    );
    // Text, not markup: no element came from the note.
    assert_eq!(
        browser.eval("return document.querySelectorAll('td.state img').length"),
        serde_json::json!(0)
    );
    let status: serde_json::Value =
        serde_json::from_str(&common::cli(&emu, &cfg, &["status", "--json"]).stdout).unwrap();
    assert_eq!(status["jobs"][0]["paused"]["note"], note);

    // The token stays for this tab across a reload; Resume works with it.
    browser.goto(&url);
    assert_eq!(
        browser.eval("return document.getElementById('token').value"),
        serde_json::json!(token)
    );
    let resume = "tr[data-job=\"nightly\"] button[data-action=\"resume\"]:not([hidden])";
    assert!(wait_until(Duration::from_secs(10), || browser
        .click(resume)
        .is_ok()));
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("tr[data-job=\"nightly\"] td.state")
            .is_some_and(|s| s == "held")),
        "{}",
        browser.text()
    );

    // The store goes away: the page says so and keeps what it last read.
    assert!(browser.text_of("#banner").is_some_and(|b| b.is_empty()));
    emu.kill();
    let mut shown = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            shown = browser.text_of("#banner").unwrap_or_default();
            shown.starts_with("This node has lost the store")
        }),
        "{}",
        browser.text()
    );
    assert_eq!(
        browser
            .text_of("tr[data-job=\"nightly\"] td.leader")
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        browser.eval("return document.getElementById('banner').getAttribute('role')"),
        serde_json::json!("alert")
    );
}

#[test]
fn a_followed_run_whose_node_freezes_ends_as_lost_on_the_page() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"long\"\nschedule = \"*/20 * * * * *\"\n\
         shell = \"for i in $(seq 1 100); do echo tick $i; sleep 0.2; done\"\n",
    );
    let nodes: Vec<_> = ["a", "b"]
        .iter()
        .map(|id| Node::spawn_with_http(&emu, &cfg, id, &[]))
        .collect();
    let (runner, fire) = caught_running(nodes[0].1);
    let (frozen, server) = if runner == "a" { (0, 1) } else { (1, 0) };
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{}/", nodes[server].1));
    let mark = format!("tr[data-job=\"long\"] button.run[data-fire=\"{fire}\"]");
    assert!(wait_until(Duration::from_secs(10), || browser
        .click(&mark)
        .is_ok()));
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#detail-output")
            .is_some_and(|o| o.contains("tick 3\n"))),
        "{}",
        browser.text()
    );
    // SIGSTOP: its connections stay open and silent. The relay asks the store, which the
    // other node closes as lost; the page says the stream broke off, then shows the outcome.
    nodes[frozen].0.stop();
    let mut head = String::new();
    assert!(
        wait_until(Duration::from_secs(40), || {
            head = browser.text_of("#detail-head").unwrap_or_default();
            head.contains(": lost")
        }),
        "{head}\n{}",
        browser.text()
    );
    nodes[frozen].0.cont();
}

#[test]
fn on_a_phone_the_page_does_not_scroll_sideways_and_runs_open() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"a-job-with-a-rather-long-name.for-phones\"\nschedule = \"* * * * * *\"\n\
         say = \"from the phone\"\n",
    );
    let token = "page-token-0123456789";
    // Reads open to all (--http-public-read): the buttons show, and ask for the token.
    let (_node, port) = Node::spawn_with_http_args(
        &emu,
        &cfg,
        "a",
        &[("CRONLEASE_HTTP_TOKEN", token)],
        &["--http-public-read"],
    );
    let browser = Browser::start();
    browser.set_viewport(390, 844);
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    let ok = "tr[data-job] button.run.ok";
    assert!(
        wait_until(Duration::from_secs(20), || browser.click(ok).is_ok()),
        "no run mark to tap: {}",
        browser.text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#detail-output")
            .is_some_and(|o| o.contains("from the phone"))),
        "{}",
        browser.text()
    );
    // The dialog fits the screen, and the page itself never scrolls sideways (the tables do,
    // each in its own box).
    let fits = browser.eval(
        "const d = document.getElementById('detail').getBoundingClientRect(); \
         return [d.left >= 0 && d.right <= window.innerWidth, \
                 document.documentElement.scrollWidth <= window.innerWidth];",
    );
    assert_eq!(fits, serde_json::json!([true, true]));
}

/// GET `path` and read the chunked answer to its end: (status line and headers, body, whether
/// it ended with the last chunk, as opposed to being broken off).
fn read_stream(port: u16, path: &str) -> (String, String, bool) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).unwrap_or(0) == 0 {
            return (head, String::from_utf8_lossy(&body).into(), false);
        }
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return (head, String::from_utf8_lossy(&body).into(), false);
        };
        let mut chunk = vec![0; n + 2];
        if r.read_exact(&mut chunk).is_err() {
            return (head, String::from_utf8_lossy(&body).into(), false);
        }
        if n == 0 {
            return (head, String::from_utf8_lossy(&body).into(), true);
        }
        body.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_focused_button_keeps_the_focus_when_its_row_moves() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // "flaky" fails every other run: each failure moves its row to the top ("failing first").
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"steady\"\nschedule = \"* * * * * *\"\nsay = \"ok\"\n\n\
         [[job]]\nname = \"flaky\"\nschedule = \"*/2 * * * * *\"\n\
         shell = \"s=$(date -d \\\"$CRONLEASE_FIRE_TIME\\\" +%s); test $(( s / 2 % 2 )) -eq 0\"\n",
    );
    let token = "page-token-0123456789";
    // Reads open to all (--http-public-read): the buttons show, and ask for the token.
    let (_node, port) = Node::spawn_with_http_args(
        &emu,
        &cfg,
        "a",
        &[("CRONLEASE_HTTP_TOKEN", token)],
        &["--http-public-read"],
    );
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    let button = "tr[data-job=\"flaky\"] button[data-action=\"trigger\"]";
    // Wait for the row to sit below "steady" (its last run ok), then focus its button.
    let row_of_flaky =
        "return [...document.querySelectorAll('#jobs tbody tr')].findIndex(r => r.dataset.job === 'flaky')";
    assert!(
        wait_until(Duration::from_secs(30), || browser.eval(row_of_flaky)
            == serde_json::json!(1)),
        "{}",
        browser.text()
    );
    browser.eval(&format!("document.querySelector('{button}').focus()"));
    // It moves to the top on its next failure, and its button still has the focus.
    assert!(
        wait_until(Duration::from_secs(15), || browser.eval(row_of_flaky)
            == serde_json::json!(0)),
        "{}",
        browser.text()
    );
    let focused = browser.eval(
        "const a = document.activeElement; \
         return [a.dataset.action || a.tagName, a.closest('tr') && a.closest('tr').dataset.job];",
    );
    assert_eq!(focused, serde_json::json!(["trigger", "flaky"]));
}

/// The job rows the page shows (not hidden by the filter), top to bottom.
fn shown_jobs(browser: &Browser) -> Vec<String> {
    serde_json::from_value(browser.eval(
        "return [...document.querySelectorAll('#jobs tbody tr[data-job]')] \
         .filter(r => !r.hidden).map(r => r.dataset.job)",
    ))
    .unwrap_or_default()
}

/// The count the header shows next to the state filter `state`.
fn state_count(browser: &Browser, state: &str) -> Option<String> {
    browser.text_of(&format!("button[data-state=\"{state}\"] .count"))
}

#[test]
fn the_filter_box_and_state_filters_narrow_the_table_and_stay_in_the_url() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"alpha-ok\"\nschedule = \"* * * * * *\"\nsay = \"fine\"\n\n\
         [[job]]\nname = \"beta-fails\"\nschedule = \"* * * * * *\"\nshell = \"exit 3\"\n\n\
         [[job]]\nname = \"gamma-paused\"\nschedule = \"0 0 3 * * *\"\nsay = \"g\"\n\n\
         [[job]]\nname = \"delta-idle\"\nschedule = \"0 0 3 * * *\"\nsay = \"d\"\n\n\
         [[job]]\nname = \"epsilon-off\"\nschedule = \"0 0 3 * * *\"\nsay = \"e\"\nenabled = false\n",
    );
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    let paused = common::cli(&emu, &cfg, &["pause", "gamma-paused"]);
    assert_eq!(paused.code, Some(0), "{}", paused.stderr);
    let browser = Browser::start();
    let base = format!("http://127.0.0.1:{port}/");
    browser.goto(&base);
    // The counts per state: one failing, one paused, one unled (off: nobody takes its lease).
    let counts = |browser: &Browser| -> Vec<Option<String>> {
        ["failing", "paused", "unled", "drifting"]
            .iter()
            .map(|s| state_count(browser, s))
            .collect()
    };
    let want = ["1", "1", "1", "0"].map(|c| Some(c.to_string()));
    assert!(
        wait_until(Duration::from_secs(30), || counts(&browser) == want),
        "{:?}\n{}",
        counts(&browser),
        browser.text()
    );
    assert_eq!(shown_jobs(&browser).len(), 5);
    // A name substring narrows at once, as it is typed.
    browser
        .block_on(async {
            browser
                .client
                .find(fantoccini::Locator::Css("#filter"))
                .await?
                .send_keys("TA")
                .await
        })
        .expect("type into the filter");
    assert!(
        wait_until(Duration::from_secs(5), || shown_jobs(&browser)
            == ["beta-fails", "delta-idle"]),
        "{:?}",
        shown_jobs(&browser)
    );
    // A state filter narrows further; both are in the URL.
    browser.click("button[data-state=\"failing\"]").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || shown_jobs(&browser)
            == ["beta-fails"]),
        "{:?}",
        shown_jobs(&browser)
    );
    assert_eq!(
        browser.text_of("#shown").as_deref(),
        Some("1 of 5 jobs shown")
    );
    let url = browser
        .eval("return location.href")
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(url, format!("{base}?q=TA&state=failing"));
    // A reload (or the link given to someone) shows the same.
    browser.goto(&url);
    assert!(
        wait_until(Duration::from_secs(20), || shown_jobs(&browser)
            == ["beta-fails"]
            && browser.text_of("#shown").as_deref()
                == Some("1 of 5 jobs shown")),
        "{:?}\n{}",
        shown_jobs(&browser),
        browser.text()
    );
    assert_eq!(
        browser.eval(
            "return [document.getElementById('filter').value, \
             document.querySelector('button[data-state=\"failing\"]').getAttribute('aria-pressed')]"
        ),
        serde_json::json!(["TA", "true"])
    );
    // States are any of those ticked; a filter that matches nothing says so.
    browser.goto(&format!("{base}?state=paused,unled"));
    assert!(
        wait_until(Duration::from_secs(20), || shown_jobs(&browser)
            == ["gamma-paused", "epsilon-off"]),
        "{:?}",
        shown_jobs(&browser)
    );
    browser.goto(&format!("{base}?q=nosuchjob"));
    assert!(
        wait_until(Duration::from_secs(20), || browser
            .text_of("#jobs-empty")
            .is_some_and(|t| t == "No job matches the filter.")),
        "{}",
        browser.text()
    );
    assert!(shown_jobs(&browser).is_empty());
}

/// `/api/cluster` (with `?since=` when given): (its version header, its body as sent, parsed).
fn cluster_since(port: u16, since: Option<&str>) -> (String, usize, serde_json::Value) {
    let path = match since {
        Some(v) => format!("/api/cluster?since={v}"),
        None => "/api/cluster".to_string(),
    };
    let (code, head, body) =
        common::http_with_head(port, "GET", &path, Duration::from_secs(10)).unwrap();
    assert_eq!(code, 200, "{head}\n{body}");
    let version = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-cronlease-version")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no version header: {head}"));
    (version, body.len(), serde_json::from_str(&body).unwrap())
}

#[test]
fn an_open_page_reads_only_what_changed_and_updates_the_changed_row_in_place() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // 200 jobs that do not fire during the test, on one node whose lease does not run out
    // while this machine is busy: nothing changes until the pause.
    let mut jobs =
        String::from("[election]\nlease = \"10s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n");
    for i in 0..200 {
        jobs.push_str(&format!(
            "\n[[job]]\nname = \"j{i:03}\"\nschedule = \"0 0 3 * * *\"\nsay = \"x\"\n"
        ));
    }
    let cfg = write_config(dir.path(), &jobs);
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    let all_led = |browser: &Browser| {
        browser.eval(
            "return [...document.querySelectorAll('#jobs tbody td.leader')] \
             .filter(td => td.textContent === 'a').length",
        ) == serde_json::json!(200)
    };
    assert!(
        wait_until(Duration::from_secs(40), || all_led(&browser)),
        "{}\n{}\n{:?}",
        browser.text(),
        browser.eval(
            "return performance.getEntriesByType('resource').filter(r => r.name.includes('/api/cluster')) \
             .map(r => [r.name.split('/api')[1], r.responseStatus, r.decodedBodySize, Math.round(r.startTime), Math.round(r.duration)])"
        ),
        common::http(port, "GET", "/api/cluster", Duration::from_secs(10))
            .map(|(c, b)| (c, b.chars().take(300).collect::<String>()))
    );
    // Once settled (no row changed for 3 s): the whole report against the answer to its
    // version, which holds no row.
    let mut full = cluster_since(port, None);
    let mut delta = full.clone();
    let mut quiet = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || {
            delta = cluster_since(port, Some(&full.0));
            if delta.2["jobs"] != serde_json::json!([]) {
                full = cluster_since(port, None);
                quiet = std::time::Instant::now();
            }
            quiet.elapsed() >= Duration::from_secs(3)
        }),
        "{}",
        delta.2
    );
    assert_eq!(full.2["jobs"].as_array().unwrap().len(), 200);
    assert_eq!(delta.2["removed"], serde_json::json!([]));
    assert_eq!(delta.2["nodes"][0]["id"], "a");
    assert!(
        delta.1 < 2_000 && delta.1 * 20 < full.1,
        "since answer {} bytes, whole report {} bytes",
        delta.1,
        full.1
    );
    // A version from another start of the node (or none it knows) gets the whole report.
    let (_, _, stranger) = cluster_since(port, Some("0123456789ab-1"));
    assert!(stranger.get("since").is_none());
    assert_eq!(stranger["jobs"].as_array().unwrap().len(), 200);

    // The page asked for the whole report once, and since then only for what changed.
    browser.eval(
        "window.kept = document.querySelector('tr[data-job=\"j007\"]'); \
         window.keptOther = document.querySelector('tr[data-job=\"j100\"] td.strip'); \
         window.settledAt = performance.now(); return true",
    );
    // (The answers before the node reached the store are 503s, with no report.)
    let polls = "const e = performance.getEntriesByType('resource') \
         .filter(r => r.name.includes('/api/cluster') && r.responseStatus === 200); \
         return [e.filter(r => !r.name.includes('since=')).length, \
                 e.filter(r => r.name.includes('since=')).length, \
                 Math.max(0, ...e.filter(r => r.startTime > window.settledAt).map(r => r.decodedBodySize))]";
    let mut seen = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(20), || {
            seen = browser.eval(polls);
            seen[1].as_u64().is_some_and(|n| n >= 16)
        }),
        "{seen}"
    );
    assert_eq!(
        seen[0],
        1,
        "{seen}\n{}",
        browser.eval(
            "return performance.getEntriesByType('resource').filter(r => r.name.includes('/api/cluster')) \
             .map(r => [r.name.split('/api')[1], r.responseStatus, r.decodedBodySize, Math.round(r.startTime)])"
        )
    );
    // Since the cluster settled, nothing changed: the header and the node, no row.
    assert!(seen[2].as_u64().is_some_and(|b| b < 1_000), "{seen}");

    // A change shows without a reload: its row, updated in place, and only its row comes.
    let paused = common::cli(&emu, &cfg, &["pause", "j007", "--note", "disk"]);
    assert_eq!(paused.code, Some(0), "{}", paused.stderr);
    assert!(
        wait_until(Duration::from_secs(15), || browser
            .text_of("tr[data-job=\"j007\"] td.state")
            .is_some_and(|s| s.starts_with("paused by"))),
        "{}",
        browser.text()
    );
    let (_, _, after) = cluster_since(port, Some(&full.0));
    let changed: Vec<&str> = after["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["j007"], "{after}");
    assert_eq!(
        browser.eval(
            "return [window.kept === document.querySelector('tr[data-job=\"j007\"]'), \
             window.keptOther === document.querySelector('tr[data-job=\"j100\"] td.strip'), \
             document.querySelectorAll('#jobs tbody tr').length]"
        ),
        serde_json::json!([true, true, 200])
    );
    assert_eq!(
        browser.eval(polls)[0],
        1,
        "the page read the whole report again"
    );
    assert_eq!(state_count(&browser, "paused").as_deref(), Some("1"));
}

#[test]
fn a_jobs_name_opens_its_runs_durations_counts_and_next_fire_times() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // Every second, failing at odd seconds: both outcomes among its runs.
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"tick.tock\"\nschedule = \"* * * * * *\"\n\
         shell = \"s=$(date -d \\\"$CRONLEASE_FIRE_TIME\\\" +%s); sleep 0.$(( s % 3 )); test $(( s % 2 )) -eq 0\"\n\n\
         [[job]]\nname = \"other\"\nschedule = \"0 0 3 * * *\"\nsay = \"o\"\n",
    );
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    // Some runs of both kinds first.
    let mut view = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(40), || {
            view = common::http(port, "GET", "/api/jobs/tick.tock", Duration::from_secs(5))
                .ok()
                .filter(|(code, _)| *code == 200)
                .and_then(|(_, b)| serde_json::from_str(&b).ok())
                .unwrap_or_default();
            view["counts"]["ok"].as_u64().unwrap_or(0) >= 3
                && view["counts"]["failed"].as_u64().unwrap_or(0) >= 3
        }),
        "{view}"
    );
    // Its runs without output, newest first; five next fire times a second apart.
    let runs = view["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r.get("output").is_none()), "{view}");
    assert_eq!(view["next_fire_times"].as_array().unwrap().len(), 5);
    let (code, _) = common::http(port, "GET", "/api/jobs/nosuch", Duration::from_secs(5)).unwrap();
    assert_eq!(code, 404);

    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    assert!(
        wait_until(Duration::from_secs(20), || browser
            .click("tr[data-job=\"tick.tock\"] a.job")
            .is_ok()),
        "{}",
        browser.text()
    );
    // The view: as many bars as runs listed, counts that add up to them, next fire times.
    let shown = "const d = document.getElementById('job-view'); \
         return [d.open, location.hash, document.getElementById('job-title').textContent, \
                 document.querySelectorAll('#job-chart rect.bar').length, \
                 document.querySelectorAll('#job-runs tbody tr').length, \
                 [...document.querySelectorAll('#job-counts span')].map(s => s.textContent), \
                 [...document.querySelectorAll('#job-next li')].map(l => l.dataset.fire)]";
    let mut seen = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = browser.eval(shown);
            seen[3].as_u64().is_some_and(|n| n >= 6)
        }),
        "{seen}\n{}",
        browser.text()
    );
    assert_eq!(seen[0], true);
    assert_eq!(seen[1], "#job=tick.tock");
    assert_eq!(seen[2], "tick.tock");
    assert_eq!(seen[3], seen[4], "{seen}");
    let counted: u64 = seen[5]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(|c| c.rsplit(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(Some(counted), seen[3].as_u64(), "{seen}");
    assert!(
        seen[5]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().is_some_and(|c| c.starts_with("failed "))),
        "{seen}"
    );
    let fires: Vec<chrono::DateTime<chrono::Utc>> = seen[6]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(fires.len(), 5, "{seen}");
    assert!(fires
        .windows(2)
        .all(|w| w[1] - w[0] == chrono::Duration::seconds(1)));
    // Bars are as high as their runs took: the longest run's bar is the tallest.
    let tallest = browser.eval(
        "const bars = [...document.querySelectorAll('#job-chart rect.bar')]; \
         const h = bars.map(b => +b.getAttribute('height')); \
         return Math.max(...h) > Math.min(...h)",
    );
    assert_eq!(tallest, true, "{}", browser.text());
    // A run in the list opens its output.
    browser
        .click("#job-runs button.run-link")
        .expect("a run in the job's view");
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#detail-head")
            .is_some_and(|h| h.contains("tick.tock"))),
        "{}",
        browser.text()
    );
    browser.eval("document.getElementById('detail').close(); return true");

    // The view's URL opens it by itself; closing it leaves the URL without it.
    browser.goto(&format!("http://127.0.0.1:{port}/#job=other"));
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#job-schedule")
            .is_some_and(|s| s.starts_with("0 0 3 * * * (UTC), say"))),
        "{}",
        browser.text()
    );
    assert_eq!(
        browser.eval("return document.querySelectorAll('#job-next li').length"),
        5
    );
    browser.eval("document.getElementById('job-view').close(); return true");
    // A dialog's `close` event, which clears the hash, is dispatched as a task after close().
    assert!(
        wait_until(Duration::from_secs(5), || browser
            .eval("return location.hash")
            == ""),
        "the hash stayed {}",
        browser.eval("return location.hash")
    );
}

/// The figures of the README's dashboard section (run by hand, about 4 minutes):
/// `cargo test --test dashboard -- --ignored --nocapture what_a_refresh_costs_at_1000_jobs`.
/// One node with 1,000 jobs that do not fire meanwhile (nothing changes); a client reads
/// `/api/cluster?since=` with the version of its last answer once per poll, as an open page
/// does, so each read finds the report a poll old and waits for its refresh. Prints the bytes of
/// an answer and the latency's p50 / p99 / max, and the same of the whole report.
#[test]
#[ignore]
fn what_a_refresh_costs_at_1000_jobs() {
    use std::time::Instant;
    const JOBS: usize = 1000;
    const READS: usize = 300;
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    // The default lease (10 s), a poll of 500 ms: more refreshes in the time.
    let mut jobs = String::from("[election]\npoll = \"500ms\"\n");
    for i in 0..JOBS {
        jobs.push_str(&format!(
            "\n[[job]]\nname = \"j{i:04}\"\nschedule = \"0 0 3 * * *\"\nsay = \"x\"\n"
        ));
    }
    let cfg = write_config(dir.path(), &jobs);
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    assert!(
        wait_until(Duration::from_secs(120), || {
            let report = cluster(port);
            report["jobs"]
                .as_array()
                .is_some_and(|j| j.len() == JOBS && j.iter().all(|j| j["leader"] == "a"))
        }),
        "the node did not take every lease"
    );
    let pct = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
    };
    let (mut version, full_bytes, _) = cluster_since(port, None);
    let mut full_ms = Vec::new();
    for _ in 0..20 {
        // Pacing, not waiting: one read per poll, the cadence of an open page.
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        cluster_since(port, None);
        full_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (mut ms, mut bytes, mut rows, mut failed) = (Vec::new(), Vec::new(), 0, 0);
    for _ in 0..READS {
        // Pacing, not waiting: one read per poll, the cadence of an open page.
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        let path = format!("/api/cluster?since={version}");
        let answer = common::http_with_head(port, "GET", &path, Duration::from_secs(10));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        // A 503 (the node's store reads hung: this machine is shared) is counted, not used.
        let Ok((200, head, body)) = answer else {
            failed += 1;
            continue;
        };
        bytes.push(body.len() as f64);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        rows += body["jobs"].as_array().map_or(0, |j| j.len());
        assert!(body.get("since").is_some(), "a whole report: {head}");
        version = body["version"].as_str().unwrap().to_string();
    }
    let slow: Vec<String> = ms
        .iter()
        .enumerate()
        .filter(|(_, m)| **m > 50.0)
        .map(|(i, m)| format!("#{i}: {m:.0} ms"))
        .collect();
    eprintln!("reads over 50 ms: {slow:?}");
    eprintln!(
        "{JOBS} jobs, nothing changing, {READS} reads of ?since= one per poll (500 ms), {failed} \
         not 200: bytes p50 {:.0} max {:.0}; rows sent {rows}; latency p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms",
        pct(&mut bytes, 50.0),
        pct(&mut bytes, 100.0),
        pct(&mut ms, 50.0),
        pct(&mut ms, 99.0),
        pct(&mut ms, 100.0),
    );
    eprintln!(
        "the whole report: {full_bytes} bytes; latency p50 {:.1} ms, max {:.1} ms (20 reads)",
        pct(&mut full_ms, 50.0),
        pct(&mut full_ms, 100.0),
    );
}

/// The page with 10,000 rows (run by hand: `cargo test --test dashboard -- --ignored
/// --nocapture the_page_at_10000_jobs`). The rows are made in the page (a node with 10,000
/// jobs is the scale bench's business): 10,000 jobs of 20 runs each taken in as one answer,
/// then a poll's answer with one changed row, then a keystroke in the filter box. Prints how
/// long each took, layout included, and how many run marks the page drew (only the rows
/// near the screen get theirs).
#[test]
#[ignore]
fn the_page_at_10000_jobs() {
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"1s\"\n\n\
         [[job]]\nname = \"real\"\nschedule = \"0 0 3 * * *\"\nsay = \"x\"\n",
    );
    let (_node, port) = Node::spawn_with_http(&emu, &cfg, "a", &[]);
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));
    assert!(wait_until(Duration::from_secs(20), || shown_leader(
        &browser, "real"
    )
    .is_some_and(|l| l == "a")));
    let figures = browser.eval(
        "const runs = Array.from({length: 20}, (_, k) => ({ fire_time: new Date(Date.UTC(2026, 11, 1, 0, 59 - k)).toISOString(), \
           node: 'a', term: 1, outcome: k % 7 ? 'ok' : 'failed', started_at: '2026-12-01T00:00:00Z', \
           finished_at: '2026-12-01T00:00:01Z', duration_ms: 1000 })); \
         const job = i => ({ name: 'synthetic-' + String(i).padStart(5, '0'), schedule: '0 * * * * *', timezone: 'UTC', \
           state: 'held', leader: 'a', term: 1, acquired_at: '2026-12-01T00:00:00Z', next_fire_time: '2030-01-01T00:00:00Z', \
           runs, drift: [], paused: null, enabled: true, triggers: [], backfill: null, position: i + 1 }); \
         const timed = f => { const t = performance.now(); f(); document.body.offsetHeight; return performance.now() - t; }; \
         const all = Array.from({length: 10000}, (_, i) => job(i)); \
         const first = timed(() => take(all, [], false)); \
         const changed = job(5000); changed.paused = { by: 'me', since: '2026-12-01T00:00:00Z', note: '' }; \
         const one = timed(() => take([changed], [], false)); \
         const input = document.getElementById('filter'); \
         const key = timed(() => { input.value = '0500'; input.dispatchEvent(new Event('input')); }); \
         const clear = timed(() => { input.value = ''; input.dispatchEvent(new Event('input')); }); \
         return [first, one, key, clear, document.querySelectorAll('#jobs tbody tr').length, \
                 document.querySelectorAll('#jobs .run').length]",
    );
    // The rows near the screen get their marks once the page has laid them out.
    let marks = "return document.querySelectorAll('#jobs .run').length";
    assert!(wait_until(Duration::from_secs(10), || browser
        .eval(marks)
        .as_u64()
        .is_some_and(|n| n > 0)));
    eprintln!(
        "10,000 rows of 20 runs: taken in {:.0} ms; one changed row {:.1} ms; a filter keystroke {:.0} ms, \
         cleared {:.0} ms; {} rows, {} run marks drawn (then {} once laid out)",
        figures[0].as_f64().unwrap_or(-1.0),
        figures[1].as_f64().unwrap_or(-1.0),
        figures[2].as_f64().unwrap_or(-1.0),
        figures[3].as_f64().unwrap_or(-1.0),
        figures[4],
        figures[5],
        browser.eval(marks)
    );
    assert_eq!(figures[4], 10_001, "{figures}");
}

/// A request to the node on `port`, with `Authorization: Bearer TOKEN` when given: (status,
/// status line and headers, body).
fn request(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// The value of the header `name` in `head` (status line and headers).
fn header_of(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// Types `token` into the page's token field (replacing what it held) and presses Enter.
fn log_in(browser: &Browser, token: &str) {
    browser
        .block_on(async {
            let field = browser
                .client
                .find(fantoccini::Locator::Css("#token"))
                .await?;
            field.clear().await?;
            field.send_keys(&format!("{token}\u{E007}")).await
        })
        .expect("type a token and press Enter");
}

/// The Content-Security-Policy violations the page has had since it loaded (the browser
/// keeps its reports: an observer made now is given the earlier ones too).
fn csp_violations(browser: &Browser) -> serde_json::Value {
    browser.eval(
        "return new Promise(done => { \
           const seen = r => r.map(x => [x.body.effectiveDirective, x.body.blockedURL, x.body.sample]); \
           const o = new ReportingObserver(r => done(seen(r)), { types: ['csp-violation'], buffered: true }); \
           o.observe(); \
           setTimeout(() => done(seen(o.takeRecords())), 500); })",
    )
}

#[test]
fn a_node_with_read_and_operate_tokens_asks_for_one_and_shows_buttons_to_operate_only() {
    use std::os::unix::fs::PermissionsExt;
    let emu = Emulator::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[election]\nlease = \"3s\"\nrenew = \"500ms\"\npoll = \"250ms\"\n\n\
         [[job]]\nname = \"nightly\"\nschedule = \"0 0 3 * * *\"\nsay = \"n\"\n\n\
         [[job]]\nname = \"ticker\"\nschedule = \"*/5 * * * * *\"\n\
         shell = \"for i in $(seq 1 12); do echo tick $i; sleep 0.3; done\"\n",
    );
    let (read, operate) = ("read-token-0123456789", "operate-token-0123456789");
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("read {read}\noperate {operate}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_node, port) = Node::spawn_with_http_args(
        &emu,
        &cfg,
        "a",
        &[],
        &["--http-token-file", tokens.to_str().unwrap()],
    );
    assert!(wait_until(Duration::from_secs(20), || common::http(
        port,
        "GET",
        "/readyz",
        Duration::from_secs(2)
    )
    .is_ok_and(|(s, _)| s == 200)));
    // The page is public and forbids anything inline; its data is not.
    let (code, head, _) = request(port, "GET", "/", None);
    assert_eq!(code, 200, "{head}");
    assert_eq!(
        header_of(&head, "content-security-policy").as_deref(),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "{head}"
    );
    assert_eq!(request(port, "GET", "/api/cluster", None).0, 401);

    // Without a token: the page asks for one, shows no row, and stops asking the node. A link
    // to a job's view: the view waits for the token (closed: the form is behind it).
    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{port}/");
    browser.goto(&format!("{url}#job=nightly"));
    assert!(
        wait_until(Duration::from_secs(20), || browser
            .text_of("#notice")
            .is_some_and(|n| n.contains("needs a token to show its jobs"))),
        "{}",
        browser.text()
    );
    let rows = "return document.querySelectorAll('#jobs tbody tr').length";
    let cluster_reads = "return performance.getEntriesByType('resource') \
                         .filter(r => r.name.includes('/api/cluster')).length";
    let asked = browser.eval(cluster_reads);
    // An absence, not a wait for something: four of the page's polls (250 ms), in which a
    // page that kept polling would have read the cluster again.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(browser.eval(cluster_reads), asked, "the page kept polling");
    assert_eq!(browser.eval(rows), 0);
    let view_open = "return document.getElementById('job-view').open";
    assert_eq!(browser.eval(view_open), false);
    let displayed = |css: &str| {
        browser
            .block_on(async {
                browser
                    .client
                    .find(fantoccini::Locator::Css(css))
                    .await?
                    .is_displayed()
                    .await
            })
            .unwrap_or(false)
    };
    assert!(displayed("#token"), "{}", browser.text());
    let buttons = |browser: &Browser| {
        browser.eval("return document.querySelectorAll('button[data-action]').length")
    };

    // The read token: the job's view, the rows, and no button.
    log_in(&browser, read);
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#job-schedule")
            .is_some_and(|s| s.starts_with("0 0 3 * * * (UTC), say"))),
        "{}",
        browser.text()
    );
    assert_eq!(browser.eval("return location.hash"), "#job=nightly");
    browser.click("#job-view form button").expect("Close");
    assert!(wait_until(Duration::from_secs(5), || browser
        .eval(view_open)
        == serde_json::json!(false)));
    assert!(
        wait_until(Duration::from_secs(20), || browser
            .text_of("tr[data-job=\"nightly\"] td.leader")
            .is_some_and(|l| l == "a")),
        "{}",
        browser.text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || browser
            .text_of("#notice")
            .is_some_and(|n| n.contains("can only read"))),
        "{}",
        browser.text()
    );
    assert_eq!(buttons(&browser), 0);
    assert!(!displayed("#jobs th.actions"));
    // The script ran under the policy, and nothing of the page broke it.
    assert_eq!(csp_violations(&browser), serde_json::json!([]));
    // An action with it (no button shows, so called as a button would): refused, and said.
    browser.eval("act('nightly', 'resume'); return true");
    assert!(
        wait_until(Duration::from_secs(10), || {
            browser
                .text_of("#notice")
                .is_some_and(|n| n.starts_with("nightly: this token can only read"))
        }),
        "{}",
        browser.text()
    );

    // A wrong token: refused, said, and nothing shown.
    log_in(&browser, "not-a-token-of-this-node");
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#notice")
            .is_some_and(|n| n.starts_with("That token was refused"))),
        "{}",
        browser.text()
    );
    assert_eq!(browser.eval(rows), 0);

    // The operate token: the buttons, and Pause works.
    log_in(&browser, operate);
    let pause = "tr[data-job=\"nightly\"] button[data-action=\"pause\"]";
    assert!(
        wait_until(Duration::from_secs(20), || displayed(pause)),
        "{}",
        browser.text()
    );
    browser
        .block_on(async {
            browser
                .client
                .find(fantoccini::Locator::Css(pause))
                .await?
                .click()
                .await?;
            browser.client.send_alert_text("from the test").await?;
            browser.client.accept_alert().await
        })
        .expect("click Pause and give a note");
    let mut report = serde_json::Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            let (_, _, body) = request(port, "GET", "/api/cluster", Some(read));
            report = serde_json::from_str(&body).unwrap_or_default();
            report["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|j| j["name"] == "nightly" && j["paused"]["note"] == "from the test")
        }),
        "{report}\n{}",
        browser.text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("tr[data-job=\"nightly\"] td.state")
            .is_some_and(|s| s == "paused by http@127.0.0.1: from the test")),
        "{}",
        browser.text()
    );

    // A run's record, its live output (relayed with the page's token) and a job's view are
    // read with the token; their Close buttons (forms of method "dialog") close them under
    // the policy.
    let running = "tr[data-job=\"ticker\"] button.run.running";
    assert!(
        wait_until(Duration::from_secs(20), || browser.click(running).is_ok()),
        "{}",
        browser.text()
    );
    // (Read at once: the header, the output and what the dialog says of the stream.)
    let dialog = "return ['detail-head', 'detail-output', 'detail-live'] \
                  .map(id => document.getElementById(id).textContent)";
    let (mut seen_live, mut shown) = (false, serde_json::Value::Null);
    assert!(
        wait_until(Duration::from_secs(10), || {
            shown = browser.eval(dialog);
            let text = |i: usize| shown[i].as_str().unwrap_or_default().to_string();
            seen_live |= text(0).contains("running on a")
                && text(1).contains("tick 2\n")
                && text(2) == "following the run live…";
            seen_live && text(0).contains(": ok") && text(1).contains("tick 12")
        }),
        "live {seen_live}: {shown}"
    );
    browser.click("#detail form button").expect("Close");
    assert!(wait_until(Duration::from_secs(5), || browser
        .eval("return document.getElementById('detail').open")
        == serde_json::json!(false)));
    browser
        .click("tr[data-job=\"ticker\"] a.job")
        .expect("the job's name");
    assert!(
        wait_until(Duration::from_secs(10), || browser
            .text_of("#job-schedule")
            .is_some_and(|s| s.starts_with("*/5 * * * * * (UTC), shell"))),
        "{}",
        browser.text()
    );
    browser.click("#job-view form button").expect("Close");
    assert!(wait_until(Duration::from_secs(5), || browser
        .eval("return document.getElementById('job-view').open")
        == serde_json::json!(false)));

    // The token stays for the tab: a reload shows the rows and the buttons at once.
    browser.goto(&url);
    let resume = "tr[data-job=\"nightly\"] button[data-action=\"resume\"]";
    assert!(
        wait_until(Duration::from_secs(20), || displayed(resume)),
        "{}",
        browser.text()
    );
    assert_eq!(csp_violations(&browser), serde_json::json!([]));

    // Too many wrong tokens from this address: the page says for how long, and waits.
    for _ in 0..10 {
        request(
            port,
            "GET",
            "/api/cluster",
            Some("another-wrong-token-0123"),
        );
    }
    let (code, head, _) = request(port, "GET", "/api/cluster", Some(operate));
    assert_eq!(code, 429, "{head}");
    let mut notice = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            notice = browser.text_of("#notice").unwrap_or_default();
            notice.starts_with("Too many wrong tokens from this address")
        }),
        "{notice}\n{}",
        browser.text()
    );
    // As many seconds as the node's Retry-After (a second may have passed between the two).
    let secs: u64 = header_of(&head, "retry-after").unwrap().parse().unwrap();
    let said: u64 = notice
        .split("refuses every read for ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {notice:?}"));
    assert!(said.abs_diff(secs) <= 1 && said <= 60, "{notice} / {secs}");
    let asked = browser.eval(cluster_reads);
    // An absence again: four polls' time without a read.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(browser.eval(cluster_reads), asked, "the page kept polling");
    // It keeps what it showed meanwhile.
    assert!(displayed(resume));
}
