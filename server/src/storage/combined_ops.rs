//! Transactional bodies of `wait_for_any` / `wait_for_all` (see docs/events.md): starting
//! a combined wait (items that can resolve at once do, with the same inbox rules as single
//! event waits), resolving its items by a published event or by the timer, and deciding
//! when the whole wait ends.
//!
//! A combined wait is a `waits` row of kind `any` or `all` plus one `wait_items` row per
//! item (`idx` from 0) and, when the wait has a timeout, a row of kind `timeout` at `idx`
//! -1. `waits.wake_at` is the earliest unresolved sleep item or the timeout. One event is
//! consumed by at most one item of a wait (the lowest unresolved matching index).

use std::collections::BTreeSet;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::engine::EngineResult;
use crate::engine::event_model::{
    EventRecord, ItemSpec, ResumedRun, SLEEP_OUTPUT, TIMED_OUT_OUTPUT, WaitMode, all_output,
    any_output, event_output,
};
use crate::engine::model::{RunRecord, StepKind};
use crate::engine::obs_model::TimelineKind;

use super::entities::{wait_items, waits};
use super::event_ops;
use super::timeline_ops::{self, Entry as Tl};
use super::wait_ops;

const SLEEP: &str = "sleep";
const EVENT: &str = "event";
const TIMEOUT: &str = "timeout";
const TIMEOUT_IDX: i32 = -1;

/// What starting a combined wait did.
pub enum Started {
    /// The wait ended at once with this journal output.
    Resolved(String),
    /// The items are stored; the wait's row must be stored with this wake-up time.
    Pending(Option<i64>),
}

/// The mode of a stored wait kind.
pub fn mode_of(kind: &str) -> Option<WaitMode> {
    match kind {
        k if k == StepKind::Any.as_str() => Some(WaitMode::Any),
        k if k == StepKind::All.as_str() => Some(WaitMode::All),
        _ => None,
    }
}

/// Locks the match keys of the event items (PostgreSQL; see `event_ops::lock_match_key`).
pub async fn lock_keys<C: ConnectionTrait>(
    c: &C,
    namespace: &str,
    items: &[ItemSpec],
) -> EngineResult<()> {
    let keys: BTreeSet<(&str, &str)> = items
        .iter()
        .filter_map(|i| match i {
            ItemSpec::Event {
                name,
                correlation_key,
            } => Some((name.as_str(), correlation_key.as_str())),
            ItemSpec::Sleep { .. } => None,
        })
        .collect();
    for (name, key) in keys {
        event_ops::lock_match_key(c, namespace, name, key).await?;
    }
    Ok(())
}

/// Starts a combined wait of the leased `run`: resolves what can resolve now (for ANY, the
/// lowest index that can), and otherwise stores the items.
pub async fn start<C: ConnectionTrait>(
    c: &C,
    run: &RunRecord,
    step_id: &str,
    mode: WaitMode,
    items: &[ItemSpec],
    timeout_at: Option<i64>,
    now: i64,
) -> EngineResult<Started> {
    let mut outputs: Vec<Option<String>> = vec![None; items.len()];
    for (i, item) in items.iter().enumerate() {
        let out = match item {
            ItemSpec::Sleep { until } => (*until <= now).then(|| SLEEP_OUTPUT.to_owned()),
            ItemSpec::Event {
                name,
                correlation_key,
            } => {
                let found = event_ops::first_unconsumed(
                    c,
                    &run.namespace,
                    name,
                    correlation_key,
                    &run.id,
                    run.created_at,
                )
                .await?;
                match found {
                    Some(ev) => {
                        // Consumed now, so a later item of this wait takes the next event.
                        event_ops::record_consumptions(
                            c,
                            vec![(run.id.clone(), ev.seq, step_id.to_owned())],
                            now,
                        )
                        .await?;
                        Some(event_output(&ev))
                    }
                    None => None,
                }
            }
        };
        if let Some(o) = out {
            if mode == WaitMode::Any {
                return Ok(Started::Resolved(any_output(i, &o)));
            }
            outputs[i] = Some(o);
        }
    }
    if outputs.iter().all(Option::is_some) {
        return Ok(Started::Resolved(all_output(&outputs, false)));
    }
    if timeout_at.is_some_and(|t| t <= now) {
        return Ok(Started::Resolved(timed_out(mode, &outputs)));
    }
    let mut rows: Vec<wait_items::ActiveModel> = items
        .iter()
        .zip(&outputs)
        .enumerate()
        .map(|(i, (item, out))| {
            let (kind, name, key, wake) = match item {
                ItemSpec::Sleep { until } => (SLEEP, None, None, Some(*until)),
                ItemSpec::Event {
                    name,
                    correlation_key,
                } => (
                    EVENT,
                    Some(name.clone()),
                    Some(correlation_key.clone()),
                    None,
                ),
            };
            row(run, i as i32, kind, name, key, wake, out.clone())
        })
        .collect();
    if let Some(t) = timeout_at {
        rows.push(row(run, TIMEOUT_IDX, TIMEOUT, None, None, Some(t), None));
    }
    wait_items::Entity::insert_many(rows)
        .exec_without_returning(c)
        .await?;
    let wake_at = items
        .iter()
        .zip(&outputs)
        .filter_map(|(item, out)| match (item, out) {
            (ItemSpec::Sleep { until }, None) => Some(*until),
            _ => None,
        })
        .chain(timeout_at)
        .min();
    Ok(Started::Pending(wake_at))
}

fn row(
    run: &RunRecord,
    idx: i32,
    kind: &str,
    event_name: Option<String>,
    correlation_key: Option<String>,
    wake_at: Option<i64>,
    output: Option<String>,
) -> wait_items::ActiveModel {
    wait_items::ActiveModel {
        run_id: Set(run.id.clone()),
        idx: Set(idx),
        namespace: Set(run.namespace.clone()),
        kind: Set(kind.to_owned()),
        event_name: Set(event_name),
        correlation_key: Set(correlation_key),
        wake_at: Set(wake_at),
        run_created_at: Set(run.created_at),
        output: Set(output),
    }
}

fn timed_out(mode: WaitMode, outputs: &[Option<String>]) -> String {
    match mode {
        WaitMode::Any => TIMED_OUT_OUTPUT.to_owned(),
        WaitMode::All => all_output(outputs, true),
    }
}

/// The items of a run's combined wait, timeout row first, then by index.
async fn items_of<C: ConnectionTrait>(c: &C, run_id: &str) -> EngineResult<Vec<wait_items::Model>> {
    Ok(wait_items::Entity::find()
        .filter(wait_items::Column::RunId.eq(run_id))
        .order_by_asc(wait_items::Column::Idx)
        .all(c)
        .await?)
}

fn outputs_of(items: &[wait_items::Model]) -> Vec<Option<String>> {
    items
        .iter()
        .filter(|i| i.idx >= 0)
        .map(|i| i.output.clone())
        .collect()
}

async fn set_output<C: ConnectionTrait>(
    c: &C,
    run_id: &str,
    idx: i32,
    output: &str,
) -> EngineResult<()> {
    wait_items::Entity::update_many()
        .col_expr(wait_items::Column::Output, Expr::value(output))
        .filter(wait_items::Column::RunId.eq(run_id))
        .filter(wait_items::Column::Idx.eq(idx))
        .exec(c)
        .await?;
    Ok(())
}

/// The timer reached a combined wait (its `wake_at` is due): resolves due sleep items and
/// the timeout. Returns the journal output when the whole wait ended; otherwise moves the
/// wait's `wake_at` to its next instant.
pub async fn on_timer<C: ConnectionTrait>(
    c: &C,
    wait: &waits::Model,
    now: i64,
) -> EngineResult<Option<String>> {
    let Some(mode) = mode_of(&wait.kind) else {
        return Ok(None);
    };
    let mut items = items_of(c, &wait.run_id).await?;
    let due = |i: &wait_items::Model| {
        i.kind == SLEEP && i.output.is_none() && i.wake_at.is_some_and(|at| at <= now)
    };
    if mode == WaitMode::Any {
        if let Some(first) = items.iter().find(|i| due(i)) {
            return Ok(Some(any_output(first.idx as usize, SLEEP_OUTPUT)));
        }
    } else {
        for item in items.iter_mut().filter(|i| due(i)) {
            set_output(c, &item.run_id, item.idx, SLEEP_OUTPUT).await?;
            item.output = Some(SLEEP_OUTPUT.to_owned());
        }
        let outputs = outputs_of(&items);
        if outputs.iter().all(Option::is_some) {
            return Ok(Some(all_output(&outputs, false)));
        }
    }
    let timeout = items.iter().find(|i| i.idx == TIMEOUT_IDX);
    if timeout.is_some_and(|t| t.wake_at.is_some_and(|at| at <= now)) {
        return Ok(Some(timed_out(mode, &outputs_of(&items))));
    }
    let next = items
        .iter()
        .filter(|i| (i.kind == SLEEP && i.output.is_none()) || i.idx == TIMEOUT_IDX)
        .filter_map(|i| i.wake_at)
        .min();
    waits::Entity::update_many()
        .col_expr(waits::Column::WakeAt, Expr::value(next))
        .filter(waits::Column::RunId.eq(wait.run_id.as_str()))
        .exec(c)
        .await?;
    Ok(None)
}

/// Resolves the event items a just-stored `event` matches: per waiting run, the lowest
/// unresolved matching item takes it. Runs whose wait ended are resumed (returned).
pub async fn resolve_event_items<C: ConnectionTrait>(
    c: &C,
    event: &EventRecord,
    now: i64,
) -> EngineResult<Vec<ResumedRun>> {
    let mut ids: Vec<String> = wait_items::Entity::find()
        .select_only()
        .column(wait_items::Column::RunId)
        .filter(wait_items::Column::Namespace.eq(event.namespace.as_str()))
        .filter(wait_items::Column::Kind.eq(EVENT))
        .filter(wait_items::Column::EventName.eq(event.name.as_str()))
        .filter(wait_items::Column::CorrelationKey.eq(event.correlation_key.as_str()))
        .filter(wait_items::Column::Output.is_null())
        .filter(wait_items::Column::RunCreatedAt.lte(event.published_at))
        .into_tuple::<String>()
        .all(c)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    ids.sort();
    ids.dedup();
    let output = event_output(event);
    let mut ended = Vec::new();
    let mut timeline = Vec::new();
    for chunk in ids.chunks(300) {
        for (run, wait) in wait_ops::lock_waiting(c, chunk).await? {
            let Some(mode) = mode_of(&wait.kind) else {
                continue;
            };
            let mut items = items_of(c, &run.id).await?;
            let Some(item) = items.iter_mut().find(|i| {
                i.kind == EVENT
                    && i.output.is_none()
                    && i.event_name.as_deref() == Some(event.name.as_str())
                    && i.correlation_key.as_deref() == Some(event.correlation_key.as_str())
            }) else {
                continue;
            };
            let idx = item.idx;
            timeline.push(
                Tl::new(&run.id, TimelineKind::EventMatched, now)
                    .attempt(run.attempt)
                    .step(&wait.step_id)
                    .detail(serde_json::json!({
                        "event_id": event.id,
                        "event_name": event.name,
                        "item": idx,
                    })),
            );
            match mode {
                WaitMode::Any => {
                    let out = any_output(idx as usize, &output);
                    ended.push((run, wait, out, Some(event.seq)));
                }
                WaitMode::All => {
                    item.output = Some(output.clone());
                    set_output(c, &run.id, idx, &output).await?;
                    event_ops::record_consumptions(
                        c,
                        vec![(run.id.clone(), event.seq, wait.step_id.clone())],
                        now,
                    )
                    .await?;
                    let outputs = outputs_of(&items);
                    if outputs.iter().all(Option::is_some) {
                        ended.push((run, wait, all_output(&outputs, false), None));
                    }
                }
            }
        }
    }
    timeline_ops::add_many(c, timeline).await?;
    wait_ops::resume(c, ended, now).await
}

/// Deletes the items of the given runs' combined waits (their waits ended).
pub async fn delete_items<C: ConnectionTrait>(c: &C, run_ids: &[&str]) -> EngineResult<()> {
    if run_ids.is_empty() {
        return Ok(());
    }
    wait_items::Entity::delete_many()
        .filter(wait_items::Column::RunId.is_in(run_ids.iter().copied()))
        .exec(c)
        .await?;
    Ok(())
}
