//! Cluster mode (issue 15): a node whose state lives in NATS JetStream, so
//! that any node answers any API call and the nodes share the work
//! (docs/STORAGE.md section 4, docs/ARCHITECTURE.md "Cluster mode").
//!
//! The data directory keeps only what is local: the compiled-code cache,
//! `server.json` and `admin.key` (the cluster's admin key, unsealed from the
//! cluster's birth record with the cluster key).

use crate::app::{App, Storage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
pub use wasmgrid_core::cluster::ClusterKey;
use wasmgrid_engine::EngineConfig;
use wasmgrid_events::EventsConfig;
use wasmgrid_store::leases::{Leases, hold};
use wasmgrid_store::records::Records;
use wasmgrid_store_nats::{NatsFiles, NatsQueues, NatsStore, TOMBSTONE_AGE};

/// How a node reaches its cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated (`nats://127.0.0.1:4222,…`).
    pub urls: String,
    /// The key every node of the cluster is given.
    pub key: ClusterKey,
    /// Replicas of every stream and bucket (1, or 3 for durability).
    pub replicas: usize,
    /// The prefix of every stream and bucket name (a naming convenience,
    /// not a security boundary: separate installations use separate NATS
    /// accounts).
    pub prefix: String,
    /// A NATS credentials file.
    pub creds: Option<PathBuf>,
    /// How long a node holds a delivery without an outcome before another
    /// node may take it over.
    pub lease: Duration,
}

/// This node's part in a cluster.
pub struct ClusterNode {
    /// The node's id: kept in `<data dir>/node.id`, so a restarted node
    /// keeps it.
    pub id: String,
    /// Its API address, once it listens ([`ClusterNode::listening`]).
    address: std::sync::OnceLock<String>,
    /// Wakes the heartbeat task when the address is known.
    address_known: tokio::sync::Notify,
    /// When it started (RFC 3339).
    pub started: String,
    /// The connection (heartbeats, `GET /v1/cluster`, readiness).
    pub nats: NatsStore,
    /// The NATS URLs the node was given.
    pub urls: String,
    /// The stream and bucket prefix.
    pub prefix: String,
    /// Stream and bucket replicas.
    pub replicas: usize,
    /// The version of the NATS server the node is connected to.
    pub server_version: String,
    /// How long a node holds work (a delivery, a job) without renewing it
    /// before another node may take it over.
    pub lease: Duration,
    /// Stops the node's cluster tasks (watches, the versions feed).
    pub shutdown: CancellationToken,
}

impl ClusterNode {
    /// Records the node's API address (its heartbeats carry it).
    pub fn listening(&self, address: String) {
        let _ = self.address.set(address);
        self.address_known.notify_one();
    }
}

/// What [`App::assemble`] needs of a cluster it joins.
pub(crate) struct Joined {
    /// The cluster's secrets master key.
    pub secrets_key: [u8; 32],
    /// The node's cluster state.
    pub node: ClusterNode,
}

/// The lease under which one node moves version records' events into the
/// change log.
const VERSIONS_FEED_LEASE: &str = "feed/versions";

/// The lease under which one node sweeps deleted files' tombstones.
const TOMBSTONE_SWEEP_LEASE: &str = "sweep/tombstones";

/// How long a node's hold on a singleton's lease outlives the node.
const SINGLETON_TTL: Duration = Duration::from_secs(30);

impl App {
    /// Joins the cluster `config` names (creating its streams and buckets,
    /// and its admin key and secrets master key, if this is its first node)
    /// and builds a node on it. Call inside a tokio runtime: the node's
    /// watches and the versions feed start here.
    pub async fn open_cluster(
        data_dir: &Path,
        engine: EngineConfig,
        events: EventsConfig,
        config: ClusterConfig,
    ) -> anyhow::Result<Arc<App>> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the data directory {}: {e}",
                data_dir.display()
            )
        })?;
        let nats = NatsStore::connect(
            &config.urls,
            &config.prefix,
            config.replicas,
            config.creds.as_deref(),
        )
        .await?;
        let files = Arc::new(nats.files().await?);
        let sweep_files = files.clone();
        let queues = Arc::new(nats.queues(config.lease, events.dedup_window).await?);
        let job_queue = Arc::new(nats.job_queue().await?);
        let records: Arc<dyn Records> = Arc::new(nats.clone());
        let leases: Arc<dyn Leases> = Arc::new(nats.clone());

        let keys = wasmgrid_core::auth::KeyStore::open(records.clone()).await?;
        let joined = wasmgrid_core::cluster::join(&*records, &keys, &config.key).await?;
        let admin_path = data_dir.join("admin.key");
        wasmgrid_core::fsutil::write_secret_file(&admin_path, &format!("{}\n", joined.admin_key))?;

        let shutdown = CancellationToken::new();
        let node = ClusterNode {
            id: node_id(data_dir)?,
            address: std::sync::OnceLock::new(),
            address_known: tokio::sync::Notify::new(),
            started: wasmgrid_core::clock::now_rfc3339(),
            nats: nats.clone(),
            urls: config.urls.clone(),
            prefix: config.prefix.clone(),
            replicas: config.replicas,
            server_version: nats.server_version().to_string(),
            lease: config.lease,
            shutdown: shutdown.clone(),
        };
        // Count the live nodes before the job service starts, so a node that
        // starts next to others takes only its share of a job's shards
        // (the heartbeat task keeps the count current from here on).
        match nats.node_heartbeats().await {
            Ok(live) => queues.set_sharing_nodes(live_nodes(&live, &node.id)),
            Err(e) => {
                tracing::warn!(error = %e, "counting the live nodes failed; counting this one only until the next heartbeat")
            }
        }
        let storage = Storage {
            records,
            blobs: Arc::new(nats.clone()),
            files,
            queues: queues.clone(),
            log: queues.clone(),
            leases: leases.clone(),
            job_queue,
        };
        let events = EventsConfig {
            follow_records: true,
            ..events
        };
        let app = App::assemble(
            data_dir,
            engine,
            events,
            storage,
            Some(Joined {
                secrets_key: joined.secrets_key,
                node,
            }),
        )
        .await?;
        // Every node keeps its caches current from the buckets' watches.
        let stop = shutdown.clone();
        tokio::spawn(app.registry.clone().follow(stop.cancelled_owned()));
        let stop = shutdown.clone();
        tokio::spawn(app.keys.clone().follow(stop.cancelled_owned()));
        let stop = shutdown.clone();
        tokio::spawn(app.data.clone().follow(stop.cancelled_owned()));
        tokio::spawn(heartbeats(app.clone(), queues.clone()));
        tokio::spawn(versions_feed(queues, leases.clone(), shutdown.clone()));
        tokio::spawn(tombstone_sweep(sweep_files, leases, shutdown));
        tracing::info!(
            urls = %config.urls,
            prefix = %config.prefix,
            replicas = config.replicas,
            server = %nats.server_version(),
            "joined the cluster"
        );
        Ok(app)
    }
}

/// The node's id from `<data dir>/node.id`, created on first start.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = format!("{:012x}", rand::random::<u64>() >> 16);
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
    }
}

/// How often a node renews its heartbeat in `P_nodes`.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// One node's heartbeat, as `GET /v1/cluster` lists it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// The node's id.
    pub id: String,
    /// Its API address.
    pub address: Option<String>,
    /// Its wasmgrid version.
    pub version: String,
    /// When it started.
    pub started: String,
    /// Unix time of this heartbeat, in milliseconds (the node's clock).
    pub heartbeat_ms: u64,
    /// Algorithm calls running on it.
    pub in_flight: i64,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Puts the node's heartbeat every few seconds until it shuts down.
async fn heartbeats(app: Arc<App>, queues: Arc<NatsQueues>) {
    let Some(node) = &app.cluster else {
        return;
    };
    // The first heartbeat carries the address once the node listens.
    if node.address.get().is_none() {
        tokio::select! {
            _ = node.address_known.notified() => {}
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
    }
    loop {
        let beat = Heartbeat {
            id: node.id.clone(),
            address: node.address.get().cloned(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started: node.started.clone(),
            heartbeat_ms: unix_ms(),
            in_flight: app.metrics.in_flight.get(),
        };
        if let Ok(value) = serde_json::to_vec(&beat)
            && let Err(e) = node.nats.heartbeat(&node.id, value.into()).await
        {
            tracing::warn!(error = %e, "writing the node's heartbeat failed; retrying");
        }
        // The live nodes share each subscription's maxConcurrentDeliveries
        // (a node gone stops counting when its heartbeat expires).
        match node.nats.node_heartbeats().await {
            Ok(live) => queues.set_sharing_nodes(live_nodes(&live, &node.id)),
            Err(e) => {
                tracing::debug!(error = %e, "counting the live nodes failed; keeping the last count")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            _ = node.shutdown.cancelled() => return,
        }
    }
}

/// The live nodes, by their heartbeats: this one counts whether or not its
/// own heartbeat is written yet.
fn live_nodes(heartbeats: &[bytes::Bytes], own_id: &str) -> usize {
    let others = heartbeats
        .iter()
        .filter_map(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
        .filter(|v| v["id"] != own_id)
        .count();
    others + 1
}

/// What `GET /v1/cluster` answers: the live nodes (by heartbeat), the NATS
/// servers as this node sees them, and the installation's streams.
pub async fn status(node: &ClusterNode) -> Result<serde_json::Value, wasmgrid_store::StoreError> {
    let now_ms = unix_ms();
    let mut nodes: Vec<serde_json::Value> = node
        .nats
        .node_heartbeats()
        .await?
        .iter()
        .filter_map(|v| serde_json::from_slice::<Heartbeat>(v).ok())
        .map(|h| {
            serde_json::json!({
                "id": h.id,
                "address": h.address,
                "version": h.version,
                "started": h.started,
                "heartbeatAgeMs": now_ms.saturating_sub(h.heartbeat_ms),
                "inFlight": h.in_flight,
                "self": h.id == node.id,
            })
        })
        .collect();
    nodes.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let streams = node.nats.usage().await?;
    Ok(serde_json::json!({
        "mode": "cluster",
        "node": node.id,
        "prefix": node.prefix,
        "replicas": node.replicas,
        "leaseSeconds": node.lease.as_secs(),
        "nodes": nodes,
        "nats": node.nats.servers(),
        "streams": streams,
    }))
}

/// Moves version records' change events into the change log, on one node at
/// a time (the lease `feed/versions`), until `shutdown`.
async fn versions_feed(
    queues: Arc<NatsQueues>,
    leases: Arc<dyn Leases>,
    shutdown: CancellationToken,
) {
    singleton(leases, VERSIONS_FEED_LEASE, shutdown, |stop| {
        let queues = queues.clone();
        async move { queues.run_versions_feed(stop.cancelled_owned()).await }
    })
    .await;
}

/// Removes the tombstones of files deleted over an hour ago, every minute,
/// on one node at a time (the lease `sweep/tombstones`), until `shutdown`.
async fn tombstone_sweep(
    files: Arc<NatsFiles>,
    leases: Arc<dyn Leases>,
    shutdown: CancellationToken,
) {
    singleton(leases, TOMBSTONE_SWEEP_LEASE, shutdown, |stop| {
        let files = files.clone();
        async move {
            loop {
                match files.sweep_tombstones(TOMBSTONE_AGE).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(tombstones = n, "swept deleted files' tombstones"),
                    Err(e) => tracing::warn!(error = %e, "sweeping tombstones failed; retried in a minute"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    })
    .await;
}

/// Runs `work` on one node of the cluster at a time: under lease `name`
/// (taken again every 5 s while another node holds it), with a token that
/// is cancelled when the lease is lost or the node shuts down; `work`
/// returns then, and the lease is released.
async fn singleton<F, Fut>(
    leases: Arc<dyn Leases>,
    name: &'static str,
    shutdown: CancellationToken,
    work: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let held = match hold(leases.clone(), name, SINGLETON_TTL).await {
            Ok(Some(held)) => held,
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lease = name, "taking a lease failed; retrying in 5 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let stop = CancellationToken::new();
        let watch = {
            let (lost, shutdown, stop) = (held.lost(), shutdown.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = lost.cancelled() => {}
                    _ = shutdown.cancelled() => {}
                }
                stop.cancel();
            })
        };
        work(stop).await;
        watch.abort();
        held.release().await;
    }
}
