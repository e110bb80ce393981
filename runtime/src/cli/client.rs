//! The CLI's HTTP client: finds the server and key, and turns API errors into
//! messages that name the problem.

use anyhow::{Context as _, anyhow};
use std::path::Path;
use wasmgrid_http::server::ServerInfo;

/// A configured API client.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    credential: Credential,
}

/// How a [`Client`] authenticates.
enum Credential {
    /// An API key, sent as `Authorization: Simple <key>`.
    ApiKey(String),
    /// A topic's publish key, sent as `aeg-sas-key` (Event Grid's header); it
    /// only authorizes publishing to that topic.
    TopicKey(String),
}

/// A response body and its content type.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type header.
    pub content_type: String,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Reply {
    /// Parses the body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("the server returned invalid JSON")
    }
}

impl Client {
    /// Sends a request with a streaming body and returns the response unread;
    /// non-2xx answers become errors carrying the server's message.
    pub fn stream(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(reqwest::blocking::Body, String)>,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let url = format!("{}{}", self.base, path);
        let req = self.http.request(method.clone(), &url);
        let mut req = match &self.credential {
            Credential::ApiKey(key) => req.header("Authorization", format!("Simple {key}")),
            Credential::TopicKey(key) => req.header("aeg-sas-key", key),
        };
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some((body, ct)) = body {
            req = req.header("Content-Type", ct).body(body);
        }
        let resp = req.send().map_err(|e| {
            anyhow!(
                "cannot reach the wasmgrid server at {}: {e}; is it running?",
                self.base
            )
        })?;
        if resp.status().is_success() || method != reqwest::Method::GET {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let body = resp.bytes().unwrap_or_default();
        Err(error_from(&method, path, status, &body))
    }

    /// Finds the server (`--url`/`WASMGRID_URL`, else `<data dir>/server.json`)
    /// and the key (`--key`/`WASMGRID_KEY`, else `<data dir>/admin.key`).
    pub fn discover(
        data_dir: &Path,
        url: Option<&str>,
        key: Option<&str>,
    ) -> anyhow::Result<Client> {
        let base = discover_base(data_dir, url)?;
        let key = match key {
            Some(k) => k.trim().to_string(),
            None => {
                let path = data_dir.join("admin.key");
                std::fs::read_to_string(&path)
                    .map(|k| k.trim().to_string())
                    .map_err(|e| {
                        anyhow!(
                            "no API key: pass --key or set WASMGRID_KEY (could not read {}: {e})",
                            path.display()
                        )
                    })?
            }
        };
        Ok(Client {
            http: http_client()?,
            base,
            credential: Credential::ApiKey(key),
        })
    }

    /// Finds the server as [`Client::discover`] does, but authenticates with a
    /// topic's publish key (`aeg-sas-key`) instead of an API key.
    pub fn discover_with_topic_key(
        data_dir: &Path,
        url: Option<&str>,
        topic_key: &str,
    ) -> anyhow::Result<Client> {
        Ok(Client {
            http: http_client()?,
            base: discover_base(data_dir, url)?,
            credential: Credential::TopicKey(topic_key.trim().to_string()),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; non-2xx answers become errors carrying the server's message.
    pub fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<(Vec<u8>, &str)>,
    ) -> anyhow::Result<Reply> {
        let body = body.map(|(bytes, ct)| (reqwest::blocking::Body::from(bytes), ct.to_string()));
        let resp = self.stream(method.clone(), path, query, body)?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .bytes()
            .map_err(|e| anyhow!("reading the response to {method} {path}: {e}"))?
            .to_vec();
        if (200..300).contains(&status) {
            return Ok(Reply {
                status,
                content_type,
                body,
            });
        }
        Err(error_from(&method, path, status, &body))
    }
}

fn http_client() -> anyhow::Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(None)
        .build()
        .context("cannot build the HTTP client")
}

/// `--url`/`WASMGRID_URL`, else the address in `<data dir>/server.json`.
fn discover_base(data_dir: &Path, url: Option<&str>) -> anyhow::Result<String> {
    match url {
        Some(u) => Ok(u.trim_end_matches('/').to_string()),
        None => {
            let info = ServerInfo::read(data_dir).ok_or_else(|| {
                anyhow!(
                    "no running wasmgrid server found for data dir {} (no server.json): start one with `wasmgrid serve` \
                     or `wasmgrid up`, or pass --url / set WASMGRID_URL",
                    data_dir.display()
                )
            })?;
            Ok(format!("http://{}", info.addr))
        }
    }
}

/// An error naming the server's error_type and message.
pub(crate) fn error_from(
    method: &reqwest::Method,
    path: &str,
    status: u16,
    body: &[u8],
) -> anyhow::Error {
    let parsed: Option<(String, String)> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            Some((
                e.get("error_type")?.as_str()?.to_string(),
                e.get("message")?.as_str()?.to_string(),
            ))
        });
    match parsed {
        Some((ty, msg)) => anyhow!("{ty} ({status}): {msg}"),
        None => anyhow!(
            "{method} {path} failed with HTTP {status}: {}",
            String::from_utf8_lossy(body)
        ),
    }
}
