//! Joining a cluster (issue 15): the cluster key every node is given, and the
//! secrets a cluster is born with — its admin key and its secrets master key
//! — kept in the `Meta` record `cluster`, sealed with the cluster key, so the
//! store (NATS) only ever holds ciphertext.
//!
//! The first node to start creates them with a create-once write, so two nodes
//! starting together agree: the loser revokes the admin key it made and uses
//! the winner's. Every node unseals them to write its own `admin.key` and to
//! open the secrets store.

use crate::auth::{ADMIN_OWNER, KeyStore, Scope};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
use std::path::Path;
use wasmgrid_store::StoreError;
use wasmgrid_store::records::{Bucket, Records};

/// The cluster schema this build writes and reads. A node refuses a cluster
/// whose schema it does not know.
pub const CLUSTER_SCHEMA: u64 = 1;

/// The `Meta` record holding the sealed birth secrets.
const BIRTH_RECORD: &str = "cluster";

/// What sealed data is bound to (authenticated, not encrypted).
const AAD: &[u8] = b"wasmgrid cluster birth v1";

/// Why a node cannot join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster key file is missing or malformed.
    #[error(
        "cluster key {path}: {reason}; it must hold 32 random bytes as 64 hex characters (create one with `wasmgrid cluster new-key FILE` or `openssl rand -hex 32 > FILE`), the same file on every node"
    )]
    Key {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The cluster was created with another cluster key.
    #[error(
        "the cluster's secrets do not open with this cluster key: every node must be given the key file the cluster was created with"
    )]
    WrongKey,
    /// The cluster was written by a build with another schema.
    #[error(
        "the cluster uses schema version {found}, but this wasmgrid supports only version {CLUSTER_SCHEMA}; run the same wasmgrid version on every node"
    )]
    Schema {
        /// The cluster's schema.
        found: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The birth record is unreadable.
    #[error("the cluster's birth record is unreadable: {0}")]
    Corrupt(String),
}

/// The 32-byte key every node of a cluster is given.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A new random key.
    pub fn generate() -> ClusterKey {
        ClusterKey(rand::random())
    }

    /// The key as 64 hex characters (the file's content).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads a key file (64 hex characters, surrounding whitespace ignored).
    pub fn read(path: &Path) -> Result<ClusterKey, ClusterError> {
        let err = |reason: String| ClusterError::Key {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let bytes = hex::decode(text.trim()).map_err(|_| err("not hex".into()))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| err(format!("{} bytes instead of 32", b.len())))?;
        Ok(ClusterKey(key))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.0))
    }
}

/// The birth record as stored: the schema in the clear, the secrets sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    schema: u64,
    /// Hex nonce ‖ ciphertext of [`Birth`] as JSON.
    sealed: String,
}

#[derive(Serialize, Deserialize)]
struct Birth {
    admin_key: String,
    secrets_key: String,
}

/// What a node gets from its cluster.
pub struct Joined {
    /// The cluster's admin API key (plaintext: written to the node's
    /// `admin.key`, never stored unsealed).
    pub admin_key: String,
    /// The master key of the secrets store.
    pub secrets_key: [u8; 32],
}

fn seal(key: &ClusterKey, birth: &Birth) -> Result<Vec<u8>, ClusterError> {
    let plain = serde_json::to_vec(birth).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
    let nonce: [u8; 12] = rand::random();
    let sealed = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: AAD,
            },
        )
        .map_err(|_| ClusterError::Corrupt("sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    serde_json::to_vec(&Sealed {
        schema: CLUSTER_SCHEMA,
        sealed: hex::encode(out),
    })
    .map_err(|e| ClusterError::Corrupt(e.to_string()))
}

fn unseal(key: &ClusterKey, stored: &[u8]) -> Result<Joined, ClusterError> {
    let record: Sealed =
        serde_json::from_slice(stored).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
    if record.schema != CLUSTER_SCHEMA {
        return Err(ClusterError::Schema {
            found: record.schema,
        });
    }
    let bytes = hex::decode(&record.sealed).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
    if bytes.len() < 12 {
        return Err(ClusterError::Corrupt("sealed value too short".into()));
    }
    let (nonce, sealed) = bytes.split_at(12);
    let plain = key
        .cipher()
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: AAD,
            },
        )
        .map_err(|_| ClusterError::WrongKey)?;
    let birth: Birth =
        serde_json::from_slice(&plain).map_err(|e| ClusterError::Corrupt(e.to_string()))?;
    let secrets_key = hex::decode(&birth.secrets_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ClusterError::Corrupt("secrets key is not 32 hex bytes".into()))?;
    Ok(Joined {
        admin_key: birth.admin_key,
        secrets_key,
    })
}

/// Joins the cluster whose records are `records`: unseals its birth
/// secrets, or creates them if this is its first node.
pub async fn join(
    records: &dyn Records,
    keys: &KeyStore,
    key: &ClusterKey,
) -> Result<Joined, ClusterError> {
    if let Some(entry) = records.get(Bucket::Meta, BIRTH_RECORD).await? {
        return unseal(key, &entry.value);
    }
    let (admin, admin_key) = keys
        .create(
            ADMIN_OWNER,
            vec![Scope::Admin],
            Some("cluster admin key".into()),
            None,
        )
        .await?;
    let birth = Birth {
        admin_key,
        secrets_key: hex::encode(rand::random::<[u8; 32]>()),
    };
    match records
        .create(Bucket::Meta, BIRTH_RECORD, seal(key, &birth)?.into())
        .await
    {
        Ok(_) => unseal(key, &seal(key, &birth)?),
        Err(StoreError::Exists { .. }) => {
            // Another node was first: its secrets are the cluster's.
            keys.revoke(&admin.id).await?;
            let entry = records
                .get(Bucket::Meta, BIRTH_RECORD)
                .await?
                .ok_or_else(|| ClusterError::Corrupt("the birth record vanished".into()))?;
            unseal(key, &entry.value)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use wasmgrid_store::EmbeddedStore;

    #[tokio::test]
    async fn the_first_node_creates_the_secrets_and_the_next_unseals_them() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Records> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let keys = KeyStore::open(store.clone()).await.unwrap();
        let key = ClusterKey::generate();
        let first = join(&*store, &keys, &key).await.unwrap();
        let second = join(&*store, &keys, &key).await.unwrap();
        assert_eq!(first.admin_key, second.admin_key);
        assert_eq!(first.secrets_key, second.secrets_key);
        assert!(keys.verify(&first.admin_key).unwrap().is_admin());
        // The store holds no plaintext.
        let stored = store.get(Bucket::Meta, "cluster").await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&stored.value);
        assert!(!text.contains(&first.admin_key));
        assert!(matches!(
            join(&*store, &keys, &ClusterKey::generate()).await,
            Err(ClusterError::WrongKey)
        ));
    }

    #[test]
    fn key_files_must_hold_64_hex_characters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let key = ClusterKey::generate();
        std::fs::write(&path, format!("{}\n", key.to_hex())).unwrap();
        assert_eq!(ClusterKey::read(&path).unwrap().0, key.0);
        std::fs::write(&path, "abcd").unwrap();
        let err = ClusterKey::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("2 bytes instead of 32") && err.contains("new-key"),
            "{err}"
        );
    }
}
