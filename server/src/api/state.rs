//! `StateService` handlers.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::state_service_server::StateService;
use tonic::{Request, Response, Status};

use crate::engine::state::{
    AcquireInput, Expiry, IncrementInput, LockAttempt, RunCallInput, SetInput, StateEntry,
    StateKeyInfo,
};

use super::ApiState;
use super::convert::{dur_ms, opt, ts, ts_ms};

/// Implements `stackshift.v1.StateService`.
pub struct StateApi(pub ApiState);

pub(super) fn run_call(run: Option<pb::RunContext>) -> Option<RunCallInput> {
    run.map(|r| RunCallInput {
        run_id: r.run_id,
        lease_token: r.lease_token,
        call_id: r.call_id,
    })
}

fn entry_to_pb(e: StateEntry) -> pb::StateEntry {
    pb::StateEntry {
        key: e.key,
        value: e.value.into_bytes(),
        version: e.version,
        expires_at: e.expires_at.map(ts),
        updated_at: Some(ts(e.updated_at)),
    }
}

fn key_info_to_pb(k: StateKeyInfo) -> pb::StateKeyInfo {
    pb::StateKeyInfo {
        key: k.key,
        version: k.version,
        expires_at: k.expires_at.map(ts),
        updated_at: Some(ts(k.updated_at)),
        value_size: k.value_size,
    }
}

/// A TTL field: protobuf durations are non-negative by construction of `dur_ms`, so a
/// negative one is reported as what it is, a TTL that is not longer than zero.
pub(super) fn ttl_ms(
    field: &str,
    d: &Option<prost_types::Duration>,
) -> Result<Option<i64>, Status> {
    match d {
        Some(d) if d.seconds < 0 || d.nanos < 0 => Err(Status::invalid_argument(format!(
            "{field} must be longer than zero (got a negative duration)"
        ))),
        _ => dur_ms(field, d),
    }
}

#[tonic::async_trait]
impl StateService for StateApi {
    async fn get_state(
        &self,
        req: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let entry = self
            .0
            .engine
            .state_get(&ns, &r.key, run_call(r.run))
            .await?;
        Ok(Response::new(pb::GetStateResponse {
            entry: entry.map(entry_to_pb),
        }))
    }

    async fn set_state(
        &self,
        req: Request<pb::SetStateRequest>,
    ) -> Result<Response<pb::SetStateResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let expiry = match r.expiration {
            None => None,
            Some(pb::set_state_request::Expiration::Ttl(d)) => {
                Some(Expiry::Ttl(ttl_ms("ttl", &Some(d))?.unwrap_or(0)))
            }
            Some(pb::set_state_request::Expiration::ExpiresAt(t)) => {
                Some(Expiry::At(ts_ms("expires_at", &t)?))
            }
        };
        let input = SetInput {
            key: r.key,
            value: r.value,
            expiry,
            expected_version: r.expected_version,
            run: run_call(r.run),
        };
        let (version, expires_at) = self.0.engine.state_set(&ns, input).await?;
        Ok(Response::new(pb::SetStateResponse {
            version,
            expires_at: expires_at.map(ts),
        }))
    }

    async fn delete_state(
        &self,
        req: Request<pb::DeleteStateRequest>,
    ) -> Result<Response<pb::DeleteStateResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let deleted = self
            .0
            .engine
            .state_delete(&ns, &r.key, r.expected_version, run_call(r.run))
            .await?;
        Ok(Response::new(pb::DeleteStateResponse { deleted }))
    }

    async fn increment_state(
        &self,
        req: Request<pb::IncrementStateRequest>,
    ) -> Result<Response<pb::IncrementStateResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let input = IncrementInput {
            key: r.key,
            by: r.by,
            ttl_ms: ttl_ms("ttl", &r.ttl)?,
            run: run_call(r.run),
        };
        let counter = self.0.engine.state_increment(&ns, input).await?;
        Ok(Response::new(pb::IncrementStateResponse {
            value: counter.value,
            version: counter.version,
            expires_at: counter.expires_at.map(ts),
        }))
    }

    async fn list_state_keys(
        &self,
        req: Request<pb::ListStateKeysRequest>,
    ) -> Result<Response<pb::ListStateKeysResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let (keys, next) = self
            .0
            .engine
            .state_list(
                &ns,
                &r.prefix,
                r.page_size,
                opt(r.page_token),
                run_call(r.run),
            )
            .await?;
        Ok(Response::new(pb::ListStateKeysResponse {
            keys: keys.into_iter().map(key_info_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn acquire_lock(
        &self,
        req: Request<pb::AcquireLockRequest>,
    ) -> Result<Response<pb::AcquireLockResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let (metadata, _, r) = req.into_parts();
        let input = AcquireInput {
            key: r.key,
            ttl_ms: ttl_ms("ttl", &r.ttl)?,
            wait_ms: dur_ms("wait", &r.wait)?,
            release_with_run: r.release_with_run,
            run: run_call(r.run),
        };
        let acquire = async { Ok(self.0.engine.state_acquire(&ns, input).await?) };
        let response = match self.0.until_revoked(&metadata, acquire).await? {
            LockAttempt::Granted { token, expires_at } => pb::AcquireLockResponse {
                granted: true,
                fencing_token: token,
                expires_at: Some(ts(expires_at)),
                holder_expires_at: None,
            },
            LockAttempt::Busy { holder_expires_at } => pb::AcquireLockResponse {
                granted: false,
                fencing_token: 0,
                expires_at: None,
                holder_expires_at: Some(ts(holder_expires_at)),
            },
        };
        Ok(Response::new(response))
    }

    async fn release_lock(
        &self,
        req: Request<pb::ReleaseLockRequest>,
    ) -> Result<Response<pb::ReleaseLockResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        self.0
            .engine
            .state_release(&ns, &r.key, r.fencing_token, run_call(r.run))
            .await?;
        Ok(Response::new(pb::ReleaseLockResponse {}))
    }

    async fn extend_lock(
        &self,
        req: Request<pb::ExtendLockRequest>,
    ) -> Result<Response<pb::ExtendLockResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let expires_at = self
            .0
            .engine
            .state_extend(
                &ns,
                &r.key,
                r.fencing_token,
                ttl_ms("ttl", &r.ttl)?,
                run_call(r.run),
            )
            .await?;
        Ok(Response::new(pb::ExtendLockResponse {
            expires_at: Some(ts(expires_at)),
        }))
    }
}
