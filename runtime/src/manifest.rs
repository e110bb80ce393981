//! `wasmgrid.toml`: what `wasmgrid up` builds, deploys and serves.
//!
//! ```toml
//! [server]
//! addr = "127.0.0.1:8080"          # optional
//!
//! [[algorithm]]
//! name = "demo/hello"              # owner/name
//! version = "1.0.0"                # the first version `up` publishes
//! source = "guest-examples/target/wasm32-wasip2/release/hello.wasm"
//! timeout = 10                     # optional deploy settings
//! memory = 64
//! concurrency = 16
//! grants = ["data://demo/uploads:read"]
//! # wasi:http components only (see README): no key needed, outgoing HTTP
//! # allowed to these hosts, and a path prefix served as-is
//! # public = true
//! # allow_outbound = ["api.example.com", "10.0.0.5:8080"]
//! # route = "/hello"
//! [algorithm.build]                # optional, like Spin's component.build
//! command = "cargo build --release"
//! workdir = "guest-examples"
//! ```
//!
//! Paths are relative to the manifest's folder. Identical build commands (same
//! command and workdir) run once per `up`.

use crate::registry::{AlgorithmInfo, VersionSettings, validate_name};
use semver::Version;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Server settings.
    #[serde(default)]
    pub server: ServerSection,
    /// Algorithms to deploy.
    #[serde(default, rename = "algorithm")]
    pub algorithms: Vec<AlgorithmSection>,
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
            Version::parse(&a.version).map_err(|e| {
                anyhow::anyhow!(
                    "{}: algorithm {}: invalid version {:?}: {e}",
                    path.display(),
                    a.name,
                    a.version
                )
            })?;
        }
        Ok(m)
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
}
