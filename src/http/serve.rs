//! The HTTP server loop: accepts connections within bounds, and serves each
//! one with hyper under time limits.
//!
//! `axum::serve` sets no timer, so a client that sends half a request head
//! and then nothing would hold its connection (and a file descriptor)
//! forever, and nothing caps how many connections are open. Here:
//!
//! * at most `http.max_connections` are open, and at most
//!   `http.max_connections_per_client` per client address (connections from
//!   trusted proxies are not counted per address); a connection over a cap
//!   gets `503` (plain HTTP) and is closed, and is counted;
//! * a request head must arrive within `http.header_timeout_secs` (hyper's
//!   timer, which runs from the connection's start or the end of the
//!   previous answer), a TLS handshake too;
//! * a keep-alive connection with nothing in progress and no byte of a new
//!   request is closed after `http.idle_timeout_secs`;
//! * a request body must arrive within `http.body_timeout_secs` of its head,
//!   else the answer is `408`;
//! * answers after which the connection cannot go on (`408`, `413`) say
//!   `Connection: close`, and hyper closes it after writing them.
//!
//! Each connection is one task in a `JoinSet` owned by [`serve`]; stopping
//! asks every connection to finish its request and close, then aborts what
//! is left after a grace period.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::address::canonical;
use crate::address::{Network, in_networks};
use crate::config::HttpConfig;
use crate::metrics::HttpStats;

/// How long connections get to finish when the server stops.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Connections the kernel may queue before they are accepted (capped by
/// `net.core.somaxconn`): a burst of new connections (thousands of
/// viewers arriving, or a flood) waits there instead of being dropped.
const BACKLOG: i32 = 4096;

/// The HTTP listening socket on `addr` (address reuse on, a deep backlog).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// The limits of [`serve`], from `[http]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Whole request head (and TLS handshake) within this.
    pub header_timeout: Duration,
    /// Idle keep-alive connections are closed after this.
    pub idle_timeout: Duration,
    /// A request body must arrive within this once its head has.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once per client address.
    pub max_per_client: usize,
    /// Peers not counted per address (trusted proxies).
    pub exempt: Arc<[Network]>,
}

impl Limits {
    /// The limits set in `[http]`.
    pub fn from_config(http: &HttpConfig) -> Limits {
        Limits {
            header_timeout: Duration::from_secs_f64(http.header_timeout_secs),
            idle_timeout: Duration::from_secs_f64(http.idle_timeout_secs),
            body_timeout: Duration::from_secs_f64(http.body_timeout_secs),
            max_connections: http.max_connections,
            max_per_client: http.max_connections_per_client,
            exempt: http.trusted_proxies.clone().into(),
        }
    }
}

/// Serves `app` on `listener` (plain HTTP, or HTTPS with `tls`) within
/// `limits`, until `shutdown` resolves; then lets connections finish their
/// requests for a few seconds and closes the rest.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    limits: Limits,
    stats: Arc<HttpStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_client = Arc::new(PerClient::default());
    let mut conns = JoinSet::new();
    let shared = Arc::new(Shared {
        app,
        tls,
        limits,
        stats,
    });
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, as axum does.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ip = canonical(peer.ip());
        let s = &shared;
        if s.stats.open.load(Ordering::Relaxed) >= s.limits.max_connections {
            s.stats.refused_total.fetch_add(1, Ordering::Relaxed);
            refuse(tcp, s.tls.is_some(), "max_connections");
            continue;
        }
        let slot = if in_networks(&s.limits.exempt, ip) {
            None
        } else {
            match per_client.take(ip, s.limits.max_per_client) {
                Some(slot) => Some(slot),
                None => {
                    s.stats.refused_per_client.fetch_add(1, Ordering::Relaxed);
                    refuse(tcp, s.tls.is_some(), "max_connections_per_client");
                    continue;
                }
            }
        };
        let open = Open::new(s.stats.clone(), slot);
        conns.spawn(connection(tcp, peer, shared.clone(), stop_rx.clone(), open));
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(left = conns.len(), "closing HTTP connections still open");
        conns.abort_all();
    }
    Ok(())
}

/// What every connection task shares.
struct Shared {
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    limits: Limits,
    stats: Arc<HttpStats>,
}

/// Answers a connection over a cap and closes it (a TLS client gets no
/// answer it could read: it is just closed).
fn refuse(tcp: TcpStream, tls: bool, cap: &str) {
    if !tls {
        let body = format!("too many connections (http.{cap}); retry later\n");
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
             retry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = tcp.try_write(answer.as_bytes());
    }
    tracing::debug!(cap, "HTTP connection refused");
}

/// Connections open per client address.
#[derive(Default)]
struct PerClient(parking_lot::Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`PerClient`], given back on drop.
struct ClientSlot {
    table: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut t = self.0.lock();
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock();
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip);
            }
        }
        if t.capacity() > 64 && t.len() < t.capacity() / 4 {
            t.shrink_to_fit();
        }
    }
}

/// An open connection in the counts; leaves them on drop.
struct Open {
    stats: Arc<HttpStats>,
    _slot: Option<ClientSlot>,
}

impl Open {
    fn new(stats: Arc<HttpStats>, slot: Option<ClientSlot>) -> Open {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Open { stats, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    _open: Open,
) {
    let _ = tcp.set_nodelay(true);
    match shared.tls.clone() {
        None => serve_io(tcp, peer, shared, stop).await,
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout(shared.limits.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve_io(tls, peer, shared, stop).await,
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer.ip(), error = %e, "TLS handshake failed")
                }
                Err(_) => {
                    shared.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(client = %peer.ip(), "TLS handshake timed out");
                }
            }
        }
    }
}

async fn serve_io<I>(io: I, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: io,
        activity: activity.clone(),
    });
    let service = {
        let shared = shared.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            answer(req, peer, shared.clone(), activity.clone())
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let idle = shared.limits.idle_timeout;
    let mut closing = false;
    loop {
        let check = tokio::time::sleep_until(activity.idle_deadline(idle));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        shared.stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(client = %peer.ip(), "closed: no request head within http.header_timeout_secs");
                    } else {
                        tracing::debug!(client = %peer.ip(), error = %e, "HTTP connection error");
                    }
                }
                return;
            }
            changed = stop.changed(), if !closing => {
                let _ = changed;
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = check, if !closing => {
                if activity.is_idle_for(idle) {
                    shared.stats.idle_closed.fetch_add(1, Ordering::Relaxed);
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// One request through the router, with the client's address, the body's
/// time limit, and `Connection: close` where the connection cannot go on.
async fn answer(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    activity: Arc<Activity>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let busy = Busy::new(activity);
    let timed_out = Arc::new(AtomicBool::new(false));
    let mut req = req.map(|b| {
        if hyper::body::Body::is_end_stream(&b) {
            // No body (most GETs): nothing to wait for, no timer.
            return Body::new(b);
        }
        Body::new(TimedBody {
            inner: b,
            deadline: Box::pin(tokio::time::sleep(shared.limits.body_timeout)),
            timed_out: timed_out.clone(),
        })
    });
    req.extensions_mut().insert(ConnectInfo(peer));
    let Ok(mut resp) = shared.app.clone().oneshot(req).await;
    if timed_out.load(Ordering::Relaxed) {
        shared.stats.body_timeouts.fetch_add(1, Ordering::Relaxed);
        resp = Response::new(Body::from(
            "the request body did not arrive in time (http.body_timeout_secs)\n",
        ));
        *resp.status_mut() = StatusCode::REQUEST_TIMEOUT;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    if matches!(
        resp.status(),
        StatusCode::REQUEST_TIMEOUT | StatusCode::PAYLOAD_TOO_LARGE
    ) {
        // The rest of the request may still be on its way: nothing after it
        // can be read reliably.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // The connection is busy until the answer's body has been written.
    Ok(resp.map(|b| {
        Body::new(Tracked {
            inner: b,
            _busy: busy,
        })
    }))
}

/// When a connection last did something, for the idle check.
struct Activity {
    start: Instant,
    /// Requests whose answer is not yet fully written.
    in_flight: AtomicUsize,
    /// Milliseconds from `start` to when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Whether any byte arrived since then (the start of a new request).
    read_since_idle: AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            read_since_idle: AtomicBool::new(false),
        }
    }

    fn idle_since(&self) -> Instant {
        self.start + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    /// When the connection will have been idle for `limit` if nothing happens.
    fn idle_deadline(&self, limit: Duration) -> Instant {
        let due = self.idle_since() + limit;
        if self.in_flight.load(Ordering::Acquire) > 0
            || self.read_since_idle.load(Ordering::Acquire)
        {
            // Busy: look again a whole period later.
            return Instant::now().max(due) + limit;
        }
        due
    }

    fn is_idle_for(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
            && !self.read_since_idle.load(Ordering::Acquire)
            && self.idle_since().elapsed() >= limit
    }
}

/// A request in progress on a connection: from the call until its answer's
/// body is written (or dropped).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        if a.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.read_since_idle.store(false, Ordering::Release);
            let ms = a.start.elapsed().as_millis() as u64;
            a.idle_since_ms.store(ms, Ordering::Release);
        }
    }
}

/// The connection's I/O, noting when bytes arrive.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read_since_idle.store(true, Ordering::Release);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A request body that must arrive by a deadline; past it, it fails (and
/// the answer becomes `408`).
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive in time")]
    TimedOut,
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl hyper::body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::from)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(BodyError::TimedOut)));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer's body that keeps its connection marked busy until written.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_places_are_bounded_and_given_back() {
        let t = Arc::new(PerClient::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = t.take(ip, 2).unwrap();
        let b = t.take(ip, 2).unwrap();
        assert!(t.take(ip, 2).is_none(), "third place over the cap");
        assert!(
            t.take("192.0.2.2".parse().unwrap(), 2).is_some(),
            "per address"
        );
        drop(a);
        let c = t.take(ip, 2).expect("a freed place is taken");
        drop((b, c));
        assert!(t.0.lock().is_empty(), "no entry left for a gone client");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_no_request_and_no_byte_for_the_limit() {
        let limit = Duration::from_secs(5);
        let a = Arc::new(Activity::new());
        assert!(!a.is_idle_for(limit));
        tokio::time::advance(limit).await;
        assert!(
            a.is_idle_for(limit),
            "a connection that never sent anything"
        );
        let busy = Busy::new(a.clone());
        tokio::time::advance(limit * 2).await;
        assert!(!a.is_idle_for(limit), "a request in progress is not idle");
        drop(busy);
        assert!(
            !a.is_idle_for(limit),
            "idle counts from the end of the answer"
        );
        tokio::time::advance(limit).await;
        assert!(a.is_idle_for(limit));
        a.read_since_idle.store(true, Ordering::Release);
        assert!(
            !a.is_idle_for(limit),
            "a new request has started: the header timeout applies, not this"
        );
    }
}
