//! A real headless Chromium driven through WebDriver (chromedriver on a free port, in its own
//! process group under the same guard as the nodes, so it dies with the test), for the
//! dashboard's tests. `scripts/deps.sh` installs `chromium` and `chromium-driver`;
//! `CRONLEASE_CHROMEDRIVER` and `CRONLEASE_CHROMIUM` override their paths.
#![allow(dead_code)]

use std::time::Duration;

use super::{free_port, wait_until, Node};

/// chromedriver and one browser session; dropped: the session's window goes with the driver.
pub struct Browser {
    pub client: fantoccini::Client,
    _driver: Node,
    pub runtime: tokio::runtime::Runtime,
}

impl Browser {
    /// A headless Chromium session at a 1280×900 window.
    pub fn start() -> Browser {
        let driver_path =
            std::env::var("CRONLEASE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chromium =
            std::env::var("CRONLEASE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port();
        let driver = Node::spawn_program(
            "chromedriver",
            &driver_path,
            &[format!("--port={port}")],
            &[],
        );
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "chromedriver ({driver_path}) did not listen on {port}: install chromium-driver \
             (scripts/deps.sh)\n{}",
            driver.output_text()
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"],
            }),
        );
        let client = runtime
            .block_on(
                fantoccini::ClientBuilder::rustls()
                    .expect("rustls")
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a Chromium session through chromedriver");
        Browser {
            client,
            _driver: driver,
            runtime,
        }
    }

    /// Run a future on the browser's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    pub fn goto(&self, url: &str) {
        self.block_on(self.client.goto(url)).expect("navigate");
    }

    /// The page's visible text.
    pub fn text(&self) -> String {
        self.block_on(async {
            self.client
                .find(fantoccini::Locator::Css("body"))
                .await?
                .text()
                .await
        })
        .unwrap_or_default()
    }
}

impl Browser {
    /// The visible text of the first element matching `css` (`None` while there is none).
    pub fn text_of(&self, css: &str) -> Option<String> {
        self.block_on(async {
            self.client
                .find(fantoccini::Locator::Css(css))
                .await?
                .text()
                .await
        })
        .ok()
    }

    /// Click the first element matching `css`.
    pub fn click(&self, css: &str) -> Result<(), fantoccini::error::CmdError> {
        self.block_on(async {
            self.client
                .find(fantoccini::Locator::Css(css))
                .await?
                .click()
                .await
        })
    }

    /// Run `script` in the page and return what it returns.
    pub fn eval(&self, script: &str) -> serde_json::Value {
        self.block_on(self.client.execute(script, vec![]))
            .unwrap_or_default()
    }

    /// Makes the page's viewport `width` × `height` CSS pixels: the window's frame (headless
    /// Chromium keeps one) takes part of a window's size, so measure it and make up for it.
    pub fn set_viewport(&self, width: u64, height: u64) {
        for _ in 0..4 {
            let inner = self.eval("return [window.innerWidth, window.innerHeight]");
            let (w, h) = (
                inner[0].as_u64().unwrap_or(0),
                inner[1].as_u64().unwrap_or(0),
            );
            if (w, h) == (width, height) {
                return;
            }
            let (outer_w, outer_h) = self
                .block_on(self.client.get_window_size())
                .expect("the window size");
            self.block_on(self.client.set_window_size(
                (outer_w + width).saturating_sub(w) as u32,
                (outer_h + height).saturating_sub(h) as u32,
            ))
            .expect("set the window size");
        }
        panic!(
            "could not make the viewport {width}×{height}: {}",
            self.eval("return [window.innerWidth, window.innerHeight]")
        );
    }
}
