//! The registry: deployed algorithms, their versions and compiled forms.
//!
//! A version is published once and its number is never reused, even after a
//! delete (as on Algorithmia). Deploying compiles the component once and keeps
//! both the original bytes (a blob in the store) and the precompiled artifact
//! (`<data dir>/compiled/`, tied to the engine's compatibility hash). After a
//! restart, the first call of a version loads its artifact without compiling; if
//! the artifact is missing or was built by a different engine, the registry
//! recompiles from the original bytes.
//!
//! Metadata is held in memory (loaded at start, written through to the store), so
//! resolving `owner/name/1.2` on the invoke path is a map lookup.

use crate::clock::now_rfc3339;
use crate::names::{InvalidName, validate_name};
use crate::server_paths::route_matches;
use semver::Version;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore};
use wasmgrid_engine::{
    CallLimits, ComponentKind, Engine, GuestIdentity, InvokeError, OutboundAllowList, Prepared,
    WarmPool, WarmSettings,
};
use wasmgrid_store::StoreError;
use wasmgrid_store::blobs::{Blobs, Digest as BlobDigest};
use wasmgrid_store::records::{Bucket, Entry, Followed, Records, RecordsExt};

/// Default per-call timeout (Algorithmia's).
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Longest timeout an algorithm may be deployed with.
pub const MAX_TIMEOUT_SECS: u64 = 3000;
/// Default memory cap.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// Default number of concurrent calls of one version.
pub const DEFAULT_CONCURRENCY: u32 = 64;

/// Settings chosen at deploy time, fixed for the version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSettings {
    /// Per-call timeout in seconds.
    pub timeout: u64,
    /// Memory cap in MiB.
    pub memory: u64,
    /// Calls of this version that may run at once.
    pub concurrency: u32,
    /// Capabilities granted to the guest (`data://owner/collection:read`, ...).
    #[serde(default)]
    pub grants: Vec<String>,
    /// wasi:http components: serve HTTP requests without an API key.
    #[serde(default)]
    pub public: bool,
    /// wasi:http components: hosts outgoing requests may reach (`host`,
    /// `host:port`, `*.domain`); empty denies all outgoing HTTP.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// wasi:http components: a path prefix (`/hello`) served as-is, besides
    /// `/http/owner/name/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Algorithms: calls one warm instance serves, one at a time, before it is
    /// discarded (`0`: a fresh instance per call).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reuse: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The most calls one warm instance may serve (`reuse`).
pub const MAX_REUSE: u32 = 1_000_000;

impl Default for VersionSettings {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT_SECS,
            memory: DEFAULT_MEMORY_MIB,
            concurrency: DEFAULT_CONCURRENCY,
            grants: Vec::new(),
            public: false,
            allow_outbound: Vec::new(),
            route: None,
            reuse: 0,
        }
    }
}

/// A published version, as stored and as listed by the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Owner (user or organisation).
    pub owner: String,
    /// Algorithm name.
    pub name: String,
    /// Semantic version.
    pub version: String,
    /// `sha256:<hex>` of the component bytes.
    pub digest: String,
    /// Algorithm or wasi:http handler.
    pub kind: ComponentKind,
    /// Component size in bytes.
    pub size: u64,
    /// Deploy-time settings.
    #[serde(flatten)]
    pub settings: VersionSettings,
    /// When it was published (RFC 3339).
    pub created: String,
    /// How long the first compilation took.
    pub compile_ms: u64,
    /// Digest of the sources `wasmgrid up` built this version from (its
    /// manifest's `watch` list), if it was deployed that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_hash: Option<String>,
}

/// Registry failures, each naming the thing and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A malformed owner, name, version, version spec or setting.
    #[error("{0}")]
    Invalid(String),
    /// The component cannot be run.
    #[error("{0}")]
    InvalidComponent(#[from] wasmgrid_engine::InvalidComponent),
    /// No such algorithm or version.
    #[error("{0}")]
    NotFound(String),
    /// The version number was published before.
    #[error("{0}")]
    VersionExists(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A host-side failure (I/O on the compiled cache, a worker thread died).
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidName> for RegistryError {
    fn from(e: InvalidName) -> Self {
        RegistryError::Invalid(e.0)
    }
}

/// Which version a caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSpec {
    /// The newest released (non-pre-release) version.
    Latest,
    /// The newest released `MAJOR.x.y`.
    Major(u64),
    /// The newest released `MAJOR.MINOR.y`.
    Minor(u64, u64),
    /// Exactly this version (the only way to reach a pre-release).
    Exact(Version),
}

impl VersionSpec {
    /// Parses `""`/`latest`, `1`, `1.2` or `1.2.3[-pre][+build]`.
    pub fn parse(spec: Option<&str>) -> Result<Self, RegistryError> {
        let spec = match spec.map(str::trim) {
            None | Some("") | Some("latest") => return Ok(Self::Latest),
            Some(s) => s,
        };
        let bad = || {
            RegistryError::Invalid(format!(
                "bad version spec {spec:?}: use an exact semantic version (1.2.3), a prefix (1.2 or 1), or \
                 leave it out for the latest version"
            ))
        };
        let parts: Vec<&str> = spec.split('.').collect();
        let num = |s: &str| -> Result<u64, RegistryError> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            s.parse().map_err(|_| bad())
        };
        match parts.len() {
            1 => Ok(Self::Major(num(parts[0])?)),
            2 => Ok(Self::Minor(num(parts[0])?, num(parts[1])?)),
            _ => Version::parse(spec).map(Self::Exact).map_err(|_| bad()),
        }
    }

    fn matches(&self, v: &Version) -> bool {
        match self {
            Self::Exact(e) => e == v,
            _ if !v.pre.is_empty() => false,
            Self::Latest => true,
            Self::Major(m) => v.major == *m,
            Self::Minor(m, n) => v.major == *m && v.minor == *n,
        }
    }
}

/// A deployed version: its record plus what calls need at run time.
pub struct Deployed {
    /// The stored record.
    pub record: VersionRecord,
    /// Parsed version.
    pub version: Version,
    permits: Arc<Semaphore>,
    loaded: OnceCell<Prepared>,
    /// The version's warm instances (versions deployed with `reuse`), made
    /// on first use.
    warm: std::sync::OnceLock<Arc<WarmPool>>,
    /// Its per-call metric series, looked up once.
    metrics: std::sync::OnceLock<crate::metrics::EndpointMetrics>,
    identity: Arc<GuestIdentity>,
    outbound: OutboundAllowList,
    /// `owner/name/version`, formatted once: every call's metrics use it.
    endpoint: String,
}

impl Deployed {
    /// `owner/name/version`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// `owner/name/version`, borrowed (the metrics' `algorithm` label).
    pub fn endpoint_label(&self) -> &str {
        &self.endpoint
    }

    /// Its per-call metric series in `metrics` (the registry's own).
    pub fn metrics(&self, metrics: &crate::metrics::Metrics) -> &crate::metrics::EndpointMetrics {
        self.metrics
            .get_or_init(|| metrics.endpoint(&self.endpoint))
    }

    /// The identity a call runs as, causing events at hop count `hops`.
    pub fn identity_with_hops(&self, hops: u32) -> Arc<GuestIdentity> {
        // Calls no event caused share the version's identity; the others carry
        // their hop count into the events they cause.
        if hops == self.identity.hops {
            self.identity.clone()
        } else {
            Arc::new(GuestIdentity {
                hops,
                ..(*self.identity).clone()
            })
        }
    }

    /// The hosts a wasi:http version's outgoing requests may reach.
    pub fn outbound(&self) -> &OutboundAllowList {
        &self.outbound
    }

    /// The per-call limits for this version, with an optional lower timeout.
    pub fn limits(&self, timeout: Option<Duration>) -> CallLimits {
        let max = Duration::from_secs(self.record.settings.timeout);
        CallLimits {
            timeout: timeout.map_or(max, |t| t.min(max)),
            memory_bytes: self.record.settings.memory << 20,
            init_timeout: max,
        }
    }
}

#[derive(Default)]
struct AlgorithmEntry {
    live: BTreeMap<Version, Arc<Deployed>>,
    taken: BTreeSet<Version>,
}

/// Everything about one algorithm, for listings and for `wasmgrid up`.
#[derive(Debug, Clone, Serialize)]
pub struct AlgorithmInfo {
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Newest released version, if any.
    pub latest: Option<String>,
    /// Live versions, newest first.
    pub versions: Vec<VersionRecord>,
    /// Every version number ever published (deleted ones included), ascending.
    pub taken: Vec<String>,
}

/// Deploy-time inputs.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Version to publish.
    pub version: String,
    /// Settings.
    pub settings: VersionSettings,
    /// See [`VersionRecord::source_hash`].
    pub source_hash: Option<String>,
}

/// The registry of deployed algorithms.
pub struct Registry {
    /// Version records ([`Bucket::Versions`]).
    records: Arc<dyn Records>,
    /// Component bytes by digest.
    blobs: Arc<dyn Blobs>,
    engine: Arc<Engine>,
    compiled_dir: PathBuf,
    algorithms: RwLock<HashMap<(String, String), AlgorithmEntry>>,
    /// Route prefixes of wasi:http components (see [`Registry::route`]).
    routes: RwLock<Vec<RouteEntry>>,
    /// Paths the server serves itself, which no route prefix may overlap; the
    /// API layer owns the list and passes it in.
    reserved_paths: &'static [&'static str],
    compilations: AtomicU64,
}

/// Parses the version number of a deploy. Build metadata (`+…`) is refused:
/// semver ignores it for precedence, so `1.2.3+a` and `1.2.3` would be two
/// published versions that callers cannot tell apart, and a deleted number
/// could come back as `1.0.0+rebuild`.
pub fn parse_version(value: &str) -> Result<Version, RegistryError> {
    const FORM: &str = "versions are MAJOR.MINOR.PATCH with an optional -PRERELEASE, such as 1.0.0 or 2.1.0-beta.1";
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')))
    {
        return Err(RegistryError::Invalid(format!(
            "invalid version {value:?}: {c:?} is not allowed; use only ASCII letters, digits, '.' and '-' ({FORM})"
        )));
    }
    if let Some((_, build)) = value.split_once('+') {
        return Err(RegistryError::Invalid(format!(
            "invalid version {value:?}: build metadata \"+{build}\" is not accepted, because it does not make \
             a version distinct; drop it, and publish a new number (a higher patch, or a pre-release such as \
             -rebuild.1) for a rebuilt component"
        )));
    }
    Version::parse(value)
        .map_err(|e| RegistryError::Invalid(format!("invalid version {value:?}: {e}; {FORM}")))
}

/// The answer for an algorithm that does not exist, and for one the caller
/// may not see (the two must not be told apart).
pub fn not_found(owner: &str, name: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "algorithm {owner}/{name} not found: deploy it first (wasmgrid deploy FILE {owner}/{name}@1.0.0)"
    ))
}

fn lock_err() -> RegistryError {
    RegistryError::Internal("registry state lock poisoned".into())
}

impl Registry {
    /// Opens the registry over `records` (version records) and `blobs`
    /// (component bytes), loading every version's metadata. The in-memory
    /// state is written through by [`deploy`](Self::deploy) and
    /// [`delete`](Self::delete) (issue 15 feeds it from a watch of
    /// [`Bucket::Versions`]). `reserved_paths` are the server's own path
    /// prefixes ([`crate::server_paths::RESERVED_PATHS`]): a route prefix that
    /// overlaps one is refused at deploy.
    pub async fn open(
        records: Arc<dyn Records>,
        blobs: Arc<dyn Blobs>,
        engine: Arc<Engine>,
        data_dir: &std::path::Path,
        reserved_paths: &'static [&'static str],
    ) -> Result<Self, RegistryError> {
        let compiled_dir = data_dir.join("compiled");
        std::fs::create_dir_all(&compiled_dir).map_err(|e| {
            RegistryError::Internal(format!("cannot create {}: {e}", compiled_dir.display()))
        })?;
        let mut algorithms: HashMap<(String, String), AlgorithmEntry> = HashMap::new();
        let mut live = Vec::new();
        for entry in records.list_all(Bucket::Versions, "").await? {
            if is_version_tombstone(&entry.value) {
                // Deleted: the number stays taken.
                let mut parts = entry.key.splitn(3, '/');
                if let (Some(o), Some(n), Some(v)) = (parts.next(), parts.next(), parts.next())
                    && let Ok(v) = Version::parse(v)
                {
                    algorithms
                        .entry((o.into(), n.into()))
                        .or_default()
                        .taken
                        .insert(v);
                }
            } else {
                live.push(wasmgrid_store::records::decode::<VersionRecord>(
                    Bucket::Versions,
                    &entry,
                )?);
            }
        }
        for record in live {
            let Ok(version) = Version::parse(&record.version) else {
                continue;
            };
            let entry = algorithms
                .entry((record.owner.clone(), record.name.clone()))
                .or_default();
            entry.taken.insert(version.clone());
            entry.live.insert(
                version.clone(),
                Arc::new(Deployed::new(record, version, None)),
            );
        }
        let routes = route_table(&algorithms);
        Ok(Self {
            records,
            blobs,
            engine,
            compiled_dir,
            algorithms: RwLock::new(algorithms),
            routes: RwLock::new(routes),
            reserved_paths,
            compilations: AtomicU64::new(0),
        })
    }

    /// Keeps this registry current with versions other nodes deploy and
    /// delete (cluster mode): watches the `Versions` bucket until `shutdown`
    /// resolves, and applies each change. A version deployed elsewhere is
    /// callable here at once; its component is compiled on its first call
    /// here (from the shared component store, or the local artifact cache).
    /// This node's own deploys come back through the watch and change nothing.
    pub async fn follow(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let records = self.records.clone();
        wasmgrid_store::records::follow(&*records, Bucket::Versions, "", shutdown, |change| {
            match change {
                Followed::Put(entry) => {
                    if let Err(e) = self.apply_version(entry) {
                        tracing::error!(version = %entry.key, error = %e, "applying a version record failed");
                    }
                }
                Followed::Deleted(key) => self.forget_version(key),
                Followed::Resynced(seen) => {
                    for key in self.live_keys() {
                        if !seen.contains(&key) {
                            self.forget_version(&key);
                        }
                    }
                }
            }
        })
        .await
    }

    /// Applies one stored version record: a live version becomes callable, a
    /// tombstone takes it down and keeps its number taken.
    fn apply_version(&self, entry: &Entry) -> Result<(), RegistryError> {
        let mut parts = entry.key.splitn(3, '/');
        let (Some(owner), Some(name), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
            return Ok(());
        };
        let Ok(version) = Version::parse(v) else {
            return Ok(());
        };
        let live = if is_version_tombstone(&entry.value) {
            None
        } else {
            Some(wasmgrid_store::records::decode::<VersionRecord>(
                Bucket::Versions,
                entry,
            )?)
        };
        let mut map = self.algorithms.write().map_err(|_| lock_err())?;
        let algo = map
            .entry((owner.to_string(), name.to_string()))
            .or_default();
        algo.taken.insert(version.clone());
        match live {
            Some(record) => {
                if algo
                    .live
                    .get(&version)
                    .is_some_and(|d| d.record.digest == record.digest)
                {
                    return Ok(());
                }
                algo.live.insert(
                    version.clone(),
                    Arc::new(Deployed::new(record, version, None)),
                );
            }
            None => {
                if algo.live.remove(&version).is_none() {
                    return Ok(());
                }
            }
        }
        self.rebuild_routes(&map)
    }

    /// Takes down a version whose record is gone (versions are tombstoned,
    /// not deleted, so only a bucket purge does this).
    fn forget_version(&self, key: &str) {
        let mut parts = key.splitn(3, '/');
        let (Some(owner), Some(name), Some(Ok(version))) =
            (parts.next(), parts.next(), parts.next().map(Version::parse))
        else {
            return;
        };
        if let Ok(mut map) = self.algorithms.write()
            && let Some(algo) = map.get_mut(&(owner.to_string(), name.to_string()))
            && algo.live.remove(&version).is_some()
        {
            let _ = self.rebuild_routes(&map);
        }
    }

    /// `owner/name/version` of every live version.
    fn live_keys(&self) -> Vec<String> {
        self.algorithms
            .read()
            .map(|m| {
                m.iter()
                    .flat_map(|((o, n), e)| e.live.keys().map(move |v| format!("{o}/{n}/{v}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The engine calls run on.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// How many components this process has compiled (deploys and recompiles).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Publishes a new version: validates, compiles, stores, and makes it callable.
    pub async fn deploy(
        &self,
        req: DeployRequest,
        bytes: bytes::Bytes,
    ) -> Result<Arc<Deployed>, RegistryError> {
        validate_name("owner", &req.owner)?;
        validate_name("algorithm name", &req.name)?;
        let version = parse_version(&req.version)?;
        validate_settings(
            &req.settings,
            self.engine.config().max_memory_bytes >> 20,
            self.reserved_paths,
        )?;
        if let Some(route) = &req.settings.route {
            self.check_route_free(route, &req.owner, &req.name)?;
        }
        let taken_msg = || {
            RegistryError::VersionExists(format!(
                "{}/{}/{} was already published (version numbers are never reused, even after a delete); \
                 deploy a higher version",
                req.owner, req.name, version
            ))
        };
        if self.is_taken(&req.owner, &req.name, &version)? {
            return Err(taken_msg());
        }

        let size = bytes.len() as u64;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let artifact = self.artifact_path(&digest);
        let engine = self.engine.clone();
        let compile_bytes = bytes.clone();
        let (kind, prepared, compile_ms) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let component = engine.compile(&compile_bytes)?;
            let compile_ms = started.elapsed().as_millis() as u64;
            let (kind, prepared) = engine.prepare(&component)?;
            let serialized = engine
                .serialize(&component)
                .map_err(|e| RegistryError::Internal(format!("{e:#}")))?;
            write_atomically(&artifact, &serialized)?;
            Ok::<_, RegistryError>((kind, prepared, compile_ms))
        })
        .await
        .map_err(|e| RegistryError::Internal(format!("compile worker failed: {e}")))??;
        // The original bytes before the version record (a crash between leaves
        // an unreferenced component, never a version without its bytes).
        self.blobs
            .put_component(&BlobDigest(digest.clone()), bytes)
            .await?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        check_settings_fit_kind(&req.settings, kind)?;

        let record = VersionRecord {
            owner: req.owner.clone(),
            name: req.name.clone(),
            version: version.to_string(),
            digest,
            kind,
            size,
            settings: req.settings.clone(),
            created: now_rfc3339(),
            compile_ms,
            source_hash: req.source_hash.clone(),
        };
        let key = format!("{}/{}/{}", req.owner, req.name, version);
        // Create-once keeps the number taken for good; the embedded store
        // writes the taken mark and the `system.algorithms` event with it.
        let event = wasmgrid_store::records::encode(&lifecycle_event("VersionDeployed", &record))?;
        self.records
            .create_announced(
                Bucket::Versions,
                &key,
                wasmgrid_store::records::encode(&record)?,
                event,
            )
            .await
            .map_err(|e| match e {
                StoreError::Exists { .. } => taken_msg(),
                other => other.into(),
            })?;

        let deployed = Arc::new(Deployed::new(record, version.clone(), prepared));
        let mut map = self.algorithms.write().map_err(|_| lock_err())?;
        let entry = map.entry((req.owner, req.name)).or_default();
        entry.taken.insert(version.clone());
        entry.live.insert(version, deployed.clone());
        self.rebuild_routes(&map)?;
        Ok(deployed)
    }

    fn is_taken(&self, owner: &str, name: &str, version: &Version) -> Result<bool, RegistryError> {
        let map = self.algorithms.read().map_err(|_| lock_err())?;
        Ok(map
            .get(&(owner.to_string(), name.to_string()))
            .is_some_and(|e| e.taken.contains(version)))
    }

    /// Finds the version a caller means.
    pub fn resolve(
        &self,
        owner: &str,
        name: &str,
        spec: &VersionSpec,
    ) -> Result<Arc<Deployed>, RegistryError> {
        let map = self.algorithms.read().map_err(|_| lock_err())?;
        let entry = map.get(&(owner.to_string(), name.to_string()));
        // Every version deleted: its numbers stay taken, so suggest a free one
        // (1.0.0 would answer 409).
        if let Some(highest) = entry
            .filter(|e| e.live.is_empty())
            .and_then(|e| e.taken.iter().next_back())
        {
            let next = Version::new(highest.major, highest.minor, highest.patch + 1);
            return Err(RegistryError::NotFound(format!(
                "algorithm {owner}/{name} not found: all of its versions were deleted, and their numbers stay taken \
                 (up to {highest}); deploy a new version number (wasmgrid deploy FILE {owner}/{name}@{next})"
            )));
        }
        let entry = entry
            .filter(|e| !e.live.is_empty())
            .ok_or_else(|| not_found(owner, name))?;
        entry
            .live
            .iter()
            .rev()
            .find(|(v, _)| spec.matches(v))
            .map(|(_, d)| d.clone())
            .ok_or_else(|| {
                let available = entry
                    .live
                    .keys()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                let what = match spec {
                    VersionSpec::Latest => {
                        "no released version (pre-releases are only called when named exactly)"
                            .into()
                    }
                    VersionSpec::Major(m) => format!("no released version {m}.x.y"),
                    VersionSpec::Minor(m, n) => format!("no released version {m}.{n}.x"),
                    VersionSpec::Exact(v) => format!("no version {v}"),
                };
                RegistryError::NotFound(format!(
                    "algorithm {owner}/{name} has {what}; available: {available}"
                ))
            })
    }

    /// One algorithm's versions and taken numbers.
    pub fn algorithm(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<AlgorithmInfo>, RegistryError> {
        let map = self.algorithms.read().map_err(|_| lock_err())?;
        Ok(map
            .get(&(owner.to_string(), name.to_string()))
            .map(|e| info(owner, name, e)))
    }

    /// Every algorithm with at least one live version, optionally of one owner.
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<AlgorithmInfo>, RegistryError> {
        let map = self.algorithms.read().map_err(|_| lock_err())?;
        let mut out: Vec<AlgorithmInfo> = map
            .iter()
            .filter(|((o, _), e)| owner.is_none_or(|want| want == o) && !e.live.is_empty())
            .map(|((o, n), e)| info(o, n, e))
            .collect();
        out.sort_by(|a, b| (&a.owner, &a.name).cmp(&(&b.owner, &b.name)));
        Ok(out)
    }

    /// Deletes a version. Its number stays taken; calls already running finish.
    pub async fn delete(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> Result<(), RegistryError> {
        let v = Version::parse(version)
            .map_err(|e| RegistryError::Invalid(format!("invalid version {version:?}: {e}")))?;
        {
            let map = self.algorithms.read().map_err(|_| lock_err())?;
            let live = map
                .get(&(owner.to_string(), name.to_string()))
                .is_some_and(|e| e.live.contains_key(&v));
            if !live {
                return Err(RegistryError::NotFound(format!(
                    "version {owner}/{name}/{v} not found"
                )));
            }
        }
        // A tombstone at the revision read, with its `VersionDeleted` event:
        // the number stays taken. A concurrent delete that came first leaves
        // nothing to delete.
        let gone = || RegistryError::NotFound(format!("version {owner}/{name}/{v} not found"));
        let key = format!("{owner}/{name}/{v}");
        let entry = self
            .records
            .get(Bucket::Versions, &key)
            .await?
            .filter(|e| !is_version_tombstone(&e.value))
            .ok_or_else(gone)?;
        let record: VersionRecord = wasmgrid_store::records::decode(Bucket::Versions, &entry)?;
        let tombstone = serde_json::json!({"deleted": now_rfc3339(), "record": record});
        let event = wasmgrid_store::records::encode(&lifecycle_event("VersionDeleted", &record))?;
        self.records
            .update_announced(
                Bucket::Versions,
                &key,
                wasmgrid_store::records::encode(&tombstone)?,
                entry.rev,
                event,
            )
            .await
            .map_err(|e| match e {
                StoreError::Changed { .. } => gone(),
                other => other.into(),
            })?;
        let mut map = self.algorithms.write().map_err(|_| lock_err())?;
        if let Some(entry) = map.get_mut(&(owner.to_string(), name.to_string())) {
            entry.live.remove(&v);
        }
        self.rebuild_routes(&map)?;
        Ok(())
    }

    /// Takes a concurrency permit of `deployed` now (`Overloaded` when none is
    /// free), for a call that runs later: a background call must know it is
    /// admitted before answering that it was accepted.
    pub fn reserve(&self, deployed: &Deployed) -> Result<Reservation, InvokeError> {
        Ok(Reservation(take_permit(deployed)?))
    }

    /// The algorithm serving `path` through a route prefix, if any: the
    /// longest prefix that `path` equals or continues with `/`. A prefix is
    /// the `route` of an algorithm's latest released version.
    pub fn route(&self, path: &str) -> Option<(String, String)> {
        let routes = self.routes.read().ok()?;
        routes
            .iter()
            .find(|r| route_matches(&r.prefix, path))
            .map(|r| (r.owner.clone(), r.name.clone()))
    }

    fn check_route_free(&self, route: &str, owner: &str, name: &str) -> Result<(), RegistryError> {
        let routes = self.routes.read().map_err(|_| lock_err())?;
        match routes.iter().find(|r| r.prefix == route) {
            Some(r) if r.owner != owner || r.name != name => Err(RegistryError::Invalid(format!(
                "route {route} is already served by {}/{}: choose another route, or deploy {}/{} without it first",
                r.owner, r.name, r.owner, r.name
            ))),
            _ => Ok(()),
        }
    }

    fn rebuild_routes(
        &self,
        map: &HashMap<(String, String), AlgorithmEntry>,
    ) -> Result<(), RegistryError> {
        *self.routes.write().map_err(|_| lock_err())? = route_table(map);
        Ok(())
    }

    /// Admits one call of `deployed`: a concurrency permit (the one
    /// `reservation` holds, or a new one: `Overloaded` when none is free) and
    /// its linked component.
    pub(crate) async fn admit<'a>(
        &self,
        deployed: &'a Deployed,
        reservation: Option<Reservation>,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, &'a Prepared), InvokeError> {
        let permit = match reservation {
            Some(Reservation(permit)) => permit,
            None => take_permit(deployed)?,
        };
        let prepared = self
            .prepared(deployed)
            .await
            .map_err(|e| InvokeError::Host(e.to_string()))?;
        Ok((permit, prepared))
    }

    /// The warm-instance pool of a version deployed with `reuse` (`None`: a
    /// fresh instance per call).
    pub fn warm_pool<'a>(&self, deployed: &'a Deployed) -> Option<&'a Arc<WarmPool>> {
        let reuse = deployed.record.settings.reuse;
        if reuse == 0 || deployed.record.kind != ComponentKind::Algorithm {
            return None;
        }
        Some(deployed.warm.get_or_init(|| {
            self.engine.warm_pool(WarmSettings {
                reuse,
                memory_bytes: deployed.record.settings.memory << 20,
                init_timeout: Duration::from_secs(deployed.record.settings.timeout),
            })
        }))
    }

    /// The linked component of a version, loading or recompiling it on first use.
    pub async fn prepared<'a>(
        &self,
        deployed: &'a Deployed,
    ) -> Result<&'a Prepared, RegistryError> {
        deployed
            .loaded
            .get_or_try_init(|| async {
                let engine = self.engine.clone();
                let blobs = self.blobs.clone();
                let artifact = self.artifact_path(&deployed.record.digest);
                let digest = deployed.record.digest.clone();
                let (prepared, recompiled) = tokio::task::spawn_blocking(move || {
                    load_or_recompile(&engine, &*blobs, &artifact, &digest)
                })
                .await
                .map_err(|e| RegistryError::Internal(format!("load worker failed: {e}")))??;
                if recompiled {
                    self.compilations.fetch_add(1, Ordering::Relaxed);
                }
                Ok(prepared)
            })
            .await
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.compiled_dir
            .join(format!("{hex}-{}.cwasm", self.engine.compatibility_hash()))
    }
}

impl Deployed {
    fn new(record: VersionRecord, version: Version, prepared: Option<Prepared>) -> Self {
        let permits = Arc::new(Semaphore::new(record.settings.concurrency.max(1) as usize));
        let identity = Arc::new(GuestIdentity {
            owner: record.owner.clone(),
            name: record.name.clone(),
            version: record.version.clone(),
            grants: record.settings.grants.clone(),
            memory_bytes: record.settings.memory << 20,
            hops: 0,
        });
        let loaded = match prepared {
            Some(p) => OnceCell::new_with(Some(p)),
            None => OnceCell::new(),
        };
        // Checked at deploy (`validate_settings`); a record that no longer
        // parses (edited by hand) denies all outgoing HTTP.
        let outbound =
            OutboundAllowList::parse(&record.settings.allow_outbound).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "stored allow_outbound is invalid; denying outgoing HTTP");
                OutboundAllowList::default()
            });
        let endpoint = format!("{}/{}/{}", record.owner, record.name, record.version);
        Self {
            record,
            version,
            permits,
            loaded,
            warm: std::sync::OnceLock::new(),
            metrics: std::sync::OnceLock::new(),
            identity,
            outbound,
            endpoint,
        }
    }
}

fn info(owner: &str, name: &str, e: &AlgorithmEntry) -> AlgorithmInfo {
    AlgorithmInfo {
        owner: owner.to_string(),
        name: name.to_string(),
        latest: e
            .live
            .keys()
            .rev()
            .find(|v| v.pre.is_empty())
            .map(|v| v.to_string()),
        versions: e.live.values().rev().map(|d| d.record.clone()).collect(),
        taken: e.taken.iter().map(|v| v.to_string()).collect(),
    }
}

/// One route prefix and the algorithm it serves.
struct RouteEntry {
    prefix: String,
    owner: String,
    name: String,
}

/// The route table: each algorithm's latest released version's `route`,
/// longest prefix first (so the most specific route wins).
fn route_table(map: &HashMap<(String, String), AlgorithmEntry>) -> Vec<RouteEntry> {
    let mut routes: Vec<RouteEntry> = map
        .iter()
        .filter_map(|((owner, name), entry)| {
            let latest = entry.live.iter().rev().find(|(v, _)| v.pre.is_empty())?.1;
            let prefix = latest.record.settings.route.clone()?;
            (latest.record.kind == ComponentKind::Http).then(|| RouteEntry {
                prefix,
                owner: owner.clone(),
                name: name.clone(),
            })
        })
        .collect();
    routes.sort_by(|a, b| {
        b.prefix
            .len()
            .cmp(&a.prefix.len())
            .then_with(|| (&a.prefix, &a.owner, &a.name).cmp(&(&b.prefix, &b.owner, &b.name)))
    });
    routes
}

/// Checks a route prefix: absolute, no query or fragment, no empty or dot
/// segments, no trailing slash, and outside wasmgrid's own paths (`reserved`).
fn validate_route(route: &str, reserved: &[&str]) -> Result<(), RegistryError> {
    let bad = |why: &str| {
        RegistryError::Invalid(format!(
            "invalid route {route:?}: {why}; use an absolute path prefix such as /hello or /api/v2 (or / for \
             every path wasmgrid does not use itself)"
        ))
    };
    if !route.starts_with('/') {
        return Err(bad("it must start with /"));
    }
    if route == "/" {
        return Ok(());
    }
    if route.ends_with('/') {
        return Err(bad("leave out the trailing /"));
    }
    if route.len() > 256 {
        return Err(bad("it is longer than 256 characters"));
    }
    let segments_ok = route[1..].split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg.bytes().all(|b| {
                b.is_ascii_alphanumeric()
                    || matches!(b, b'-' | b'_' | b'.' | b'~' | b'%' | b'@' | b'+')
            })
    });
    if !segments_ok {
        return Err(bad(
            "segments may use letters, digits and - _ . ~ % @ + only, and may not be empty, . or ..",
        ));
    }
    if reserved.iter().any(|r| route_matches(r, route)) {
        return Err(bad(&format!(
            "it overlaps wasmgrid's own paths ({})",
            reserved.join(", ")
        )));
    }
    Ok(())
}

/// `public`, `allow_outbound` and `route` configure HTTP serving: refuse them
/// for algorithms rather than silently ignoring them.
fn check_settings_fit_kind(s: &VersionSettings, kind: ComponentKind) -> Result<(), RegistryError> {
    if kind == ComponentKind::Http {
        if s.reuse > 0 {
            return Err(RegistryError::Invalid(
                "reuse applies to algorithms only: a wasi:http component gets a fresh instance per request; deploy it without reuse".into(),
            ));
        }
        return Ok(());
    }
    let mut given = Vec::new();
    if s.public {
        given.push("public");
    }
    if !s.allow_outbound.is_empty() {
        given.push("allow_outbound");
    }
    if s.route.is_some() {
        given.push("route");
    }
    if given.is_empty() {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "{} apply to wasi:http components only, and this component is an algorithm (it exports \
             wasmgrid:algorithm/handler); deploy it without them",
            given.join(", ")
        )))
    }
}

fn validate_settings(
    s: &VersionSettings,
    max_memory_mib: u64,
    reserved_paths: &[&str],
) -> Result<(), RegistryError> {
    if s.timeout == 0 || s.timeout > MAX_TIMEOUT_SECS {
        return Err(RegistryError::Invalid(format!(
            "timeout={} is out of range: use 1 to {MAX_TIMEOUT_SECS} seconds",
            s.timeout
        )));
    }
    if s.memory == 0 || s.memory > max_memory_mib {
        return Err(RegistryError::Invalid(format!(
            "memory={} is out of range: use 1 to {max_memory_mib} MiB",
            s.memory
        )));
    }
    if s.concurrency == 0 || s.concurrency > 10_000 {
        return Err(RegistryError::Invalid(format!(
            "concurrency={} is out of range: use 1 to 10000",
            s.concurrency
        )));
    }
    if s.reuse > MAX_REUSE {
        return Err(RegistryError::Invalid(format!(
            "reuse={} is out of range: use 0 (a fresh instance per call) to {MAX_REUSE} calls per warm instance",
            s.reuse
        )));
    }
    OutboundAllowList::parse(&s.allow_outbound).map_err(RegistryError::Invalid)?;
    if let Some(route) = &s.route {
        validate_route(route, reserved_paths)?;
    }
    Ok(())
}

/// Loads the precompiled artifact, or recompiles from the stored original when it
/// is missing or unusable (new wasmtime, other settings or CPU). Returns whether
/// it recompiled.
fn load_or_recompile(
    engine: &Engine,
    blobs: &dyn Blobs,
    artifact: &std::path::Path,
    digest: &str,
) -> Result<(Prepared, bool), RegistryError> {
    if artifact.exists() {
        match engine.load_precompiled(artifact) {
            Ok(component) => {
                let (_, prepared) = engine.prepare(&component)?;
                if let Some(p) = prepared {
                    return Ok((p, false));
                }
            }
            Err(e) => {
                tracing::warn!(artifact = %artifact.display(), error = %e, "precompiled artifact unusable; recompiling")
            }
        }
    }
    // On a blocking thread already (the caller's): waiting here holds no async
    // thread, and this path runs once per version and engine build.
    let got = wasmgrid_store::wait(blobs.get_component(&BlobDigest(digest.to_string())))?;
    let bytes = got.ok_or_else(|| {
        RegistryError::Internal(format!(
            "the original component {digest} is missing from the data directory"
        ))
    })?;
    tracing::info!(%digest, "compiling component (no usable precompiled artifact for this engine)");
    let component = engine.compile(&bytes)?;
    let (_, prepared) = engine.prepare(&component)?;
    let serialized = engine
        .serialize(&component)
        .map_err(|e| RegistryError::Internal(format!("{e:#}")))?;
    write_atomically(artifact, &serialized)?;
    let prepared =
        prepared.ok_or_else(|| RegistryError::Internal("component is not an algorithm".into()))?;
    Ok((prepared, true))
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), RegistryError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let io =
        |e: std::io::Error| RegistryError::Internal(format!("writing {}: {e}", path.display()));
    let (tmp, mut file) = wasmgrid_store::tempfile_in(dir).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// The `system.algorithms` CloudEvent for a version being deployed or deleted,
/// recorded in the outbox in the same transaction as the change. Each version
/// number is deployed and deleted at most once, so the id is deterministic.
/// Whether a [`Bucket::Versions`] value is a deleted version's tombstone: the
/// registry writes `{"deleted": …, "record": …}`; the embedded store keeps
/// only the taken mark, `{"published": …}`, and returns that.
fn is_version_tombstone(value: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .is_some_and(|v| {
            v.get("digest").is_none()
                && (v.get("deleted").is_some() || v.get("published").is_some())
        })
}

fn lifecycle_event(kind: &str, record: &VersionRecord) -> serde_json::Value {
    let (owner, name, version) = (&record.owner, &record.name, &record.version);
    serde_json::json!({
        "specversion": "1.0",
        "id": format!("{owner}/{name}/{version}/{kind}"),
        "source": format!("/algorithms/{owner}/{name}"),
        "type": format!("wasmgrid.algorithms.{kind}"),
        "subject": format!("/algorithms/{owner}/{name}/versions/{version}"),
        "time": now_rfc3339(),
        "datacontenttype": "application/json",
        "data": {
            "endpoint": format!("{owner}/{name}/{version}"),
            "version": version,
            "digest": record.digest,
            "kind": record.kind,
        },
    })
}

/// A concurrency permit of one version, taken ahead of its call.
pub struct Reservation(tokio::sync::OwnedSemaphorePermit);

/// A concurrency permit of `deployed`, or `Overloaded`.
fn take_permit(deployed: &Deployed) -> Result<tokio::sync::OwnedSemaphorePermit, InvokeError> {
    deployed.permits.clone().try_acquire_owned().map_err(|_| {
        InvokeError::Overloaded(format!(
            "{} is at its concurrency limit of {}; retry shortly, or redeploy with a higher --concurrency",
            deployed.endpoint(),
            deployed.record.settings.concurrency
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tombstones_are_told_from_records() {
        // What the registry writes, and what the embedded store reads back.
        assert!(is_version_tombstone(
            br#"{"deleted":"2026-01-01T00:00:00Z","record":{"digest":"sha256:x"}}"#
        ));
        assert!(is_version_tombstone(
            br#"{"published":"2026-01-01T00:00:00Z"}"#
        ));
        assert!(!is_version_tombstone(
            br#"{"owner":"o","name":"n","version":"1.0.0","digest":"sha256:x"}"#
        ));
        assert!(!is_version_tombstone(b"not json"));
    }

    #[test]
    fn version_specs() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert_eq!(VersionSpec::parse(None).unwrap(), VersionSpec::Latest);
        assert_eq!(
            VersionSpec::parse(Some("latest")).unwrap(),
            VersionSpec::Latest
        );
        assert_eq!(
            VersionSpec::parse(Some("1")).unwrap(),
            VersionSpec::Major(1)
        );
        assert_eq!(
            VersionSpec::parse(Some("1.2")).unwrap(),
            VersionSpec::Minor(1, 2)
        );
        assert!(
            VersionSpec::parse(Some("1.2.3-beta"))
                .unwrap()
                .matches(&v("1.2.3-beta"))
        );
        assert!(!VersionSpec::Latest.matches(&v("2.0.0-rc.1")));
        assert!(!VersionSpec::Major(2).matches(&v("2.0.0-rc.1")));
        for bad in ["x", "1.x", "1..2", "-1", "1.2.3.4", "v1"] {
            assert!(
                VersionSpec::parse(Some(bad)).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn deploy_versions_refuse_build_metadata_and_odd_characters() {
        assert_eq!(
            parse_version("1.2.3-rc.1").unwrap().to_string(),
            "1.2.3-rc.1"
        );
        let msg = |s: &str| parse_version(s).unwrap_err().to_string();
        assert!(
            msg("1.2.3+other").contains("\"+other\""),
            "{}",
            msg("1.2.3+other")
        );
        assert!(msg("1.0.0+rebuild").contains("build metadata"));
        let m = msg("1.2.3-é");
        assert!(
            m.contains("'é' is not allowed") && m.contains("ASCII letters, digits"),
            "{m}"
        );
        assert!(msg("1.2").contains("MAJOR.MINOR.PATCH"));
    }
}
