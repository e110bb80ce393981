//! `wasmgrid.toml`: what `wasmgrid up` builds, deploys and serves.
//!
//! ```toml
//! [server]
//! addr = "127.0.0.1:8080"          # optional
//! # header_read_timeout = 10, idle_timeout = 60, max_connections = 10000 (seconds; flags win)
//!
//! # [cluster]                      # optional: a node of a NATS cluster (flags win)
//! # url = "nats://127.0.0.1:4222"  # --cluster; key = "cluster.key", replicas = 3,
//! # prefix = "wasmgrid", creds = "nats.creds", lease = 30
//!
//! [[algorithm]]
//! name = "demo/hello"              # owner/name
//! version = "1.0.0"                # the first version `up` publishes
//! source = "guest-examples/target/wasm32-wasip2/release/hello.wasm"
//! timeout = 10                     # optional deploy settings
//! memory = 64
//! concurrency = 16
//! reuse = 1000                     # calls per warm instance (default 0: fresh per call)
//! grants = ["data://demo/uploads:read"]
//! # wasi:http components only (see README): no key needed, outgoing HTTP
//! # allowed to these hosts, and a path prefix served as-is
//! # public = true
//! # allow_outbound = ["api.example.com", "10.0.0.5:8080"]
//! # route = "/hello"
//! [algorithm.build]                # optional, like Spin's component.build
//! command = "cargo build --release"
//! workdir = "guest-examples"
//!
//! [[collection]]                   # a data collection
//! name = "demo/uploads"            # owner/collection
//! acl = "private"                  # private | algorithms (default) | public
//!
//! [[topic]]                        # a custom event topic
//! name = "demo-events"
//!
//! [[subscription]]                 # the API's subscription JSON, in TOML
//! topic = "system.data"            # a [[topic]], an existing or a system topic
//! name = "csv-summary"
//! destination = { algorithm = "demo/csv-summary" }   # or { webhook = "https://…" }
//! filter = { includedEventTypes = ["wasmgrid.data.FileCreated"], subjectBeginsWith = "/collections/demo/uploads/files/", subjectEndsWith = ".csv" }
//! retryPolicy = { maxDeliveryAttempts = 10 }          # optional, as are
//! # deadLetter = { collection = "data://demo/deadletters/" }, batching = { maxEventsPerBatch = 10 },
//! # maxConcurrentDeliveries = 4, and filter.advancedFilters = [{ operatorType = "NumberGreaterThan", key = "data.size", value = 0 }]
//! ```
//!
//! Paths are relative to the manifest's folder. Identical build commands (same
//! command and workdir) run once per `up`.
//!
//! After deploying the algorithms and starting the server, `up` applies the
//! collections, topics and subscriptions through the HTTP API with the admin
//! key, in that order and idempotently: a missing collection is created and an
//! existing one gets the manifest's ACL; an existing topic is left as it is (its
//! keys are printed only when `up` creates it); a subscription is created or
//! replaced (keeping its queue). Nothing that the manifest no longer lists is
//! deleted: remove it with `wasmgrid data rm`, `topic rm` or `sub rm`.

use semver::Version;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use wasmgrid_core::names::validate_name;
use wasmgrid_core::registry::{AlgorithmInfo, VersionSettings};
use wasmgrid_events::SubscriptionSpec;

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Server settings.
    #[serde(default)]
    pub server: ServerSection,
    /// Run as a node of a cluster on NATS JetStream instead of the embedded
    /// store (the `--cluster*` flags win).
    #[serde(default)]
    pub cluster: Option<ClusterSection>,
    /// Algorithms to deploy.
    #[serde(default, rename = "algorithm")]
    pub algorithms: Vec<AlgorithmSection>,
    /// Data collections to create (or whose ACL to set).
    #[serde(default, rename = "collection")]
    pub collections: Vec<CollectionSection>,
    /// Custom event topics to create.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicSection>,
    /// Event subscriptions to create or replace.
    #[serde(default, rename = "subscription")]
    pub subscriptions: Vec<SubscriptionSection>,
    /// The folder the manifest is in (paths resolve against it).
    #[serde(skip)]
    pub root: PathBuf,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Listen address.
    pub addr: Option<String>,
    /// Seconds a client has to send a request's line and headers (`--header-read-timeout`).
    pub header_read_timeout: Option<u64>,
    /// Seconds a kept-alive connection may stay idle (`--idle-timeout`).
    pub idle_timeout: Option<u64>,
    /// Connections open at once (`--max-connections`).
    pub max_connections: Option<usize>,
}

/// `[cluster]`: the `--cluster*` flags of `serve` and `up`, which win over
/// it. Paths are relative to the manifest's folder.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// NATS server URLs, comma-separated (`--cluster`).
    pub url: String,
    /// The cluster key file (`--cluster-key`).
    pub key: Option<PathBuf>,
    /// Stream and bucket replicas (`--cluster-replicas`).
    pub replicas: Option<usize>,
    /// Stream and bucket name prefix (`--cluster-prefix`).
    pub prefix: Option<String>,
    /// A NATS credentials file (`--cluster-creds`).
    pub creds: Option<PathBuf>,
    /// Seconds before another node takes over a dead node's work (`--cluster-lease`).
    pub lease: Option<u64>,
}

/// One `[[algorithm]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlgorithmSection {
    /// `owner/name`.
    pub name: String,
    /// The first version to publish.
    pub version: String,
    /// Path of the built component.
    pub source: PathBuf,
    /// How to build it.
    pub build: Option<BuildSection>,
    /// Timeout in seconds.
    pub timeout: Option<u64>,
    /// Memory cap in MiB.
    pub memory: Option<u64>,
    /// Concurrency limit.
    pub concurrency: Option<u32>,
    /// Calls per warm instance (0 or absent: a fresh instance per call).
    pub reuse: Option<u32>,
    /// Grants.
    #[serde(default)]
    pub grants: Vec<String>,
    /// wasi:http components: serve without an API key.
    #[serde(default)]
    pub public: bool,
    /// wasi:http components: hosts outgoing HTTP may reach.
    #[serde(default)]
    pub allow_outbound: Vec<String>,
    /// wasi:http components: a path prefix served as-is (`/hello`).
    pub route: Option<String>,
}

/// `[algorithm.build]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Shell command.
    pub command: String,
    /// Working directory, relative to the manifest.
    pub workdir: Option<PathBuf>,
    /// Files and folders (relative to the manifest) the component is built from.
    /// When given, `up` skips the build and the deploy if the newest version was
    /// published from the same contents, which matters for toolchains whose
    /// output differs on every build (componentize-py, componentize-js).
    #[serde(default)]
    pub watch: Vec<PathBuf>,
}

/// One `[[collection]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSection {
    /// `owner/collection`.
    pub name: String,
    /// Who may read it.
    #[serde(default)]
    pub acl: CollectionAcl,
}

impl CollectionSection {
    /// `(owner, collection)`.
    pub fn owner_name(&self) -> (&str, &str) {
        self.name.split_once('/').unwrap_or(("", &self.name))
    }
}

/// A collection's read access, as `wasmgrid data mk --acl` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionAcl {
    /// Only the owner's keys.
    Private,
    /// Also the owner's algorithms (Algorithmia's default).
    #[default]
    Algorithms,
    /// Any key and any algorithm.
    Public,
}

impl CollectionAcl {
    /// The API's `acl.read` list.
    pub fn read(self) -> Vec<&'static str> {
        match self {
            CollectionAcl::Private => vec![],
            CollectionAcl::Algorithms => vec![wasmgrid_core::data::ACL_MY_ALGOS],
            CollectionAcl::Public => vec![wasmgrid_core::data::ACL_PUBLIC],
        }
    }

    /// The manifest's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionAcl::Private => "private",
            CollectionAcl::Algorithms => "algorithms",
            CollectionAcl::Public => "public",
        }
    }
}

/// One `[[topic]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSection {
    /// Topic name.
    pub name: String,
}

/// One `[[subscription]]`: its topic and name, and the fields of the API's
/// subscription JSON (`destination`, `filter`, `retryPolicy`, `deadLetter`,
/// `batching`, `maxConcurrentDeliveries`, `webhookSecret`), with the same names.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionSection {
    /// The topic it subscribes to.
    pub topic: String,
    /// Subscription name.
    pub name: String,
    /// Everything else: the subscription itself (checked by [`SubscriptionSection::spec`]).
    #[serde(flatten)]
    pub fields: toml::Table,
}

/// The keys of `filter` and of each advanced filter, to catch misspellings in
/// hand-written TOML (the API ignores unknown filter keys).
const FILTER_KEYS: &[&str] = &[
    "includedEventTypes",
    "subjectBeginsWith",
    "subjectEndsWith",
    "isSubjectCaseSensitive",
    "enableAdvancedFilteringOnArrays",
    "advancedFilters",
];
const ADVANCED_FILTER_KEYS: &[&str] = &["operatorType", "key", "value", "values"];

impl SubscriptionSection {
    /// The subscription as the API takes it, checked: known fields only, a
    /// valid filter.
    pub fn spec(&self) -> anyhow::Result<SubscriptionSpec> {
        let what = format!("subscription {}/{}", self.topic, self.name);
        if let Some(filter) = self.fields.get("filter") {
            let table = filter.as_table().ok_or_else(|| {
                anyhow::anyhow!("{what}: filter must be a table, e.g. filter = {{ includedEventTypes = [\"a.b\"] }}")
            })?;
            unknown_key(&what, "filter", table, FILTER_KEYS)?;
            for (i, f) in table
                .get("advancedFilters")
                .and_then(toml::Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Some(t) = f.as_table() {
                    unknown_key(
                        &what,
                        &format!("filter.advancedFilters[{i}]"),
                        t,
                        ADVANCED_FILTER_KEYS,
                    )?;
                }
            }
        }
        let spec: SubscriptionSpec = toml::Value::Table(self.fields.clone())
            .try_into()
            .map_err(|e| {
                anyhow::anyhow!(
                    "{what}: {} (the fields are the API's subscription JSON: destination, filter, retryPolicy, deadLetter, batching, maxConcurrentDeliveries)",
                    e.to_string().trim_end()
                )
            })?;
        spec.filter
            .compile()
            .map_err(|e| anyhow::anyhow!("{what}: filter: {e}"))?;
        Ok(spec)
    }
}

fn unknown_key(what: &str, at: &str, table: &toml::Table, known: &[&str]) -> anyhow::Result<()> {
    match table.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => anyhow::bail!(
            "{what}: unknown key `{k}` in {at}: use {}",
            known.join(", ")
        ),
        None => Ok(()),
    }
}

/// Folders never hashed for `watch` (tool installs and build output).
const WATCH_SKIP: &[&str] = &["node_modules", "target", "out", "__pycache__"];

impl BuildSection {
    /// A digest of the build command and every watched file (paths and
    /// contents, in sorted order), or `None` without `watch`.
    pub fn source_hash(&self, root: &Path) -> anyhow::Result<Option<String>> {
        use sha2::{Digest, Sha256};
        if self.watch.is_empty() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for w in &self.watch {
            collect_files(&root.join(w), &mut files)
                .map_err(|e| anyhow::anyhow!("watch path {}: {e}", root.join(w).display()))?;
        }
        files.sort();
        let mut h = Sha256::new();
        h.update(self.command.as_bytes());
        for f in files {
            h.update(f.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(std::fs::read(&f)?);
        }
        Ok(Some(format!("sha256:{}", hex::encode(h.finalize()))))
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || WATCH_SKIP.contains(&name.as_ref()) {
            continue;
        }
        collect_files(&entry.path(), out)?;
    }
    Ok(())
}

impl AlgorithmSection {
    /// `(owner, name)`.
    pub fn owner_name(&self) -> (&str, &str) {
        self.name.split_once('/').unwrap_or(("", &self.name))
    }

    /// Deploy settings (defaults where unset).
    pub fn settings(&self) -> VersionSettings {
        let d = VersionSettings::default();
        VersionSettings {
            timeout: self.timeout.unwrap_or(d.timeout),
            memory: self.memory.unwrap_or(d.memory),
            concurrency: self.concurrency.unwrap_or(d.concurrency),
            grants: self.grants.clone(),
            public: self.public,
            allow_outbound: self.allow_outbound.clone(),
            route: self.route.clone(),
            reuse: self.reuse.unwrap_or(d.reuse),
        }
    }
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("cannot read the manifest {}: {e}; run `wasmgrid up` in the repository root or pass the manifest's path", path.display())
        })?;
        let mut m: Manifest = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid manifest {}: {e}", path.display()))?;
        m.root = path.parent().map(Path::to_path_buf).unwrap_or_default();
        if m.root.as_os_str().is_empty() {
            m.root = PathBuf::from(".");
        }
        if let Some(c) = m.cluster.as_mut() {
            if c.url.trim().is_empty() {
                anyhow::bail!(
                    "{}: [cluster] url is empty: give the NATS servers, e.g. url = \"nats://127.0.0.1:4222\", or remove [cluster] to use the embedded store",
                    path.display()
                );
            }
            c.key = c.key.take().map(|k| m.root.join(k));
            c.creds = c.creds.take().map(|k| m.root.join(k));
        }
        for a in &m.algorithms {
            let (owner, name) = a.owner_name();
            validate_name("owner", owner)
                .and_then(|_| validate_name("algorithm name", name))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "{}: algorithm {:?}: {e} (write name = \"owner/name\")",
                        path.display(),
                        a.name
                    )
                })?;
            // The server's rule, so `up` fails here rather than at deploy.
            wasmgrid_core::registry::parse_version(&a.version)
                .map_err(|e| anyhow::anyhow!("{}: algorithm {}: {e}", path.display(), a.name))?;
        }
        m.check_resources()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(m)
    }

    /// Whether `up` has collections, topics or subscriptions to apply.
    pub fn has_resources(&self) -> bool {
        !(self.collections.is_empty() && self.topics.is_empty() && self.subscriptions.is_empty())
    }

    /// Checks collections, topics and subscriptions before anything is
    /// deployed, so a typo fails `up` at once.
    fn check_resources(&self) -> anyhow::Result<()> {
        let mut seen = HashSet::new();
        for c in &self.collections {
            let (owner, name) = c.owner_name();
            wasmgrid_core::data::DataPath::new(owner, name, "").map_err(|e| {
                anyhow::anyhow!(
                    "collection {:?}: {e} (write name = \"owner/collection\")",
                    c.name
                )
            })?;
            if !seen.insert(c.name.as_str()) {
                anyhow::bail!("collection {} is declared twice", c.name);
            }
        }
        let mut seen = HashSet::new();
        for t in &self.topics {
            if wasmgrid_events::is_reserved_topic(&t.name) {
                anyhow::bail!(
                    "topic {}: names starting with `system.` are wasmgrid's own topics, which exist already; subscribe to them without a [[topic]]",
                    t.name
                );
            }
            if !seen.insert(t.name.as_str()) {
                anyhow::bail!("topic {} is declared twice", t.name);
            }
        }
        let mut seen = HashSet::new();
        for s in &self.subscriptions {
            s.spec()?;
            if !seen.insert((s.topic.as_str(), s.name.as_str())) {
                anyhow::bail!("subscription {}/{} is declared twice", s.topic, s.name);
            }
        }
        Ok(())
    }
}

/// The version `wasmgrid up` publishes for a rebuilt component: the manifest's
/// version if that number was never published, otherwise the next patch after the
/// highest published version with the same major.minor. Callers who pin `1` or
/// `1.0` (or nothing) follow every rebuild.
pub fn next_version(base: &Version, info: Option<&AlgorithmInfo>) -> Version {
    let taken: Vec<Version> = info
        .map(|i| {
            i.taken
                .iter()
                .filter_map(|v| Version::parse(v).ok())
                .collect()
        })
        .unwrap_or_default();
    if !taken.contains(base) {
        return base.clone();
    }
    let highest = taken
        .iter()
        .filter(|v| v.major == base.major && v.minor == base.minor)
        .max()
        .cloned()
        .unwrap_or_else(|| base.clone());
    Version::new(highest.major, highest.minor, highest.patch + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(taken: &[&str]) -> AlgorithmInfo {
        AlgorithmInfo {
            owner: "demo".into(),
            name: "x".into(),
            latest: None,
            versions: vec![],
            taken: taken.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rebuilt_components_get_the_next_patch() {
        let base = Version::parse("1.0.0").unwrap();
        assert_eq!(next_version(&base, None).to_string(), "1.0.0");
        assert_eq!(
            next_version(&base, Some(&info(&["1.0.0"]))).to_string(),
            "1.0.1"
        );
        assert_eq!(
            next_version(&base, Some(&info(&["1.0.0", "1.0.1", "2.0.0"]))).to_string(),
            "1.0.2"
        );
        assert_eq!(
            next_version(&base, Some(&info(&["1.0.0-rc.1", "1.0.0"]))).to_string(),
            "1.0.1"
        );
    }

    #[test]
    fn watch_hash_follows_sources_and_skips_tool_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("src/node_modules")).unwrap();
        std::fs::write(root.join("src/app.py"), "v1").unwrap();
        let b = BuildSection {
            command: "./build.sh".into(),
            workdir: None,
            watch: vec!["src".into()],
        };
        let h1 = b.source_hash(root).unwrap().unwrap();
        std::fs::write(root.join("src/node_modules/x.js"), "noise").unwrap();
        std::fs::write(root.join("src/.cache"), "noise").unwrap();
        assert_eq!(
            b.source_hash(root).unwrap().unwrap(),
            h1,
            "tool folders and dotfiles are ignored"
        );
        std::fs::write(root.join("src/app.py"), "v2").unwrap();
        assert_ne!(b.source_hash(root).unwrap().unwrap(), h1);
        let other = BuildSection {
            command: "./other.sh".into(),
            ..b.clone()
        };
        assert_ne!(
            other.source_hash(root).unwrap(),
            b.source_hash(root).unwrap(),
            "the command counts"
        );
        let none = BuildSection { watch: vec![], ..b };
        assert_eq!(none.source_hash(root).unwrap(), None);
    }

    #[test]
    fn manifest_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wasmgrid.toml");
        std::fs::write(
            &p,
            "[[algorithm]]\nname = \"hello\"\nversion = \"1.0.0\"\nsource = \"x.wasm\"\n",
        )
        .unwrap();
        assert!(
            Manifest::load(&p)
                .unwrap_err()
                .to_string()
                .contains("owner/name")
        );
        std::fs::write(
            &p,
            "[[algorithm]]\nname = \"demo/hello\"\nversion = \"1\"\nsource = \"x.wasm\"\n",
        )
        .unwrap();
        assert!(
            Manifest::load(&p)
                .unwrap_err()
                .to_string()
                .contains("invalid version")
        );
        std::fs::write(&p, "[[algorithm]]\nname = \"demo/hello\"\nversion = \"1.0.0\"\nsource = \"x.wasm\"\ncolor = 1\n").unwrap();
        assert!(
            Manifest::load(&p)
                .unwrap_err()
                .to_string()
                .contains("color")
        );
    }

    #[test]
    fn the_repository_manifest_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasmgrid.toml");
        let m = Manifest::load(&path).unwrap();
        assert!(m.topics.iter().any(|t| t.name == "demo-events"));
        assert!(
            m.subscriptions
                .iter()
                .any(|s| s.topic == "system.data" && s.name == "csv-summary")
        );
    }

    fn load_str(text: &str) -> anyhow::Result<Manifest> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wasmgrid.toml");
        std::fs::write(&p, text).unwrap();
        Manifest::load(&p)
    }

    #[test]
    fn the_cluster_section_resolves_paths_against_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wasmgrid.toml");
        std::fs::write(
            &p,
            "[cluster]\nurl = \"nats://127.0.0.1:4222\"\nkey = \"keys/cluster.key\"\nreplicas = 3\nlease = 10\n",
        )
        .unwrap();
        let m = Manifest::load(&p).unwrap();
        let c = m.cluster.unwrap();
        assert_eq!(c.url, "nats://127.0.0.1:4222");
        assert_eq!(c.key.unwrap(), dir.path().join("keys/cluster.key"));
        assert_eq!((c.replicas, c.lease, c.prefix), (Some(3), Some(10), None));
        assert!(load_str("").unwrap().cluster.is_none());
        let empty = load_str("[cluster]\nurl = \" \"\n")
            .unwrap_err()
            .to_string();
        assert!(empty.contains("[cluster] url is empty"), "{empty}");
        let unknown = load_str("[cluster]\nurl = \"nats://x\"\nreplica = 3\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("replica"), "{unknown}");
    }

    #[test]
    fn collections_topics_and_subscriptions_parse_into_the_api_shapes() {
        let m = load_str(
            r#"
[[collection]]
name = "demo/uploads"
acl = "private"

[[collection]]
name = "demo/results"

[[topic]]
name = "demo-events"

[[subscription]]
topic = "system.data"
name = "csv-summary"
destination = { algorithm = "demo/csv-summary" }
retryPolicy = { maxDeliveryAttempts = 5 }
batching = { maxEventsPerBatch = 10 }
maxConcurrentDeliveries = 4
[subscription.filter]
includedEventTypes = ["wasmgrid.data.FileCreated"]
subjectBeginsWith = "/collections/demo/uploads/files/"
subjectEndsWith = ".csv"
advancedFilters = [{ operatorType = "NumberGreaterThan", key = "data.size", value = 0 }]
"#,
        )
        .unwrap();
        assert_eq!(m.collections[0].acl, CollectionAcl::Private);
        assert_eq!(
            m.collections[1].acl,
            CollectionAcl::Algorithms,
            "the default"
        );
        assert_eq!(m.topics[0].name, "demo-events");
        assert!(m.has_resources());
        let spec = m.subscriptions[0].spec().unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v["destination"],
            serde_json::json!({"algorithm": "demo/csv-summary"})
        );
        assert_eq!(v["filter"]["subjectEndsWith"], ".csv");
        assert_eq!(v["filter"]["advancedFilters"][0]["value"], 0);
        assert_eq!(v["retryPolicy"]["maxDeliveryAttempts"], 5);
        assert_eq!(v["retryPolicy"]["eventTimeToLiveInMinutes"], 1440);
        assert_eq!(v["batching"]["maxEventsPerBatch"], 10);
        assert_eq!(v["maxConcurrentDeliveries"], 4);
    }

    #[test]
    fn resource_errors_name_the_thing_and_the_field() {
        let err = |text: &str| load_str(text).unwrap_err().to_string();
        let sub = "[[subscription]]\ntopic = \"t\"\nname = \"s\"\n";
        assert!(
            err(&format!("{sub}destinaton = {{ algorithm = \"a/b\" }}\n")).contains("destinaton"),
        );
        let e = err(&format!(
            "{sub}destination = {{ algorithm = \"a/b\" }}\nfilter = {{ subjectBeginWith = \"/x\" }}\n"
        ));
        assert!(
            e.contains("subscription t/s") && e.contains("subjectBeginWith"),
            "{e}"
        );
        let e = err(&format!(
            "{sub}destination = {{ algorithm = \"a/b\" }}\nfilter = {{ includedEventTypes = [] }}\n"
        ));
        assert!(e.contains("includedEventTypes"), "{e}");
        let e = err(&format!(
            "{sub}destination = {{ algorithm = \"a/b\" }}\nfilter = {{ advancedFilters = [{{ operator = \"NumberIn\", key = \"data.x\" }}] }}\n"
        ));
        assert!(
            e.contains("advancedFilters[0]") && e.contains("operator"),
            "{e}"
        );
        let e = err(&format!(
            "{sub}destination = {{ algorithm = \"a/b\" }}\n{sub}destination = {{ algorithm = \"a/b\" }}\n"
        ));
        assert!(e.contains("declared twice"), "{e}");
        assert!(err("[[collection]]\nname = \"uploads\"\n").contains("owner/collection"));
        assert!(
            err("[[collection]]\nname = \"demo/uploads\"\nacl = \"secret\"\n").contains("secret")
        );
        assert!(err("[[topic]]\nname = \"system.mine\"\n").contains("system."));
    }
}
