//! Per-algorithm secrets, encrypted at rest.
//!
//! Values are sealed with ChaCha20-Poly1305 under a 256-bit key kept in
//! `<data dir>/secrets.key` (mode 0600, created on first start). Each value has a
//! random nonce, and the secret's full name (`owner/name/key`) is the associated
//! data, so a ciphertext cannot be moved to another secret. Values never appear in
//! logs, listings or error messages.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::path::Path;
use std::sync::Arc;
use wasmgrid_store::StoreError;
use wasmgrid_store::records::{Bucket, Records};

/// Largest secret value.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// Secret failures.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A bad name or value.
    #[error("{0}")]
    Invalid(String),
    /// No such secret.
    #[error("{0}")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The secret store.
pub struct SecretStore {
    records: Arc<dyn Records>,
    cipher: ChaCha20Poly1305,
}

/// Checks a secret name: 1–128 letters, digits, `_`, `-` or `.`, not starting with
/// a digit or `.`.
pub fn validate_secret_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::Invalid(format!(
            "invalid secret name {name:?}: use 1-128 letters, digits, '_', '-' or '.', not starting with a digit or '.'"
        )))
    }
}

impl SecretStore {
    /// Opens the store, creating `<data dir>/secrets.key` on first use.
    pub fn open(records: Arc<dyn Records>, data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("secrets.key");
        let key_bytes: [u8; 32] = match std::fs::read_to_string(&path) {
            Ok(text) => hex::decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} is not a 64-hex-digit key; restore it from a backup",
                        path.display()
                    )
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = rand::random::<[u8; 32]>();
                crate::fsutil::write_secret_file(&path, &format!("{}\n", hex::encode(key)))?;
                key
            }
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        Ok(Self::with_key(records, key_bytes))
    }

    /// Opens the store with a given master key (a cluster's, shared by its
    /// nodes: see `crate::cluster`).
    pub fn with_key(records: Arc<dyn Records>, key: [u8; 32]) -> Self {
        Self {
            records,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    fn id(owner: &str, name: &str, key: &str) -> String {
        format!("{owner}/{name}/{key}")
    }

    /// Sets a secret.
    pub async fn set(
        &self,
        owner: &str,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<(), SecretError> {
        validate_secret_name(key)?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::Invalid(format!(
                "secret {key} is {} bytes; the limit is {MAX_SECRET_BYTES}",
                value.len()
            )));
        }
        let id = Self::id(owner, name, key);
        let nonce = rand::random::<[u8; 12]>();
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Invalid("encryption failed".into()))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        self.records
            .put(Bucket::Secrets, &id, stored.into())
            .await?;
        Ok(())
    }

    /// Deletes a secret.
    pub async fn delete(&self, owner: &str, name: &str, key: &str) -> Result<(), SecretError> {
        let id = Self::id(owner, name, key);
        if self.records.get(Bucket::Secrets, &id).await?.is_none() {
            return Err(SecretError::NotFound(format!(
                "secret {key} of {owner}/{name} not found"
            )));
        }
        self.records.delete(Bucket::Secrets, &id, None).await?;
        Ok(())
    }

    /// The names of an algorithm's secrets (never values).
    pub async fn names(&self, owner: &str, name: &str) -> Result<Vec<String>, SecretError> {
        let prefix = format!("{owner}/{name}/");
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .records
                .list(Bucket::Secrets, &prefix, after.as_deref(), 500)
                .await?;
            for entry in page.items {
                out.push(entry.key[prefix.len()..].to_string());
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// A secret's value, if set (and intact).
    pub async fn get(
        &self,
        owner: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, SecretError> {
        let id = Self::id(owner, name, key);
        let Some(entry) = self.records.get(Bucket::Secrets, &id).await? else {
            return Ok(None);
        };
        let stored = entry.value;
        if stored.len() < 12 {
            return Ok(None);
        }
        let (nonce, sealed) = stored.split_at(12);
        match self.cipher.decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: id.as_bytes(),
            },
        ) {
            Ok(plain) => Ok(String::from_utf8(plain).ok()),
            Err(_) => {
                tracing::error!(secret = %id, "secret failed authentication (wrong secrets.key or tampered store)");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgrid_store::EmbeddedStore;

    #[tokio::test]
    async fn secrets_are_sealed_and_bound_to_their_name() {
        let dir = tempfile::tempdir().unwrap();
        let embedded = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let secrets = SecretStore::open(embedded.clone(), dir.path()).unwrap();
        secrets
            .set("demo", "algo", "DB_URL", "postgres://user:hunter2@db")
            .await
            .unwrap();
        assert_eq!(
            secrets
                .get("demo", "algo", "DB_URL")
                .await
                .unwrap()
                .as_deref(),
            Some("postgres://user:hunter2@db")
        );
        assert_eq!(secrets.names("demo", "algo").await.unwrap(), ["DB_URL"]);
        // Not stored in the clear.
        let stored = Records::get(&*embedded, Bucket::Secrets, "demo/algo/DB_URL")
            .await
            .unwrap()
            .unwrap()
            .value;
        assert!(!stored.windows(7).any(|w| w == b"hunter2"));
        // A ciphertext copied under another name does not decrypt.
        Records::put(&*embedded, Bucket::Secrets, "demo/other/DB_URL", stored)
            .await
            .unwrap();
        assert_eq!(secrets.get("demo", "other", "DB_URL").await.unwrap(), None);
        // The key file is private and reused on reopen.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("secrets.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let reopened = SecretStore::open(embedded, dir.path()).unwrap();
        assert!(
            reopened
                .get("demo", "algo", "DB_URL")
                .await
                .unwrap()
                .is_some()
        );
        assert!(validate_secret_name("9x").is_err());
        assert!(reopened.delete("demo", "algo", "NOPE").await.is_err());
        reopened.delete("demo", "algo", "DB_URL").await.unwrap();
        assert!(secrets.names("demo", "algo").await.unwrap().is_empty());
    }
}
