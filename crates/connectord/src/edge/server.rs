//! The accept loop and one task per connection: HTTP/1.1 through hyper, the
//! connection cap, the timeouts of [`super::io`], and graceful shutdown
//! (stop accepting, let every in-flight request finish, close idle
//! connections).
//!
//! HTTP/1.1 only: GitHub delivers webhooks over HTTP/1.1, and TLS (where
//! HTTP/2 would be negotiated) ends at a proxy that speaks HTTP/1.1 to its
//! upstreams by default. HTTP/2 would bring a second set of limits to get
//! right (streams per connection, resets, header floods) for no client we
//! serve; `axum::serve` as it was used here served HTTP/1 only as well.

use super::connections::{ConnState, Registry, RequestGuard};
use super::io::{Timeouts, TrackedIo};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tower::Service;

/// hyper's read buffer per connection, which also bounds a request head
/// (larger heads answer 431). GitHub's heads are about 1.5 KiB; the minimum
/// hyper accepts is 8 KiB. At the default cap this bounds head buffers to
/// 64 MiB in all.
pub const MAX_HEAD_BUFFER: usize = 16 * 1024;

/// Connections the kernel queues while accepting pauses (every slot busy).
/// std and mio use 128, which a burst of connections fills at once; beyond
/// it the kernel drops new connections' SYNs, and clients retry only after a
/// second. Linux caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 1024;

/// Binds `addr` (`host:port`) with a listen backlog of [`LISTEN_BACKLOG`].
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(addr) {
            Ok(()) => return socket.listen(LISTEN_BACKLOG),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolves to nothing",
        )
    }))
}

/// What one listener enforces.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Names the listener in metrics (`public`, `admin`).
    pub name: &'static str,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown`, then drains gracefully.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let registry = Registry::new(limits.max_connections, limits.name);
    let timeouts = Timeouts {
        header: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    let mut http = http1::Builder::new();
    // Our header and idle timeouts replace hyper's (see `super::io`).
    http.header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BUFFER)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let mut last_cap_warning: Option<Instant> = None;
    'accept: loop {
        if registry.live() >= registry.cap() {
            warn_at_cap(&mut last_cap_warning, &limits);
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = registry.wait_for_room() => {}
        }
        let stream = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e, &shutdown).await;
                    continue;
                }
            },
        };
        // Every connection may have started a request since the check: then
        // this one waits, in hand, for the first to finish.
        while !registry.make_room() {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break 'accept,
                () = registry.wait_for_room() => {}
            }
        }
        // Answers go out in one write each; don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let registration = registry.register();
        let conn = registration.state().clone();
        let io = TrackedIo::new(stream, conn.clone(), timeouts, limits.name);
        let service = ConnService {
            app: app.clone(),
            conn: conn.clone(),
        };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            tokio::select! {
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                // Dropping the connection closes the socket.
                () = conn.evicted() => tracing::debug!("connection closed to make room"),
            }
            drop(registration);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn warn_at_cap(last: &mut Option<Instant>, limits: &ListenerLimits) {
    // Under attack this could repeat per connection: once a minute is enough.
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
        *last = Some(Instant::now());
        tracing::warn!(
            listener = limits.name,
            max_connections = limits.max_connections,
            "at the connection cap: connections with no request in progress are closed to make \
             room; while every one has a request in progress, new ones wait in the listen backlog"
        );
    }
}

async fn accept_error(e: std::io::Error, shutdown: &CancellationToken) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    // The peer left before we took the connection: nothing to do.
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    // Out of file descriptors or memory: back off instead of spinning.
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
}

/// The router, seen by one connection: every request marks the connection
/// busy until its response is ready.
struct ConnService {
    app: Router,
    conn: Arc<ConnState>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = InRequest<axum::routing::future::RouteFuture<Infallible>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = self.conn.begin_request();
        // A Router is always ready; `call` needs it mutable, so a clone (an Arc) takes it.
        let mut app = self.app.clone();
        InRequest {
            inner: app.call(req),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// A handler's future, holding the connection busy until it completes
    /// (or is dropped).
    struct InRequest<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.take();
        Poll::Ready(out)
    }
}
