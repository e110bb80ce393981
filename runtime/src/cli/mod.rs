//! The `wasmgrid` command line: serve, up, and thin clients of the HTTP API.

mod client;
mod data;
mod events;
mod jobs;
mod output;
pub mod up;

pub use client::Client;

use crate::manifest::Manifest;
use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use wasmgrid_engine::EngineConfig;
use wasmgrid_http::app::App;

/// wasmgrid: a self-hosted serverless runtime for sandboxed WebAssembly algorithms.
#[derive(Parser, Debug)]
#[command(name = "wasmgrid", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug, Clone)]
struct Global {
    /// Data directory (store, keys, compiled components).
    #[arg(
        long,
        global = true,
        env = "WASMGRID_HOME",
        default_value = ".wasmgrid"
    )]
    data_dir: PathBuf,
    /// Server URL for client commands (default: from <data dir>/server.json).
    #[arg(long, global = true, env = "WASMGRID_URL")]
    url: Option<String>,
    /// API key for client commands (default: <data dir>/admin.key).
    #[arg(long, global = true, env = "WASMGRID_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// How long SIGTERM waits for in-flight calls before exiting.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Wasm instances that may run at once (pooling allocator slots).
    #[arg(long, default_value_t = 1000)]
    instance_slots: u32,
    /// Idle warm instances kept per version deployed with --reuse.
    #[arg(long, default_value_t = 8)]
    warm_pool_size: usize,
    /// Seconds an idle warm instance is kept before it is dropped.
    #[arg(long, default_value_t = 300)]
    warm_idle_timeout: u64,
    /// Allow webhook subscriptions to loopback and private addresses.
    #[arg(long)]
    allow_private_webhooks: bool,
    /// Multiply event retry delays and time-to-live by this factor (tests use
    /// e.g. 0.001 to turn Event Grid's 10 s first retry into 10 ms).
    #[arg(long, default_value_t = 1.0)]
    event_time_scale: f64,
    /// Seconds a published event's (source, id) is remembered to drop re-publishes.
    #[arg(long, default_value_t = 600)]
    dedup_window: u64,
    /// Most algorithm runs a chain of events may pass through (each run an event
    /// triggers adds one hop to the events it causes); later events are
    /// dead-lettered as `HopLimitExceeded`, which stops event loops.
    #[arg(long, default_value_t = wasmgrid_events::DEFAULT_MAX_HOPS)]
    max_event_hops: u32,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Cluster mode: run as one node of several sharing NATS JetStream
/// (docs/ARCHITECTURE.md, "Cluster mode").
#[derive(Args, Debug, Clone, Default)]
struct ClusterArgs {
    /// Run as a cluster node on these NATS servers (comma-separated
    /// nats://host:port; user:password@ in the URL if needed) instead of the
    /// embedded store.
    #[arg(long, env = "WASMGRID_CLUSTER", value_name = "URLS")]
    cluster: Option<String>,
    /// The cluster key file (64 hex characters; `wasmgrid cluster new-key
    /// FILE`), the same on every node. Required with --cluster.
    #[arg(long, env = "WASMGRID_CLUSTER_KEY", value_name = "FILE")]
    cluster_key: Option<PathBuf>,
    /// Replicas of every stream and bucket (3 survives the loss of a server)
    /// [default: 1].
    #[arg(long, value_name = "N")]
    cluster_replicas: Option<usize>,
    /// Prefix of every stream and bucket name (a naming convenience, not a
    /// security boundary: separate installations use separate NATS accounts)
    /// [default: wasmgrid].
    #[arg(long, value_name = "NAME")]
    cluster_prefix: Option<String>,
    /// A NATS credentials file.
    #[arg(long, env = "WASMGRID_CLUSTER_CREDS", value_name = "FILE")]
    cluster_creds: Option<PathBuf>,
    /// Seconds a node holds a delivery without an outcome before another node
    /// takes it over [default: 30].
    #[arg(long, value_name = "SECONDS")]
    cluster_lease: Option<u64>,
}

impl ClusterArgs {
    /// The cluster configuration, `None` without --cluster: the flags (and
    /// their environment variables), then the manifest's `[cluster]`.
    fn config(
        &self,
        section: Option<&crate::manifest::ClusterSection>,
    ) -> anyhow::Result<Option<wasmgrid_http::cluster::ClusterConfig>> {
        let Some(urls) = self
            .cluster
            .clone()
            .or_else(|| section.map(|s| s.url.clone()))
        else {
            return Ok(None);
        };
        let Some(key_file) = self
            .cluster_key
            .clone()
            .or_else(|| section.and_then(|s| s.key.clone()))
        else {
            bail!(
                "--cluster needs --cluster-key FILE (or WASMGRID_CLUSTER_KEY, or key = \"FILE\" under the manifest's [cluster]): the key file every node of the cluster shares; create one with `wasmgrid cluster new-key FILE`"
            );
        };
        let replicas = self
            .cluster_replicas
            .or_else(|| section.and_then(|s| s.replicas))
            .unwrap_or(1);
        if !(1..=5).contains(&replicas) {
            bail!(
                "--cluster-replicas {replicas} is out of range: use 1 to 5 (JetStream's limit; 3 survives the loss of one server)"
            );
        }
        let lease = self
            .cluster_lease
            .or_else(|| section.and_then(|s| s.lease))
            .unwrap_or(30);
        if !(5..=3600).contains(&lease) {
            bail!("--cluster-lease {lease} is out of range: use 5 to 3600 seconds");
        }
        Ok(Some(wasmgrid_http::cluster::ClusterConfig {
            urls,
            key: wasmgrid_core::cluster::ClusterKey::read(&key_file)?,
            replicas,
            prefix: self
                .cluster_prefix
                .clone()
                .or_else(|| section.and_then(|s| s.prefix.clone()))
                .unwrap_or_else(|| "wasmgrid".to_string()),
            creds: self
                .cluster_creds
                .clone()
                .or_else(|| section.and_then(|s| s.creds.clone())),
            lease: Duration::from_secs(lease),
        }))
    }
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Write a new random cluster key to FILE (mode 0600); give every node of
    /// the cluster the same file.
    NewKey {
        /// Where to write it (refused if it exists).
        file: PathBuf,
    },
    /// The cluster's live nodes, its NATS servers and its streams' usage
    /// (`GET /v1/cluster`, admin); `--json` for the raw answer.
    Status {
        /// Print the JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

/// Connection limits of `serve` and `up` (docs/RELIABILITY.md, "Connection limits").
#[derive(Args, Debug, Clone, Default)]
struct ConnectionArgs {
    /// Seconds a client has to send a request's line and headers (from the
    /// connection's start, or the request's first byte) [default: 10].
    #[arg(long, value_name = "SECONDS")]
    header_read_timeout: Option<u64>,
    /// Seconds a kept-alive connection may stay idle between requests [default: 60].
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Connections open at once; more wait in the listen queue [default: 10000,
    /// or 3/4 of the open-file limit if lower].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
}

impl ConnectionArgs {
    /// The limits, from these flags, else `section` (a manifest's `[server]`), else defaults.
    fn limits(
        &self,
        section: &crate::manifest::ServerSection,
    ) -> anyhow::Result<wasmgrid_http::server::ConnectionLimits> {
        let secs = |flag: Option<u64>, toml: Option<u64>, name: &str, default: Duration| match flag
            .or(toml)
        {
            None => Ok(default),
            Some(0) => Err(anyhow!(
                "{name} 0 is out of range: give a number of seconds, at least 1"
            )),
            Some(n) => Ok(Duration::from_secs(n)),
        };
        let max_connections = match self.max_connections.or(section.max_connections) {
            Some(0) => bail!(
                "max-connections 0 is out of range: give at least 1 (default: 10000, or 3/4 of the open-file limit if lower)"
            ),
            n => n,
        };
        Ok(wasmgrid_http::server::ConnectionLimits {
            header_read_timeout: secs(
                self.header_read_timeout,
                section.header_read_timeout,
                "header-read-timeout",
                wasmgrid_http::server::DEFAULT_HEADER_READ_TIMEOUT,
            )?,
            idle_timeout: secs(
                self.idle_timeout,
                section.idle_timeout,
                "idle-timeout",
                wasmgrid_http::server::DEFAULT_IDLE_TIMEOUT,
            )?,
            max_connections,
        })
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the HTTP API.
    Serve(ServeArgs),
    /// Build, deploy and serve everything a manifest declares (like `spin up --build`).
    Up {
        /// The manifest.
        #[arg(default_value = "wasmgrid.toml")]
        manifest: PathBuf,
        /// Skip the build commands.
        #[arg(long)]
        no_build: bool,
        /// Address to listen on (default: the manifest's, else 127.0.0.1:8080).
        #[arg(long)]
        addr: Option<String>,
        #[arg(long, default_value_t = 30)]
        /// How long SIGTERM waits for in-flight calls.
        drain_timeout: u64,
        #[command(flatten)]
        connections: ConnectionArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Deploy a component as owner/name@version.
    Deploy {
        /// The .wasm component.
        file: PathBuf,
        /// owner/name@version, e.g. demo/hello@1.0.0.
        target: String,
        /// Per-call timeout in seconds.
        #[arg(long)]
        timeout: Option<u64>,
        /// Memory cap in MiB.
        #[arg(long)]
        memory: Option<u64>,
        /// Calls that may run at once.
        #[arg(long)]
        concurrency: Option<u32>,
        /// Algorithms: calls one warm instance serves, one at a time, before it
        /// is discarded (memory such as a loaded model persists between them;
        /// default 0: a fresh instance per call).
        #[arg(long)]
        reuse: Option<u32>,
        /// Capability grants (data://owner/collection:read|write, topic:NAME); repeatable.
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// wasi:http components: serve /http/owner/name/ (and --route) without an API key.
        #[arg(long)]
        public: bool,
        /// wasi:http components: hosts outgoing HTTP may reach (host, host:port, *.domain);
        /// comma-separated or repeated. Default: none (all outgoing HTTP denied).
        #[arg(long, value_delimiter = ',')]
        allow_outbound: Vec<String>,
        /// wasi:http components: also serve this path prefix as-is (e.g. /hello).
        #[arg(long)]
        route: Option<String>,
    },
    /// Call an algorithm: owner/name[@version] with INPUT, or `-` for stdin.
    Call {
        /// owner/name or owner/name@version (1.2.3, 1.2 or 1).
        target: String,
        /// The input; `-` reads stdin. JSON if it parses as JSON, else text (see --text/--json/--binary).
        input: Option<String>,
        /// Send the input as text/plain.
        #[arg(long, conflicts_with_all = ["json", "binary"])]
        text: bool,
        /// Send the input as application/json (must be valid JSON).
        #[arg(long, conflicts_with = "binary")]
        json: bool,
        /// Send the input as application/octet-stream.
        #[arg(long)]
        binary: bool,
        /// Lower timeout for this call, in seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Print what the algorithm wrote to stdout (to stderr).
        #[arg(long)]
        stdout: bool,
        /// Write the result to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// List algorithms, or one algorithm's versions.
    Algos {
        /// owner/name to show versions of.
        name: Option<String>,
    },
    /// Delete a version (its number stays taken).
    Delete {
        /// owner/name@version.
        target: String,
    },
    /// Manage API keys (admin).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Hosted data collections: mk, put, get, ls, rm.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Per-algorithm secrets: set, rm, ls.
    #[command(subcommand)]
    Secret(data::SecretCommand),
    /// Event topics: create, ls, show, rm, regenerate-key.
    #[command(subcommand)]
    Topic(events::TopicCommand),
    /// Event subscriptions: create (flags or --file), ls, show, rm.
    #[command(subcommand)]
    Sub(events::SubCommand),
    /// Publish one CloudEvent to a topic.
    Publish(events::PublishArgs),
    /// A subscription's dead-lettered events: ls, redrive.
    #[command(subcommand)]
    Deadletters(events::DeadLetterCommand),
    /// Batch jobs over data collections: submit, wait, status, ls, cancel.
    #[command(subcommand)]
    Job(jobs::JobCommand),
    /// Cluster mode: new-key, status.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a key; prints the secret once.
    Create {
        /// Owner the key acts for.
        #[arg(long)]
        owner: String,
        /// Scopes: admin, invoke, deploy, publish, data:read, data:write (repeatable or comma-separated).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// A label.
        #[arg(long)]
        name: Option<String>,
        /// Give this key Algorithmia's error convention on /v1/algo (the algorithm's
        /// errors as HTTP 200 with the error object) whatever the Authorization form.
        /// Without it or --compat, a bare key gets that convention and `Simple`/`Bearer` the HTTP statuses.
        #[arg(long, conflicts_with = "compat")]
        algorithmia_compat: bool,
        /// The key's error convention on /v1/algo: `algorithmia` or `none` (always HTTP statuses).
        #[arg(long, value_parser = ["algorithmia", "none"])]
        compat: Option<String>,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key id (the part after `wg_`, before the next `_`).
        id: String,
    },
    /// List keys (never their secrets).
    Ls,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Serve(_) | Command::Up { .. }
    ));
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMGRID_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},cranelift=warn,wasmtime=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Serve(args) => {
            let engine = EngineConfig {
                instance_slots: args.instance_slots,
                warm_pool_size: args.warm_pool_size,
                warm_idle_timeout: Duration::from_secs(args.warm_idle_timeout),
                ..EngineConfig::default()
            };
            if !(args.event_time_scale > 0.0 && args.event_time_scale <= 1000.0) {
                bail!(
                    "--event-time-scale {} is out of range: use a factor above 0 and at most 1000 (1 = Event Grid's real schedule)",
                    args.event_time_scale
                );
            }
            let events = wasmgrid_events::EventsConfig {
                time_scale: args.event_time_scale,
                allow_private_webhooks: args.allow_private_webhooks,
                dedup_window: Duration::from_secs(args.dedup_window),
                max_hops: args.max_event_hops,
                follow_records: false,
            };
            let limits = args
                .connections
                .limits(&crate::manifest::ServerSection::default())?;
            let cluster = args.cluster.config(None)?;
            let rt = runtime()?;
            let app = match cluster {
                Some(config) => {
                    rt.block_on(App::open_cluster(&g.data_dir, engine, events, config))?
                }
                None => App::open(&g.data_dir, engine, events)?,
            };
            rt.block_on(wasmgrid_http::server::serve(
                app,
                &args.addr,
                Duration::from_secs(args.drain_timeout),
                limits,
                // Only SIGTERM and Ctrl-C stop `serve`.
                tokio_util::sync::CancellationToken::new(),
                |addr| {
                    eprintln!(
                        "wasmgrid serving on http://{addr} (data dir {})",
                        g.data_dir.display()
                    );
                },
            ))
        }
        Command::Cluster(ClusterCommand::Status { json }) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            let v = client.send(Method::GET, "/v1/cluster", &[], None)?.json()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            if v["mode"] != "cluster" {
                println!("this server runs on the embedded store (started without --cluster)");
                return Ok(());
            }
            println!(
                "cluster prefix {}  replicas {}  lease {} s",
                v["prefix"].as_str().unwrap_or("?"),
                v["replicas"],
                v["leaseSeconds"]
            );
            println!("nodes:");
            for n in v["nodes"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {}{}  {}  v{}  heartbeat {} ms ago  {} in flight",
                    n["id"].as_str().unwrap_or("?"),
                    if n["self"] == true {
                        " (this node)"
                    } else {
                        ""
                    },
                    n["address"].as_str().unwrap_or("-"),
                    n["version"].as_str().unwrap_or("?"),
                    n["heartbeatAgeMs"],
                    n["inFlight"]
                );
            }
            let nats = &v["nats"];
            println!(
                "nats: connected to {} ({} {}){}",
                nats["connected"].as_str().unwrap_or("?"),
                nats["name"].as_str().unwrap_or("?"),
                nats["version"].as_str().unwrap_or("?"),
                if nats["up"] == true {
                    ""
                } else {
                    "  DISCONNECTED"
                }
            );
            println!("streams:");
            for st in v["streams"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {:<28} {:>10} msgs {:>14} bytes  R{}  {} consumers",
                    st["name"].as_str().unwrap_or("?"),
                    st["messages"],
                    st["bytes"],
                    st["replicas"],
                    st["consumers"]
                );
            }
            Ok(())
        }
        Command::Cluster(ClusterCommand::NewKey { file }) => {
            if file.exists() {
                bail!(
                    "{} exists; a cluster key is never overwritten (it would lock the cluster's nodes out of its secrets): pick another path",
                    file.display()
                );
            }
            let key = wasmgrid_core::cluster::ClusterKey::generate();
            wasmgrid_core::fsutil::write_secret_file(&file, &format!("{}\n", key.to_hex()))?;
            println!(
                "wrote a new cluster key to {}; give every node the same file",
                file.display()
            );
            Ok(())
        }
        Command::Up {
            manifest,
            no_build,
            addr,
            drain_timeout,
            connections,
            cluster,
        } => up(
            &g,
            &manifest,
            no_build,
            addr,
            drain_timeout,
            &connections,
            &cluster,
        ),
        Command::Deploy {
            file,
            target,
            timeout,
            memory,
            concurrency,
            reuse,
            grants,
            public,
            allow_outbound,
            route,
        } => {
            let (owner, name, version) = split_target(&target)?;
            let version = version
                .ok_or_else(|| anyhow!("give the version to publish: {owner}/{name}@1.0.0"))?;
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut query = Vec::new();
            if let Some(t) = timeout {
                query.push(("timeout", t.to_string()));
            }
            if let Some(m) = memory {
                query.push(("memory", m.to_string()));
            }
            if let Some(c) = concurrency {
                query.push(("concurrency", c.to_string()));
            }
            if let Some(r) = reuse {
                query.push(("reuse", r.to_string()));
            }
            for gr in grants {
                query.push(("grant", gr));
            }
            if public {
                query.push(("public", "true".to_string()));
            }
            if !allow_outbound.is_empty() {
                query.push(("allow_outbound", allow_outbound.join(",")));
            }
            if let Some(r) = route {
                query.push(("route", r));
            }
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            eprintln!(
                "deploying {} ({} KiB) as {owner}/{name}@{version} ...",
                file.display(),
                bytes.len() / 1024
            );
            let reply = client.send(
                Method::PUT,
                &format!("/v1/algorithms/{owner}/{name}/versions/{version}"),
                &query,
                Some((bytes, "application/wasm")),
            )?;
            let v = reply.json()?;
            println!(
                "deployed {} ({}, compiled in {} ms, {})",
                v["endpoint"].as_str().unwrap_or("?"),
                v["kind"].as_str().unwrap_or("?"),
                v["compile_ms"],
                v["digest"].as_str().unwrap_or("?")
            );
            if v["kind"] == "http" {
                println!(
                    "serving {}/http/{owner}/{name}@{version}/{}{}",
                    client.base(),
                    v["route"]
                        .as_str()
                        .map(|r| format!(" and {}{r}", client.base()))
                        .unwrap_or_default(),
                    if v["public"] == true {
                        " (public)"
                    } else {
                        " (needs a key with the invoke scope)"
                    }
                );
            }
            Ok(())
        }
        Command::Call {
            target,
            input,
            text,
            json,
            binary,
            timeout,
            stdout,
            output,
        } => {
            let (owner, name, version) = split_target(&target)?;
            let raw: Vec<u8> = match input.as_deref() {
                Some("-") => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .context("reading stdin")?;
                    buf
                }
                Some(s) => s.as_bytes().to_vec(),
                None => Vec::new(),
            };
            let parses_as_json = serde_json::from_slice::<serde::de::IgnoredAny>(&raw).is_ok();
            if json && !parses_as_json {
                bail!(
                    "--json was given but the input is not valid JSON; quote JSON strings (e.g. '\"Ada\"') or use --text"
                );
            }
            let ct = if binary {
                "application/octet-stream"
            } else if text {
                "text/plain"
            } else if json || parses_as_json {
                "application/json"
            } else if std::str::from_utf8(&raw).is_ok() {
                "text/plain"
            } else {
                "application/octet-stream"
            };
            let mut query = Vec::new();
            if let Some(t) = timeout {
                query.push(("timeout", t.to_string()));
            }
            if stdout {
                query.push(("stdout", "true".to_string()));
            }
            let path = match version {
                Some(v) => format!("/v1/algo/{owner}/{name}/{v}"),
                None => format!("/v1/algo/{owner}/{name}"),
            };
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            let reply = client.send(Method::POST, &path, &query, Some((raw, ct)))?;
            let v = reply.json()?;
            if stdout && let Some(s) = v["metadata"]["stdout"].as_str() {
                eprint!("{s}");
            }
            let result = &v["result"];
            let bytes = match v["metadata"]["content_type"].as_str() {
                Some("text") => {
                    let mut s = result.as_str().unwrap_or_default().to_string();
                    if output.is_none() && !s.ends_with('\n') {
                        s.push('\n');
                    }
                    s.into_bytes()
                }
                Some("binary") => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(result.as_str().unwrap_or_default())
                        .context("the server returned invalid base64")?
                }
                _ => format!("{}\n", serde_json::to_string_pretty(result)?).into_bytes(),
            };
            match output {
                Some(path) => std::fs::write(&path, bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => std::io::stdout().write_all(&bytes)?,
            }
            Ok(())
        }
        Command::Algos { name } => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            match name {
                None => {
                    let v = client
                        .send(Method::GET, "/v1/algorithms", &[], None)?
                        .json()?;
                    let list = v["algorithms"].as_array().cloned().unwrap_or_default();
                    if list.is_empty() {
                        println!(
                            "no algorithms deployed (deploy one with `wasmgrid deploy FILE owner/name@1.0.0`)"
                        );
                    }
                    for a in list {
                        let versions = a["versions"].as_array().map(|v| v.len()).unwrap_or(0);
                        println!(
                            "{}/{}  latest {}  ({versions} version{})",
                            a["owner"].as_str().unwrap_or("?"),
                            a["name"].as_str().unwrap_or("?"),
                            a["latest"].as_str().unwrap_or("-"),
                            if versions == 1 { "" } else { "s" }
                        );
                    }
                }
                Some(n) => {
                    let (owner, name, _) = split_target(&n)?;
                    let v = client
                        .send(
                            Method::GET,
                            &format!("/v1/algorithms/{owner}/{name}"),
                            &[],
                            None,
                        )?
                        .json()?;
                    for r in v["versions"].as_array().cloned().unwrap_or_default() {
                        println!(
                            "{}/{}@{}  {}  timeout {}s  memory {} MiB  concurrency {}  {}",
                            owner,
                            name,
                            r["version"].as_str().unwrap_or("?"),
                            r["kind"].as_str().unwrap_or("?"),
                            r["timeout"],
                            r["memory"],
                            r["concurrency"],
                            r["created"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Delete { target } => {
            let (owner, name, version) = split_target(&target)?;
            let version = version
                .ok_or_else(|| anyhow!("name the version to delete: {owner}/{name}@1.0.0"))?;
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            client.send(
                Method::DELETE,
                &format!("/v1/algorithms/{owner}/{name}/versions/{version}"),
                &[],
                None,
            )?;
            println!("deleted {owner}/{name}@{version} (the number stays taken)");
            Ok(())
        }
        Command::Data(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            data::run_data(&client, cmd)
        }
        Command::Secret(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            data::run_secret(&client, cmd)
        }
        Command::Topic(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            events::run_topic(&client, cmd)
        }
        Command::Sub(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            events::run_sub(&client, cmd)
        }
        Command::Publish(args) => {
            events::run_publish(&g.data_dir, g.url.as_deref(), g.key.as_deref(), args)
        }
        Command::Deadletters(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            events::run_dead_letters(&client, cmd)
        }
        Command::Job(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            jobs::run_job(&client, cmd)
        }
        Command::Key(cmd) => {
            let client = Client::discover(&g.data_dir, g.url.as_deref(), g.key.as_deref())?;
            match cmd {
                KeyCommand::Create {
                    owner,
                    scopes,
                    name,
                    algorithmia_compat,
                    compat,
                } => {
                    let compat = if algorithmia_compat {
                        Some("algorithmia".to_string())
                    } else {
                        compat
                    };
                    let body = serde_json::json!({"owner": owner, "scopes": scopes, "name": name, "compat": compat});
                    let v = client
                        .send(
                            Method::POST,
                            "/v1/keys",
                            &[],
                            Some((serde_json::to_vec(&body)?, "application/json")),
                        )?
                        .json()?;
                    eprintln!(
                        "created key {} for {} (shown once; store it now):",
                        v["id"].as_str().unwrap_or("?"),
                        owner
                    );
                    println!("{}", v["key"].as_str().unwrap_or(""));
                }
                KeyCommand::Revoke { id } => {
                    client.send(Method::DELETE, &format!("/v1/keys/{id}"), &[], None)?;
                    println!("revoked key {id}");
                }
                KeyCommand::Ls => {
                    let v = client.send(Method::GET, "/v1/keys", &[], None)?.json()?;
                    for k in v["keys"].as_array().cloned().unwrap_or_default() {
                        println!(
                            "{}  owner {}  scopes {}  {}",
                            k["id"].as_str().unwrap_or("?"),
                            k["owner"].as_str().unwrap_or("?"),
                            k["scopes"],
                            k["created"].as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// Splits `owner/name[@version]`.
fn split_target(target: &str) -> anyhow::Result<(String, String, Option<String>)> {
    let (path, version) = match target.split_once('@') {
        Some((p, v)) => (p, Some(v.to_string())),
        None => (target, None),
    };
    match path.split_once('/') {
        Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((o.to_string(), n.to_string(), version))
        }
        _ => bail!(
            "expected owner/name or owner/name@version, got {target:?} (e.g. demo/hello@1.0.0)"
        ),
    }
}

fn up(
    g: &Global,
    manifest_path: &Path,
    no_build: bool,
    addr: Option<String>,
    drain_timeout: u64,
    connections: &ConnectionArgs,
    cluster: &ClusterArgs,
) -> anyhow::Result<()> {
    let manifest = Manifest::load(manifest_path)?;
    let limits = connections.limits(&manifest.server)?;
    if let Some(info) = wasmgrid_http::server::ServerInfo::read(&g.data_dir)
        && process_alive(info.pid)
    {
        bail!(
            "a wasmgrid server (pid {}) is already serving {} on {}; stop it first, or use another --data-dir",
            info.pid,
            g.data_dir.display(),
            info.addr
        );
    }
    let rt = runtime()?;
    let app = match cluster.config(manifest.cluster.as_ref())? {
        Some(config) => rt.block_on(App::open_cluster(
            &g.data_dir,
            EngineConfig::default(),
            wasmgrid_events::EventsConfig::default(),
            config,
        ))?,
        None => App::open(
            &g.data_dir,
            EngineConfig::default(),
            wasmgrid_events::EventsConfig::default(),
        )?,
    };
    if !no_build {
        up::build_all(&manifest, &app)?;
    }
    let results = rt.block_on(up::deploy_changed(&app, &manifest))?;
    let addr = addr
        .or(manifest.server.addr.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ready = up::Ready {
        manifest,
        results,
        data_dir: g.data_dir.clone(),
        key: g.key.clone(),
        failure: failure.clone(),
        shutdown: shutdown.clone(),
    };
    let served = rt.block_on(wasmgrid_http::server::serve(
        app,
        &addr,
        Duration::from_secs(drain_timeout),
        limits,
        shutdown,
        move |local| ready.run(local),
    ));
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    served
}

fn cli_hint(data_dir: &Path) -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    let mut cmd = match (exe, cwd) {
        (Some(e), Some(c)) => match e.strip_prefix(&c) {
            Ok(rel) => format!("./{}", rel.display()),
            Err(_) => e.display().to_string(),
        },
        _ => "wasmgrid".to_string(),
    };
    if data_dir != Path::new(".wasmgrid") {
        cmd.push_str(&format!(" --data-dir {}", data_dir.display()));
    }
    cmd
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 checks existence without sending anything.
    i32::try_from(pid).is_ok_and(|p| unsafe { libc::kill(p, 0) } == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            split_target("demo/hello@1.2").unwrap(),
            ("demo".into(), "hello".into(), Some("1.2".into()))
        );
        assert_eq!(split_target("demo/hello").unwrap().2, None);
        assert!(split_target("hello").is_err());
        assert!(split_target("a/b/c").is_err());
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
