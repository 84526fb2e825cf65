//! The job registry: typed handlers (`async fn(JobContext<P>) -> anyhow::Result<R>`) are
//! erased into one boxed signature that takes the raw payload bytes and yields the raw
//! result bytes, so the worker can hold handlers of many payload and result types.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{JobContext, Step};
use crate::non_retryable;
use crate::options::JobOptions;

/// Everything a handler invocation needs, before the payload is decoded.
pub(crate) struct Invocation {
    pub(crate) payload: Vec<u8>,
    pub(crate) step: Step,
    pub(crate) state: crate::State,
    pub(crate) run_id: String,
    pub(crate) job: String,
    pub(crate) queue: String,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
}

/// How a handler invocation ended.
pub(crate) enum HandlerOutcome {
    /// The handler returned; the result serialized as JSON.
    Completed(Vec<u8>),
    /// The handler (or serializing its result) failed.
    Failed(anyhow::Error),
    /// The payload does not deserialize into the handler's payload type.
    BadPayload(String),
}

/// A type-erased handler.
pub(crate) type ErasedHandler =
    Arc<dyn Fn(Invocation) -> BoxFuture<'static, HandlerOutcome> + Send + Sync>;

/// A job registered on a worker.
#[derive(Clone)]
pub(crate) struct RegisteredJob {
    pub(crate) options: JobOptions,
    pub(crate) handler: ErasedHandler,
}

/// Jobs by name, in registration order for stable `PollTask` requests.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    jobs: HashMap<String, RegisteredJob>,
    order: Vec<String>,
}

impl Registry {
    /// Registers (or replaces) a job.
    pub(crate) fn insert(&mut self, name: String, job: RegisteredJob) {
        if self.jobs.insert(name.clone(), job).is_some() {
            tracing::warn!(job = %name, "job registered twice; the last handler wins");
        } else {
            self.order.push(name);
        }
    }

    /// The job's registration.
    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredJob> {
        self.jobs.get(name)
    }

    /// Names and options, in registration order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &RegisteredJob)> {
        self.order
            .iter()
            .filter_map(|name| self.jobs.get(name).map(|job| (name.as_str(), job)))
    }
}

/// Erases a typed handler.
pub(crate) fn erase<P, R, F, Fut>(handler: F) -> ErasedHandler
where
    F: Fn(JobContext<P>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<R>> + Send + 'static,
    P: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |invocation: Invocation| {
        let handler = Arc::clone(&handler);
        Box::pin(async move {
            let bytes: &[u8] = if invocation.payload.is_empty() {
                b"null"
            } else {
                &invocation.payload
            };
            let payload: P = match serde_json::from_slice(bytes) {
                Ok(payload) => payload,
                Err(e) => {
                    return HandlerOutcome::BadPayload(format!(
                        "payload does not match job {}: {e}",
                        invocation.job
                    ));
                }
            };
            let log = invocation.step.logger();
            let ctx = JobContext {
                log,
                payload,
                step: invocation.step,
                state: invocation.state,
                run_id: invocation.run_id,
                attempt: invocation.attempt,
                max_attempts: invocation.max_attempts,
                job: invocation.job,
                queue: invocation.queue,
            };
            let job = ctx.job.clone();
            match handler(ctx).await {
                Ok(result) => match serde_json::to_vec(&result) {
                    Ok(bytes) => HandlerOutcome::Completed(bytes),
                    Err(e) => HandlerOutcome::Failed(non_retryable(format!(
                        "could not serialize the result of job {job}: {e}"
                    ))),
                },
                Err(error) => HandlerOutcome::Failed(error),
            }
        })
    })
}
