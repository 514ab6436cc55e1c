//! API keys: `cairn_<id>_<secret>`, 256 random bits of secret, stored only as
//! SHA-256(salt ‖ secret) with a per-key salt in `<data_dir>/keys.json`.
//!
//! The secret is random, not a password, so a fast hash is enough (there is nothing to
//! brute-force); the salt keeps two stores from sharing hashes. Comparison is constant-time.
//! The file is rewritten atomically (temp file + rename) and re-read when another process
//! (`cairn keys ...` next to a running server) changes it, so keys created or revoked from
//! the CLI take effect on the server's next request.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthError, Principal, Scope};
use crate::error::{Error, Result};

/// What is stored about a key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    info: KeyInfo,
    salt: String,
    hash: String,
}

/// A key as clients and operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub scopes: Vec<Scope>,
    /// Unix seconds; `None` = never expires.
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A new key: shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    pub key: String,
}

#[derive(Default)]
struct State {
    keys: Vec<StoredKey>,
    /// Modification time of the file when it was last read or written.
    seen: Option<SystemTime>,
}

pub struct KeyStore {
    path: PathBuf,
    state: RwLock<State>,
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::internal(format!("random: {e}")))?;
    Ok(hex::encode(buf))
}

fn digest(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KeyStore {
    /// Opens (or prepares) `<data_dir>/keys.json`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let s = Self {
            path: data_dir.join("keys.json"),
            state: RwLock::new(State::default()),
        };
        s.reload_if_changed()?;
        Ok(s)
    }

    fn reload_if_changed(&self) -> Result<()> {
        let now = mtime(&self.path);
        if self.state.read().map_err(Error::internal)?.seen == now && now.is_some() {
            return Ok(());
        }
        let keys: Vec<StoredKey> = match std::fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::internal(format!(
                    "{} is not a valid key file: {e}",
                    self.path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut st = self.state.write().map_err(Error::internal)?;
        st.keys = keys;
        st.seen = now;
        Ok(())
    }

    fn save(&self, st: &mut State) -> Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&st.keys)?)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, &self.path)?;
        st.seen = mtime(&self.path);
        Ok(())
    }

    /// Creates a key; the returned `key` is the only time the secret exists in clear.
    pub fn create(
        &self,
        name: &str,
        tier: &str,
        scopes: Vec<Scope>,
        expires_at: Option<i64>,
    ) -> Result<NewKey> {
        if name.trim().is_empty() || name.len() > 128 {
            return Err(Error::InvalidInput(
                "a key needs a name of 1 to 128 characters".into(),
            ));
        }
        if scopes.is_empty() {
            return Err(Error::InvalidInput("a key needs at least one scope".into()));
        }
        let now = chrono::Utc::now().timestamp();
        if expires_at.is_some_and(|e| e <= now) {
            return Err(Error::InvalidInput("expires_at is in the past".into()));
        }
        self.reload_if_changed()?;
        let id = random_hex(6)?;
        let secret = random_hex(32)?;
        let salt = random_hex(16)?;
        let info = KeyInfo {
            id: id.clone(),
            name: name.trim().to_string(),
            tier: tier.to_string(),
            scopes,
            expires_at,
            created_at: now,
            last_used_at: None,
        };
        let mut st = self.state.write().map_err(Error::internal)?;
        st.keys.push(StoredKey {
            info: info.clone(),
            hash: digest(&salt, &secret),
            salt,
        });
        self.save(&mut st)?;
        Ok(NewKey {
            info,
            key: format!("cairn_{id}_{secret}"),
        })
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        self.reload_if_changed()?;
        let st = self.state.read().map_err(Error::internal)?;
        Ok(st.keys.iter().map(|k| k.info.clone()).collect())
    }

    /// Deletes a key for good.
    pub fn revoke(&self, id: &str) -> Result<()> {
        self.reload_if_changed()?;
        let mut st = self.state.write().map_err(Error::internal)?;
        let before = st.keys.len();
        st.keys.retain(|k| k.info.id != id);
        if st.keys.len() == before {
            return Err(Error::not_found(format!("key {id}")));
        }
        self.save(&mut st)
    }

    /// Checks a presented key. Last-used times are kept in memory and written with the next
    /// change (writing the file on every request would make each request a disk write).
    pub fn verify(&self, presented: &str) -> std::result::Result<Principal, AuthError> {
        let invalid = || AuthError::Invalid("invalid API key".into());
        let rest = presented.strip_prefix("cairn_").ok_or_else(invalid)?;
        let (id, secret) = rest.split_once('_').ok_or_else(invalid)?;
        self.reload_if_changed()
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let mut st = self
            .state
            .write()
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let k = st
            .keys
            .iter_mut()
            .find(|k| k.info.id == id)
            .ok_or_else(invalid)?;
        let ok: bool = digest(&k.salt, secret)
            .as_bytes()
            .ct_eq(k.hash.as_bytes())
            .into();
        if !ok {
            return Err(invalid());
        }
        let now = chrono::Utc::now().timestamp();
        if k.info.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Invalid("API key expired".into()));
        }
        k.info.last_used_at = Some(now);
        Ok(Principal {
            name: k.info.name.clone(),
            subject: format!("key:{}", k.info.id),
            tier: k.info.tier.clone(),
            scopes: k.info.scopes.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_verified_expired_and_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let k = store
            .create("ci", "free", vec![Scope::Search], None)
            .unwrap();
        assert!(k.key.starts_with("cairn_") && k.key.len() > 64 + 6);
        let p = store.verify(&k.key).unwrap();
        assert_eq!((p.name.as_str(), p.tier.as_str()), ("ci", "free"));
        // The file holds no secret.
        let file = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        let secret = k.key.rsplit('_').next().unwrap();
        assert!(!file.contains(secret));
        // A tampered secret, an unknown id, garbage.
        let mut bad = k.key.clone();
        bad.pop();
        bad.push(if k.key.ends_with('0') { '1' } else { '0' });
        assert!(store.verify(&bad).is_err());
        assert!(store.verify("cairn_ffffffffffff_00").is_err());
        assert!(store.verify("nonsense").is_err());
        // Another process revokes: this one notices.
        let other = KeyStore::open(dir.path()).unwrap();
        other.revoke(&k.info.id).unwrap();
        assert!(store.verify(&k.key).is_err());
        assert!(matches!(
            other.revoke(&k.info.id),
            Err(Error::NotFound { .. })
        ));
        let past = chrono::Utc::now().timestamp() - 1;
        assert!(store
            .create("x", "free", vec![Scope::Search], Some(past))
            .is_err());
    }
}
