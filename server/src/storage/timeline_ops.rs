//! Timeline and log rows. Every transition of a run calls [`add`] once, inside the
//! transaction of the transition itself, so the timeline is exactly as durable and ordered
//! as the changes it describes. A run keeps at most `--max-timeline-entries` entries (its
//! `timeline_count` column counts them), then one truncation marker. Log lines are appended
//! under a lease with a per-run cap.
//!
//! The hot transitions (claims, batched step results, completions) count their entries in
//! their own `UPDATE runs` (`timeline_count = timeline_count + k ... RETURNING
//! timeline_count`) and hand them over with [`add_counted`], so a run row is not updated a
//! second time (on PostgreSQL every update writes a new row version) only to count them.
//!
//! Inside the group-commit writer ([`deferred`] scope) [`add`], [`add_many`] and
//! [`add_counted`] do not insert at once: they append to the batch's buffer, which the
//! writer admits and inserts just before the commit ([`flush`]), in the order the writes
//! added them: one `UPDATE runs ... FROM (VALUES ...) RETURNING` per 500 runs moves the
//! `timeline_count` of the runs with entries not counted yet (none in the common case),
//! then every run's entries take the positions after its counter's value before them, in
//! order, and are admitted under the cap; then one multi-row insert per 200 admitted
//! entries. A write whose savepoint rolls back drops its entries ([`mark`] /
//! [`rollback_to`]) before they are admitted, and its counter update with it. Nothing
//! reads the timeline or `timeline_count` inside a write transaction, so deferring them to
//! the end of the same transaction changes no outcome. Outside the writer every add counts
//! (or is counted already) and inserts at once.

use std::cell::RefCell;

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement, Value,
};

use crate::engine::lease::{self, Access};
use crate::engine::model::LeaseRef;
use crate::engine::obs_model::{
    AppendOutcome, LogLevel, LogRecord, MAX_LOG_BYTES_PER_RUN, MAX_LOG_LINES_PER_RUN, NewLog,
    TRUNCATED_LEVEL, TimelineKind, TimelineRecord,
};
use crate::engine::{EngineError, EngineResult};

use super::attempt_ops::add_to_run_counter;
use super::entities::{run_logs, run_timeline, runs};
use super::error::StorageError;
use super::pg_rows::{Rows, Ty, col, null};
use super::run_ops::load_run;
use super::{limits, notify};

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

/// Kinds written even past the cap: how a run ended.
fn exempt(kind: TimelineKind) -> bool {
    matches!(
        kind,
        TimelineKind::Completed | TimelineKind::Failed | TimelineKind::Cancelled
    )
}

/// What to write for `entry`, the `pos`-th (from 1) timeline entry of its run, under a cap
/// of `cap` entries: the entry itself up to the cap, one truncation marker instead of the
/// first entry past it, nothing after that, except that how a run ended is always written.
fn admit(entry: Entry, pos: i64, cap: i64, out: &mut Vec<Entry>) {
    if pos == cap + 1 {
        out.push(
            Entry::new(&entry.run_id, TimelineKind::TimelineTruncated, entry.at)
                .attempt(entry.attempt)
                .detail(serde_json::json!({
                    "max_timeline_entries": cap,
                    "message": format!(
                        "timeline truncated: the run reached its cap of {cap} timeline \
                         entries (--max-timeline-entries); later entries are dropped, \
                         except how the run ends"
                    ),
                })),
        );
    }
    if pos <= cap || exempt(entry.kind) {
        out.push(entry);
    }
}

/// Writes one timeline entry (call inside the transition's transaction), honouring the
/// run's timeline cap (inside the writer: counted and inserted with the batch's other
/// entries just before the commit).
pub async fn add<C: ConnectionTrait>(c: &C, entry: Entry) -> EngineResult<()> {
    add_many(c, vec![entry]).await
}

/// Writes the timeline entry of a new journal entry and counts both (outside the writer
/// one statement moves the run's `step_count` and `timeline_count`; inside it
/// `step_count` moves at once, so later writes of the batch see it, and the timeline entry
/// is deferred like [`add`]'s).
pub async fn add_counting_step<C: ConnectionTrait>(c: &C, entry: Entry) -> EngineResult<()> {
    if in_writer() {
        limits::count_steps(c, &entry.run_id, 1).await?;
        let _ = defer(vec![entry], false);
        return Ok(());
    }
    write(c, vec![entry], 1).await
}

/// Writes timeline entries (of one or several runs), honouring each run's timeline cap:
/// one `UPDATE ... RETURNING` per distinct number of entries per run (one for the usual
/// one entry per run) moves the runs' `timeline_count` and tells where each entry falls.
pub async fn add_many<C: ConnectionTrait>(c: &C, entries: Vec<Entry>) -> EngineResult<()> {
    match defer(entries, false) {
        Some(entries) => write(c, entries, 0).await,
        None => Ok(()),
    }
}

/// [`add_many`], also adding `steps` to the `step_count` of each run concerned.
async fn write<C: ConnectionTrait>(c: &C, entries: Vec<Entry>, steps: i64) -> EngineResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut per_run: Vec<(&str, i64)> = Vec::new();
    for e in &entries {
        match per_run.iter_mut().find(|(id, _)| *id == e.run_id) {
            Some((_, n)) => *n += 1,
            None => per_run.push((&e.run_id, 1)),
        }
    }
    let mut counts: Vec<i64> = per_run.iter().map(|(_, n)| *n).collect();
    counts.sort_unstable();
    counts.dedup();
    let mut before: HashMap<String, i64> = HashMap::with_capacity(per_run.len());
    for n in counts {
        let ids: Vec<&str> = per_run
            .iter()
            .filter(|(_, k)| *k == n)
            .map(|(id, _)| *id)
            .collect();
        for chunk in ids.chunks(500) {
            let mut stmt = Query::update();
            stmt.table(runs::Entity).value(
                runs::Column::TimelineCount,
                Expr::col(runs::Column::TimelineCount).add(n),
            );
            if steps != 0 {
                stmt.value(
                    runs::Column::StepCount,
                    Expr::col(runs::Column::StepCount).add(steps),
                );
            }
            stmt.and_where(runs::Column::Id.is_in(chunk.iter().copied()))
                .returning(
                    Query::returning().columns([runs::Column::Id, runs::Column::TimelineCount]),
                );
            for row in c.query_all(&stmt).await? {
                let id: String = row.try_get("", "id")?;
                let count: i64 = row.try_get("", "timeline_count")?;
                before.insert(id, count - n);
            }
        }
    }
    let cap = limits::current().max_timeline_entries;
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        let pos = before.entry(e.run_id.clone()).or_insert(0);
        *pos += 1;
        let pos = *pos;
        admit(e, pos, cap, &mut rows);
    }
    insert_now(c, &rows).await
}

/// Inserts entries already admitted under the cap (their run's `timeline_count` was moved
/// by the caller); deferred inside the writer, keeping their place among the batch's
/// entries.
pub async fn insert<C: ConnectionTrait>(c: &C, rows: Vec<Entry>) -> EngineResult<()> {
    match defer(rows, true) {
        Some(rows) => insert_now(c, &rows).await,
        None => Ok(()),
    }
}

tokio::task_local! {
    /// Timeline entries of the current group-commit batch, not counted nor inserted yet.
    static DEFERRED: RefCell<Vec<Pending>>;
}

/// How a buffered entry is counted in its run's `timeline_count`.
#[derive(Clone, Copy)]
enum Counted {
    /// Not yet: [`flush`] counts it.
    No,
    /// Counted and admitted already (the `created` entry of a run inserted with
    /// `timeline_count` 1).
    Admitted,
    /// Counted by the transition's own `UPDATE runs` (see [`add_counted`]), which left the
    /// counter at this value: admitted by [`flush`] without a statement of its own.
    At(i64),
}

/// A buffered timeline entry.
struct Pending {
    entry: Entry,
    counted: Counted,
    /// The timeline cap in force when it was added.
    cap: i64,
}

/// Runs `fut` (a writer task) with a deferred-timeline buffer: [`add`] and [`add_many`]
/// inside it buffer their entries until [`flush`]; also with the batch's notification
/// buffer (`notify::deferred`), which [`mark`] and [`rollback_to`] cover too.
pub async fn deferred<F: std::future::Future>(fut: F) -> F::Output {
    DEFERRED
        .scope(RefCell::new(Vec::new()), notify::deferred(fut))
        .await
}

/// A place in a batch's deferred work (timeline entries and notifications), see [`mark`];
/// the default is the batch's start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mark {
    timeline: usize,
    notices: usize,
}

/// True inside a [`deferred`] scope (the group-commit writer).
pub fn in_writer() -> bool {
    DEFERRED.try_with(|_| ()).is_ok()
}

/// The current end of the deferred buffers, to pass to [`rollback_to`] when the work
/// started now rolls back (the start outside a [`deferred`] scope).
pub fn mark() -> Mark {
    Mark {
        timeline: DEFERRED.try_with(|d| d.borrow().len()).unwrap_or(0),
        notices: notify::mark(),
    }
}

/// Drops the entries and notifications buffered since `mark` (their savepoint rolled back).
pub fn rollback_to(mark: Mark) {
    let _ = DEFERRED.try_with(|d| d.borrow_mut().truncate(mark.timeline));
    notify::rollback_to(mark.notices);
}

/// Buffers `entries` inside a [`deferred`] scope; gives them back outside one.
fn defer(entries: Vec<Entry>, counted: bool) -> Option<Vec<Entry>> {
    let counted = if counted {
        Counted::Admitted
    } else {
        Counted::No
    };
    defer_with(entries.into_iter().map(|e| (e, counted)).collect())
        .map(|v| v.into_iter().map(|(e, _)| e).collect())
}

fn defer_with(entries: Vec<(Entry, Counted)>) -> Option<Vec<(Entry, Counted)>> {
    let cap = limits::current().max_timeline_entries;
    let mut entries = Some(entries);
    let _ = DEFERRED.try_with(|d| {
        if let Some(e) = entries.take() {
            d.borrow_mut()
                .extend(e.into_iter().map(|(entry, counted)| Pending {
                    entry,
                    counted,
                    cap,
                }));
        }
    });
    entries
}

/// Writes timeline entries whose runs' `timeline_count` the transition's own
/// `UPDATE runs` already moved (`timeline_count = timeline_count + k ... RETURNING
/// timeline_count`), so no second update of the run row counts them: each entry comes with
/// its position, the run's counter right after counting it (the `k` entries of one run in
/// one transition: `count - k + 1` to `count`, in order). Admitted under the cap exactly as
/// [`add`]'s entries are (inside the writer at the flush, in the batch's order; outside it
/// at once).
pub async fn add_counted<C: ConnectionTrait>(
    c: &C,
    entries: Vec<(Entry, i64)>,
) -> EngineResult<()> {
    let entries = entries
        .into_iter()
        .map(|(e, pos)| (e, Counted::At(pos)))
        .collect();
    let Some(entries) = defer_with(entries) else {
        return Ok(());
    };
    let cap = limits::current().max_timeline_entries;
    let mut rows = Vec::with_capacity(entries.len());
    for (e, counted) in entries {
        if let Counted::At(pos) = counted {
            admit(e, pos, cap, &mut rows);
        }
    }
    insert_now(c, &rows).await
}

/// Counts (those not counted by their transitions), admits and inserts the buffered
/// entries (the writer calls this once per batch, before the commit), honouring each run's
/// timeline cap. A run's entries take consecutive positions in the order they were added,
/// after its counter's value before the first of them: the same positions whether their
/// transitions counted them or this flush does.
pub async fn flush<C: ConnectionTrait>(c: &C) -> EngineResult<()> {
    let pending = DEFERRED
        .try_with(|d| std::mem::take(&mut *d.borrow_mut()))
        .unwrap_or_default();
    if pending.is_empty() {
        return Ok(());
    }
    // Entries to count per run, and the entries their transitions counted already.
    let mut per_run: HashMap<&str, i64> = HashMap::new();
    // Per run: the position of its first entry counted by its transition, and how many.
    let mut folded: HashMap<&str, (i64, i64)> = HashMap::new();
    for p in &pending {
        match p.counted {
            Counted::No => *per_run.entry(p.entry.run_id.as_str()).or_insert(0) += 1,
            Counted::At(pos) => folded.entry(p.entry.run_id.as_str()).or_insert((pos, 0)).1 += 1,
            Counted::Admitted => {}
        }
    }
    let mut per_run: Vec<(&str, i64)> = per_run.into_iter().collect();
    // A stable order, so that concurrent writers lock the rows in the same order.
    per_run.sort_unstable();
    // Per run: its counter before the batch's entries to admit (counted here or by their
    // transitions), which take the next positions in the order they were added.
    let mut before: HashMap<String, i64> = HashMap::with_capacity(per_run.len() + folded.len());
    for chunk in per_run.chunks(COUNT_CHUNK) {
        for row in c
            .query_all_raw(add_to_run_counter(
                c.get_database_backend(),
                &["timeline_count"],
                chunk,
                true,
            )?)
            .await?
        {
            let id: String = row.try_get("", "id")?;
            let count: i64 = row.try_get("", "timeline_count")?;
            let n = chunk
                .binary_search_by(|(r, _)| (*r).cmp(id.as_str()))
                .map_or(0, |i| chunk[i].1);
            let earlier = folded.get(id.as_str()).map_or(0, |(_, k)| *k);
            before.insert(id, count - n - earlier);
        }
    }
    for (id, (first, _)) in folded {
        if !before.contains_key(id) {
            before.insert(id.to_owned(), first - 1);
        }
    }
    let mut rows = Vec::with_capacity(pending.len());
    for p in pending {
        if let Counted::Admitted = p.counted {
            rows.push(p.entry);
            continue;
        }
        let pos = before.entry(p.entry.run_id.clone()).or_insert(0);
        *pos += 1;
        let pos = *pos;
        admit(p.entry, pos, p.cap, &mut rows);
    }
    insert_now(c, &rows).await
}

/// Runs per counting statement of [`flush`] (2 bound values each).
const COUNT_CHUNK: usize = 500;

async fn insert_now<C: ConnectionTrait>(c: &C, entries: &[Entry]) -> EngineResult<()> {
    if c.get_database_backend() == DbBackend::Postgres {
        if !entries.is_empty() {
            c.execute_raw(pg_insert(entries)?).await?;
        }
        return Ok(());
    }
    for chunk in entries.chunks(200) {
        run_timeline::Entity::insert_many(chunk.iter().cloned().map(active))
            .exec_without_returning(c)
            .await?;
    }
    Ok(())
}

/// The PostgreSQL insert of `entries`: one text for every number of entries (`pg_rows`),
/// the rows inserted (their ids taken) in the order given.
fn pg_insert(entries: &[Entry]) -> EngineResult<Statement> {
    let mut rows = Rows::new(&[
        col("run_id", Ty::Text),
        col("at", Ty::Int8),
        col("kind", Ty::Text),
        col("attempt", Ty::Int4),
        null("step_id", Ty::Text),
        null("scheduled_at", Ty::Int8),
        null("detail", Ty::Text),
    ]);
    for e in entries {
        rows.push([
            Value::from(e.run_id.clone()),
            Value::from(e.at),
            Value::from(e.kind.as_str().to_owned()),
            Value::from(e.attempt),
            Value::from(e.step_id.clone()),
            Value::from(e.scheduled_at),
            Value::from(e.detail.as_ref().map(|d| d.to_string())),
        ]);
    }
    let mut values = Vec::new();
    let sql = format!(
        "INSERT INTO run_timeline (run_id, at, kind, attempt, step_id, scheduled_at, detail) \
         SELECT run_id, at, kind, attempt, step_id, scheduled_at, detail FROM {} AS v \
         ORDER BY ord",
        rows.relation(&mut values)?
    );
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        sql,
        values,
    ))
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
