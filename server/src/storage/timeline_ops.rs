//! Timeline and log rows. Every transition of a run calls [`add`] once, inside the
//! transaction of the transition itself, so the timeline is exactly as durable and ordered
//! as the changes it describes. Log lines are appended under a lease with a per-run cap.
//!
//! Inside the group-commit writer ([`deferred`] scope) [`add`] and [`add_many`] do not
//! insert at once: they append to the batch's buffer, which the writer inserts with one
//! multi-row statement per 200 entries just before the commit ([`flush`]), in the order
//! the writes added them. A write whose savepoint rolls back drops its entries
//! ([`mark`] / [`rollback_to`]). Nothing reads the timeline inside a write transaction,
//! so deferring the inserts to the end of the same transaction changes no outcome.

use std::cell::RefCell;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::engine::lease::{self, Access};
use crate::engine::model::LeaseRef;
use crate::engine::obs_model::{
    AppendOutcome, LogLevel, LogRecord, MAX_LOG_BYTES_PER_RUN, MAX_LOG_LINES_PER_RUN, NewLog,
    TRUNCATED_LEVEL, TimelineKind, TimelineRecord,
};
use crate::engine::{EngineError, EngineResult};

use super::entities::{run_logs, run_timeline};
use super::error::StorageError;
use super::run_ops::load_run;

/// A timeline entry to write.
#[derive(Debug, Clone)]
pub struct Entry {
    run_id: String,
    at: i64,
    kind: TimelineKind,
    attempt: i32,
    step_id: Option<String>,
    scheduled_at: Option<i64>,
    detail: Option<serde_json::Value>,
}

impl Entry {
    /// An entry of `kind` for a run at `at`.
    pub fn new(run_id: &str, kind: TimelineKind, at: i64) -> Self {
        Self {
            run_id: run_id.to_owned(),
            at,
            kind,
            attempt: 0,
            step_id: None,
            scheduled_at: None,
            detail: None,
        }
    }

    /// Sets the attempt number.
    pub fn attempt(mut self, n: i32) -> Self {
        self.attempt = n;
        self
    }

    /// Sets the step.
    pub fn step(mut self, step_id: &str) -> Self {
        self.step_id = Some(step_id.to_owned());
        self
    }

    /// Sets the scheduled instant (retry due time, wait wake time).
    pub fn scheduled(mut self, at: i64) -> Self {
        self.scheduled_at = Some(at);
        self
    }

    /// Sets the scheduled instant when there is one.
    pub fn scheduled_opt(mut self, at: Option<i64>) -> Self {
        self.scheduled_at = at;
        self
    }

    /// Sets the JSON detail (no payloads, results or outputs).
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

fn active(e: Entry) -> run_timeline::ActiveModel {
    run_timeline::ActiveModel {
        run_id: Set(e.run_id),
        at: Set(e.at),
        kind: Set(e.kind.as_str().to_owned()),
        attempt: Set(e.attempt),
        step_id: Set(e.step_id),
        scheduled_at: Set(e.scheduled_at),
        detail: Set(e.detail.map(|d| d.to_string())),
        ..Default::default()
    }
}

tokio::task_local! {
    /// Timeline entries of the current group-commit batch, not inserted yet.
    static DEFERRED: RefCell<Vec<Entry>>;
}

/// Runs `fut` (a writer task) with a deferred-timeline buffer: [`add`] and [`add_many`]
/// inside it buffer their entries until [`flush`].
pub async fn deferred<F: std::future::Future>(fut: F) -> F::Output {
    DEFERRED.scope(RefCell::new(Vec::new()), fut).await
}

/// True inside a [`deferred`] scope (the group-commit writer).
pub fn in_writer() -> bool {
    DEFERRED.try_with(|_| ()).is_ok()
}

/// The current length of the deferred buffer, to pass to [`rollback_to`] when the work
/// started now rolls back (0 outside a [`deferred`] scope).
pub fn mark() -> usize {
    DEFERRED.try_with(|d| d.borrow().len()).unwrap_or(0)
}

/// Drops the entries buffered since `mark` (their savepoint rolled back).
pub fn rollback_to(mark: usize) {
    let _ = DEFERRED.try_with(|d| d.borrow_mut().truncate(mark));
}

/// Takes the buffered entries (empty outside a [`deferred`] scope).
fn take_deferred() -> Vec<Entry> {
    DEFERRED
        .try_with(|d| std::mem::take(&mut *d.borrow_mut()))
        .unwrap_or_default()
}

/// Inserts the buffered entries (the writer calls this once per batch, before the
/// commit). Returns how many statements it ran.
pub async fn flush<C: ConnectionTrait>(c: &C) -> EngineResult<u64> {
    let entries = take_deferred();
    insert_now(c, &entries).await
}

async fn insert_now<C: ConnectionTrait>(c: &C, entries: &[Entry]) -> EngineResult<u64> {
    let mut statements = 0;
    for chunk in entries.chunks(200) {
        run_timeline::Entity::insert_many(chunk.iter().cloned().map(active))
            .exec_without_returning(c)
            .await?;
        statements += 1;
    }
    Ok(statements)
}

/// Writes one timeline entry (call inside the transition's transaction; inside the
/// writer it is inserted with the batch's other entries just before the commit).
pub async fn add<C: ConnectionTrait>(c: &C, entry: Entry) -> EngineResult<()> {
    add_many(c, vec![entry]).await
}

/// Writes several timeline entries at once (deferred like [`add`] inside the writer).
pub async fn add_many<C: ConnectionTrait>(c: &C, entries: Vec<Entry>) -> EngineResult<()> {
    let mut entries = Some(entries);
    let _ = DEFERRED.try_with(|d| {
        if let Some(e) = entries.take() {
            d.borrow_mut().extend(e);
        }
    });
    if let Some(entries) = entries {
        insert_now(c, &entries).await?;
    }
    Ok(())
}

/// A run's timeline entries after `after` (an entry id), oldest first.
pub async fn load<C: ConnectionTrait>(
    c: &C,
    run_id: &str,
    after: i64,
) -> EngineResult<Vec<TimelineRecord>> {
    run_timeline::Entity::find()
        .filter(run_timeline::Column::RunId.eq(run_id))
        .filter(run_timeline::Column::Id.gt(after))
        .order_by_asc(run_timeline::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(|m| {
            Ok(TimelineRecord {
                id: m.id,
                at: m.at,
                kind: TimelineKind::parse(&m.kind)
                    .ok_or_else(|| StorageError::Corrupt(format!("timeline kind {:?}", m.kind)))?,
                attempt: m.attempt,
                step_id: m.step_id,
                scheduled_at: m.scheduled_at,
                detail: m.detail,
            })
        })
        .collect()
}

/// A run's log lines after `after` (a line id), oldest first.
pub async fn load_logs<C: ConnectionTrait>(
    c: &C,
    run_id: &str,
    after: i64,
) -> EngineResult<Vec<LogRecord>> {
    Ok(run_logs::Entity::find()
        .filter(run_logs::Column::RunId.eq(run_id))
        .filter(run_logs::Column::Id.gt(after))
        .order_by_asc(run_logs::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(|m| LogRecord {
            id: m.id,
            truncated: m.level == TRUNCATED_LEVEL,
            level: LogLevel::parse(&m.level),
            message: m.message,
            fields: m.fields,
            step_id: m.step_id,
            at: m.at,
            attempt: m.attempt,
        })
        .collect())
}

/// Appends log lines of the attempt holding `lease`. The run keeps at most
/// [`MAX_LOG_LINES_PER_RUN`] lines and [`MAX_LOG_BYTES_PER_RUN`] bytes; the first line
/// over the cap is replaced by one truncation marker (and a `logs_truncated` timeline
/// entry), and every later line is dropped. Counting reads at most the capped rows' sizes.
pub async fn append_logs<C: ConnectionTrait>(
    c: &C,
    lease: LeaseRef,
    lines: Vec<NewLog>,
    now: i64,
) -> EngineResult<AppendOutcome> {
    let run = load_run(c, &lease.namespace, &lease.run_id)
        .await?
        .ok_or_else(|| EngineError::run_not_found(&lease.run_id))?;
    lease::check(&run, &lease.token, now, Access::Write)?;
    let (count, bytes, truncated): (i64, Option<i64>, Option<i64>) = run_logs::Entity::find()
        .select_only()
        .column_as(Expr::cust("CAST(COUNT(*) AS BIGINT)"), "count")
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(size), 0) AS BIGINT)"),
            "bytes",
        )
        .column_as(
            Expr::cust(format!(
                "CAST(COALESCE(SUM(CASE WHEN level = '{TRUNCATED_LEVEL}' THEN 1 ELSE 0 END), 0) \
                 AS BIGINT)"
            )),
            "truncated",
        )
        .filter(run_logs::Column::RunId.eq(run.id.as_str()))
        .into_tuple()
        .one(c)
        .await?
        .unwrap_or((0, None, None));
    let mut lines_used = count;
    let mut bytes_used = bytes.unwrap_or(0);
    let mut marked = truncated.unwrap_or(0) > 0;
    let mut out = AppendOutcome::default();
    let mut rows = Vec::with_capacity(lines.len());
    for line in lines {
        if marked {
            out.dropped += 1;
            continue;
        }
        let size = line.size();
        if lines_used >= MAX_LOG_LINES_PER_RUN || bytes_used + size > MAX_LOG_BYTES_PER_RUN {
            marked = true;
            out.dropped += 1;
            rows.push(run_logs::ActiveModel {
                run_id: Set(run.id.clone()),
                attempt: Set(run.attempt),
                step_id: Set(line.step_id.clone()),
                at: Set(now),
                level: Set(TRUNCATED_LEVEL.to_owned()),
                message: Set(format!(
                    "log truncated: the run reached its cap of {MAX_LOG_LINES_PER_RUN} lines \
                     or {MAX_LOG_BYTES_PER_RUN} bytes; later lines are dropped"
                )),
                fields: Set(None),
                size: Set(0),
                ..Default::default()
            });
            add(
                c,
                Entry::new(&run.id, TimelineKind::LogsTruncated, now).attempt(run.attempt),
            )
            .await?;
            continue;
        }
        lines_used += 1;
        bytes_used += size;
        out.accepted += 1;
        rows.push(run_logs::ActiveModel {
            run_id: Set(run.id.clone()),
            attempt: Set(run.attempt),
            step_id: Set(line.step_id),
            at: Set(line.at),
            level: Set(line.level.as_str().to_owned()),
            message: Set(line.message),
            fields: Set(line.fields),
            size: Set(size),
            ..Default::default()
        });
    }
    for chunk in rows.chunks(200) {
        run_logs::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(c)
            .await?;
    }
    Ok(out)
}
