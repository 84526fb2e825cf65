//! Key management over the API (`KeysService`): create, list and revoke API keys. Who may
//! call these is decided by `Authenticator::authorize_admin`; this module only validates and
//! stores. Secrets are returned once and only their SHA-256 is stored (see `auth`).

use super::auth::generate_key;
use super::error::{EngineError, EngineResult};
use super::model::ApiKeyRecord;
use super::{Engine, now_ms, validate};

/// Longest key label.
const MAX_KEY_NAME_LEN: usize = 200;

impl Engine {
    /// Creates a key; returns it and its secret (shown once).
    pub async fn create_key(
        &self,
        namespace: &str,
        name: &str,
        admin: bool,
    ) -> EngineResult<(ApiKeyRecord, String)> {
        validate::name("namespace", namespace)?;
        if name.chars().count() > MAX_KEY_NAME_LEN {
            return Err(EngineError::invalid(format!(
                "name is longer than {MAX_KEY_NAME_LEN} characters"
            )));
        }
        let (mut record, secret) = generate_key(namespace, name, now_ms());
        record.admin = admin;
        self.store().insert_key(record.clone()).await?;
        Ok((record, secret))
    }

    /// Lists keys, oldest first: of one namespace or all, revoked ones only when asked.
    pub async fn list_keys(
        &self,
        namespace: Option<&str>,
        include_revoked: bool,
    ) -> EngineResult<Vec<ApiKeyRecord>> {
        if let Some(ns) = namespace {
            validate::name("namespace", ns)?;
        }
        Ok(self
            .store()
            .list_keys()
            .await?
            .into_iter()
            .filter(|k| namespace.is_none_or(|ns| k.namespace == ns))
            .filter(|k| include_revoked || k.revoked_at.is_none())
            .collect())
    }

    /// Revokes an active key and returns it.
    pub async fn revoke_key(&self, id: &str) -> EngineResult<ApiKeyRecord> {
        let not_found = || EngineError::NotFound(format!("no active key with id {id}"));
        if !self.store().revoke_key(id, now_ms()).await? {
            return Err(not_found());
        }
        self.store()
            .list_keys()
            .await?
            .into_iter()
            .find(|k| k.id == id)
            .ok_or_else(not_found)
    }
}
