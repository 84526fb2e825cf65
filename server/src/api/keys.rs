//! `KeysService` handlers: key management for admin keys (or anyone in open mode).

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::keys_service_server::KeysService;
use tonic::{Request, Response, Status};

use super::convert::opt;
use super::{ApiState, bearer};
use crate::engine::model::ApiKeyRecord;

/// Implements `stackshift.v1.KeysService`.
pub struct KeysApi(pub ApiState);

impl KeysApi {
    async fn authorize(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let key = bearer(metadata)?;
        Ok(self.0.auth.authorize_admin(key).await?)
    }
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn key_to_pb(k: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.clone(),
        namespace: k.namespace.clone(),
        name: k.name.clone(),
        admin: k.admin,
        created_at: Some(ts(k.created_at)),
        revoked_at: k.revoked_at.map(ts),
    }
}

#[tonic::async_trait]
impl KeysService for KeysApi {
    async fn create_key(
        &self,
        req: Request<pb::CreateKeyRequest>,
    ) -> Result<Response<pb::CreateKeyResponse>, Status> {
        self.authorize(req.metadata()).await?;
        let r = req.into_inner();
        let (key, secret) = self
            .0
            .engine
            .create_key(&r.namespace, &r.name, r.admin)
            .await?;
        tracing::info!(id = %key.id, namespace = %key.namespace, admin = key.admin, "API key created");
        Ok(Response::new(pb::CreateKeyResponse {
            key: Some(key_to_pb(&key)),
            secret,
        }))
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        self.authorize(req.metadata()).await?;
        let r = req.into_inner();
        let keys = self
            .0
            .engine
            .list_keys(opt(r.namespace).as_deref(), r.include_revoked)
            .await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_key(
        &self,
        req: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        self.authorize(req.metadata()).await?;
        let key = self.0.engine.revoke_key(&req.into_inner().id).await?;
        self.0.auth.key_revoked(&key.id);
        tracing::info!(id = %key.id, "API key revoked");
        Ok(Response::new(pb::RevokeKeyResponse {
            key: Some(key_to_pb(&key)),
        }))
    }
}
