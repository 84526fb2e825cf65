//! Conversions between stored rows and domain records.

use crate::engine::model::{
    ApiKeyRecord, AttemptRecord, Failure, RetryPolicy, RunRecord, RunStatus, StepKind, StepRecord,
};

use super::entities::{api_keys, attempts, runs, steps};
use super::error::StorageError;

/// Encodes a failure for a `failure` column.
pub fn failure_to_text(f: &Failure) -> String {
    serde_json::to_string(f).unwrap_or_else(|_| "{}".to_owned())
}

fn failure_from_text(s: Option<String>) -> Result<Option<Failure>, StorageError> {
    s.map(|t| {
        serde_json::from_str(&t).map_err(|e| StorageError::Corrupt(format!("failure json: {e}")))
    })
    .transpose()
}

/// Decodes a `runs` row.
pub fn run_from_model(m: runs::Model) -> Result<RunRecord, StorageError> {
    let status = RunStatus::parse(&m.status)
        .ok_or_else(|| StorageError::Corrupt(format!("run {} has status {:?}", m.id, m.status)))?;
    Ok(RunRecord {
        status,
        failure: failure_from_text(m.failure)?,
        retry: RetryPolicy {
            max_attempts: m.max_attempts,
            initial_interval_ms: m.retry_initial_ms,
            backoff_coefficient: m.retry_coefficient,
            maximum_interval_ms: m.retry_max_ms,
        },
        id: m.id,
        namespace: m.namespace,
        job: m.job,
        queue: m.queue,
        payload: m.payload,
        result: m.result,
        attempt: m.attempt,
        max_attempts: m.max_attempts,
        lease_timeout_ms: m.lease_timeout_ms,
        effective_lease_ms: m.effective_lease_ms,
        lease_token: m.lease_token,
        lease_expires_at: m.lease_expires_at,
        worker_id: m.worker_id,
        available_at: m.available_at,
        idempotency_key: m.idempotency_key,
        created_at: m.created_at,
        updated_at: m.updated_at,
        finished_at: m.finished_at,
        priority: m.priority,
        concurrency_key: m.concurrency_key,
        parent_run_id: m.parent_run_id,
        parent_step_id: m.parent_step_id,
        step_count: m.step_count,
    })
}

/// Decodes an `attempts` row.
pub fn attempt_from_model(m: attempts::Model) -> Result<AttemptRecord, StorageError> {
    Ok(AttemptRecord {
        number: m.number,
        worker_id: m.worker_id,
        started_at: m.started_at,
        ended_at: m.ended_at,
        failure: failure_from_text(m.failure)?,
    })
}

/// Decodes a `steps` row.
pub fn step_from_model(m: steps::Model) -> Result<StepRecord, StorageError> {
    let kind = StepKind::parse(&m.kind)
        .ok_or_else(|| StorageError::Corrupt(format!("step kind {:?}", m.kind)))?;
    Ok(StepRecord {
        step_id: m.step_id,
        kind,
        attempt: m.attempt,
        output: m.output,
        failure: failure_from_text(m.failure)?,
        output_size: m.output_size,
        started_at: m.started_at,
        completed_at: m.completed_at,
    })
}

/// Decodes an `api_keys` row.
pub fn key_from_model(m: api_keys::Model) -> ApiKeyRecord {
    ApiKeyRecord {
        id: m.id,
        namespace: m.namespace,
        name: m.name,
        key_hash: m.key_hash,
        created_at: m.created_at,
        revoked_at: m.revoked_at,
        admin: m.admin,
    }
}
