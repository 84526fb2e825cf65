//! Fuzzing entry points: decode raw bytes as a service's request messages and run the
//! same proto -> domain conversion and engine input validation the handlers run, without
//! a database or a network. Used by the cargo-fuzz targets in `fuzz/` and by the
//! `fuzz_smoke` test (the short CI run). Nothing here changes server behaviour: it only
//! calls the handlers' conversion functions and the engine's pure validators.
//!
//! Each entry takes the first byte of the input to pick the request type of its service
//! and decodes the rest with prost. A decode error or a validation error is an expected
//! answer; a panic, an overflow or a hang is a bug.

use prost::Message;
use stackshift_proto::v1 as pb;

use super::convert::{
    dur_ms, failure_from_pb, jobs_from_pb, opt, retry_from_pb, status_filter, ts_ms,
};
use super::event_convert::{event_filter_from_pb, wait_from_pb};
use super::obs_convert::logs_from_pb;
use crate::engine::validate_run_id;
use crate::engine::{schedule_spec, state, validate};

/// The services with a fuzzing entry, in the order of [`ALL`].
pub const SERVICES: [&str; 8] = [
    "jobs",
    "worker",
    "events",
    "queues",
    "schedules",
    "state",
    "triggers",
    "keys",
];

/// Every service's entry, in the order of [`SERVICES`].
pub const ALL: [fn(&[u8]); 8] = [
    jobs, worker, events, queues, schedules, state, triggers, keys,
];

/// Payload limit used for JSON validation (the server's default `--max-payload-bytes`).
const PAYLOAD_LIMIT: usize = 1024 * 1024;

/// Decodes `bytes` as `M`; `None` when prost refuses them (an expected outcome).
fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

/// Splits off the selector byte.
fn split(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(b, rest)| (*b, rest))
}

/// Runs the engine's name and JSON validators the way the engine runs them on a start.
fn job_and_payload(job: &str, payload: &[u8]) {
    let _ = validate::name("job", job);
    let _ = validate::json("payload", payload, PAYLOAD_LIMIT);
}

fn run_call(run: Option<pb::RunContext>) {
    if let Some(r) = super::state::run_call(run) {
        let _ = state::run_call("fuzz", r);
    }
}

/// `JobsService`: StartRun, GetRun, ListRuns, CancelRun, RetryRun, WatchRun.
pub fn jobs(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    match sel % 6 {
        0 => {
            let Some(r) = decode::<pb::StartRunRequest>(b) else {
                return;
            };
            let _ = dur_ms("idempotency_ttl", &r.idempotency_ttl);
            let _ = retry_from_pb(r.retry_policy);
            let _ = dur_ms("lease_timeout", &r.lease_timeout);
            let _ = dur_ms("delay", &r.delay);
            let _ = r.run_at.as_ref().map(|t| ts_ms("run_at", t));
            job_and_payload(&r.job, &r.payload);
            if let Some(q) = opt(r.queue) {
                let _ = validate::name("queue", &q);
            }
            if let Some(k) = opt(r.idempotency_key) {
                let _ = validate::text_id("idempotency_key", &k, validate::MAX_IDEMPOTENCY_KEY_LEN);
            }
        }
        1 => {
            let Some(r) = decode::<pb::GetRunRequest>(b) else {
                return;
            };
            let _ = dur_ms("wait", &r.wait);
            let _ = validate_run_id(&r.run_id);
        }
        2 => {
            let Some(r) = decode::<pb::ListRunsRequest>(b) else {
                return;
            };
            let _ = status_filter(r.status);
            let _ = r.created_after.as_ref().map(|t| ts_ms("created_after", t));
            let _ = r
                .created_before
                .as_ref()
                .map(|t| ts_ms("created_before", t));
        }
        3 => {
            let Some(r) = decode::<pb::CancelRunRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
        }
        4 => {
            let Some(r) = decode::<pb::RetryRunRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
        }
        _ => {
            let Some(r) = decode::<pb::WatchRunRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
        }
    }
}

/// `WorkerService`: PollTask, Heartbeat, CompleteStep, CompleteRun, FailRun, SuspendRun,
/// AppendLogs.
pub fn worker(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    match sel % 7 {
        0 => {
            let Some(r) = decode::<pb::PollTaskRequest>(b) else {
                return;
            };
            let _ = jobs_from_pb(r.jobs);
            let _ = dur_ms("wait", &r.wait);
            for q in &r.queues {
                let _ = validate::name("queues", q);
            }
        }
        1 => {
            let Some(r) = decode::<pb::HeartbeatRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
        }
        2 => {
            let Some(r) = decode::<pb::CompleteStepRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
            let _ = validate::text_id("step_id", &r.step_id, validate::MAX_STEP_ID_LEN);
        }
        3 => {
            let Some(r) = decode::<pb::CompleteRunRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
            let _ = validate::json("result", &r.result, PAYLOAD_LIMIT);
        }
        4 => {
            let Some(r) = decode::<pb::FailRunRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
            let _ = failure_from_pb("failure", r.failure);
        }
        5 => {
            let Some(r) = decode::<pb::SuspendRunRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
            let _ = validate::text_id("step_id", &r.step_id, validate::MAX_STEP_ID_LEN);
            let _ = wait_from_pb(r.wait);
        }
        _ => {
            let Some(r) = decode::<pb::AppendLogsRequest>(b) else {
                return;
            };
            let _ = validate_run_id(&r.run_id);
            let _ = logs_from_pb(r.entries);
        }
    }
}

/// `EventsService`: PublishEvent, ListEvents.
pub fn events(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    if sel % 2 == 0 {
        let Some(r) = decode::<pb::PublishEventRequest>(b) else {
            return;
        };
        let _ = validate::name("name", &r.name);
        let _ = validate::json("payload", &r.payload, PAYLOAD_LIMIT);
        if let Some(id) = opt(r.id) {
            let _ = validate::text_id("id", &id, validate::MAX_IDEMPOTENCY_KEY_LEN);
        }
    } else {
        let Some(r) = decode::<pb::ListEventsRequest>(b) else {
            return;
        };
        let _ = event_filter_from_pb(&r);
    }
}

/// `QueuesService`: UpsertQueue, GetQueue, ListQueues, PauseQueue, ResumeQueue.
pub fn queues(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    match sel % 5 {
        0 => {
            let Some(r) = decode::<pb::UpsertQueueRequest>(b) else {
                return;
            };
            let _ = validate::name("name", &r.name);
            let _ = super::queues::config_from_pb(r.config);
        }
        1 => {
            let Some(r) = decode::<pb::GetQueueRequest>(b) else {
                return;
            };
            let _ = validate::name("name", &r.name);
        }
        2 => {
            let _ = decode::<pb::ListQueuesRequest>(b);
        }
        3 => {
            let Some(r) = decode::<pb::PauseQueueRequest>(b) else {
                return;
            };
            let _ = validate::name("name", &r.name);
        }
        _ => {
            let Some(r) = decode::<pb::ResumeQueueRequest>(b) else {
                return;
            };
            let _ = validate::name("name", &r.name);
        }
    }
}

/// `ScheduleService`: CreateSchedule, GetSchedule, ListSchedules, PauseSchedule,
/// ResumeSchedule, DeleteSchedule.
pub fn schedules(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    match sel % 6 {
        0 => {
            let Some(r) = decode::<pb::CreateScheduleRequest>(b) else {
                return;
            };
            if let Ok(input) = super::schedules::create_input(r) {
                let _ = validate::name("schedule_id", &input.id);
                job_and_payload(&input.job, &input.payload);
                let _ = schedule_spec::compile(&input.spec);
            }
        }
        1 => {
            let Some(r) = decode::<pb::GetScheduleRequest>(b) else {
                return;
            };
            let _ = validate::name("schedule_id", &r.schedule_id);
        }
        2 => {
            let _ = decode::<pb::ListSchedulesRequest>(b);
        }
        3 => {
            let Some(r) = decode::<pb::PauseScheduleRequest>(b) else {
                return;
            };
            let _ = validate::name("schedule_id", &r.schedule_id);
        }
        4 => {
            let Some(r) = decode::<pb::ResumeScheduleRequest>(b) else {
                return;
            };
            let _ = validate::name("schedule_id", &r.schedule_id);
        }
        _ => {
            let Some(r) = decode::<pb::DeleteScheduleRequest>(b) else {
                return;
            };
            let _ = validate::name("schedule_id", &r.schedule_id);
        }
    }
}

/// `StateService`: GetState, SetState, DeleteState, IncrementState, ListStateKeys,
/// AcquireLock, ReleaseLock, ExtendLock.
pub fn state(data: &[u8]) {
    use super::state::ttl_ms;
    let Some((sel, b)) = split(data) else { return };
    match sel % 8 {
        0 => {
            let Some(r) = decode::<pb::GetStateRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            run_call(r.run);
        }
        1 => {
            let Some(r) = decode::<pb::SetStateRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            let _ = state::value(&r.value, state::DEFAULT_MAX_VALUE_BYTES);
            let _ = state::expected_version(r.expected_version);
            if let Some(e) = r.expiration {
                use pb::set_state_request::Expiration;
                match e {
                    Expiration::Ttl(d) => {
                        if let Ok(Some(ms)) = ttl_ms("ttl", &Some(d)) {
                            let _ = state::ttl("ttl", ms, state::MAX_TTL_MS);
                        }
                    }
                    Expiration::ExpiresAt(t) => {
                        if let Ok(at) = ts_ms("expires_at", &t) {
                            let _ = state::expires_at(at, 0);
                        }
                    }
                }
            }
            run_call(r.run);
        }
        2 => {
            let Some(r) = decode::<pb::DeleteStateRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            let _ = state::expected_version(r.expected_version);
            run_call(r.run);
        }
        3 => {
            let Some(r) = decode::<pb::IncrementStateRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            if let Ok(Some(ms)) = ttl_ms("ttl", &r.ttl) {
                let _ = state::ttl("ttl", ms, state::MAX_TTL_MS);
            }
            run_call(r.run);
        }
        4 => {
            let Some(r) = decode::<pb::ListStateKeysRequest>(b) else {
                return;
            };
            let _ = state::prefix("prefix", &r.prefix);
            let _ = state::prefix_upper_bound(&r.prefix);
            run_call(r.run);
        }
        5 => {
            let Some(r) = decode::<pb::AcquireLockRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            if let Ok(Some(ms)) = ttl_ms("ttl", &r.ttl) {
                let _ = state::ttl("ttl", ms, state::MAX_LOCK_TTL_MS);
            }
            let _ = dur_ms("wait", &r.wait);
            run_call(r.run);
        }
        6 => {
            let Some(r) = decode::<pb::ReleaseLockRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            let _ = state::token(r.fencing_token);
            run_call(r.run);
        }
        _ => {
            let Some(r) = decode::<pb::ExtendLockRequest>(b) else {
                return;
            };
            let _ = state::key("key", &r.key);
            let _ = state::token(r.fencing_token);
            if let Ok(Some(ms)) = ttl_ms("ttl", &r.ttl) {
                let _ = state::ttl("ttl", ms, state::MAX_LOCK_TTL_MS);
            }
            run_call(r.run);
        }
    }
}

/// `TriggerService`: CreateEventTrigger, ListEventTriggers, DeleteEventTrigger.
pub fn triggers(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    match sel % 3 {
        0 => {
            let Some(r) = decode::<pb::CreateEventTriggerRequest>(b) else {
                return;
            };
            let _ = validate::name("event_name", &r.event_name);
            let _ = validate::name("job", &r.job);
            let _ = retry_from_pb(r.retry_policy);
            let _ = dur_ms("lease_timeout", &r.lease_timeout);
        }
        1 => {
            let _ = decode::<pb::ListEventTriggersRequest>(b);
        }
        _ => {
            let Some(r) = decode::<pb::DeleteEventTriggerRequest>(b) else {
                return;
            };
            let _ = validate::text_id("trigger_id", &r.trigger_id, validate::MAX_NAME_LEN);
        }
    }
}

/// `KeysService`: CreateKey, ListKeys, RevokeKey.
pub fn keys(data: &[u8]) {
    let Some((sel, b)) = split(data) else { return };
    match sel % 3 {
        0 => {
            let Some(r) = decode::<pb::CreateKeyRequest>(b) else {
                return;
            };
            let _ = validate::name("namespace", &r.namespace);
            let _ = validate::name("name", &r.name);
        }
        1 => {
            let _ = decode::<pb::ListKeysRequest>(b);
        }
        _ => {
            let _ = decode::<pb::RevokeKeyRequest>(b);
        }
    }
}
