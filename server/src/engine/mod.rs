//! Domain logic of StackShift: runs, attempts, leases, retries, idempotency, long-polls and
//! timers. This layer imports neither tonic nor sea_orm: it talks to storage through the
//! traits in [`store`] and is driven by the gRPC handlers in `crate::api`.

pub mod auth;
pub mod dispatcher;
pub mod error;
pub mod event_model;
pub mod event_ops;
pub mod history;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod obs_model;
pub mod obs_ops;
pub mod queue_model;
pub mod queue_ops;
pub mod requests;
pub mod retry;
pub mod schedule_model;
pub mod schedule_spec;
pub mod state;
pub mod store;
pub mod timer;
pub mod trigger_model;
pub mod validate;
pub mod watch;

mod client_ops;
mod handoff;
pub(crate) use client_ops::validate_run_id;
mod key_admin;
mod schedule_ops;
mod state_ops;
mod state_sweeper;
mod timer_loop;
mod trigger_ops;
mod wait_ops;
mod worker_ops;

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

pub use error::{EngineError, EngineResult};

use dispatcher::Dispatcher;
use model::RetryPolicy;
use store::Store;
use timer::Timer;
use watch::RunWatchers;

/// Limits and defaults of the engine. Documented in `docs/limits.md`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest payload, result or step output, in bytes.
    pub max_payload_bytes: usize,
    /// Lease timeout when neither the run nor the job sets one.
    pub default_lease_ms: i64,
    /// How long a poll blocks when the worker does not say.
    pub default_poll_wait_ms: i64,
    /// Longest a poll (or a `GetRun` wait) may block.
    pub max_poll_wait_ms: i64,
    /// Retry policy for fields a start leaves unset.
    pub default_retry: RetryPolicy,
    /// Idempotency TTL when the start gives none.
    pub default_idempotency_ttl_ms: i64,
    /// Longest idempotency TTL accepted.
    pub max_idempotency_ttl_ms: i64,
    /// Largest state-store value, in bytes.
    pub max_state_value_bytes: usize,
    /// How long events are kept (and deduplicated by id); older ones are deleted.
    pub event_retention_ms: i64,
    /// Per-run history caps (journal entries, timeline entries); the store enforces them.
    pub history: history::HistoryLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1024 * 1024,
            default_lease_ms: 30_000,
            default_poll_wait_ms: 30_000,
            max_poll_wait_ms: 60_000,
            default_retry: RetryPolicy::default(),
            default_idempotency_ttl_ms: 24 * 3_600_000,
            max_idempotency_ttl_ms: 365 * 24 * 3_600_000,
            max_state_value_bytes: state::DEFAULT_MAX_VALUE_BYTES,
            event_retention_ms: event_ops::DEFAULT_EVENT_RETENTION_MS,
            history: history::HistoryLimits::default(),
        }
    }
}

/// The engine clock: the wall clock read once (at the first call, i.e. at process start)
/// plus the monotonic time elapsed since then.
static CLOCK_ANCHOR: OnceLock<(i64, Instant)> = OnceLock::new();

/// The current engine time in milliseconds since the Unix epoch.
///
/// Every timer, timeout, lease, TTL, backoff and schedule in the engine reads this clock.
/// It is the wall clock sampled once per process plus a monotonic `Instant` elapsed since,
/// so a wall-clock jump (NTP step, operator `date -s`, VM resume) while the server runs
/// neither fires a timer early nor delays or drops one. A jump across a restart is seen at
/// the restart (docs/semantics.md, "Time").
pub fn now_ms() -> i64 {
    let (wall, mono) = CLOCK_ANCHOR.get_or_init(|| (wall_ms(), Instant::now()));
    wall + mono.elapsed().as_millis() as i64
}

/// Anchors the engine clock now (called once at server start, so the anchor is the start
/// time rather than the first request's).
pub fn init_clock() {
    let _ = now_ms();
}

/// The wall clock in milliseconds since the Unix epoch (only read to anchor [`now_ms`]).
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The engine: one per server process, shared by all handlers.
pub struct Engine {
    store: Arc<dyn Store>,
    config: EngineConfig,
    dispatcher: Arc<Dispatcher>,
    timer: Arc<Timer>,
    watchers: RunWatchers,
    state: state_sweeper::StateRuntime,
    shutdown: CancellationToken,
    metrics: metrics::Metrics,
}

impl Engine {
    /// Creates the engine over a store. Call [`Engine::spawn_background`] to start timers.
    pub fn new(store: Arc<dyn Store>, config: EngineConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            config,
            dispatcher: Dispatcher::new(),
            timer: Arc::new(Timer::default()),
            watchers: RunWatchers::default(),
            state: state_sweeper::StateRuntime::default(),
            shutdown: CancellationToken::new(),
            metrics: metrics::Metrics::default(),
        })
    }

    /// The store behind the engine.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The engine's limits.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Begins shutdown: open polls return empty at once and new polls return immediately.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Number of open long-polls.
    pub fn open_polls(&self) -> usize {
        self.dispatcher.waiting()
    }

    /// Wakes a poller for a run that became deliverable, or arms the timer for later.
    fn run_ready(&self, namespace: &str, queue: &str, job: &str, available_at: i64) {
        if available_at <= now_ms() {
            self.dispatcher.signal(namespace, queue, job);
        } else {
            self.timer.schedule(available_at);
        }
    }
}
