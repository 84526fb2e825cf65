//! The gRPC API: tonic handlers that convert protobuf messages to engine inputs and engine
//! errors to gRPC statuses. No domain logic lives here.

pub mod convert;
pub mod event_convert;
mod events;
pub mod fuzz;
mod jobs;
mod keys;
pub mod obs_convert;
mod queues;
pub mod rate_limit;
mod report_batch;
mod schedules;
mod state;
pub mod status;
mod triggers;
mod worker;

use std::sync::Arc;

use tonic::metadata::MetadataMap;

use crate::engine::Engine;
use crate::engine::auth::Authenticator;

pub use events::EventsApi;
pub use jobs::JobsApi;
pub use keys::KeysApi;
pub use queues::QueuesApi;
pub use schedules::SchedulesApi;
pub use state::StateApi;
pub use triggers::TriggersApi;
pub use worker::WorkerApi;

/// State shared by all handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Resolves API keys to namespaces.
    pub auth: Arc<Authenticator>,
    /// Per-namespace request rate limit; `None` = unlimited.
    pub limiter: Option<Arc<rate_limit::RateLimiter>>,
}

impl ApiState {
    /// Authenticates a request, applies the namespace's rate limit, and returns the
    /// namespace.
    pub async fn namespace(&self, metadata: &MetadataMap) -> Result<String, tonic::Status> {
        let bearer = bearer(metadata)?;
        let ns = self.auth.authenticate(bearer).await?;
        if let Some(l) = &self.limiter
            && let Err(wait) = l.check(&ns)
        {
            return Err(l.status(&ns, wait));
        }
        Ok(ns)
    }

    /// Authenticates a worker write made under a lease (heartbeat, step and run results,
    /// suspensions, logs) without applying the rate limit: these are bounded by the tasks
    /// the namespace's workers hold, and refusing them would turn a rate limit into lost
    /// work. Polls for new tasks are limited.
    pub async fn leased_namespace(&self, metadata: &MetadataMap) -> Result<String, tonic::Status> {
        let bearer = bearer(metadata)?;
        Ok(self.auth.authenticate(bearer).await?)
    }
}

impl ApiState {
    /// A future that completes with `UNAUTHENTICATED` once the request's key is revoked
    /// (never, for a request without a key). Long-polls race their wait against it, so a
    /// revoked key cannot keep receiving tasks, run updates or lock grants.
    pub fn revoked(
        &self,
        metadata: &MetadataMap,
    ) -> Result<impl std::future::Future<Output = tonic::Status> + Send + 'static, tonic::Status>
    {
        let secret = bearer(metadata)?.map(str::to_owned);
        let auth = self.auth.clone();
        Ok(async move {
            match secret {
                Some(s) => tonic::Status::from(auth.wait_revoked(&s).await),
                None => std::future::pending().await,
            }
        })
    }

    /// Runs a long-poll `wait` unless the request's key is revoked first.
    pub async fn until_revoked<T>(
        &self,
        metadata: &MetadataMap,
        wait: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let revoked = self.revoked(metadata)?;
        tokio::select! {
            r = wait => r,
            status = revoked => Err(status),
        }
    }
}

/// Extracts the key from `authorization: Bearer <key>`.
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, tonic::Status> {
    let Some(value) = metadata.get("authorization") else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        tonic::Status::unauthenticated("the authorization header is not valid ASCII")
    })?;
    let key = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            tonic::Status::unauthenticated("the authorization header must be `Bearer <key>`")
        })?
        .trim();
    if key.is_empty() {
        return Err(tonic::Status::unauthenticated("the bearer key is empty"));
    }
    Ok(Some(key))
}
