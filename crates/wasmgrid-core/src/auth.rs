//! API keys: owners, scopes, hashing and verification.
//!
//! A key is `wg_<id>_<secret>`. The store keeps only the SHA-256 of the whole key
//! (the secret is 256 random bits, so a fast hash is enough) and the id is used to
//! find the record; the hash comparison is constant-time. Keys are cached in
//! memory and written through, so checking a key on the invoke path costs one
//! hash and one map lookup.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use subtle::ConstantTimeEq;
use wasmgrid_store::StoreError;
use wasmgrid_store::records::{Bucket, Followed, Records, RecordsExt};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Everything, for every owner.
    #[serde(rename = "admin")]
    Admin,
    /// Call algorithms.
    #[serde(rename = "invoke")]
    Invoke,
    /// Deploy and delete algorithm versions, manage secrets.
    #[serde(rename = "deploy")]
    Deploy,
    /// Publish events and manage topics and subscriptions.
    #[serde(rename = "publish")]
    Publish,
    /// Read data collections.
    #[serde(rename = "data:read")]
    DataRead,
    /// Write data collections.
    #[serde(rename = "data:write")]
    DataWrite,
}

impl Scope {
    /// Every scope, as written in requests.
    pub const ALL: &'static [(&'static str, Scope)] = &[
        ("admin", Scope::Admin),
        ("invoke", Scope::Invoke),
        ("deploy", Scope::Deploy),
        ("publish", Scope::Publish),
        ("data:read", Scope::DataRead),
        ("data:write", Scope::DataWrite),
    ];

    /// Parses a scope name.
    pub fn parse(s: &str) -> Option<Scope> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, sc)| *sc)
    }

    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, sc)| *sc == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// How `/v1/algo` answers the algorithm's own failures (`AlgorithmError`,
/// `TimeoutError`, `CrashError`, ...). Authentication, authorization, 404,
/// 413 and `Overloaded` keep their statuses under either convention.
///
/// A key may set it explicitly (`"none"` or `"algorithmia"`); a key without
/// the setting gets Algorithmia's convention when it is sent bare
/// (`Authorization: <key>`, as Algorithmia's official clients send it) and the
/// status table otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Compat {
    /// Errors carry their HTTP status (DESIGN.md's table).
    #[default]
    #[serde(rename = "none")]
    Http,
    /// Algorithmia's convention: the algorithm's failures come back as HTTP
    /// 200 with the `{"error": ...}` object (the true status in
    /// `X-Wasmgrid-Status`), which is what Algorithmia's official clients
    /// need to raise `AlgorithmException` with the message.
    #[serde(rename = "algorithmia")]
    Algorithmia,
}

impl Compat {
    /// Parses a key's `compat` setting as a request gives it.
    pub fn parse(s: &str) -> Option<Compat> {
        match s {
            "algorithmia" => Some(Compat::Algorithmia),
            // `http` is what earlier versions called `none`.
            "none" | "http" => Some(Compat::Http),
            _ => None,
        }
    }

    /// The convention of a request: the key's explicit setting, else
    /// Algorithmia's for the bare-key header form.
    pub fn resolve(explicit: Option<Compat>, bare_key: bool) -> Compat {
        match explicit {
            Some(c) => c,
            None if bare_key => Compat::Algorithmia,
            None => Compat::Http,
        }
    }
}

/// Reads a stored key's `compat`. Earlier versions wrote `"http"` for every
/// key that did not ask for Algorithmia's convention (it was the default), so
/// `"http"` reads as unset.
fn stored_compat<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Compat>, D::Error> {
    let raw = Option::<String>::deserialize(d)?;
    match raw.as_deref() {
        None | Some("http") => Ok(None),
        Some(other) => Compat::parse(other).map(Some).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown compat {other:?}: expected \"algorithmia\" or \"none\""
            ))
        }),
    }
}

/// A stored key (never the secret itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public identifier, also embedded in the key string.
    pub id: String,
    /// The owner the key acts for.
    pub owner: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// Hex SHA-256 of the full key string.
    pub hash: String,
    /// Optional label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Error convention on `/v1/algo` for this key; unset: decided by the
    /// header form (see [`Compat`]).
    #[serde(
        default,
        deserialize_with = "stored_compat",
        skip_serializing_if = "Option::is_none"
    )]
    pub compat: Option<Compat>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id.
    pub key_id: String,
    /// Owner the key acts for.
    pub owner: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Error convention on `/v1/algo` for this request (see [`Compat`]).
    pub compat: Compat,
    /// The hop count the events caused on this caller's behalf carry
    /// ([`wasmgrid_engine::identity::HOPS_ATTRIBUTE`]): 0 for an API key; a job a
    /// subscription starts acts with its triggering event's count plus one, so
    /// a job writing into the folder that triggers it stops like any event loop.
    pub hops: u32,
}

/// Authorization failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No usable credentials (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid key, not allowed (403).
    #[error("{0}")]
    Forbidden(String),
}

impl Caller {
    /// Whether the key is an admin key.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }

    /// Checks that the caller has `scope` for resources of `owner`.
    pub fn require(&self, scope: Scope, owner: &str) -> Result<(), AuthError> {
        if self.is_admin() {
            return Ok(());
        }
        if !self.scopes.contains(&scope) {
            return Err(AuthError::Forbidden(format!(
                "this key lacks the `{}` scope; create a key with it (wasmgrid key create --owner {} --scope {})",
                scope.as_str(),
                self.owner,
                scope.as_str()
            )));
        }
        if self.owner != owner {
            // Never name the other owner: the caller only learns that its key
            // does not reach there.
            return Err(AuthError::Forbidden(format!(
                "this key acts for owner `{}` only; use a key of the owner named in the request, or an admin key",
                self.owner
            )));
        }
        Ok(())
    }

    /// Whether the key reaches `owner`'s resources at all (its own owner's, or
    /// any with an admin key). Resources it does not reach and that no ACL
    /// makes public answer 404 exactly as missing ones, so that a refusal never
    /// tells what exists.
    pub fn acts_for(&self, owner: &str) -> bool {
        self.is_admin() || self.owner == owner
    }

    /// [`Caller::require`] for an existing (or missing) resource of `owner`:
    /// a key of another owner gets `hidden()` (the resource's "not found"
    /// answer), checked before the scope and before any lookup; a key of the
    /// owner lacking `scope` gets 403.
    pub fn require_visible<E: From<AuthError>>(
        &self,
        scope: Scope,
        owner: &str,
        hidden: impl FnOnce() -> E,
    ) -> Result<(), E> {
        if !self.acts_for(owner) {
            return Err(hidden());
        }
        self.require(scope, owner).map_err(E::from)
    }

    /// Checks an admin-only operation.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::Forbidden(
                "this operation needs an admin key".into(),
            ))
        }
    }
}

/// The owner of the bootstrap admin key. Topics it creates are the
/// operator's: any algorithm granted `topic:NAME` may publish to them.
pub const ADMIN_OWNER: &str = "admin";

/// Extracts the key from an `Authorization` header value: `Simple <key>`,
/// `Bearer <key>`, `SharedAccessKey <key>` (Azure's namespace clients), or
/// the bare key (as Algorithmia's clients send it). Schemes match in any case,
/// as RFC 9110 says of auth schemes.
pub fn key_from_header(value: &str) -> &str {
    let v = value.trim();
    if let Some((scheme, rest)) = v.split_once(char::is_whitespace)
        && ["simple", "bearer", "sharedaccesskey"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        return rest.trim();
    }
    v
}

/// Whether an `Authorization` value is the bare key (no scheme), the form
/// Algorithmia's official clients send.
pub fn is_bare_key(value: &str) -> bool {
    !value.trim().contains(char::is_whitespace)
}

/// Whether a header value carries a wasmgrid API key (`wg_…`) or topic key
/// (`wgt_…`), bare or after a scheme (`Simple`, `Bearer`, `SharedAccessKey`,
/// ...). Judged by the form, not by the key store, so that revoked keys and
/// keys of other servers are recognised too.
pub fn is_wasmgrid_credential(value: &[u8]) -> bool {
    value
        .split(|b| b.is_ascii_whitespace() || matches!(b, b',' | b'=' | b';'))
        .any(|token| token.starts_with(b"wg_") || token.starts_with(b"wgt_"))
}

/// The key registry.
pub struct KeyStore {
    records: Arc<dyn Records>,
    keys: RwLock<HashMap<String, KeyRecord>>,
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl KeyStore {
    /// Loads all keys from the store. The cache is written through by
    /// [`create`](Self::create) and [`revoke`](Self::revoke); in cluster mode
    /// [`follow`](Self::follow) also feeds it what other nodes write.
    pub async fn open(records: Arc<dyn Records>) -> Result<Self, StoreError> {
        let mut keys = HashMap::new();
        for entry in records.list_all(Bucket::Keys, "").await? {
            let record: KeyRecord = wasmgrid_store::records::decode(Bucket::Keys, &entry)?;
            keys.insert(entry.key, record);
        }
        Ok(Self {
            records,
            keys: RwLock::new(keys),
        })
    }

    /// Keeps the key cache current with keys other nodes create and revoke
    /// (cluster mode), until `shutdown` resolves. A key revoked on another
    /// node stops working here once the watch brings the deletion
    /// (milliseconds on a healthy cluster).
    pub async fn follow(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let records = self.records.clone();
        wasmgrid_store::records::follow(&*records, Bucket::Keys, "", shutdown, |change| {
            let Ok(mut keys) = self.keys.write() else {
                return;
            };
            match change {
                Followed::Put(entry) => {
                    match wasmgrid_store::records::decode::<KeyRecord>(Bucket::Keys, entry) {
                        Ok(record) => {
                            keys.insert(entry.key.clone(), record);
                        }
                        Err(e) => tracing::error!(key = %entry.key, error = %e, "an unreadable key record: ignored"),
                    }
                }
                Followed::Deleted(id) => {
                    keys.remove(id);
                }
                Followed::Resynced(seen) => keys.retain(|id, _| seen.contains(id)),
            }
        })
        .await
    }

    /// Verifies a presented key; `None` if unknown, revoked or malformed.
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        self.verify_as(presented, false)
    }

    /// [`verify`](Self::verify) for a key that came in `Authorization`,
    /// `bare_key` when without a scheme (it decides the error convention of
    /// keys that do not set one).
    pub fn verify_as(&self, presented: &str, bare_key: bool) -> Option<Caller> {
        let id = presented.strip_prefix("wg_")?.split('_').next()?;
        let keys = self.keys.read().ok()?;
        let record = keys.get(id)?;
        // Hex into a stack buffer: this runs on every request.
        let mut hash = [0u8; 64];
        hex::encode_to_slice(Sha256::digest(presented.as_bytes()), &mut hash).ok()?;
        if bool::from(hash.as_slice().ct_eq(record.hash.as_bytes())) {
            Some(Caller {
                key_id: record.id.clone(),
                owner: record.owner.clone(),
                scopes: record.scopes.clone(),
                compat: Compat::resolve(record.compat, bare_key),
                hops: 0,
            })
        } else {
            None
        }
    }

    /// Creates a key; returns its record and the secret key string (shown once).
    pub async fn create(
        &self,
        owner: &str,
        scopes: Vec<Scope>,
        name: Option<String>,
        compat: Option<Compat>,
    ) -> Result<(KeyRecord, String), StoreError> {
        let id = hex::encode(rand::random::<[u8; 6]>());
        let secret =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        // The secret is base64url; its `-`/`_` never confuse `wg_<id>_` parsing
        // because only the first `_`-separated field after `wg_` is the id.
        let key = format!("wg_{id}_{secret}");
        let record = KeyRecord {
            id: id.clone(),
            owner: owner.to_string(),
            scopes,
            hash: hash_key(&key),
            name,
            compat,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        };
        // Create-once: a colliding random id fails instead of replacing a key.
        self.records.create_json(Bucket::Keys, &id, &record).await?;
        if let Ok(mut keys) = self.keys.write() {
            keys.insert(id, record.clone());
        }
        Ok((record, key))
    }

    /// Revokes a key; `false` if there was no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        if !self
            .keys
            .read()
            .map(|k| k.contains_key(id))
            .unwrap_or(false)
        {
            return Ok(false);
        }
        self.records.delete(Bucket::Keys, id, None).await?;
        if let Ok(mut keys) = self.keys.write() {
            keys.remove(id);
        }
        Ok(true)
    }

    /// All keys (records only), sorted by creation.
    pub fn list(&self) -> Vec<KeyRecord> {
        let mut v: Vec<KeyRecord> = self
            .keys
            .read()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        v
    }

    /// On first start (no keys at all), creates an admin key and writes it to
    /// `<data dir>/admin.key` (one line, mode 0600). Returns the path if it wrote one.
    pub async fn bootstrap_admin(
        &self,
        data_dir: &Path,
    ) -> anyhow::Result<Option<std::path::PathBuf>> {
        if !self.keys.read().map(|k| k.is_empty()).unwrap_or(false) {
            return Ok(None);
        }
        let (_, key) = self
            .create(
                ADMIN_OWNER,
                vec![Scope::Admin],
                Some("bootstrap admin key".into()),
                None,
            )
            .await?;
        let path = data_dir.join("admin.key");
        crate::fsutil::write_secret_file(&path, &format!("{key}\n"))?;
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmgrid_store::EmbeddedStore;

    #[tokio::test]
    async fn keys_verify_scope_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Records> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let keys = KeyStore::open(store.clone()).await.unwrap();
        let admin_file = keys.bootstrap_admin(dir.path()).await.unwrap().unwrap();
        let admin = std::fs::read_to_string(&admin_file).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&admin_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(keys.verify(admin.trim()).unwrap().is_admin());
        assert!(
            keys.bootstrap_admin(dir.path()).await.unwrap().is_none(),
            "only on first start"
        );

        let (rec, key) = keys
            .create("alice", vec![Scope::Invoke], None, None)
            .await
            .unwrap();
        let caller = keys.verify(&key).unwrap();
        assert!(caller.require(Scope::Invoke, "alice").is_ok());
        assert!(matches!(
            caller.require(Scope::Deploy, "alice"),
            Err(AuthError::Forbidden(_))
        ));
        assert!(matches!(
            caller.require(Scope::Invoke, "bob"),
            Err(AuthError::Forbidden(_))
        ));
        // A tampered secret with the right id fails.
        let mut tampered = key.clone();
        tampered.pop();
        tampered.push(if key.ends_with('A') { 'B' } else { 'A' });
        assert!(keys.verify(&tampered).is_none());
        // Survives a reload; revocation sticks.
        let reloaded = KeyStore::open(store.clone()).await.unwrap();
        assert!(reloaded.verify(&key).is_some());
        assert!(reloaded.revoke(&rec.id).await.unwrap());
        assert!(reloaded.verify(&key).is_none());
        assert!(KeyStore::open(store).await.unwrap().verify(&key).is_none());
    }

    #[test]
    fn header_forms() {
        assert_eq!(key_from_header("Simple wg_a_b"), "wg_a_b");
        assert_eq!(key_from_header("Bearer wg_a_b"), "wg_a_b");
        assert_eq!(key_from_header("wg_a_b"), "wg_a_b");
        assert_eq!(key_from_header("SharedAccessKey wg_a_b"), "wg_a_b");
        assert_eq!(key_from_header("BEARER  wg_a_b "), "wg_a_b");
        assert_eq!(key_from_header("Basic dXNlcg=="), "Basic dXNlcg==");
        assert!(is_bare_key(" wg_a_b "));
        assert!(!is_bare_key("Simple wg_a_b"));
        assert!(!is_bare_key("Bearer wg_a_b"));
    }

    #[test]
    fn credentials_are_recognised_by_form() {
        for v in [
            "wg_a_b",
            "Simple wg_a_b",
            "Bearer wg_a_b",
            "SharedAccessKey wg_a_b",
            "wgt_abc",
            "SharedAccessKey key=wgt_abc",
        ] {
            assert!(is_wasmgrid_credential(v.as_bytes()), "{v}");
        }
        for v in [
            "Basic dXNlcjpwYXNz",
            "Bearer eyJhbGciOi.x.y",
            "wgx",
            "Simple wgfoo",
        ] {
            assert!(!is_wasmgrid_credential(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn compat_is_tri_state_and_old_records_read() {
        let rec = |compat: &str| -> KeyRecord {
            serde_json::from_str(&format!(
                r#"{{"id":"i","owner":"o","scopes":["invoke"],"hash":"h","created":"t"{compat}}}"#
            ))
            .unwrap()
        };
        assert_eq!(rec("").compat, None);
        assert_eq!(rec(r#","compat":"http""#).compat, None);
        assert_eq!(rec(r#","compat":"none""#).compat, Some(Compat::Http));
        assert_eq!(
            rec(r#","compat":"algorithmia""#).compat,
            Some(Compat::Algorithmia)
        );
        let r = rec(r#","compat":"none""#);
        let back: KeyRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back.compat, Some(Compat::Http));
        assert_eq!(Compat::resolve(None, true), Compat::Algorithmia);
        assert_eq!(Compat::resolve(None, false), Compat::Http);
        assert_eq!(Compat::resolve(Some(Compat::Http), true), Compat::Http);
        assert_eq!(
            Compat::resolve(Some(Compat::Algorithmia), false),
            Compat::Algorithmia
        );
    }
}
