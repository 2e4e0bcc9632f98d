//! The README's picture of the dashboard, docs/dashboard.png: the demo's cluster (an emulator and
//! three nodes on the repository's own jobs.toml) in a real headless Chromium. It runs with the
//! other tests and checks what the picture shows (every job led, runs in each strip, every
//! node, a run's dialog at both widths, PNGs of the right width); it writes into the source
//! tree only when asked:
//!
//! ```text
//! CRONLEASE_UPDATE_SCREENSHOT=1 cargo test --test screenshot -- --nocapture
//! ```
//!
//! Its other pictures (the page at phone width, a run's dialog at both widths) go to a temp
//! directory, or to `CRONLEASE_SCREENSHOT_DIR` to look at them (their paths are printed).
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::Browser;
use common::{wait_until, Emulator, Node};

/// How long the cluster may take to have a leader for every job and a few runs of each.
const SETTLE: Duration = Duration::from_secs(150);
/// Runs each job's strip shows before the picture is taken.
const RUNS: usize = 3;
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// The job names of `config`.
fn job_names(config: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(config).expect("read jobs.toml");
    let doc: toml::Table = toml::from_str(&text).expect("parse jobs.toml");
    doc["job"]
        .as_array()
        .expect("[[job]] tables")
        .iter()
        .map(|j| j["name"].as_str().expect("a job name").to_string())
        .collect()
}

/// What the page shows per job row: (job, leader, run marks, finished run marks).
fn rows(browser: &Browser) -> Vec<(String, String, u64, u64)> {
    let shown = browser.eval(
        "return [...document.querySelectorAll('#jobs tbody tr[data-job]')].map(tr => [
           tr.dataset.job, tr.querySelector('td.leader').textContent,
           tr.querySelectorAll('.run').length, tr.querySelectorAll('.run:not(.running)').length])",
    );
    shown
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r[0].as_str().unwrap_or_default().to_string(),
                        r[1].as_str().unwrap_or_default().to_string(),
                        r[2].as_u64().unwrap_or(0),
                        r[3].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The width of a PNG, from its header.
fn png_width(png: &[u8]) -> u32 {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    u32::from_be_bytes(png[16..20].try_into().unwrap())
}

/// Saves a PNG of the page at `width` CSS pixels to `path`: the viewport `height` high, or
/// with `whole`, as high as the page (at least `height`).
fn shoot(browser: &Browser, width: u64, height: u64, whole: bool, path: &Path) {
    browser.set_viewport(width, height);
    if whole {
        let content = browser
            .eval("return Math.ceil(document.body.getBoundingClientRect().height)")
            .as_u64()
            .unwrap_or(0);
        browser.set_viewport(width, content.max(height));
    }
    // The layout at the new size is in place after the next frame.
    browser.eval("return new Promise(done => requestAnimationFrame(() => done(true)))");
    let png = browser
        .block_on(browser.client.screenshot())
        .expect("a screenshot");
    assert_eq!(png_width(&png), width as u32, "{}", path.display());
    std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    eprintln!(
        "screenshot: {} ({width} px wide, {} bytes, {overflow} px of page overflow sideways)",
        path.display(),
        png.len()
    );
}

#[test]
fn dashboard_screenshot_of_the_demo_cluster() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let temp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("CRONLEASE_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| temp.path().to_path_buf());
    let scratch = |name: &str| dir.join(format!("cronlease-{name}.png"));
    let readme_picture = if std::env::var_os("CRONLEASE_UPDATE_SCREENSHOT").is_some() {
        root.join("docs/dashboard.png")
    } else {
        scratch("dashboard")
    };
    let cfg = root.join("jobs.toml");
    let mut jobs = job_names(&cfg);
    jobs.sort();
    let emu = Emulator::start();
    // The last node has a token and serves reads to all (--http-public-read), so its page has
    // the buttons (they ask for the token); it serves the page.
    let token = "demo-token-0123456789abcdef";
    let mut nodes = Vec::new();
    for (i, id) in NODES.iter().enumerate() {
        nodes.push(if i == NODES.len() - 1 {
            Node::spawn_with_http_args(
                &emu,
                &cfg,
                id,
                &[("CRONLEASE_HTTP_TOKEN", token)],
                &["--http-public-read"],
            )
        } else {
            Node::spawn_with_http(&emu, &cfg, id, &[])
        });
    }
    let port = nodes[NODES.len() - 1].1;
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{port}/"));

    // Every job led, RUNS finished runs in each strip, every node in the nodes table.
    let mut shown = Vec::new();
    assert!(
        wait_until(SETTLE, || {
            shown = rows(&browser);
            let mut names: Vec<&str> = shown.iter().map(|r| r.0.as_str()).collect();
            names.sort();
            let node_rows = browser
                .eval("return document.querySelectorAll('#nodes tbody tr[data-node]').length");
            names == jobs
                && shown.iter().all(|(_, leader, _, done)| {
                    NODES.contains(&leader.as_str()) && *done >= RUNS as u64
                })
                && node_rows == serde_json::json!(NODES.len())
        }),
        "the page did not settle within {SETTLE:?}: {shown:?}\n{}",
        browser.text()
    );

    // The README's: as high as the page. The phone's: the whole page, to look at.
    shoot(&browser, 1280, 400, true, &readme_picture);
    shoot(&browser, 390, 844, true, &scratch("dashboard-phone"));
    // The jobs table scrolled to its end: the job names stay in view.
    browser.eval(
        "for (const s of document.querySelectorAll('.scroll')) s.scrollLeft = 9999; return true",
    );
    shoot(
        &browser,
        390,
        844,
        false,
        &scratch("dashboard-phone-scrolled"),
    );
    browser.eval(
        "for (const s of document.querySelectorAll('.scroll')) s.scrollLeft = 0; return true",
    );

    // A finished run's dialog, at both widths.
    let job = jobs.iter().find(|j| *j == "uptime").unwrap_or(&jobs[0]);
    let mark = format!("tr[data-job=\"{job}\"] button.run.ok");
    for (width, height, name) in [(1280, 800, "detail"), (390, 844, "detail-phone")] {
        browser.set_viewport(width, height);
        assert!(
            wait_until(Duration::from_secs(10), || browser.click(&mark).is_ok()),
            "no finished run of {job} to click: {}",
            browser.text()
        );
        assert!(
            wait_until(Duration::from_secs(10), || browser
                .text_of("#detail-head")
                .is_some_and(|h| h.contains(": ok"))
                && browser
                    .text_of("#detail-output")
                    .is_some_and(|o| !o.is_empty())),
            "the dialog: {}",
            browser.text()
        );
        shoot(&browser, width, height, false, &scratch(name));
        browser.eval("document.getElementById('detail').close(); return true");
    }
}
