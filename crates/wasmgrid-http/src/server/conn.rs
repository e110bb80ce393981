//! Accepting and driving HTTP connections with limits: a cap on open
//! connections, a header-read timeout and an idle keep-alive timeout (see
//! docs/RELIABILITY.md, "Connection limits").
//!
//! hyper's own `header_read_timeout` starts whenever it waits for a request head,
//! idle keep-alive time included, so it cannot tell a slow client from an idle
//! one; and hyper 1 has no idle timeout. Both are kept here instead, per
//! connection, from two signals: bytes arriving (the IO wrapper [`Watched`]) and
//! requests being answered (a guard that lives until the response body is
//! dropped). Neither timeout runs while a request is being answered.

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

/// Default for [`ConnectionLimits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ConnectionLimits::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default for [`ConnectionLimits::max_connections`], lowered to fit the
/// open-file limit (see [`default_max_connections`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How often, at most, the "connection limit reached" warning is logged.
const CAP_WARN_EVERY: Duration = Duration::from_secs(5);

/// Limits on the server's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest time a client may take to send a request's line and headers,
    /// counted from the connection's start or from the first byte of a request
    /// that follows another on the same connection.
    pub header_read_timeout: Duration,
    /// Longest time a kept-alive connection may sit between requests with
    /// nothing sent.
    pub idle_timeout: Duration,
    /// Connections open at once; `None` picks [`default_max_connections`].
    pub max_connections: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
        }
    }
}

/// Raises the soft limit on open files to the hard limit (a connection is a
/// file) and returns the soft limit now in force, if it can be read.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        // An unlimited hard limit is refused for files (the kernel's nr_open
        // caps it), so aim at a large finite number instead.
        let target = if lim.rlim_max == libc::RLIM_INFINITY {
            1 << 20
        } else {
            lim.rlim_max
        };
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Some(lim.rlim_cur as u64)
}

/// The default connection cap: [`DEFAULT_MAX_CONNECTIONS`], or three quarters
/// of the open-file limit if that is lower, so the store, data blobs and
/// compiled components keep file descriptors when every slot is taken.
pub fn default_max_connections(fd_limit: Option<u64>) -> usize {
    let fit = fd_limit.map_or(DEFAULT_MAX_CONNECTIONS as u64, |n| n / 4 * 3);
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(16, DEFAULT_MAX_CONNECTIONS)
}

/// The router as the accept loop needs it: cloned per connection and request.
pub trait AppService:
    tower::Service<
        axum::http::Request<Body>,
        Response = axum::response::Response,
        Error = Infallible,
    > + Clone
    + Send
    + 'static
{
}

impl<S> AppService for S where
    S: tower::Service<
            axum::http::Request<Body>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static
{
}

/// Accepts connections on `listener` and serves `service` on each until `stop`
/// turns true; then stops accepting, asks every connection to close once its
/// in-flight requests are answered, and returns when all have closed.
pub async fn accept_loop<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) where
    S: AppService,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(
        max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let tasks = tokio_util::task::TaskTracker::new();
    let mut last_warn: Option<std::time::Instant> = None;
    'accept: loop {
        if *stop.borrow() {
            break;
        }
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Full: leave new connections in the kernel's backlog until one
                // closes, rather than accept them and run out of files.
                if last_warn.is_none_or(|t| t.elapsed() >= CAP_WARN_EVERY) {
                    last_warn = Some(std::time::Instant::now());
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: not accepting new connections until one closes \
                         (raise it with --max-connections if the open-file limit allows)"
                    );
                }
                tokio::select! {
                    p = slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break 'accept,
                    },
                    _ = stop.changed() => continue 'accept,
                }
            }
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = stop.changed() => continue 'accept,
        };
        // No Nagle: a response whose body follows its head in a second write (a
        // wasi:http guest streaming its body) would otherwise wait for the
        // client's delayed ACK, ~40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        tracing::trace!(%peer, "connection accepted");
        let service = service.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            serve_connection(tcp, service, limits, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    tasks.close();
    tasks.wait().await;
}

/// Like axum's: errors of one connection are skipped; others (out of files)
/// are logged and accepting pauses a second, so the log is not flooded.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn serve_connection<S>(
    tcp: TcpStream,
    service: S,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: AppService,
    S::Future: Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        io: tcp,
        activity: activity.clone(),
    });
    let svc = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: axum::http::Request<Incoming>| {
            // Counted from the moment hyper hands the request over, so the
            // timeouts stop before the handler runs.
            let guard = InFlight::begin(&activity);
            let call = tower::ServiceExt::oneshot(service.clone(), req.map(Body::new));
            async move {
                let resp = call.await?;
                Ok::<_, Infallible>(resp.map(|body| Tracked {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // hyper's timer would also cut idle keep-alive connections; ours is below.
    builder.http1().header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits);
        let changed = activity.changed.notified();
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = sleep_until(deadline) => {
                if activity.expired(&limits) {
                    // Nothing is being answered: dropping the connection cuts
                    // only a client that is idle or too slow with its headers.
                    tracing::debug!("closing a connection: idle, or its request head came too slowly");
                    return;
                }
            }
            _ = changed => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, for its timeouts.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when a deadline may have moved earlier.
    changed: Notify,
}

struct ActivityState {
    /// Requests handed to the service whose response body is not yet done.
    in_flight: usize,
    /// When the head of the next request started (or the connection opened),
    /// while no request is in flight.
    header_since: Option<Instant>,
    /// When the connection last became idle or last wrote while idle.
    idle_since: Instant,
    /// The last write could not proceed: the client is reading a response.
    write_blocked: bool,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                // A new connection owes its first request head at once.
                header_since: Some(now),
                idle_since: now,
                write_blocked: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && s.header_since.is_none() {
            s.header_since = Some(Instant::now());
            drop(s);
            self.changed.notify_one();
        }
    }

    fn wrote(&self, blocked: bool) {
        let mut s = self.lock();
        s.write_blocked = blocked;
        if !blocked {
            s.idle_since = Instant::now();
        }
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let s = self.lock();
        if s.in_flight > 0 || s.write_blocked {
            return None;
        }
        Some(match s.header_since {
            Some(t) => t + limits.header_read_timeout,
            None => s.idle_since + limits.idle_timeout,
        })
    }

    fn expired(&self, limits: &ConnectionLimits) -> bool {
        self.deadline(limits).is_some_and(|d| d <= Instant::now())
    }
}

/// One request being answered; dropped with its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        let mut s = activity.lock();
        s.in_flight += 1;
        s.header_since = None;
        drop(s);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
            drop(s);
            self.0.changed.notify_one();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body holding its request's [`InFlight`] guard.
    struct Tracked {
        #[pin]
        body: Body,
        _guard: InFlight,
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The connection's socket, reporting reads and writes to its [`Activity`].
    struct Watched {
        #[pin]
        io: TcpStream,
        activity: Arc<Activity>,
    }
}

impl Watched {
    fn after_write<T>(activity: &Activity, r: &Poll<io::Result<T>>) {
        match r {
            Poll::Pending => activity.wrote(true),
            Poll::Ready(_) => activity.wrote(false),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.io.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        Self::after_write(this.activity, &r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        Self::after_write(this.activity, &r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let r = this.io.poll_flush(cx);
        Self::after_write(this.activity, &r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_files_for_the_rest() {
        assert_eq!(default_max_connections(Some(1024)), 768);
        assert_eq!(
            default_max_connections(Some(1 << 20)),
            DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(default_max_connections(None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(default_max_connections(Some(8)), 16);
    }

    #[test]
    fn timeouts_pause_while_a_request_is_answered() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: None,
        };
        let a = Arc::new(Activity::new());
        let left = |a: &Activity| a.deadline(&limits).map(|d| d - Instant::now());
        // A new connection owes its head within the header timeout.
        assert!(left(&a).is_some_and(|d| d <= limits.header_read_timeout));
        let req = InFlight::begin(&a);
        assert_eq!(a.deadline(&limits), None);
        drop(req);
        // Idle between requests: the idle timeout.
        assert!(left(&a).is_some_and(|d| d > limits.header_read_timeout));
        // The next request's first byte starts its header timeout.
        a.read();
        assert!(left(&a).is_some_and(|d| d <= limits.header_read_timeout));
        // A client slow to read a response is not cut either.
        drop(InFlight::begin(&a));
        a.wrote(true);
        assert_eq!(a.deadline(&limits), None);
        assert!(!a.expired(&limits));
    }
}
