//! API keys and namespaces. A key is `ssk_` followed by 48 hex characters of randomness; only
//! its SHA-256 is stored. Lookups go by hash (an index), and the stored hash is compared in
//! constant time. Verified keys are cached for [`CACHE_TTL`]. A revocation through the API
//! (`KeysService.RevokeKey`) drops the key from the cache and ends the key's open long-polls
//! at once; a revocation made elsewhere (the `keys revoke` command, another replica) takes
//! effect within [`CACHE_TTL`] plus [`REVOCATION_RECHECK`], open long-polls included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::{EngineError, EngineResult};
use super::model::ApiKeyRecord;
use super::store::Store;

/// How long a verified key (or the "no keys configured" fact) is trusted without a lookup.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// How often an open long-poll re-checks that its key is still valid (a cache lookup; the
/// store is read once per key per [`CACHE_TTL`]).
pub const REVOCATION_RECHECK: Duration = Duration::from_secs(1);
/// The namespace of requests in open mode (no API keys configured).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Hashes a key secret (hex SHA-256).
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Generates a new key: `(record, secret)`. The secret is shown once and never stored.
pub fn generate_key(namespace: &str, name: &str, now: i64) -> (ApiKeyRecord, String) {
    let mut rng = rand::rng();
    let mut secret = [0u8; 24];
    rng.fill_bytes(&mut secret);
    let mut id = [0u8; 6];
    rng.fill_bytes(&mut id);
    let secret = format!("ssk_{}", hex::encode(secret));
    let record = ApiKeyRecord {
        id: format!("key_{}", hex::encode(id)),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        key_hash: hash_key(&secret),
        created_at: now,
        revoked_at: None,
        admin: false,
    };
    (record, secret)
}

/// Resolves the bearer key of a request to a namespace.
pub struct Authenticator {
    store: Arc<dyn Store>,
    allow_open: bool,
    /// Key hash -> (namespace, key id, verified at).
    cache: Mutex<HashMap<String, CachedKey>>,
    open: Mutex<Option<(bool, Instant)>>,
    /// Bumped on every revocation through the API; open long-polls re-check their key.
    revocations: tokio::sync::watch::Sender<u64>,
}

/// A verified key in the cache.
struct CachedKey {
    namespace: String,
    id: String,
    at: Instant,
}

impl Authenticator {
    /// `allow_open`: whether requests without a key are served (in the default namespace)
    /// while no key exists. The server sets it only on loopback or when told to.
    pub fn new(store: Arc<dyn Store>, allow_open: bool) -> Self {
        Self {
            store,
            allow_open,
            cache: Mutex::new(HashMap::new()),
            open: Mutex::new(None),
            revocations: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Forgets a revoked key at once (instead of after [`CACHE_TTL`]) and wakes the open
    /// long-polls, which then end with `Unauthenticated` if they used it.
    pub fn key_revoked(&self, id: &str) {
        self.lock_cache().retain(|_, k| k.id != id);
        self.revocations.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Completes (with the `Unauthenticated` error) once `secret` is no longer a valid key:
    /// right after a revocation through the API, else within [`CACHE_TTL`] plus
    /// [`REVOCATION_RECHECK`]. Store errors do not end the wait (the key is presumed valid).
    pub async fn wait_revoked(&self, secret: &str) -> EngineError {
        let mut changed = self.revocations.subscribe();
        loop {
            // The sender lives in `self`, so `changed` cannot fail while this runs.
            tokio::select! {
                _ = changed.changed() => {}
                () = tokio::time::sleep(REVOCATION_RECHECK) => {}
            }
            if let Err(e @ EngineError::Unauthenticated(_)) = self.namespace_of(secret).await {
                return e;
            }
        }
    }

    /// Returns the namespace the request may act in.
    pub async fn authenticate(&self, bearer: Option<&str>) -> EngineResult<String> {
        match bearer {
            Some(secret) => self.namespace_of(secret).await,
            None => {
                if self.allow_open && !self.keys_configured().await? {
                    Ok(DEFAULT_NAMESPACE.to_owned())
                } else {
                    Err(EngineError::Unauthenticated(
                        "missing API key: send metadata `authorization: Bearer <key>` \
                         (create one with `stackshift-server keys create --namespace <ns>`)"
                            .into(),
                    ))
                }
            }
        }
    }

    /// Allows key management (`KeysService`): with a key, only an active admin key (looked
    /// up on every call, so a revocation applies at once); without one, only in open mode.
    pub async fn authorize_admin(&self, bearer: Option<&str>) -> EngineResult<()> {
        match bearer {
            Some(secret) => {
                let hash = hash_key(secret);
                match self.store.find_active_key(&hash).await? {
                    Some(rec) if bool::from(rec.key_hash.as_bytes().ct_eq(hash.as_bytes())) => {
                        if rec.admin {
                            Ok(())
                        } else {
                            Err(EngineError::PermissionDenied(format!(
                                "key {} is not an admin key; key management needs an admin key \
                                 (`stackshift-server keys create --admin`)",
                                rec.id
                            )))
                        }
                    }
                    _ => Err(EngineError::Unauthenticated(
                        "invalid API key: it is unknown or was revoked".into(),
                    )),
                }
            }
            None => {
                // Not the cached answer: right after the first key is created, open mode ends.
                if self.allow_open && self.store.count_active_keys().await? == 0 {
                    Ok(())
                } else {
                    Err(EngineError::Unauthenticated(
                        "missing API key: key management needs an admin key".into(),
                    ))
                }
            }
        }
    }

    async fn namespace_of(&self, secret: &str) -> EngineResult<String> {
        let hash = hash_key(secret);
        if let Some(k) = self.lock_cache().get(&hash)
            && k.at.elapsed() < CACHE_TTL
        {
            return Ok(k.namespace.clone());
        }
        let found = self.store.find_active_key(&hash).await?;
        match found {
            Some(rec) if bool::from(rec.key_hash.as_bytes().ct_eq(hash.as_bytes())) => {
                self.lock_cache().insert(
                    hash,
                    CachedKey {
                        namespace: rec.namespace.clone(),
                        id: rec.id.clone(),
                        at: Instant::now(),
                    },
                );
                Ok(rec.namespace)
            }
            _ => {
                self.lock_cache().remove(&hash);
                Err(EngineError::Unauthenticated(
                    "invalid API key: it is unknown or was revoked".into(),
                ))
            }
        }
    }

    async fn keys_configured(&self) -> EngineResult<bool> {
        if let Some((configured, at)) = *self.open.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < CACHE_TTL
        {
            return Ok(configured);
        }
        let configured = self.store.count_active_keys().await? > 0;
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = Some((configured, Instant::now()));
        Ok(configured)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedKey>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
