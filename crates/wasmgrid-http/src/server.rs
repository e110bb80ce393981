//! Serving the API: bind, advertise `server.json`, and drain on SIGTERM,
//! Ctrl-C or a cancelled shutdown token.

use crate::app::App;
use anyhow::Context as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod conn;

pub use conn::{
    ConnectionLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
};

/// What `<data dir>/server.json` holds while a server runs, so the CLI can find it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ServerInfo {
    /// `host:port` the server listens on.
    pub addr: String,
    /// Process id of the server.
    pub pid: u32,
}

impl ServerInfo {
    /// Reads `server.json` from a data directory, if present.
    pub fn read(data_dir: &Path) -> Option<ServerInfo> {
        let text = std::fs::read_to_string(data_dir.join("server.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Serves `app` on `addr` until SIGTERM, Ctrl-C or `shutdown` is cancelled,
/// then stops accepting, lets in-flight calls and background work finish (up
/// to `drain_timeout`), removes `server.json` and returns. `on_ready` runs once
/// the socket is bound. `limits` bounds connections (see [`ConnectionLimits`]).
pub async fn serve(
    app: Arc<App>,
    addr: &str,
    drain_timeout: Duration,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let fd_limit = conn::raise_fd_limit();
    let max_connections = limits
        .max_connections
        .unwrap_or_else(|| conn::default_max_connections(fd_limit));
    if let Some(fds) = fd_limit
        && max_connections as u64 >= fds
    {
        tracing::warn!(
            max_connections,
            open_file_limit = fds,
            "--max-connections is not below the open-file limit: a flood of connections can leave \
             the server without files; lower it or raise `ulimit -n`"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}: is another server using it? pick another with --addr HOST:PORT (port 0 picks a free one)")
    })?;
    let local = listener.local_addr()?;
    let info_path = app.data_dir.join("server.json");
    let info = ServerInfo {
        addr: local.to_string(),
        pid: std::process::id(),
    };
    std::fs::write(&info_path, serde_json::to_vec(&info)?)
        .with_context(|| format!("cannot write {}", info_path.display()))?;
    tracing::info!(addr = %local, data_dir = %app.data_dir.display(), "wasmgrid listening");
    if let Some(cluster) = &app.cluster {
        cluster.listening(local.to_string());
    }
    match app.jobs.start().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "resumed unfinished jobs"),
        Err(e) => tracing::error!(error = %e, "cannot resume jobs"),
    }
    on_ready(local);
    app.events.start();

    // Expired files in algorithms' temp collections are unreadable at once;
    // this sweep reclaims their space. At start and then hourly it also removes
    // data blobs no file record points to (left by crashes; a full scan of the
    // file records, so not every minute).
    let sweeper = {
        let data = app.data.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            for minute in 0u64.. {
                every.tick().await;
                let data2 = data.clone();
                match tokio::task::spawn_blocking(move || data2.sweep_expired()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(files = n, "removed expired temp files"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "temp sweep failed"),
                    Err(e) => tracing::warn!(error = %e, "temp sweep task failed"),
                }
                if minute % 60 == 0 {
                    let data2 = data.clone();
                    match tokio::task::spawn_blocking(move || data2.remove_orphan_blobs()).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(blobs = n, "removed orphan data blobs"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "orphan blob sweep failed"),
                        Err(e) => tracing::warn!(error = %e, "orphan blob sweep task failed"),
                    }
                }
            }
        })
    };
    let draining = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app2 = app.clone();
    let draining2 = draining.clone();
    tokio::spawn(async move {
        // A signal and a cancelled token take the same path: one drain.
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = shutdown.cancelled() => {}
        }
        tracing::info!("shutting down: no new connections; draining in-flight calls");
        app2.draining.store(true, Ordering::Relaxed);
        if let Some(cluster) = &app2.cluster {
            cluster.shutdown.cancel();
        }
        draining2.notify_one();
        let _ = stop_tx.send(true);
    });
    // Path normalisation must run before routing, so it wraps the router.
    let service = tower::Layer::layer(
        &tower::util::MapRequestLayer::new(crate::api::normalize_path::<axum::body::Body>),
        crate::api::router(app.clone()),
    );
    tracing::info!(
        max_connections,
        header_read_timeout = ?limits.header_read_timeout,
        idle_timeout = ?limits.idle_timeout,
        "connection limits"
    );
    let server = async {
        conn::accept_loop(listener, service, limits, max_connections, stop_rx).await;
        Ok::<(), anyhow::Error>(())
    };
    let drain_deadline = async {
        draining.notified().await;
        tokio::time::sleep(drain_timeout).await;
    };
    let result = tokio::select! {
        r = server => r,
        _ = drain_deadline => {
            tracing::warn!(?drain_timeout, "drain timeout reached; exiting with requests still in flight");
            Ok(())
        }
    };
    sweeper.abort();
    if tokio::time::timeout(drain_timeout, app.events.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "event deliveries still running at exit; they will be retried after restart"
        );
    }
    // Unfinished jobs stay Running in the store and resume at the next start.
    app.jobs.shutdown(drain_timeout).await;
    app.background.close();
    if tokio::time::timeout(drain_timeout, app.background.wait())
        .await
        .is_err()
    {
        tracing::warn!("background calls still running at exit");
    }
    let _ = std::fs::remove_file(&info_path);
    tracing::info!("stopped");
    result
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
