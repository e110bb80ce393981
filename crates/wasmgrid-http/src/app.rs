//! The assembled runtime: store, engine, registry and keys, shared by the HTTP
//! API, `wasmgrid up` and tests.

use crate::services::Services;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio_util::task::TaskTracker;
use wasmgrid_core::auth::KeyStore;
use wasmgrid_core::data::DataService;
use wasmgrid_core::invoker::Invoker;
use wasmgrid_core::metrics::Metrics;
use wasmgrid_core::registry::Registry;
use wasmgrid_core::secrets::SecretStore;
use wasmgrid_engine::HostApi;
use wasmgrid_engine::{Engine, EngineConfig};
use wasmgrid_events::{EventService, EventsConfig};
use wasmgrid_jobs::{JobService, JobsConfig};
use wasmgrid_store::blobs::Blobs;
use wasmgrid_store::changelog::ChangeLog;
use wasmgrid_store::files::DataFiles;
use wasmgrid_store::jobqueue::JobQueue;
use wasmgrid_store::leases::Leases;
use wasmgrid_store::queues::DeliveryQueues;
use wasmgrid_store::records::Records;
use wasmgrid_store::{EmbeddedQueues, EmbeddedStore};

/// Everything a running wasmgrid node holds.
pub struct App {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Versioned records (the same store, through the Records contract).
    pub records: Arc<dyn Records>,
    /// Batch jobs' per-file progress (the same store, through the JobQueue
    /// contract).
    pub job_queue: Arc<dyn JobQueue>,
    /// Deployed algorithms.
    pub registry: Arc<Registry>,
    /// Runs algorithm calls, whoever makes them.
    pub invoker: Arc<Invoker>,
    /// What guests reach through host calls. The node owns them: the invoker
    /// holds them weakly (see [`Invoker`]).
    pub services: Arc<Services>,
    /// API keys.
    pub keys: Arc<KeyStore>,
    /// Hosted data collections.
    pub data: Arc<DataService>,
    /// Per-algorithm secrets.
    pub secrets: Arc<SecretStore>,
    /// Batch jobs (started by `server::serve`).
    pub jobs: Arc<JobService>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Topics, subscriptions and event delivery.
    pub events: EventService,
    /// This node's part in a cluster (`None`: the embedded store).
    pub cluster: Option<crate::cluster::ClusterNode>,
    /// Set once shutdown begins: `/readyz` turns 503.
    pub draining: AtomicBool,
    /// Work that outlives its request (`output=void` calls); drained on shutdown.
    pub background: TaskTracker,
}

/// The storage a node runs on: the seven contracts (docs/STORAGE.md), from
/// the embedded store or from a cluster's NATS backend.
pub(crate) struct Storage {
    pub records: Arc<dyn Records>,
    pub blobs: Arc<dyn Blobs>,
    pub files: Arc<dyn DataFiles>,
    pub queues: Arc<dyn DeliveryQueues>,
    pub log: Arc<dyn ChangeLog>,
    pub leases: Arc<dyn Leases>,
    pub job_queue: Arc<dyn JobQueue>,
}

impl App {
    /// Opens the data directory (creating it on first start, with an admin key in
    /// `admin.key`) and builds the engine.
    pub fn open(
        data_dir: &Path,
        engine: EngineConfig,
        events: EventsConfig,
    ) -> anyhow::Result<Arc<App>> {
        let embedded = Arc::new(EmbeddedStore::open(data_dir)?);
        // Queues and the change log of the same store (one object: it owns
        // the ingest writer and the outcome writer).
        let queues = Arc::new(EmbeddedQueues::new(embedded.clone()));
        let storage = Storage {
            records: embedded.clone(),
            blobs: embedded.clone(),
            files: embedded.clone(),
            queues: queues.clone(),
            log: queues,
            leases: embedded.clone(),
            job_queue: embedded.clone(),
        };
        // `open` is called before any runtime exists (and by tests without
        // one): the loads run here, on this thread, as they always have; the
        // embedded store answers without one.
        futures::executor::block_on(Self::assemble(data_dir, engine, events, storage, None))
    }

    /// Builds a node on `storage`. `secrets_key`: the cluster's secrets master
    /// key (`None`: the data directory's `secrets.key`, created on first use,
    /// and an admin key bootstrapped into `admin.key`).
    pub(crate) async fn assemble(
        data_dir: &Path,
        engine: EngineConfig,
        events: EventsConfig,
        storage: Storage,
        cluster: Option<crate::cluster::Joined>,
    ) -> anyhow::Result<Arc<App>> {
        let Storage {
            records,
            blobs,
            files,
            queues,
            log,
            leases,
            job_queue,
        } = storage;
        let engine = Arc::new(Engine::new(engine)?);
        let registry = Arc::new(
            Registry::open(
                records.clone(),
                blobs.clone(),
                engine,
                data_dir,
                wasmgrid_core::server_paths::RESERVED_PATHS,
            )
            .await?,
        );
        let keys = Arc::new(KeyStore::open(records.clone()).await?);
        let data = Arc::new(DataService::new(records.clone(), blobs, files));
        let secrets = match &cluster {
            Some(joined) => Arc::new(SecretStore::with_key(records.clone(), joined.secrets_key)),
            None => Arc::new(SecretStore::open(records.clone(), data_dir)?),
        };
        if cluster.is_none()
            && let Some(path) = keys.bootstrap_admin(data_dir).await?
        {
            tracing::info!(path = %path.display(), "first start: wrote the admin key");
        }
        let metrics = Arc::new(match &cluster {
            Some(joined) => Metrics::for_node(&joined.node.id),
            None => Metrics::new(),
        });
        let invoker = Arc::new(Invoker::new(registry.clone(), metrics.clone()));
        let jobs = JobService::new(
            job_queue.clone(),
            records.clone(),
            data.clone(),
            invoker.clone(),
            metrics.clone(),
            JobsConfig::default(),
            Some(Arc::new(crate::bridge::JobEvents::new(log.clone()))),
        );
        // In a cluster each shard of a job runs on the node holding its
        // lease, and a node takes its share of the shards of the live nodes
        // (counted by the heartbeats, as deliveries are shared).
        let jobs = Arc::new(match &cluster {
            Some(joined) => {
                let counted = queues.clone();
                jobs.shared(
                    leases.clone(),
                    joined.node.lease,
                    Arc::new(move || counted.sharing_nodes()),
                )
            }
            None => jobs,
        });
        let events = EventService::open(
            records.clone(),
            queues,
            log,
            leases,
            invoker.clone(),
            data.clone(),
            metrics.clone(),
            events,
            Some(Arc::new(crate::bridge::JobDeliveries::new(jobs.clone()))),
        )
        .await?;
        let services = Arc::new(Services::new(
            data.clone(),
            secrets.clone(),
            events.clone(),
            invoker.clone(),
        ));
        // The one binding after construction (see `Invoker`): the services
        // publish to events and call through the invoker, which events and
        // jobs use too.
        let host: Arc<dyn HostApi> = services.clone();
        invoker.bind_host(&host)?;
        Ok(Arc::new(App {
            data_dir: data_dir.to_path_buf(),
            registry,
            records,
            job_queue,
            invoker,
            services,
            keys,
            data,
            secrets,
            metrics,
            events,
            jobs,
            cluster: cluster.map(|j| j.node),
            draining: AtomicBool::new(false),
            background: TaskTracker::new(),
        }))
    }
}
