//! The state store: durable JSON values by key with optional expiry, atomic counters,
//! compare-and-set, and locks with fencing tokens, scoped to the API key's namespace.
//!
//! [`State`] comes in two flavours with the same methods:
//! - [`StackShift::state`](crate::StackShift::state), outside runs: every call applies
//!   directly.
//! - `ctx.state` in a job handler ([`JobContext::state`](crate::JobContext)): every call is
//!   **journaled** like a step, under the run's lease. Calls get the ids `state:1`,
//!   `state:2`, ... in the order the handler makes them; when an attempt is retried, the
//!   replayed handler gets the recorded results back (an increment is never applied twice,
//!   a read returns what it read the first time). So make state calls in a deterministic
//!   order, as with steps, and do not run two of them concurrently inside one run. Step
//!   ids starting with `state:` are reserved.
//!
//! ```no_run
//! # async fn demo(client: stackshift::StackShift) -> Result<(), stackshift::Error> {
//! use serde::{Deserialize, Serialize};
//! use stackshift::SetOptions;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Progress { processed: u64, total: u64 }
//!
//! let state = client.state();
//! let key = "imports:imp_1:progress";
//! state.set(key, &Progress { processed: 100, total: 500 }, SetOptions::default()).await?;
//! let progress: Option<Progress> = state.get(key).await?;
//! if progress.is_some_and(|p| p.processed == p.total) {
//!     state.delete(key).await?;
//! }
//! state
//!     .set("webhooks:stripe:evt_123", &serde_json::json!({ "processed": true }),
//!          SetOptions::default().ttl("7d"))
//!     .await?;
//! let processed = state.increment("imports:imp_1:processed", 1).await?;
//! # let _ = processed;
//! # Ok(()) }
//! ```

mod lock;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::state_service_client::StateServiceClient;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::auth::AuthInterceptor;
use crate::client::with_timeout;
use crate::convert::{chrono_to_timestamp, duration_to_proto, timestamp_to_chrono};
use crate::duration::{IntoDuration, ParseDurationError};
use crate::worker::lease::{Lease, WRITE_TIMEOUT, WriteError, write};

pub use lock::{LockAttempt, LockGuard, LockOptions};

/// The generated `StateService` client, authenticated by the client's API key.
pub type StateClient = StateServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// Deadline of a state call that does not wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time on top of a lock wait before the client gives up on the call.
const WAIT_SLACK: Duration = Duration::from_secs(10);
/// The trailing metadata that names the reason of a state conflict.
pub(crate) const REASON_METADATA: &str = "stackshift-error-reason";

/// A live key with its value (see [`State::get_entry`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StateEntry<T> {
    /// The key.
    pub key: String,
    /// The value.
    pub value: T,
    /// The key's version: it grows with every write; pass it to
    /// [`SetOptions::expected_version`] for compare-and-set.
    pub version: i64,
    /// When the key expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was last written.
    pub updated_at: DateTime<Utc>,
}

/// A counter after [`State::increment_with_ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    /// The new value.
    pub value: i64,
    /// The key's new version.
    pub version: i64,
    /// When the key expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A live key in a listing (without its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateKey {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: i64,
    /// When it expires, if it does.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
    /// Size of its JSON value in bytes.
    pub value_size: i64,
}

/// One page of [`State::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys, in ascending byte order.
    pub keys: Vec<StateKey>,
    /// Pass to [`ListKeysOptions::page_token`] for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Options of [`State::set`]: expiry and compare-and-set.
#[derive(Debug, Clone, Default)]
pub struct SetOptions {
    ttl: Option<Result<Duration, ParseDurationError>>,
    expires_at: Option<DateTime<Utc>>,
    expected_version: Option<i64>,
}

impl SetOptions {
    /// The key expires this long from now (`"7d"`, `"1h"`, or a [`Duration`]). Replaces
    /// [`SetOptions::expires_at`].
    #[must_use]
    pub fn ttl(mut self, ttl: impl IntoDuration) -> Self {
        self.ttl = Some(ttl.into_duration());
        self.expires_at = None;
        self
    }

    /// The key expires at this instant. Replaces [`SetOptions::ttl`].
    #[must_use]
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self.ttl = None;
        self
    }

    /// Compare-and-set: write only if the key is at this version, else the call fails with
    /// [`Error::Conflict`] (reason `VERSION_MISMATCH`) and writes nothing.
    #[must_use]
    pub fn expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Write only if the key is absent (compare-and-set against "no key").
    #[must_use]
    pub fn if_absent(self) -> Self {
        self.expected_version(0)
    }
}

/// Options of [`State::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListKeysOptions {
    /// Keys per page (1-1000; default 100).
    pub page_size: Option<u32>,
    /// The `next_page_token` of the previous page.
    pub page_token: Option<String>,
}

impl ListKeysOptions {
    /// Sets the page size.
    #[must_use]
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }

    /// Continues after a previous page.
    #[must_use]
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = Some(token.into());
        self
    }
}

/// Access to the state store. Cheap to clone. See the [module docs](self) for the
/// difference between the client's `State` and a handler's `ctx.state`.
#[derive(Clone)]
pub struct State {
    client: Arc<StateClient>,
    run: Option<Arc<RunBinding>>,
}

/// The run a handler's `State` journals its calls in.
struct RunBinding {
    lease: Arc<Lease>,
    calls: AtomicU64,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("State");
        if let Some(run) = &self.run {
            d.field("run_id", &run.lease.run_id)
                .field("calls", &run.calls.load(Ordering::Relaxed));
        }
        d.finish_non_exhaustive()
    }
}

/// A state request that can carry a run context.
trait WithRun: Clone + Send + Sync + 'static {
    fn set_run(&mut self, run: pb::RunContext);
}

macro_rules! with_run {
    ($($t:ty),*) => {$(
        impl WithRun for $t {
            fn set_run(&mut self, run: pb::RunContext) {
                self.run = Some(run);
            }
        }
    )*};
}

with_run!(
    pb::GetStateRequest,
    pb::SetStateRequest,
    pb::DeleteStateRequest,
    pb::IncrementStateRequest,
    pb::ListStateKeysRequest,
    pb::AcquireLockRequest,
    pb::ReleaseLockRequest,
    pb::ExtendLockRequest
);

fn time(ts: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(timestamp_to_chrono)
}

fn required_time(ts: Option<&prost_types::Timestamp>, what: &str) -> Result<DateTime<Utc>, Error> {
    time(ts).ok_or_else(|| Error::protocol(format!("{what} is missing")))
}

/// True for a status that reports a state conflict rather than a lost lease.
pub(crate) fn is_conflict(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
        && status.metadata().get(REASON_METADATA).is_some()
}

impl State {
    /// Direct access (outside runs).
    pub(crate) fn direct(client: StateClient) -> Self {
        Self {
            client: Arc::new(client),
            run: None,
        }
    }

    /// Journaled access for one execution of a handler.
    pub(crate) fn for_run(client: StateClient, lease: Arc<Lease>) -> Self {
        Self {
            client: Arc::new(client),
            run: Some(Arc::new(RunBinding {
                lease,
                calls: AtomicU64::new(0),
            })),
        }
    }

    /// True for a handler's `ctx.state`, whose calls are journaled in the run.
    pub fn is_journaled(&self) -> bool {
        self.run.is_some()
    }

    /// Sends one call: directly, or (inside a run) with the next call id, retried while the
    /// lease lasts, and turning a lost lease into [`Error::Interrupted`].
    async fn invoke<Req, Resp, F, Fut>(
        &self,
        what: &'static str,
        mut request: Req,
        wait: Duration,
        send: F,
    ) -> Result<Resp, Error>
    where
        Req: WithRun,
        F: Fn(StateClient, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        // A waiting call (a lock wait) gets its wait on top of the usual deadline.
        let extra = if wait.is_zero() {
            Duration::ZERO
        } else {
            wait + WAIT_SLACK
        };
        let Some(run) = &self.run else {
            let timeout = CALL_TIMEOUT + extra;
            let response = send(
                StateClient::clone(&self.client),
                with_timeout(request, timeout),
            )
            .await?;
            return Ok(response.into_inner());
        };
        let timeout = WRITE_TIMEOUT + extra;
        let lease = &run.lease;
        let call_id = format!("state:{}", run.calls.fetch_add(1, Ordering::SeqCst) + 1);
        request.set_run(pb::RunContext {
            run_id: lease.run_id.clone(),
            lease_token: lease.token.clone(),
            call_id,
        });
        // Conflicts are answers, not lost leases: carry them through `write` as values.
        let outcome = write(lease, what, || {
            let call = send(
                StateClient::clone(&self.client),
                with_timeout(request.clone(), timeout),
            );
            async move {
                match call.await {
                    Ok(response) => Ok(tonic::Response::new(Ok(response.into_inner()))),
                    Err(status) if is_conflict(&status) => Ok(tonic::Response::new(Err(status))),
                    Err(status) => Err(status),
                }
            }
        })
        .await;
        match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(status)) | Err(WriteError::Rejected(status)) => Err(status.into()),
            Err(WriteError::Interrupted(interrupted)) => Err(Error::Interrupted(interrupted)),
            Err(WriteError::GaveUp(status)) => {
                lease.interrupt(format!(
                    "the server stayed unreachable until the lease expired ({})",
                    status.message()
                ));
                Err(Error::Interrupted(lease.interrupted_error()))
            }
        }
    }

    /// The value of `key` deserialized into `T`; `None` when the key is absent or expired.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        Ok(self.get_entry(key).await?.map(|e| e.value))
    }

    /// The entry of `key` (value, version, expiry); `None` when absent or expired.
    pub async fn get_entry<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<StateEntry<T>>, Error> {
        let request = pb::GetStateRequest {
            key: key.to_owned(),
            run: None,
        };
        let response = self
            .invoke("GetState", request, Duration::ZERO, |mut c, r| async move {
                c.get_state(r).await
            })
            .await?;
        let Some(entry) = response.entry else {
            return Ok(None);
        };
        Ok(Some(StateEntry {
            value: serde_json::from_slice(&entry.value)?,
            updated_at: required_time(entry.updated_at.as_ref(), "entry.updated_at")?,
            expires_at: time(entry.expires_at.as_ref()),
            version: entry.version,
            key: entry.key,
        }))
    }

    /// Writes `value` (any `Serialize`) to `key`; returns the key's new version. Without a
    /// TTL or expiry in `opts` the key never expires (a set replaces an earlier expiry).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        opts: SetOptions,
    ) -> Result<i64, Error> {
        let expiration = match (opts.ttl.transpose()?, opts.expires_at) {
            (Some(ttl), _) => Some(pb::set_state_request::Expiration::Ttl(duration_to_proto(
                ttl,
            ))),
            (None, Some(at)) => Some(pb::set_state_request::Expiration::ExpiresAt(
                chrono_to_timestamp(at),
            )),
            (None, None) => None,
        };
        let request = pb::SetStateRequest {
            key: key.to_owned(),
            value: serde_json::to_vec(value)?,
            expiration,
            expected_version: opts.expected_version,
            run: None,
        };
        let response = self
            .invoke("SetState", request, Duration::ZERO, |mut c, r| async move {
                c.set_state(r).await
            })
            .await?;
        Ok(response.version)
    }

    /// Deletes `key`; returns whether a live key was deleted.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.delete_request(key, None).await
    }

    /// Deletes `key` only if it is at `version` (else [`Error::Conflict`]).
    pub async fn delete_at_version(&self, key: &str, version: i64) -> Result<bool, Error> {
        self.delete_request(key, Some(version)).await
    }

    async fn delete_request(&self, key: &str, expected: Option<i64>) -> Result<bool, Error> {
        let request = pb::DeleteStateRequest {
            key: key.to_owned(),
            expected_version: expected,
            run: None,
        };
        let response = self
            .invoke(
                "DeleteState",
                request,
                Duration::ZERO,
                |mut c, r| async move { c.delete_state(r).await },
            )
            .await?;
        Ok(response.deleted)
    }

    /// Adds `by` (negative to subtract) to the integer counter at `key`, atomically, and
    /// returns the new value. An absent key counts as 0; a key holding anything but a JSON
    /// integer fails with [`Error::Conflict`] (reason `NOT_AN_INTEGER`).
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64, Error> {
        Ok(self.increment_request(key, by, None).await?.value)
    }

    /// Like [`State::increment`]; a key this call creates expires after `ttl` (a live key
    /// keeps its expiry), which makes fixed-window rate counters one call.
    pub async fn increment_with_ttl(
        &self,
        key: &str,
        by: i64,
        ttl: impl IntoDuration,
    ) -> Result<Counter, Error> {
        let ttl = ttl.into_duration()?;
        self.increment_request(key, by, Some(ttl)).await
    }

    async fn increment_request(
        &self,
        key: &str,
        by: i64,
        ttl: Option<Duration>,
    ) -> Result<Counter, Error> {
        let request = pb::IncrementStateRequest {
            key: key.to_owned(),
            by: Some(by),
            ttl: ttl.map(duration_to_proto),
            run: None,
        };
        let response = self
            .invoke(
                "IncrementState",
                request,
                Duration::ZERO,
                |mut c, r| async move { c.increment_state(r).await },
            )
            .await?;
        Ok(Counter {
            value: response.value,
            version: response.version,
            expires_at: time(response.expires_at.as_ref()),
        })
    }

    /// One page of the live keys starting with `prefix` (`""` for all), in byte order.
    pub async fn list(&self, prefix: &str, opts: ListKeysOptions) -> Result<KeyPage, Error> {
        let request = pb::ListStateKeysRequest {
            prefix: prefix.to_owned(),
            page_size: opts
                .page_size
                .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            page_token: opts.page_token.unwrap_or_default(),
            run: None,
        };
        let response = self
            .invoke(
                "ListStateKeys",
                request,
                Duration::ZERO,
                |mut c, r| async move { c.list_state_keys(r).await },
            )
            .await?;
        let keys = response
            .keys
            .into_iter()
            .map(|k| {
                Ok(StateKey {
                    updated_at: required_time(k.updated_at.as_ref(), "key.updated_at")?,
                    expires_at: time(k.expires_at.as_ref()),
                    version: k.version,
                    value_size: k.value_size,
                    key: k.key,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(KeyPage {
            keys,
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
        })
    }
}
