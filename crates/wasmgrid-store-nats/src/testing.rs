//! Test support: a 3-node JetStream cluster of real `nats-server` processes
//! on loopback ports, each with its own temporary store directory and
//! `max_payload: 8MB`. Not for production use.
//!
//! Each server runs under a small shell guard that stops it (and removes its
//! directory) when the test process exits, so a cluster kept in a `static`
//! (one per test binary) does not outlive the tests; [`Cluster`]'s `Drop`
//! stops it earlier when the cluster is dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running 3-node cluster.
#[derive(Debug)]
pub struct Cluster {
    children: Vec<Child>,
    /// The client URLs, comma-separated (for [`crate::NatsStore::connect`]).
    pub urls: String,
    /// The client port of each node.
    pub ports: Vec<u16>,
    dir: PathBuf,
}

/// Why the cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `nats-server` is not installed.
    #[error(
        "nats-server not found on PATH (apt-get install -y nats-server; scripts/test.sh installs it): {0}"
    )]
    NotInstalled(String),
    /// No free port range, or a server did not come up.
    #[error("starting the NATS cluster: {0}")]
    Start(String),
}

fn ports_free(base: u16) -> bool {
    (0..6).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok())
}

impl Cluster {
    /// Starts three servers and waits until JetStream answers (a meta leader
    /// is elected). Ports come from a base in 20000–31999 derived from the
    /// process id, moved on when one is taken.
    pub fn start() -> Result<Cluster, ClusterError> {
        // One start at a time in a process: two starts racing would both
        // find the same ports free and share one directory.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        Command::new("nats-server")
            .arg("--version")
            .output()
            .map_err(|e| ClusterError::NotInstalled(e.to_string()))?;
        let pid = std::process::id();
        let slots = 1200u32;
        let mut slot = pid % slots;
        let mut tries = 0;
        let base = loop {
            let base = 20000 + (slot * 10) as u16;
            if ports_free(base) {
                break base;
            }
            tries += 1;
            if tries > 50 {
                return Err(ClusterError::Start(
                    "no free port range in 20000-31999".into(),
                ));
            }
            slot = (slot + 7) % slots;
        };
        let dir = std::env::temp_dir().join(format!("wasmgrid-nats-{pid}-{base}"));
        std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Start(e.to_string()))?;
        let client = |i: u16| base + i;
        let route = |i: u16| base + 3 + i;
        let routes = (0..3)
            .map(|i| format!("nats-route://127.0.0.1:{}", route(i)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut children = Vec::new();
        for i in 0..3u16 {
            let store = dir.join(format!("n{i}"));
            let conf = dir.join(format!("n{i}.conf"));
            let text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{}\nmax_payload: 8MB\n\
                 jetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: wasmgrid-test, listen: 127.0.0.1:{}, routes: [{routes}] }}\n",
                client(i),
                store.display(),
                route(i),
            );
            std::fs::write(&conf, text).map_err(|e| ClusterError::Start(e.to_string()))?;
            // The guard: run the server, stop it when this process is gone.
            let script = format!(
                "nats-server -c '{conf}' >'{log}' 2>&1 & s=$!; echo $s >'{pidfile}'; \
                 while kill -0 {pid} 2>/dev/null && kill -0 $s 2>/dev/null && [ ! -e '{stop}' ]; do sleep 0.2; done; \
                 kill $s 2>/dev/null; wait $s; rm -rf '{store}' '{conf}' '{log}'; rmdir '{dir}' 2>/dev/null",
                conf = conf.display(),
                log = dir.join(format!("n{i}.log")).display(),
                store = store.display(),
                stop = dir.join("stop").display(),
                pidfile = dir.join(format!("n{i}.pid")).display(),
                dir = dir.display(),
            );
            let child = Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| ClusterError::Start(e.to_string()))?;
            children.push(child);
        }
        let ports: Vec<u16> = (0..3).map(client).collect();
        let urls = ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = Cluster {
            children,
            urls,
            ports,
            dir,
        };
        cluster.wait_ready(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Kills server `i` (0–2) with SIGKILL, as a machine dying would: its
    /// store is gone with it, and the others carry on (replicas 3 keep a
    /// quorum of two).
    pub fn kill_server(&self, i: usize) -> Result<(), ClusterError> {
        let pidfile = self.dir.join(format!("n{i}.pid"));
        let pid = std::fs::read_to_string(&pidfile)
            .map_err(|e| ClusterError::Start(format!("{}: {e}", pidfile.display())))?;
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(ClusterError::Start(format!(
                "kill -9 {} failed",
                pid.trim()
            )))
        }
    }

    /// Waits until every node answers a JetStream account request (on a
    /// thread of its own, so it may be called from inside a runtime).
    fn wait_ready(&self, within: Duration) -> Result<(), ClusterError> {
        let ports = self.ports.clone();
        let dir = self.dir.clone();
        std::thread::spawn(move || wait_ready(&ports, &dir, within))
            .join()
            .map_err(|_| ClusterError::Start("the readiness check panicked".into()))?
    }
}

fn wait_ready(ports: &[u16], dir: &std::path::Path, within: Duration) -> Result<(), ClusterError> {
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        let deadline = Instant::now() + within;
        rt.block_on(async {
            for port in ports {
                loop {
                    let ready = async {
                        let client = async_nats::connect(format!("nats://127.0.0.1:{port}"))
                            .await
                            .map_err(|e| e.to_string())?;
                        // The account info request: answered once JetStream
                        // (its meta leader) is up. Read as plain JSON.
                        let reply = client
                            .request("$JS.API.INFO", bytes::Bytes::new())
                            .await
                            .map_err(|e| e.to_string())?;
                        let info: serde_json::Value = serde_json::from_slice(&reply.payload)
                            .map_err(|e| e.to_string())?;
                        match info.get("error") {
                            Some(e) => Err(e.to_string()),
                            None => Ok(()),
                        }
                    };
                    let outcome = tokio::time::timeout(Duration::from_secs(3), ready)
                        .await
                        .map_err(|_| "timed out".to_string())
                        .and_then(|r| r);
                    let last = match outcome {
                        Ok(_) => break,
                        Err(e) => e,
                    };
                    if Instant::now() > deadline {
                        let log = std::fs::read_to_string(dir.join("n0.log"))
                            .unwrap_or_default();
                        return Err(ClusterError::Start(format!(
                            "JetStream on port {port} not ready after {within:?} ({last}); n0.log:\n{log}"
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Ok(())
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The guards see the stop file, stop their server and exit.
        let _ = std::fs::write(self.dir.join("stop"), b"");
        for child in &mut self.children {
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
