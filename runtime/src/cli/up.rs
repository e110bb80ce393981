//! `wasmgrid up`: build, deploy what changed, serve.

use crate::app::App;
use crate::manifest::{BuildSection, Manifest, next_version};
use crate::registry::DeployRequest;
use anyhow::{Context as _, anyhow, bail};
use semver::Version;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

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
