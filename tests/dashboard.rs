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
    browser
        .block_on(async {
            browser
                .client
                .find(fantoccini::Locator::Css(&format!(
                    "tr[data-job=\"{job}\"] td.leader"
                )))
                .await?
                .text()
                .await
        })
        .ok()
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
    let (_locked, port) =
        Node::spawn_with_http(&emu, &cfg, "b", &[("CRONLEASE_HTTP_TOKEN", token)]);
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
