//! `wasmgrid data` and `wasmgrid secret`: thin clients of the data and secrets API.

use super::Client;
use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use std::io::{Read, Write};

/// Transfers at least this large show a progress bar (on a terminal).
const PROGRESS_MIN: u64 = 8 << 20;

/// `wasmgrid data ...`.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Create a collection: data://owner/collection.
    Mk {
        /// data://owner/collection (or a folder inside one).
        uri: String,
        /// Who may read: private (the owner's keys), algorithms (also the owner's algorithms), public.
        #[arg(long, default_value = "algorithms")]
        acl: String,
    },
    /// Upload a file (LOCAL or `-` for stdin) to data://owner/collection/path; a
    /// local folder uploads every file in it (recursively) under the URI as a folder.
    Put {
        /// Local file or folder, or `-` for stdin.
        local: String,
        /// Destination data:// URI.
        uri: String,
        /// Content type (default: guessed from the file extension, else sent without one).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download a file to LOCAL (default: stdout).
    Get {
        /// Source data:// URI.
        uri: String,
        /// Local file, or `-` for stdout.
        local: Option<String>,
    },
    /// List a collection or folder (one level); with no URI, the key owner's collections.
    Ls {
        /// data://owner/collection[/folder], or data://owner.
        uri: Option<String>,
        /// Show size, modification time and content type.
        #[arg(long, short)]
        long: bool,
    },
    /// Delete a file; with --force, a folder or collection and everything in it.
    Rm {
        /// data:// URI.
        uri: String,
        /// Delete non-empty folders and collections.
        #[arg(long)]
        force: bool,
    },
}

/// `wasmgrid secret ...`.
#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Set a secret of owner/name (VALUE, or `-` to read it from stdin).
    Set {
        /// owner/name of the algorithm.
        algorithm: String,
        /// Secret name.
        name: String,
        /// The value; `-` reads stdin (avoids shell history).
        value: String,
    },
    /// Delete a secret.
    Rm {
        /// owner/name.
        algorithm: String,
        /// Secret name.
        name: String,
    },
    /// List secret names (never values).
    Ls {
        /// owner/name.
        algorithm: String,
    },
}

/// `data://owner/rest` → `/v1/data/owner/rest` (path segments percent-encoded).
fn api_path(uri: &str) -> anyhow::Result<String> {
    let rest = uri
        .strip_prefix("data://")
        .ok_or_else(|| anyhow!("{uri:?} is not a data URI: write data://owner/collection/path"))?;
    if rest.is_empty() {
        bail!("{uri:?} names no owner: write data://owner/collection/path");
    }
    let encoded: Vec<String> = rest.split('/').map(encode_segment).collect();
    Ok(format!("/v1/data/{}", encoded.join("/")))
}

pub(super) fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn bar(len: u64, what: &str) -> ProgressBar {
    if len < PROGRESS_MIN {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn guess_content_type(path: &str) -> Option<&'static str> {
    let ext = path.rsplit('.').next()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "json" => "application/json",
        "txt" | "md" | "log" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "wasm" => "application/wasm",
        "bin" => "application/octet-stream",
        _ => return None,
    })
}

/// Runs a `data` command.
pub fn run_data(client: &Client, cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Mk { uri, acl } => {
            let read: Vec<&str> = match acl.as_str() {
                "private" => vec![],
                "algorithms" => vec!["algo://.my/*"],
                "public" => vec!["user://*"],
                other => bail!("unknown --acl {other:?}: use private, algorithms or public"),
            };
            let path = api_path(&uri)?;
            let (parent, name) = path
                .trim_end_matches('/')
                .rsplit_once('/')
                .ok_or_else(|| anyhow!("bad URI {uri}"))?;
            if parent == "/v1/data" {
                bail!("{uri:?} names only an owner: write data://owner/collection");
            }
            let body = serde_json::json!({"name": name, "acl": {"read": read}});
            client.send(
                Method::POST,
                parent,
                &[],
                Some((serde_json::to_vec(&body)?, "application/json")),
            )?;
            println!("created {uri}");
        }
        DataCommand::Put {
            local,
            uri,
            content_type,
        } => {
            if local != "-" && std::path::Path::new(&local).is_dir() {
                return put_folder(client, std::path::Path::new(&local), &uri, content_type);
            }
            let path = api_path(&uri)?;
            let (body, len): (reqwest::blocking::Body, u64) = if local == "-" {
                let mut buf = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buf)
                    .context("reading stdin")?;
                let n = buf.len() as u64;
                (buf.into(), n)
            } else {
                let file =
                    std::fs::File::open(&local).with_context(|| format!("cannot open {local}"))?;
                let len = file.metadata()?.len();
                let pb = bar(len, "uploading");
                (reqwest::blocking::Body::sized(pb.wrap_read(file), len), len)
            };
            let ct = content_type.or_else(|| {
                (local != "-")
                    .then(|| guess_content_type(&local).map(str::to_string))
                    .flatten()
            });
            let resp = client.stream(
                Method::PUT,
                &path,
                &[],
                Some((body, ct.unwrap_or_default())),
            )?;
            let status = resp.status().as_u16();
            let reply = resp.bytes().context("reading the server's answer")?;
            if !(200..300).contains(&status) {
                return Err(super::client::error_from(
                    &Method::PUT,
                    &path,
                    status,
                    &reply,
                ));
            }
            println!("uploaded {len} bytes to {uri}");
        }
        DataCommand::Get { uri, local } => {
            let path = api_path(&uri)?;
            let mut resp = client.stream(Method::GET, &path, &[], None)?;
            if resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"))
                && resp.headers().get("etag").is_none()
            {
                bail!("{uri} is a folder, not a file: list it with `wasmgrid data ls {uri}`");
            }
            let len = resp.content_length().unwrap_or(0);
            match local.as_deref() {
                None | Some("-") => {
                    let mut out = std::io::stdout().lock();
                    std::io::copy(&mut resp, &mut out).context("writing to stdout")?;
                    out.flush()?;
                }
                Some(file) => {
                    let pb = bar(len, "downloading");
                    let mut f = std::fs::File::create(file)
                        .with_context(|| format!("cannot create {file}"))?;
                    std::io::copy(&mut pb.wrap_read(resp), &mut f)
                        .with_context(|| format!("writing {file}"))?;
                    pb.finish_and_clear();
                    eprintln!("downloaded {uri} to {file}");
                }
            }
        }
        DataCommand::Ls { uri, long } => {
            let path = match &uri {
                Some(u) => api_path(u)?,
                None => "/v1/data/.my".to_string(),
            };
            let mut marker: Option<String> = None;
            loop {
                let mut query = Vec::new();
                if let Some(m) = &marker {
                    query.push(("marker", m.clone()));
                }
                let v = client.send(Method::GET, &path, &query, None)?.json()?;
                for f in v["folders"].as_array().cloned().unwrap_or_default() {
                    println!("{}/", f["name"].as_str().unwrap_or("?"));
                }
                for f in v["files"].as_array().cloned().unwrap_or_default() {
                    let name = f["filename"].as_str().unwrap_or("?");
                    if long {
                        println!(
                            "{:>12}  {}  {:<28}  {name}",
                            f["size"],
                            f["last_modified"].as_str().unwrap_or(""),
                            f["content_type"].as_str().unwrap_or("")
                        );
                    } else {
                        println!("{name}");
                    }
                }
                marker = v["marker"]
                    .as_str()
                    .filter(|m| !m.is_empty())
                    .map(str::to_string);
                if marker.is_none() {
                    break;
                }
            }
        }
        DataCommand::Rm { uri, force } => {
            let path = api_path(&uri)?;
            let query = if force {
                vec![("force", "true".to_string())]
            } else {
                vec![]
            };
            let v = client.send(Method::DELETE, &path, &query, None)?.json()?;
            println!("deleted {} file(s) at {uri}", v["result"]["deleted"]);
        }
    }
    Ok(())
}

/// Uploads every file under the local folder `dir` to the data folder `uri`,
/// keeping relative paths (`dir/a/b.csv` → `uri/a/b.csv`).
fn put_folder(
    client: &Client,
    dir: &std::path::Path,
    uri: &str,
    content_type: Option<String>,
) -> anyhow::Result<()> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            if e.file_type()?.is_dir() {
                walk(&path, out)?;
            } else {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files).with_context(|| format!("cannot read the folder {}", dir.display()))?;
    let base = uri.trim_end_matches('/');
    let pb = ProgressBar::new(files.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("uploading [{bar:30}] {pos}/{len} files {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut bytes = 0u64;
    for file in &files {
        let rel = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let target = format!("{base}/{rel}");
        let body =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        bytes += body.len() as u64;
        let ct = content_type
            .clone()
            .or_else(|| guess_content_type(&rel).map(str::to_string))
            .unwrap_or_default();
        pb.set_message(rel.clone());
        client.send(Method::PUT, &api_path(&target)?, &[], Some((body, &ct)))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    println!(
        "uploaded {} file(s), {bytes} bytes, to {base}/",
        files.len()
    );
    Ok(())
}

/// Runs a `secret` command.
pub fn run_secret(client: &Client, cmd: SecretCommand) -> anyhow::Result<()> {
    let base = |algorithm: &str| -> anyhow::Result<String> {
        let (owner, name) = algorithm
            .split_once('/')
            .filter(|(o, n)| !o.is_empty() && !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| anyhow!("expected owner/name, got {algorithm:?}"))?;
        Ok(format!("/v1/algorithms/{owner}/{name}/secrets"))
    };
    match cmd {
        SecretCommand::Set {
            algorithm,
            name,
            value,
        } => {
            let value = if value == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the secret from stdin")?;
                s.trim_end_matches(['\n', '\r']).to_string()
            } else {
                value
            };
            client.send(
                Method::PUT,
                &format!("{}/{}", base(&algorithm)?, encode_segment(&name)),
                &[],
                Some((value.into_bytes(), "text/plain")),
            )?;
            println!("set secret {name} of {algorithm}");
        }
        SecretCommand::Rm { algorithm, name } => {
            client.send(
                Method::DELETE,
                &format!("{}/{}", base(&algorithm)?, encode_segment(&name)),
                &[],
                None,
            )?;
            println!("deleted secret {name} of {algorithm}");
        }
        SecretCommand::Ls { algorithm } => {
            let v = client
                .send(Method::GET, &base(&algorithm)?, &[], None)?
                .json()?;
            for s in v["secrets"].as_array().cloned().unwrap_or_default() {
                println!("{}", s["name"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_map_to_api_paths() {
        assert_eq!(
            api_path("data://demo/c/a b/é.txt").unwrap(),
            "/v1/data/demo/c/a%20b/%C3%A9.txt"
        );
        assert_eq!(api_path("data://.my/c").unwrap(), "/v1/data/.my/c");
        assert!(api_path("demo/c").is_err());
    }
}
