//! The storage contract the engine depends on. `storage::SqlStore` implements it for SQLite
//! and PostgreSQL; `storage::tests::run_tests` checks every implementation against it.
//!
//! Every write is atomic, and returns only once it is durable. Worker writes check the
//! lease with [`crate::engine::lease::check`] inside the same transaction.

use std::sync::Arc;

use async_trait::async_trait;

use super::error::EngineResult;
use super::event_model::{
    EventFilter, EventRecord, NewEvent, PublishOutcome, ResumedRun, SuspendOutcome, WaitSpec,
};
use super::model::{
    ApiKeyRecord, ClaimRequest, ClaimedTask, ExpiredLeases, FailOutcome, Failure, HeartbeatOutcome,
    LeaseRef, NewRun, NewStep, RunDetail, RunFilter, RunRecord, StartOutcome,
};
use super::queue_model::{ClaimOutcome, QueueConfig, QueueRecord, QueueStats};
use super::schedule_model::{NewSchedule, ScheduleFiring, ScheduleRecord};
use super::state::{StateCall, StateEntry, StateOutcome, StateResult};
use super::trigger_model::{TriggerDefinition, TriggerFilter, TriggerRecord};

/// Chooses the claims a write makes for parked polls, from what the write did so far (see
/// [`EventStore::publish_event_and_claim`]). Called inside the write's transaction, so it
/// must be quick and must not block; it may be called again when the write is retried.
pub type ClaimPicker = Arc<dyn Fn(&PublishOutcome) -> Vec<ClaimRequest> + Send + Sync>;

/// A hint from another server replica sharing the database (PostgreSQL LISTEN/NOTIFY).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// A run of `job` on `queue` became deliverable.
    Ready {
        /// Namespace.
        namespace: String,
        /// Queue.
        queue: String,
        /// Job.
        job: String,
    },
    /// Something becomes due at this instant (milliseconds).
    TimerAt(i64),
    /// A limited or paused queue may have room again (a lease was released, the queue was
    /// resumed or reconfigured): pollers held back on it should claim again.
    Capacity {
        /// Namespace.
        namespace: String,
        /// Queue.
        queue: String,
    },
    /// A state-store lock was released (explicitly, or because its run ended).
    LockReleased {
        /// Namespace.
        namespace: String,
        /// The lock's key.
        key: String,
    },
}

/// Durable storage of runs, attempts and steps.
#[async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Wakeups published by other replicas; `None` for a store no other server shares.
    fn subscribe(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Wakeup>> {
        None
    }
    /// Inserts a run, or returns the live run holding its idempotency key.
    async fn start_run(&self, new: NewRun) -> EngineResult<StartOutcome>;
    /// Reads a run of a namespace.
    async fn get_run(&self, namespace: &str, run_id: &str) -> EngineResult<Option<RunRecord>>;
    /// Reads a run with its attempts and steps.
    async fn get_run_detail(
        &self,
        namespace: &str,
        run_id: &str,
    ) -> EngineResult<Option<RunDetail>>;
    /// Lists runs newest first, after `cursor` (a run id), at most `limit`.
    async fn list_runs(
        &self,
        namespace: &str,
        filter: &RunFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<RunRecord>>;
    /// Claims up to `max_tasks` deliverable runs, oldest first, starting an attempt on each.
    async fn claim(&self, req: ClaimRequest) -> EngineResult<Vec<ClaimedTask>>;
    /// Extends a lease.
    async fn heartbeat(&self, lease: LeaseRef, now: i64) -> EngineResult<HeartbeatOutcome>;
    /// Records a step result; returns true when this step id was already recorded.
    async fn complete_step(&self, lease: LeaseRef, step: NewStep, now: i64) -> EngineResult<bool>;
    /// Completes the run with a result.
    async fn complete_run(
        &self,
        lease: LeaseRef,
        result: String,
        now: i64,
    ) -> EngineResult<RunRecord>;
    /// Records a failed attempt and schedules a retry or fails the run.
    async fn fail_run(
        &self,
        lease: LeaseRef,
        failure: Failure,
        now: i64,
    ) -> EngineResult<FailOutcome>;
    /// Cancels a queued, running or waiting run.
    async fn cancel_run(
        &self,
        namespace: &str,
        run_id: &str,
        reason: Failure,
        now: i64,
    ) -> EngineResult<RunRecord>;
    /// Queues a failed or cancelled run again with a fresh attempt budget.
    async fn retry_run(&self, namespace: &str, run_id: &str, now: i64) -> EngineResult<RunRecord>;
    /// Ends attempts whose lease expired at or before `now` (at most `limit`).
    async fn expire_leases(&self, now: i64, limit: u64) -> EngineResult<ExpiredLeases>;
    /// Queued runs that became deliverable in `(after, until]`: `(namespace, queue, job)`,
    /// one entry per run, oldest first, at most `limit`.
    async fn due_runs(
        &self,
        after: i64,
        until: i64,
        limit: u64,
    ) -> EngineResult<Vec<(String, String, String)>>;
    /// The earliest future instant the timer must act at: the next queued run becoming
    /// deliverable after `after`, the next lease expiry, or the next sleep or event-wait
    /// timeout.
    async fn next_due(&self, after: i64) -> EngineResult<Option<i64>>;
}

/// Durable storage of API keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Inserts a key record.
    async fn insert_key(&self, key: ApiKeyRecord) -> EngineResult<()>;
    /// Lists keys (revoked ones included).
    async fn list_keys(&self) -> EngineResult<Vec<ApiKeyRecord>>;
    /// Revokes a key by id; returns false when no active key has that id.
    async fn revoke_key(&self, id: &str, now: i64) -> EngineResult<bool>;
    /// Finds an active key by the hash of its secret.
    async fn find_active_key(&self, key_hash: &str) -> EngineResult<Option<ApiKeyRecord>>;
    /// Counts active keys.
    async fn count_active_keys(&self) -> EngineResult<u64>;
}

/// Durable storage of queue configurations, queue statistics and queue-aware claims.
#[async_trait]
pub trait QueueStore: Send + Sync + 'static {
    /// Creates a queue or replaces its configuration (and the pause switch when given).
    /// Returns the queue and whether it was created.
    async fn upsert_queue(
        &self,
        namespace: &str,
        name: &str,
        config: QueueConfig,
        paused: Option<bool>,
        now: i64,
    ) -> EngineResult<(QueueRecord, bool)>;
    /// Reads a queue.
    async fn get_queue(&self, namespace: &str, name: &str) -> EngineResult<Option<QueueRecord>>;
    /// Lists queues in name order after `cursor` (a name), at most `limit`.
    async fn list_queues(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<QueueRecord>>;
    /// Sets the pause switch of an existing queue; `None` when the queue does not exist.
    async fn set_queue_paused(
        &self,
        namespace: &str,
        name: &str,
        paused: bool,
        now: i64,
    ) -> EngineResult<Option<QueueRecord>>;
    /// Live counts of a queue at `now`.
    async fn queue_stats(&self, queue: &QueueRecord, now: i64) -> EngineResult<QueueStats>;
    /// Claims up to `max_tasks` deliverable runs from the request's queues: highest
    /// priority first, FIFO within a priority, queues taken in rotation so none starves
    /// another, skipping paused queues and honouring concurrency and rate limits.
    async fn claim_queued(&self, req: ClaimRequest) -> EngineResult<ClaimOutcome>;
    /// True when a queued run of the request's queues and jobs is deliverable at
    /// `req.now` (a read, outside the writer). When false, `claim_queued` would claim
    /// nothing and report no limit: a poll may sleep without a write transaction.
    async fn has_claimable(&self, req: &ClaimRequest) -> EngineResult<bool>;
    /// Starts a run exactly as [`RunStore::start_run`] does and, when that created a run
    /// deliverable now, claims for `req` (a parked poll) in the same transaction exactly as
    /// [`QueueStore::claim_queued`] would: one commit covers both. The claim is empty
    /// otherwise.
    async fn start_and_claim(
        &self,
        new: NewRun,
        req: ClaimRequest,
    ) -> EngineResult<(StartOutcome, ClaimOutcome)>;
}

/// Durable storage of the state store (keys, counters, locks).
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Reads a key that is live at `now` (not journaled; for calls outside runs).
    async fn state_get(
        &self,
        namespace: &str,
        key: &str,
        now: i64,
    ) -> EngineResult<Option<StateEntry>>;
    /// Lists keys live at `now` with `prefix`, in byte order, after `after`, at most
    /// `limit`; also returns the last key of the page when more follow.
    async fn state_list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u64,
        now: i64,
    ) -> EngineResult<StateResult>;
    /// Applies an operation atomically. With a run binding, the lease is checked and the
    /// outcome journaled in the same transaction, and a call id already journaled returns
    /// the recorded outcome without applying anything.
    async fn state_apply(&self, call: StateCall, now: i64) -> EngineResult<StateOutcome>;
    /// Deletes up to `limit` keys expired at `now` and up to `limit` rows of locks free at
    /// `now`; returns how many rows were deleted.
    async fn sweep_state(&self, now: i64, limit: u64) -> EngineResult<u64>;
    /// The earliest expiry of a key or a lock, if any.
    async fn next_state_expiry(&self) -> EngineResult<Option<i64>>;
}

/// Durable storage of events, waits and the event inbox (see `docs/events.md`).
///
/// On PostgreSQL, `publish_event` and an event `suspend_run` for the same
/// `(namespace, name, correlation key)` are serialized (a transaction-scoped advisory
/// lock), so under READ COMMITTED neither can miss the other: either the suspend sees the
/// event in the inbox, or the publish sees the stored wait.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores an event (nothing for a repeated id) and resolves every wait it matches:
    /// journals the event into each waiting run, records the consumption, deletes the wait
    /// and queues the run.
    async fn publish_event(&self, new: NewEvent) -> EngineResult<PublishOutcome>;
    /// Publishes exactly as [`EventStore::publish_event`] does and, in the same
    /// transaction, claims for each request `pick` returns for the outcome (parked polls
    /// the engine reserved for the runs the event resumed or started), each exactly as
    /// [`QueueStore::claim_queued`] would and in its own savepoint: one commit covers the
    /// publish and the claims. A claim that fails is empty (that poll then claims by
    /// itself); a duplicate event claims nothing. The claims answer `pick`'s requests in
    /// order (of its last call, when the write was retried).
    async fn publish_event_and_claim(
        &self,
        new: NewEvent,
        pick: ClaimPicker,
    ) -> EngineResult<(PublishOutcome, Vec<ClaimOutcome>)>;
    /// Lists events of a namespace newest first, below `cursor` (a `seq`), at most `limit`.
    async fn list_events(
        &self,
        namespace: &str,
        filter: &EventFilter,
        cursor: Option<i64>,
        limit: u64,
    ) -> EngineResult<Vec<EventRecord>>;
    /// Starts a sleep or an event wait under a lease: resolves it at once when possible
    /// (journaling the result), otherwise stores the wait and turns the run `waiting`.
    async fn suspend_run(
        &self,
        lease: LeaseRef,
        step_id: String,
        wait: WaitSpec,
        now: i64,
    ) -> EngineResult<SuspendOutcome>;
    /// Resolves up to `limit` waits whose sleep ended or whose event wait timed out at or
    /// before `now`, and queues their runs.
    async fn resolve_due_waits(&self, now: i64, limit: u64) -> EngineResult<Vec<ResumedRun>>;
    /// Deletes up to `limit` events published before `cutoff` (retention); returns how many.
    async fn sweep_events(&self, cutoff: i64, limit: u64) -> EngineResult<u64>;
}

/// Observability storage: log lines, incremental timeline reads and cheap gauges.
#[async_trait]
pub trait ObsStore: Send + Sync + 'static {
    /// Appends log lines under a lease, honouring the per-run cap.
    async fn append_logs(
        &self,
        lease: LeaseRef,
        lines: Vec<super::obs_model::NewLog>,
        now: i64,
    ) -> EngineResult<super::obs_model::AppendOutcome>;
    /// Queued runs per `(namespace, queue)` (for the queue-depth gauge).
    async fn queue_depths(&self) -> EngineResult<Vec<(String, String, i64)>>;
    /// Group-commit statistics so far.
    fn commit_stats(&self) -> super::obs_model::CommitStats;
}

/// Durable storage of schedules (see `docs/schedules.md`).
#[async_trait]
pub trait ScheduleStore: Send + Sync + 'static {
    /// Inserts a schedule, or returns the stored one with this id (and `false`).
    async fn insert_schedule(&self, new: NewSchedule) -> EngineResult<(ScheduleRecord, bool)>;
    /// Reads a schedule.
    async fn get_schedule(&self, namespace: &str, id: &str)
    -> EngineResult<Option<ScheduleRecord>>;
    /// Lists schedules in id order after `cursor` (an id), at most `limit`.
    async fn list_schedules(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<ScheduleRecord>>;
    /// Sets the pause switch (and, when given, the next fire time) of a schedule; `None`
    /// when it does not exist.
    async fn set_schedule_paused(
        &self,
        namespace: &str,
        id: &str,
        paused: bool,
        next_fire_at: Option<i64>,
        now: i64,
    ) -> EngineResult<Option<ScheduleRecord>>;
    /// Deletes a schedule; false when it did not exist.
    async fn delete_schedule(&self, namespace: &str, id: &str) -> EngineResult<bool>;
    /// Active schedules due at `now` (`next_fire_at <= now`), earliest first, at most `limit`.
    async fn due_schedules(&self, now: i64, limit: u64) -> EngineResult<Vec<ScheduleRecord>>;
    /// Applies a firing atomically: only if the schedule is active and its `next_fire_at`
    /// is still the expected one (else `None`: another replica fired it, or it was paused or
    /// deleted), advances it and starts the runs (idempotently) in the same transaction.
    async fn fire_schedule(
        &self,
        firing: ScheduleFiring,
    ) -> EngineResult<Option<Vec<StartOutcome>>>;
    /// The earliest `next_fire_at` of an active schedule.
    async fn next_schedule_fire(&self) -> EngineResult<Option<i64>>;
}

/// Durable storage of event triggers (see `docs/schedules.md`). The runs they start are
/// inserted by [`EventStore::publish_event`].
#[async_trait]
pub trait TriggerStore: Send + Sync + 'static {
    /// Inserts a trigger, or returns the stored one for the same (event name, correlation
    /// key, job) and `false`.
    async fn insert_trigger(
        &self,
        namespace: &str,
        id: &str,
        definition: TriggerDefinition,
        now: i64,
    ) -> EngineResult<(TriggerRecord, bool)>;
    /// Lists triggers in id order after `cursor` (an id), at most `limit`.
    async fn list_triggers(
        &self,
        namespace: &str,
        filter: &TriggerFilter,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<TriggerRecord>>;
    /// Deletes a trigger; false when it did not exist.
    async fn delete_trigger(&self, namespace: &str, id: &str) -> EngineResult<bool>;
    /// The triggers an event matches: same name, and no key or exactly its key.
    async fn matching_triggers(
        &self,
        namespace: &str,
        name: &str,
        correlation_key: &str,
    ) -> EngineResult<Vec<TriggerRecord>>;
}

/// Everything the engine needs from storage.
pub trait Store:
    RunStore + KeyStore + QueueStore + StateStore + EventStore + ObsStore + ScheduleStore + TriggerStore
{
}
impl<T> Store for T where
    T: RunStore
        + KeyStore
        + QueueStore
        + StateStore
        + EventStore
        + ObsStore
        + ScheduleStore
        + TriggerStore
{
}
