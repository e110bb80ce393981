//! Node heartbeats (`P_nodes`, STORAGE.md 4.1) and what `GET /v1/cluster`
//! reports of the NATS side: the servers and each stream's usage.

use crate::{NatsStore, store_err};
use bytes::Bytes;
use futures::StreamExt;
use wasmgrid_store::StoreError;

/// How long a node's heartbeat stays in `P_nodes` without a renewal.
pub const NODE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// One stream of the installation and what it holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamUsage {
    /// The stream's name (`KV_<prefix>_files`, `<prefix>_events`, …).
    pub name: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored (per replica).
    pub bytes: u64,
    /// Its replicas.
    pub replicas: usize,
    /// Its consumers.
    pub consumers: usize,
}

/// The server a node is connected to and the others it was told about.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Servers {
    /// `host:port` of the server this node is connected to.
    pub connected: String,
    /// Its name and version.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether the connection is up now.
    pub up: bool,
    /// The cluster's other client URLs, as the server advertises them.
    pub advertised: Vec<String>,
}

impl NatsStore {
    /// Puts this node's heartbeat (`value`, JSON) under `node_id`
    /// (`[A-Za-z0-9-]`): it lapses after [`NODE_TTL`] unless put again.
    pub async fn heartbeat(&self, node_id: &str, value: Bytes) -> Result<(), StoreError> {
        self.nodes
            .put(node_id, value)
            .await
            .map(|_| ())
            .map_err(|e| store_err("writing the node's heartbeat", e))
    }

    /// Every live node's last heartbeat (its value, as put): the bucket's
    /// keys from the stream leader's info (`subjects_filter`), then a get of
    /// each. No consumer, so a consumer placed on a dead server cannot hold
    /// the count up (nats-server places some on a dead peer: PR #7165).
    pub async fn node_heartbeats(&self) -> Result<Vec<Bytes>, StoreError> {
        use futures::TryStreamExt;
        let subjects: Vec<String> = self
            .nodes
            .stream
            .info_with_subjects(format!("{}>", self.nodes.prefix))
            .await
            .map_err(|e| store_err("listing the node heartbeats", e))?
            .map_ok(|(subject, _)| subject)
            .try_collect()
            .await
            .map_err(|e| store_err("listing the node heartbeats", e))?;
        let mut out = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let Some(node_id) = subject.strip_prefix(self.nodes.prefix.as_str()) else {
                continue;
            };
            let entry = self
                .nodes
                .entry(node_id)
                .await
                .map_err(|e| store_err("reading a node heartbeat", e))?;
            // A node that stopped deleted its key; one that died expires.
            if let Some(e) =
                entry.filter(|e| e.operation == async_nats::jetstream::kv::Operation::Put)
            {
                out.push(e.value);
            }
        }
        Ok(out)
    }

    /// Whether the connection to NATS is up.
    pub fn connected(&self) -> bool {
        self.js.client().connection_state() == async_nats::connection::State::Connected
    }

    /// The servers, as this node sees them.
    pub fn servers(&self) -> Servers {
        let info = self.js.client().server_info();
        Servers {
            connected: format!("{}:{}", info.host, info.port),
            name: info.server_name.clone(),
            version: info.version.clone(),
            up: self.connected(),
            advertised: info.connect_urls.clone(),
        }
    }

    /// Usage of every stream of this installation (its prefix), by name.
    pub async fn usage(&self) -> Result<Vec<StreamUsage>, StoreError> {
        let p = &self.prefix;
        let ours = |name: &str| {
            name.starts_with(&format!("{p}_"))
                || name.starts_with(&format!("KV_{p}_"))
                || name.starts_with(&format!("OBJ_{p}_"))
        };
        let mut streams = self.js.streams();
        let mut out = Vec::new();
        while let Some(info) = streams.next().await {
            let info = info.map_err(|e| store_err("listing the streams", e))?;
            if ours(&info.config.name) {
                out.push(StreamUsage {
                    name: info.config.name.clone(),
                    messages: info.state.messages,
                    bytes: info.state.bytes,
                    replicas: info.config.num_replicas,
                    consumers: info.state.consumer_count,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
