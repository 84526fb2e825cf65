//! The gRPC API: tonic handlers that convert protobuf messages to engine inputs and engine
//! errors to gRPC statuses. No domain logic lives here.

pub mod convert;
pub mod event_convert;
mod events;
mod jobs;
mod keys;
pub mod obs_convert;
mod queues;
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
}

impl ApiState {
    /// Authenticates a request and returns its namespace.
    pub async fn namespace(&self, metadata: &MetadataMap) -> Result<String, tonic::Status> {
        let bearer = bearer(metadata)?;
        Ok(self.auth.authenticate(bearer).await?)
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
