//! The HTTP interface's listener: plain TCP, or TLS with the pair in force
//! ([`crate::ops::http_tls::CertSlot`]).
//!
//! TLS handshakes run in tasks of their own (at most [`MAX_HANDSHAKES`] at once, at most
//! [`HANDSHAKES_PER_ADDRESS`] of them from one address, each given [`HANDSHAKE_TIMEOUT`]), so
//! a slow or silent client cannot hold up the others; the finished connections are handed to
//! the server in order of completion. (After the handshake, a client that sends its request
//! slowly holds only its own connection: there is no timeout on reading a request's head.) A client that speaks plain
//! HTTP to a TLS port fails the handshake and gets no page (rustls answers a TLS alert, which
//! `curl` reports as a protocol error).
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// TLS handshakes going on at once; more connections wait in the kernel's backlog.
pub const MAX_HANDSHAKES: usize = 64;
/// TLS handshakes going on at once from one address; more from it are closed at once.
pub const HANDSHAKES_PER_ADDRESS: usize = 8;
/// How long a client has to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection, plain or TLS.
pub type Conn = Either<TcpStream, TlsStream<TcpStream>>;

/// What [`axum::serve`] accepts connections from.
pub struct HttpListener {
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl HttpListener {
    /// Accept on `listener` until `stop`; with `tls`, handshake each connection first.
    pub fn new(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        stop: CancellationToken,
    ) -> std::io::Result<HttpListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(MAX_HANDSHAKES);
        tokio::spawn(accept_loop(listener, tls.map(TlsAcceptor::from), tx, stop));
        Ok(HttpListener { ready, local })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    tx: mpsc::Sender<(Conn, SocketAddr)>,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let per_address = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        std::net::IpAddr,
        usize,
    >::new()));
    loop {
        // A permit before the accept: beyond MAX_HANDSHAKES, connections wait in the backlog.
        // The loop ends with the server too (`tx` closed), not only on `stop`.
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            p = handshakes.clone().acquire_owned() => p.expect("never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: the same pause axum's own loop makes.
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                drop(permit);
                if tx.send((Either::Left(tcp), peer)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                {
                    let mut going = per_address.lock().unwrap();
                    let n = going.entry(peer.ip()).or_default();
                    if *n >= HANDSHAKES_PER_ADDRESS {
                        tracing::debug!(%peer, "too many TLS handshakes from it at once: closed");
                        continue;
                    }
                    *n += 1;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                let per_address = per_address.clone();
                tokio::spawn(async move {
                    let shaken =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    drop(permit);
                    {
                        let mut going = per_address.lock().unwrap();
                        if let Some(n) = going.get_mut(&peer.ip()) {
                            *n -= 1;
                            if *n == 0 {
                                going.remove(&peer.ip());
                            }
                        }
                    }
                    match shaken {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((Either::Right(stream), peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

impl axum::serve::Listener for HttpListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop stopped: the server is stopping too and asks for no more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
