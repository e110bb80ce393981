//! Shared test support: build the guest examples once, start real `wasmgrid`
//! servers on 127.0.0.1:0 in temporary data directories, and talk HTTP to them.

use reqwest::blocking::{Client, Response};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Builds every guest example once per test process and returns the folder of
/// the built components.
pub fn guests_dir() -> &'static Path {
    crate::guests::built_dir()
}

/// The bytes of a built guest example (`hello`, `json-stats`, ...).
pub fn guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A running `wasmgrid serve` process with its own data directory.
pub struct Server {
    pub url: String,
    pub key: String,
    pub data_dir: PathBuf,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
    pub http: Client,
}

/// `WASMGRID_TEST_BACKEND=nats` runs every server as a cluster node on one
/// real 3-server NATS cluster (replicas 3) per test binary: each data
/// directory is its own installation (a stream prefix derived from its path,
/// so a restarted server finds its state). `scripts/test.sh` reruns a
/// tagged subset this way.
fn cluster_flags(data_dir: &Path) -> Option<Vec<String>> {
    use std::hash::{Hash, Hasher};
    use std::sync::OnceLock;
    if std::env::var("WASMGRID_TEST_BACKEND").as_deref() != Ok("nats") {
        return None;
    }
    static NATS: OnceLock<(wasmgrid_store_nats::testing::Cluster, tempfile::TempDir)> =
        OnceLock::new();
    let (cluster, dir) = NATS.get_or_init(|| {
        let cluster = wasmgrid_store_nats::testing::Cluster::start()
            .expect("start the NATS test cluster (WASMGRID_TEST_BACKEND=nats)");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("cluster.key"),
            format!("{:064x}", std::process::id()),
        )
        .expect("write the test cluster key");
        (cluster, dir)
    });
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    Some(vec![
        "--cluster".into(),
        cluster.urls.clone(),
        "--cluster-key".into(),
        dir.path().join("cluster.key").display().to_string(),
        "--cluster-replicas".into(),
        "3".into(),
        "--cluster-prefix".into(),
        format!("it{:012x}", h.finish() >> 16),
    ])
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wasmgrid")
}

impl Server {
    /// Starts a server in a fresh data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data directory with extra `serve` flags.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        let _ = std::fs::remove_file(data_dir.join("server.json"));
        let log = std::fs::File::create(data_dir.with_extension("log")).ok();
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        if let Some(flags) = cluster_flags(data_dir) {
            cmd.args(flags);
        }
        // 64 instance slots unless the test sets its own.
        if !extra.contains(&"--instance-slots") {
            cmd.args(["--instance-slots", "64"]);
        }
        cmd.args(extra).stdin(Stdio::null()).stdout(Stdio::null());
        match log {
            Some(f) => cmd.stderr(f),
            None => cmd.stderr(Stdio::null()),
        };
        let child = cmd.spawn().expect("spawn wasmgrid serve");
        Server::attach(data_dir, Some(child))
    }

    /// Waits for the server of `data_dir` to advertise itself and connects.
    pub fn attach(data_dir: &Path, child: Option<Child>) -> Server {
        let started = Instant::now();
        let info = loop {
            if let Ok(text) = std::fs::read_to_string(data_dir.join("server.json"))
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                break v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "server did not write server.json within 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let key = std::fs::read_to_string(data_dir.join("admin.key"))
            .expect("admin.key")
            .trim()
            .to_string();
        Server {
            url: format!("http://{}", info["addr"].as_str().expect("addr")),
            key,
            data_dir: data_dir.to_path_buf(),
            child,
            _tmp: None,
            http: Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
        }
    }

    /// An authorised request builder.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .header("Authorization", format!("Simple {}", self.key))
    }

    /// Deploys a guest example as `owner/name@version` with a query string.
    pub fn deploy(&self, example: &str, target: &str, query: &str) -> Response {
        let (path, version) = target.split_once('@').expect("owner/name@version");
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        self.req(
            reqwest::Method::PUT,
            &format!("/v1/algorithms/{path}/versions/{version}{q}"),
        )
        .body(guest(example))
        .send()
        .expect("deploy request")
    }

    /// Deploys and asserts 201.
    pub fn deploy_ok(&self, example: &str, target: &str, query: &str) -> serde_json::Value {
        let resp = self.deploy(example, target, query);
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        assert_eq!(status, 201, "deploy {target}: {body}");
        serde_json::from_str(&body).expect("deploy JSON")
    }

    /// Calls an algorithm with a body and content type.
    pub fn call(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> Response {
        self.req(reqwest::Method::POST, &format!("/v1/algo/{path}"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .expect("call request")
    }

    /// Sends SIGTERM and waits for exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("owned child");
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        wait_timeout(&mut child, Duration::from_secs(60)).expect("server exits after SIGTERM")
    }

    /// Kills the server with SIGKILL, as a crash would: no drain, no cleanup
    /// (`server.json` stays behind).
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("owned child");
        child.kill().expect("SIGKILL the server");
        let _ = child.wait();
    }

    /// Starts a new server process on the same data directory (after
    /// [`Server::kill9`] or [`Server::terminate`]); this `Server` then talks to
    /// it and keeps owning the temporary directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        let tmp = self._tmp.take();
        let mut fresh = Server::start_in(&self.data_dir, &[]);
        fresh._tmp = tmp;
        *self = fresh;
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for a child with a timeout.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Parses a JSON response, asserting the status.
pub fn json(resp: Response, status: u16) -> serde_json::Value {
    let got = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts an error response: status, error_type, and a message fragment.
pub fn assert_error(resp: Response, status: u16, error_type: &str, fragment: &str) -> String {
    let v = json(resp, status);
    assert_eq!(v["error"]["error_type"], error_type, "body: {v}");
    let msg = v["error"]["message"].as_str().expect("message").to_string();
    assert!(
        msg.contains(fragment),
        "message {msg:?} should mention {fragment:?}"
    );
    msg
}

/// Polls `f` every 25 ms until it returns `Some`, failing after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Creates a key of `owner` with `scopes` (as admin) and returns its secret.
pub fn create_key(s: &Server, owner: &str, scopes: &[&str]) -> String {
    let v = json(
        s.req(reqwest::Method::POST, "/v1/keys")
            .json(&serde_json::json!({"owner": owner, "scopes": scopes}))
            .send()
            .expect("key request"),
        201,
    );
    v["key"].as_str().expect("key in the answer").to_string()
}

/// The dead letters of a subscription.
pub fn dead_letters(s: &Server, topic: &str, name: &str) -> Vec<serde_json::Value> {
    let v = json(
        s.req(
            reqwest::Method::GET,
            &format!("/v1/topics/{topic}/subscriptions/{name}/deadletters"),
        )
        .send()
        .expect("deadletters request"),
        200,
    );
    v["deadLetters"].as_array().cloned().unwrap_or_default()
}

/// The value of the first metric line that starts with `name` and has every
/// label in `labels`; `None` if there is none.
pub fn metric(s: &Server, name: &str, labels: &[&str]) -> Option<f64> {
    let text = s
        .req(reqwest::Method::GET, "/metrics")
        .send()
        .expect("metrics request")
        .text()
        .expect("metrics text");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && labels.iter().all(|lab| l.contains(lab)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}
