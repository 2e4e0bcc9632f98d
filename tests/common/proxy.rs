//! A TCP proxy between one node and the emulator, to cut the network of that node alone.
//!
//! ```ignore
//! let proxy = Proxy::start(emu.port);               // 127.0.0.1:<free port> -> emulator
//! let a = Node::spawn_with_env(&emu, &cfg, "a", &[("DATASTORE_EMULATOR_HOST", &proxy.host())]);
//! proxy.cut();      // every open connection is closed; new ones are accepted and then ignored
//! proxy.restore();  // the ignored ones are closed; new connections are forwarded again
//! ```
//!
//! A cut behaves like a partition rather than a crashed server: a new connection is accepted
//! (the kernel would complete the TCP handshake anyway) and then nothing is ever read from it or
//! sent on it, so a client's call hangs until its own timeout instead of failing fast. Open
//! connections are shut down in both directions, so an HTTP/2 client cannot keep using one.
//!
//! Plain std threads: one accepting, two per forwarded connection. Dropping the proxy closes
//! the listener and every connection.
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long connecting to the upstream may take before the client's connection is dropped.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Proxy {
    /// The port the proxy listens on (127.0.0.1).
    pub port: u16,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    state: Mutex<State>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    forwarded: AtomicU64,
    blackholed: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Default)]
struct State {
    cut: bool,
    /// Forwarded connections: id -> (client side, upstream side), clones kept for shutdown.
    open: HashMap<u64, (TcpStream, TcpStream)>,
    /// Connections accepted while cut: held, never read, closed on restore.
    held: Vec<TcpStream>,
}

/// Counters, for a drill's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyStats {
    pub accepted: u64,
    pub forwarded: u64,
    pub blackholed: u64,
    pub bytes: u64,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to
    /// `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, upstream, shared))
                .expect("spawn the proxy's accept thread")
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// "127.0.0.1:PORT": what a node behind this proxy gets as `DATASTORE_EMULATOR_HOST`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop forwarding: shut down every open connection, and from now on accept new
    /// connections but never answer them.
    pub fn cut(&self) {
        let mut st = self.shared.state.lock().unwrap();
        st.cut = true;
        for (_, (client, upstream)) in st.open.drain() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }

    /// Forward again: close the connections held while cut (their clients reconnect).
    pub fn restore(&self) {
        let mut st = self.shared.state.lock().unwrap();
        st.cut = false;
        for s in st.held.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn is_cut(&self) -> bool {
        self.shared.state.lock().unwrap().cut
    }

    /// Forwarded connections open right now.
    pub fn open_connections(&self) -> usize {
        self.shared.state.lock().unwrap().open.len()
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            accepted: self.shared.accepted.load(Ordering::SeqCst),
            forwarded: self.shared.forwarded.load(Ordering::SeqCst),
            blackholed: self.shared.blackholed.load(Ordering::SeqCst),
            bytes: self.shared.bytes.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut();
        self.restore();
        // Wake the blocking accept() so the thread sees `stopping`.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        if shared.state.lock().unwrap().cut {
            hold(&shared, client);
            continue;
        }
        let Ok(up) = TcpStream::connect_timeout(&upstream, UPSTREAM_CONNECT_TIMEOUT) else {
            // The upstream is down: the client sees its connection closed, as it would
            // connecting to the upstream directly (refused).
            continue;
        };
        let _ = up.set_nodelay(true);
        let (Ok(client2), Ok(up2), Ok(client3), Ok(up3)) = (
            client.try_clone(),
            up.try_clone(),
            client.try_clone(),
            up.try_clone(),
        ) else {
            continue;
        };
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        {
            // Register under the lock, re-checking the cut: a cut() that came in between
            // must not miss this connection.
            let mut st = shared.state.lock().unwrap();
            if st.cut {
                drop(st);
                let _ = up.shutdown(Shutdown::Both);
                hold(&shared, client);
                continue;
            }
            st.open.insert(id, (client3, up3));
        }
        shared.forwarded.fetch_add(1, Ordering::SeqCst);
        let s1 = shared.clone();
        let s2 = shared.clone();
        let spawned = thread::Builder::new()
            .name(format!("proxy-up-{id}"))
            .spawn(move || pump(client, up2, id, &s1))
            .and_then(|_| {
                thread::Builder::new()
                    .name(format!("proxy-down-{id}"))
                    .spawn(move || pump(up, client2, id, &s2))
            });
        if spawned.is_err() {
            if let Some((c, u)) = shared.state.lock().unwrap().open.remove(&id) {
                let _ = c.shutdown(Shutdown::Both);
                let _ = u.shutdown(Shutdown::Both);
            }
        }
    }
}

fn hold(shared: &Shared, client: TcpStream) {
    shared.blackholed.fetch_add(1, Ordering::SeqCst);
    shared.state.lock().unwrap().held.push(client);
}

/// Copies `from` to `to` until either side closes, then shuts both connections down so the
/// opposite pump ends too.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: &Shared) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        shared.bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.state.lock().unwrap().open.remove(&id);
}
