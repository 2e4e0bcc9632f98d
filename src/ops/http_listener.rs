//! The HTTP interface's listener: plain TCP, or TLS with the pair in force
//! ([`crate::ops::http_tls::CertSlot`]).
//!
//! TLS handshakes run in tasks of their own (at most [`MAX_HANDSHAKES`] at once, at most
//! [`HANDSHAKES_PER_ADDRESS`] of them from one address, each given [`HANDSHAKE_TIMEOUT`]), so
//! a slow or silent client cannot hold up the others; the finished connections are handed to
//! the server in order of completion. One address holds at most
//! [`CONNECTIONS_PER_ADDRESS`] open connections; more from it are closed at once (a client
//! that opens connections and sends its requests slowly holds no more than that: there is no
//! timeout on reading a request's head). A client that speaks plain HTTP to a TLS port fails
//! the handshake and gets no page (rustls answers a TLS alert, which `curl` reports as a
//! protocol error).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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
/// Connections open at once from one address (a browser opens at most 6 per page and node);
/// more from it are closed at once.
pub const CONNECTIONS_PER_ADDRESS: usize = 256;

/// A connection, plain or TLS, counted against its address while it is open.
pub struct Conn {
    io: Either<TcpStream, TlsStream<TcpStream>>,
    _counted: Counted,
}

/// How many of something each address has going, bounded.
#[derive(Clone)]
struct PerAddress {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    limit: usize,
}

/// One of an address's [`PerAddress`] slots, given back when dropped.
struct Counted {
    of: PerAddress,
    ip: IpAddr,
}

impl PerAddress {
    fn new(limit: usize) -> PerAddress {
        PerAddress {
            counts: Arc::default(),
            limit,
        }
    }

    /// A slot for `ip`, or `None` when it has `limit` already.
    fn take(&self, ip: IpAddr) -> Option<Counted> {
        let mut counts = self.counts.lock().unwrap();
        let n = counts.entry(ip).or_default();
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(Counted {
            of: self.clone(),
            ip,
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.of.counts.lock().unwrap();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

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
    let shaking = PerAddress::new(HANDSHAKES_PER_ADDRESS);
    let open = PerAddress::new(CONNECTIONS_PER_ADDRESS);
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
        let Some(counted) = open.take(peer.ip()) else {
            tracing::debug!(%peer, "{CONNECTIONS_PER_ADDRESS} connections from it already: closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = &tls else {
            drop(permit);
            let conn = Conn {
                io: Either::Left(tcp),
                _counted: counted,
            };
            if tx.send((conn, peer)).await.is_err() {
                return;
            }
            continue;
        };
        let Some(shake) = shaking.take(peer.ip()) else {
            tracing::debug!(%peer, "too many TLS handshakes from it at once: closed");
            continue;
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let shaken = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop((permit, shake));
            match shaken {
                Ok(Ok(stream)) => {
                    let conn = Conn {
                        io: Either::Right(stream),
                        _counted: counted,
                    };
                    let _ = tx.send((conn, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_has_its_own_bounded_slots_given_back_when_dropped() {
        let per = PerAddress::new(2);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = per.take(a).unwrap();
        let _second = per.take(a).unwrap();
        assert!(per.take(a).is_none());
        assert!(per.take(b).is_some(), "another address has its own");
        drop(first);
        assert!(per.take(a).is_some());
        drop(_second);
        assert!(
            per.counts.lock().unwrap().is_empty(),
            "no entry is kept for nothing"
        );
    }
}
