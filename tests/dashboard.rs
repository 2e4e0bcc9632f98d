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
