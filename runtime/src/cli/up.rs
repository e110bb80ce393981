//! `wasmgrid up`: build, deploy what changed, serve, then apply the
//! manifest's collections, topics and subscriptions.

use super::Client;
use crate::manifest::{BuildSection, Manifest, next_version};
use anyhow::{Context as _, anyhow, bail};
use reqwest::Method;
use semver::Version;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use wasmgrid_core::registry::DeployRequest;
use wasmgrid_http::app::App;

/// Runs each distinct build command of the manifest (except those whose watched
/// sources are unchanged since they were deployed, see [`unchanged`]), adding the
/// wasm32-wasip2 target first when a build uses cargo and the target is missing.
pub fn build_all(manifest: &Manifest, app: &App) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let mut builds: Vec<&BuildSection> = Vec::new();
    for a in &manifest.algorithms {
        let Some(b) = a.build.as_ref() else { continue };
        if unchanged(app, manifest, a)? {
            eprintln!("up to date: {} (watched sources unchanged)", a.name);
            continue;
        }
        if seen.insert(b.clone()) {
            builds.push(b);
        }
    }
    if builds.iter().any(|b| b.command.contains("cargo")) {
        ensure_wasip2_target()?;
    }
    for b in builds {
        let dir = manifest
            .root
            .join(b.workdir.as_deref().unwrap_or(Path::new(".")));
        eprintln!("building: {} (in {})", b.command, dir.display());
        let status = Command::new("sh")
            .arg("-c")
            .arg(&b.command)
            .current_dir(&dir)
            .status()
            .with_context(|| {
                format!(
                    "cannot run the build command {:?} in {}",
                    b.command,
                    dir.display()
                )
            })?;
        if !status.success() {
            bail!(
                "the build command {:?} failed ({status}) in {}; fix the build and run `wasmgrid up` again",
                b.command,
                dir.display()
            );
        }
    }
    Ok(())
}

fn ensure_wasip2_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2") =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("adding the wasm32-wasip2 target: rustup target add wasm32-wasip2");
            let status = Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .status()?;
            if status.success() {
                Ok(())
            } else {
                bail!("`rustup target add wasm32-wasip2` failed; run it by hand")
            }
        }
        // No rustup: the toolchain is managed some other way; let cargo report it.
        Err(_) => Ok(()),
    }
}

/// Whether `a` has a `watch` list whose contents match the newest deployed
/// version's, with the same settings and its built component still present.
fn unchanged(
    app: &App,
    manifest: &Manifest,
    a: &crate::manifest::AlgorithmSection,
) -> anyhow::Result<bool> {
    let Some(hash) = a
        .build
        .as_ref()
        .map(|b| b.source_hash(&manifest.root))
        .transpose()?
        .flatten()
    else {
        return Ok(false);
    };
    let (owner, name) = a.owner_name();
    let info = app.registry.algorithm(owner, name)?;
    Ok(info
        .as_ref()
        .and_then(|i| i.versions.first())
        .is_some_and(|v| {
            v.source_hash.as_deref() == Some(hash.as_str())
                && v.settings == a.settings()
                && manifest.root.join(&a.source).exists()
        }))
}

/// What happened to one algorithm during `up`.
#[derive(Debug, Clone)]
pub struct UpResult {
    /// `owner/name`.
    pub name: String,
    /// The version now serving.
    pub version: String,
    /// Whether this `up` published it.
    pub deployed: bool,
}

/// Deploys every algorithm whose built component differs from its newest
/// deployed version (see [`next_version`] for the number it gets).
pub async fn deploy_changed(app: &Arc<App>, manifest: &Manifest) -> anyhow::Result<Vec<UpResult>> {
    let mut results = Vec::new();
    for a in &manifest.algorithms {
        let (owner, name) = a.owner_name();
        let path = manifest.root.join(&a.source);
        let bytes = std::fs::read(&path).map_err(|e| {
            anyhow!(
                "cannot read {} for {}: {e}; check `source` in the manifest or its build command",
                path.display(),
                a.name
            )
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let source_hash = a
            .build
            .as_ref()
            .map(|b| b.source_hash(&manifest.root))
            .transpose()?
            .flatten();
        let info = app.registry.algorithm(owner, name)?;
        let current = info.as_ref().and_then(|i| i.versions.first());
        if let Some(cur) = current
            && (cur.digest == digest || (source_hash.is_some() && cur.source_hash == source_hash))
            && cur.settings == a.settings()
        {
            results.push(UpResult {
                name: a.name.clone(),
                version: cur.version.clone(),
                deployed: false,
            });
            continue;
        }
        let base = Version::parse(&a.version)?;
        let version = next_version(&base, info.as_ref()).to_string();
        let req = DeployRequest {
            owner: owner.into(),
            name: name.into(),
            version: version.clone(),
            settings: a.settings(),
            source_hash,
        };
        app.registry.deploy(req, bytes.into()).await.map_err(|e| {
            anyhow!(
                "deploying {}@{version} from {}: {e}",
                a.name,
                path.display()
            )
        })?;
        results.push(UpResult {
            name: a.name.clone(),
            version,
            deployed: true,
        });
    }
    Ok(results)
}

/// What `up` does once its server listens: apply the manifest's collections,
/// topics and subscriptions, then print what is served.
pub struct Ready {
    /// The manifest.
    pub manifest: Manifest,
    /// The algorithms `up` deployed or found unchanged.
    pub results: Vec<UpResult>,
    /// The data directory (for the admin key and the hints printed).
    pub data_dir: PathBuf,
    /// `--key`, if given (else `<data dir>/admin.key`).
    pub key: Option<String>,
    /// Where a failure to apply is left for `up` to report after shutdown.
    pub failure: Arc<Mutex<Option<anyhow::Error>>>,
    /// Cancelled on such a failure: the server drains and stops as on SIGTERM.
    pub shutdown: CancellationToken,
}

impl Ready {
    /// Runs with the bound address. Resources are applied from a thread
    /// through the HTTP API: the server answers requests only after the event
    /// service has started, so each new subscription gets exactly one delivery
    /// worker (an in-process call before that would start a second one). On
    /// failure the error is kept in `failure` and `shutdown` is cancelled, which
    /// stops the server as SIGTERM does, so `up` exits with it.
    pub fn run(self, local: SocketAddr) {
        if !self.manifest.has_resources() {
            self.print_banner(local, "");
            return;
        }
        std::thread::spawn(move || {
            let mut url_addr = local;
            if url_addr.ip().is_unspecified() {
                url_addr.set_ip(match local {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let url = format!("http://{url_addr}");
            let applied = Client::discover(&self.data_dir, Some(&url), self.key.as_deref())
                .and_then(|client| apply_resources(&client, &self.manifest));
            match applied {
                Ok(report) => self.print_banner(local, &report),
                Err(e) => {
                    if let Ok(mut f) = self.failure.lock() {
                        *f = Some(e.context(
                            "applying the manifest's collections, topics and subscriptions; fix it and run `wasmgrid up` again",
                        ));
                    }
                    self.shutdown.cancel();
                }
            }
        });
    }

    fn print_banner(&self, local: SocketAddr, applied: &str) {
        let mut out = String::new();
        for r in &self.results {
            let what = if r.deployed { "deployed" } else { "unchanged" };
            out.push_str(&format!("  {}@{}  ({what})\n", r.name, r.version));
        }
        let key_path = self.data_dir.join("admin.key");
        let first = self
            .results
            .iter()
            .find(|r| r.name == "demo/hello")
            .or(self.results.first());
        let example = first.map(|r| r.name.as_str()).unwrap_or("demo/hello");
        let cli = super::cli_hint(&self.data_dir);
        let publish = match self.manifest.topics.first() {
            Some(t) => format!(
                "\n  {cli} publish {} --type com.example.hello --data '{{\"x\": 1}}'",
                t.name
            ),
            None => String::new(),
        };
        eprintln!(
            "\nwasmgrid is serving {} algorithm(s) on http://{local}\n{out}{applied}\nTry:\n  curl -H \"Authorization: Simple $(cat {})\" -H 'Content-Type: text/plain' -d 'World' http://{local}/v1/algo/{example}\n  {cli} call {example} World{publish}\n\nPress Ctrl-C to stop.",
            self.results.len(),
            key_path.display(),
        );
    }
}

/// Applies the manifest's collections, topics and subscriptions through the
/// API (the requests of `wasmgrid data mk`, `topic create` and `sub create`),
/// idempotently, and returns a report of what it did. Topic keys appear in it
/// only for topics this call created: the server shows them once.
pub fn apply_resources(client: &Client, manifest: &Manifest) -> anyhow::Result<String> {
    let mut out = String::new();
    for c in &manifest.collections {
        let outcome = apply_collection(client, c)?;
        let _ = writeln!(out, "  collection data://{}  ({outcome})", c.name);
    }
    for t in &manifest.topics {
        let path = format!("/v1/topics/{}", t.name);
        let reply = client
            .send(Method::PUT, &path, &[], None)
            .with_context(|| format!("creating topic {}", t.name))?;
        let v = reply.json()?;
        let endpoint = format!("{}{}", client.base(), v["endpoint"].as_str().unwrap_or(""));
        if reply.status == 201 {
            let _ = writeln!(
                out,
                "  topic {}  (created; publish to {endpoint})\n      key1 {}\n      key2 {}\n      (the keys are shown once: store them now; `wasmgrid topic regenerate-key {} key1` replaces one)",
                t.name,
                v["keys"]["key1"].as_str().unwrap_or("?"),
                v["keys"]["key2"].as_str().unwrap_or("?"),
                t.name
            );
        } else {
            let _ = writeln!(out, "  topic {}  (exists; publish to {endpoint})", t.name);
        }
    }
    for s in &manifest.subscriptions {
        let spec = s.spec()?;
        let dest = match &spec.destination {
            wasmgrid_events::Destination::Algorithm(a) => format!("algorithm {a}"),
            wasmgrid_events::Destination::Webhook(w) => format!("webhook {w}"),
            wasmgrid_events::Destination::Job(_) => "a job".to_string(),
        };
        if current_spec(client, &s.topic, &s.name).is_some_and(|cur| {
            cur == wasmgrid_events::SubscriptionSpec {
                webhook_secret: spec.webhook_secret.clone().or(cur.webhook_secret.clone()),
                ..spec.clone()
            }
        }) {
            let _ = writeln!(
                out,
                "  subscription {}/{} -> {dest}  (unchanged)",
                s.topic, s.name
            );
            continue;
        }
        let reply = client
            .send(
                Method::PUT,
                &format!("/v1/topics/{}/subscriptions/{}", s.topic, s.name),
                &[],
                Some((serde_json::to_vec(&spec)?, "application/json")),
            )
            .with_context(|| format!("applying subscription {}/{}", s.topic, s.name))?;
        let what = if reply.status == 201 {
            "created"
        } else {
            "replaced"
        };
        let _ = writeln!(
            out,
            "  subscription {}/{} -> {dest}  ({what})",
            s.topic, s.name
        );
    }
    Ok(out)
}

/// The spec of an existing subscription, if it can be read back (anything
/// else, including errors, means "apply it": the PUT reports real problems).
fn current_spec(
    client: &Client,
    topic: &str,
    name: &str,
) -> Option<wasmgrid_events::SubscriptionSpec> {
    let path = format!("/v1/topics/{topic}/subscriptions");
    let list = client
        .send(Method::GET, &path, &[], None)
        .ok()?
        .json()
        .ok()?;
    let mut found = list["subscriptions"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?
        .clone();
    let fields = found.as_object_mut()?;
    // The server's additions to the spec it was given.
    for key in [
        "name",
        "topic",
        "owner",
        "createdAt",
        "updatedAt",
        "queueDepth",
    ] {
        fields.remove(key);
    }
    serde_json::from_value(found).ok()
}

/// Creates a collection, or sets the manifest's ACL on an existing one.
fn apply_collection(
    client: &Client,
    c: &crate::manifest::CollectionSection,
) -> anyhow::Result<String> {
    let (owner, name) = c.owner_name();
    let acl = json!({"read": c.acl.read()});
    let create = json!({"name": name, "acl": acl});
    let path = format!("/v1/data/{owner}");
    let resp = client.stream(
        Method::POST,
        &path,
        &[],
        Some((
            serde_json::to_vec(&create)?.into(),
            "application/json".into(),
        )),
    )?;
    let status = resp.status().as_u16();
    let body = resp.bytes().unwrap_or_default();
    if (200..300).contains(&status) {
        return Ok(format!("created, acl {}", c.acl.as_str()));
    }
    if status != 409 {
        return Err(super::client::error_from(
            &Method::POST,
            &path,
            status,
            &body,
        ))
        .with_context(|| format!("creating collection data://{}", c.name));
    }
    let coll = format!("/v1/data/{owner}/{name}");
    let current = client
        .send(Method::GET, &coll, &[("acl", "true".to_string())], None)?
        .json()?;
    if current["acl"] == acl {
        return Ok(format!("exists, acl {}", c.acl.as_str()));
    }
    client
        .send(
            Method::PATCH,
            &coll,
            &[],
            Some((
                serde_json::to_vec(&json!({"acl": acl}))?,
                "application/json",
            )),
        )
        .with_context(|| format!("setting the ACL of data://{}", c.name))?;
    Ok(format!("exists, acl changed to {}", c.acl.as_str()))
}
