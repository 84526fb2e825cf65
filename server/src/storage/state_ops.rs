//! Transactional bodies of the state store: keys, counters and locks, the journaling of
//! calls made from inside a run, the release of run-tied locks, and the sweeper. Each write
//! runs inside one savepoint of a group commit (see `writer`). Rows are read with
//! `FOR UPDATE` on PostgreSQL (SQLite has one writer), and rows that may be created
//! concurrently are inserted with `ON CONFLICT DO NOTHING` and read again, so concurrent
//! writers on several connections or replicas never lose an update.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Expr, LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::engine::lease::{self, Access};
use crate::engine::model::StepKind;
use crate::engine::state::{
    self, ConflictReason, JournaledCall, StateCall, StateConflict, StateEntry, StateKeyInfo,
    StateOp, StateOutcome, StateResult,
};
use crate::engine::store::Wakeup;
use crate::engine::{EngineError, EngineResult};

use super::entities::{
    state_entries as entries, state_lock_floors as floors, state_locks as locks, steps,
};
use super::limits::{self, Limited};
use super::notify;
use super::run_ops::load_run;

/// A state-dependent outcome: the result, or a refusal that is still journaled.
type Outcome = Result<StateResult, StateConflict>;

/// The expiry of a deleted key's row until the sweeper removes it.
pub const DELETED_EXPIRY: i64 = 0;

/// How often a write retries when a row it expected appeared or vanished concurrently.
const RACE_RETRIES: usize = 4;

fn raced(what: &str) -> EngineError {
    EngineError::Unavailable(format!("{what} changed concurrently; retry"))
}

fn is_live(expires_at: Option<i64>, now: i64) -> bool {
    expires_at.is_none_or(|at| at > now)
}

fn live_filter(now: i64) -> Condition {
    Condition::any()
        .add(entries::Column::ExpiresAt.is_null())
        .add(entries::Column::ExpiresAt.gt(now))
}

fn entry_of(m: entries::Model) -> StateEntry {
    StateEntry {
        key: m.key,
        value: m.value,
        version: m.version,
        expires_at: m.expires_at,
        updated_at: m.updated_at,
    }
}

/// Applies a call: with a run binding, checks the lease, replays a journaled call id, or
/// applies the operation and journals its outcome, all in the caller's transaction. A new
/// journal entry past the step limit fails the run instead (see [`limits::check_steps`]).
pub async fn apply<C: ConnectionTrait>(
    c: &C,
    call: StateCall,
    now: i64,
) -> EngineResult<Limited<StateOutcome>> {
    let StateCall { namespace, op, run } = call;
    let mut journal = None;
    if let Some(rc) = &run {
        let run = load_run(c, &namespace, &rc.lease.run_id)
            .await?
            .ok_or_else(|| EngineError::run_not_found(&rc.lease.run_id))?;
        lease::check(&run, &rc.lease.token, now, Access::Write)?;
        let recorded = steps::Entity::find_by_id((run.id.clone(), rc.call_id.clone()))
            .one(c)
            .await?;
        if let Some(row) = recorded {
            if row.kind != StepKind::State.as_str() {
                return Err(EngineError::invalid(format!(
                    "journal id {:?} of run {} already holds a {} entry; state calls need ids \
                     of their own (the SDKs use state:1, state:2, ...)",
                    rc.call_id, run.id, row.kind
                )));
            }
            let rec: JournaledCall = serde_json::from_str(row.output.as_deref().unwrap_or(""))
                .map_err(|e| {
                    EngineError::Storage(format!("journal entry {} is corrupt: {e}", rc.call_id))
                })?;
            return Ok(Ok(StateOutcome {
                result: rec.replay(&op, &rc.call_id)?,
                replayed: true,
            }));
        }
        if let Some(hit) = limits::check_steps(c, &run, now).await? {
            return Ok(Err(hit));
        }
        journal = Some((run, rc.call_id.clone()));
    }
    let run_id = journal.as_ref().map(|(r, _)| r.id.as_str());
    let result = apply_op(c, &namespace, &op, run_id, now).await?;
    if let Some((run, call_id)) = journal {
        let unjournaled_busy = matches!(
            (&op, &result),
            (
                StateOp::Acquire {
                    journal_busy: false,
                    ..
                },
                Ok(StateResult::Busy { .. })
            )
        );
        if !unjournaled_busy {
            let output = serde_json::to_string(&JournaledCall::new(&op, &result))
                .map_err(|e| EngineError::Storage(format!("encoding a journal entry: {e}")))?;
            steps::Entity::insert(steps::ActiveModel {
                run_id: Set(run.id.clone()),
                step_id: Set(call_id),
                kind: Set(StepKind::State.as_str().to_owned()),
                attempt: Set(run.attempt),
                output_size: Set(output.len() as i64),
                output: Set(Some(output)),
                failure: Set(None),
                started_at: Set(None),
                completed_at: Set(now),
            })
            .exec_without_returning(c)
            .await?;
            limits::count_steps(c, &run.id, 1).await?;
        }
    }
    Ok(Ok(StateOutcome {
        result,
        replayed: false,
    }))
}

async fn apply_op<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    op: &StateOp,
    run_id: Option<&str>,
    now: i64,
) -> EngineResult<Outcome> {
    match op {
        StateOp::Get { key } => Ok(Ok(StateResult::Entry {
            entry: get(c, ns, key, now).await?,
        })),
        StateOp::List {
            prefix,
            after,
            limit,
        } => Ok(Ok(list(c, ns, prefix, after.as_deref(), *limit, now).await?)),
        StateOp::Set {
            key,
            value,
            expires_at,
            expected_version,
        } => set(c, ns, key, value, *expires_at, *expected_version, now).await,
        StateOp::Delete {
            key,
            expected_version,
        } => delete(c, ns, key, *expected_version, now).await,
        StateOp::Increment {
            key,
            by,
            expires_at_if_created,
        } => increment(c, ns, key, *by, *expires_at_if_created, now).await,
        StateOp::Acquire {
            key,
            ttl_ms,
            release_with_run,
            ..
        } => {
            let holder = run_id.filter(|_| *release_with_run);
            acquire(c, ns, key, *ttl_ms, holder, now).await
        }
        StateOp::Release { key, token } => release_or_extend(c, ns, key, *token, None, now).await,
        StateOp::Extend { key, token, ttl_ms } => {
            release_or_extend(c, ns, key, *token, Some(*ttl_ms), now).await
        }
    }
}

/// Reads a key live at `now`.
pub async fn get<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    now: i64,
) -> EngineResult<Option<StateEntry>> {
    Ok(entries::Entity::find_by_id((ns.to_owned(), key.to_owned()))
        .filter(live_filter(now))
        .one(c)
        .await?
        .map(entry_of))
}

/// Lists keys live at `now` with a prefix, in byte order, after `after`.
pub async fn list<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    prefix: &str,
    after: Option<&str>,
    limit: u64,
    now: i64,
) -> EngineResult<StateResult> {
    let mut q = entries::Entity::find()
        .select_only()
        .columns([
            entries::Column::Key,
            entries::Column::Version,
            entries::Column::ExpiresAt,
            entries::Column::UpdatedAt,
            entries::Column::ValueSize,
        ])
        .filter(entries::Column::Namespace.eq(ns))
        .filter(live_filter(now));
    if !prefix.is_empty() {
        q = q.filter(entries::Column::Key.gte(prefix));
        if let Some(upper) = state::prefix_upper_bound(prefix) {
            q = q.filter(entries::Column::Key.lt(upper));
        }
    }
    if let Some(after) = after {
        q = q.filter(entries::Column::Key.gt(after));
    }
    let rows = q
        .order_by_asc(entries::Column::Key)
        .limit(limit + 1)
        .into_tuple::<(String, i64, Option<i64>, i64, i64)>()
        .all(c)
        .await?;
    let mut keys: Vec<StateKeyInfo> = rows
        .into_iter()
        .map(
            |(key, version, expires_at, updated_at, value_size)| StateKeyInfo {
                key,
                version,
                expires_at,
                updated_at,
                value_size,
            },
        )
        .collect();
    let next_after = if keys.len() as u64 > limit {
        keys.truncate(limit as usize);
        keys.last().map(|k| k.key.clone())
    } else {
        None
    };
    Ok(StateResult::Keys { keys, next_after })
}

async fn lock_entry<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
) -> EngineResult<Option<entries::Model>> {
    Ok(entries::Entity::find_by_id((ns.to_owned(), key.to_owned()))
        .lock(LockType::Update)
        .one(c)
        .await?)
}

/// Writes `value` to the key's row: updates the existing row (`row` is `Some`, locked), or
/// inserts one. Returns false when a concurrent writer inserted the row first.
#[allow(clippy::too_many_arguments)]
async fn write_entry<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    row: Option<&entries::Model>,
    value: String,
    version: i64,
    expires_at: Option<i64>,
    created: bool,
    now: i64,
) -> EngineResult<bool> {
    let size = value.len() as i64;
    match row {
        Some(_) => {
            let mut update = entries::Entity::update_many()
                .col_expr(entries::Column::Value, Expr::value(value))
                .col_expr(entries::Column::ValueSize, Expr::value(size))
                .col_expr(entries::Column::Version, Expr::value(version))
                .col_expr(entries::Column::ExpiresAt, Expr::value(expires_at))
                .col_expr(entries::Column::UpdatedAt, Expr::value(now));
            if created {
                update = update.col_expr(entries::Column::CreatedAt, Expr::value(now));
            }
            update
                .filter(entries::Column::Namespace.eq(ns))
                .filter(entries::Column::Key.eq(key))
                .exec(c)
                .await?;
            Ok(true)
        }
        None => {
            let inserted = entries::Entity::insert(entries::ActiveModel {
                namespace: Set(ns.to_owned()),
                key: Set(key.to_owned()),
                value: Set(value),
                value_size: Set(size),
                version: Set(version),
                expires_at: Set(expires_at),
                created_at: Set(now),
                updated_at: Set(now),
            })
            .on_conflict(
                OnConflict::columns([entries::Column::Namespace, entries::Column::Key])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(c)
            .await?;
            Ok(inserted == 1)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn set<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    value: &str,
    expires_at: Option<i64>,
    expected: Option<i64>,
    now: i64,
) -> EngineResult<Outcome> {
    for _ in 0..RACE_RETRIES {
        let row = lock_entry(c, ns, key).await?;
        let live = row.as_ref().filter(|r| is_live(r.expires_at, now));
        if let Err(conflict) = state::check_expected(key, expected, live.map(|r| r.version)) {
            return Ok(Err(conflict));
        }
        let version = state::next_version(
            live.map(|r| r.version),
            row.as_ref().map(|r| r.version),
            now,
        );
        let created = live.is_none();
        if write_entry(
            c,
            ns,
            key,
            row.as_ref(),
            value.to_owned(),
            version,
            expires_at,
            created,
            now,
        )
        .await?
        {
            return Ok(Ok(StateResult::Written {
                version,
                expires_at,
            }));
        }
    }
    Err(raced("the key"))
}

async fn delete<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    expected: Option<i64>,
    now: i64,
) -> EngineResult<Outcome> {
    let row = lock_entry(c, ns, key).await?;
    let live = row.as_ref().filter(|r| is_live(r.expires_at, now));
    if let Err(conflict) = state::check_expected(key, expected, live.map(|r| r.version)) {
        return Ok(Err(conflict));
    }
    if live.is_some() {
        // A tombstone rather than a delete: the row (and its version) stays until the
        // sweeper removes it, so the key, created again meanwhile, gets versions above
        // the old ones. Expiry 0 makes it absent for every reader, whatever its clock.
        entries::Entity::update_many()
            .col_expr(entries::Column::ExpiresAt, Expr::value(DELETED_EXPIRY))
            .col_expr(entries::Column::UpdatedAt, Expr::value(now))
            .filter(entries::Column::Namespace.eq(ns))
            .filter(entries::Column::Key.eq(key))
            .exec(c)
            .await?;
    }
    Ok(Ok(StateResult::Deleted {
        deleted: live.is_some(),
    }))
}

async fn increment<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    by: i64,
    expires_at_if_created: Option<i64>,
    now: i64,
) -> EngineResult<Outcome> {
    for _ in 0..RACE_RETRIES {
        let row = lock_entry(c, ns, key).await?;
        let live = row.as_ref().filter(|r| is_live(r.expires_at, now));
        let current = match live {
            Some(r) => match state::counter_value(key, &r.value) {
                Ok(v) => v,
                Err(conflict) => return Ok(Err(conflict)),
            },
            None => 0,
        };
        let Some(value) = current.checked_add(by) else {
            return Ok(Err(StateConflict::new(
                ConflictReason::CounterOverflow,
                format!(
                    "incrementing key {key:?} ({current}) by {by} overflows a signed 64-bit integer"
                ),
            )));
        };
        let version = state::next_version(
            live.map(|r| r.version),
            row.as_ref().map(|r| r.version),
            now,
        );
        let expires_at = match live {
            Some(r) => r.expires_at,
            None => expires_at_if_created,
        };
        if write_entry(
            c,
            ns,
            key,
            row.as_ref(),
            value.to_string(),
            version,
            expires_at,
            live.is_none(),
            now,
        )
        .await?
        {
            return Ok(Ok(StateResult::Counter {
                value,
                version,
                expires_at,
            }));
        }
    }
    Err(raced("the counter"))
}

async fn lock_row<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
) -> EngineResult<Option<locks::Model>> {
    Ok(locks::Entity::find_by_id((ns.to_owned(), key.to_owned()))
        .lock(LockType::Update)
        .one(c)
        .await?)
}

async fn acquire<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    ttl_ms: i64,
    holder_run_id: Option<&str>,
    now: i64,
) -> EngineResult<Outcome> {
    for _ in 0..RACE_RETRIES {
        let Some(row) = lock_row(c, ns, key).await? else {
            // A free lock without a row: create one (its token comes from the floor below),
            // then lock it. A concurrent creator makes this insert a no-op.
            locks::Entity::insert(locks::ActiveModel {
                namespace: Set(ns.to_owned()),
                key: Set(key.to_owned()),
                fence: Set(0),
                expires_at: Set(0),
                holder_run_id: Set(None),
                acquired_at: Set(0),
                updated_at: Set(now),
            })
            .on_conflict(
                OnConflict::columns([locks::Column::Namespace, locks::Column::Key])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(c)
            .await?;
            continue;
        };
        if row.expires_at > now {
            return Ok(Ok(StateResult::Busy {
                holder_expires_at: row.expires_at,
                holder_run_id: row.holder_run_id,
            }));
        }
        // Read after the row is locked: a sweeper that deleted an earlier row of this key
        // raised the floor in the same transaction, which has committed by now.
        let floor = floors::Entity::find_by_id(ns.to_owned())
            .one(c)
            .await?
            .map_or(0, |f| f.floor);
        let token = row.fence.max(floor).saturating_add(1);
        let expires_at = now + ttl_ms;
        locks::Entity::update_many()
            .col_expr(locks::Column::Fence, Expr::value(token))
            .col_expr(locks::Column::ExpiresAt, Expr::value(expires_at))
            .col_expr(
                locks::Column::HolderRunId,
                Expr::value(holder_run_id.map(str::to_owned)),
            )
            .col_expr(locks::Column::AcquiredAt, Expr::value(now))
            .col_expr(locks::Column::UpdatedAt, Expr::value(now))
            .filter(locks::Column::Namespace.eq(ns))
            .filter(locks::Column::Key.eq(key))
            .exec(c)
            .await?;
        return Ok(Ok(StateResult::Granted { token, expires_at }));
    }
    Err(raced("the lock"))
}

/// Releases (`ttl_ms` = `None`) or extends a lock held under `token`.
async fn release_or_extend<C: ConnectionTrait>(
    c: &C,
    ns: &str,
    key: &str,
    token: i64,
    ttl_ms: Option<i64>,
    now: i64,
) -> EngineResult<Outcome> {
    let row = lock_row(c, ns, key).await?;
    let refusal = match &row {
        Some(r) if r.fence == token && r.expires_at > now => None,
        Some(r) if r.fence == token => Some(format!(
            "lock {key:?} is no longer held under token {token}: it {} {} ms ago",
            if r.updated_at == r.expires_at {
                "was released or its run ended"
            } else {
                "expired"
            },
            now - r.expires_at
        )),
        Some(r) if r.fence > token => Some(format!(
            "token {token} of lock {key:?} is stale: the lock was granted again since \
             (token {})",
            r.fence
        )),
        _ => Some(format!("lock {key:?} is not held under token {token}")),
    };
    if let Some(message) = refusal {
        return Ok(Err(StateConflict::new(
            ConflictReason::LockNotHeld,
            message,
        )));
    }
    let update = locks::Entity::update_many()
        .col_expr(locks::Column::UpdatedAt, Expr::value(now))
        .filter(locks::Column::Namespace.eq(ns))
        .filter(locks::Column::Key.eq(key));
    match ttl_ms {
        None => {
            update
                .col_expr(locks::Column::ExpiresAt, Expr::value(now))
                .col_expr(
                    locks::Column::HolderRunId,
                    Expr::value(Option::<String>::None),
                )
                .exec(c)
                .await?;
            Ok(Ok(StateResult::Released))
        }
        Some(ttl) => {
            let expires_at = now + ttl;
            update
                .col_expr(locks::Column::ExpiresAt, Expr::value(expires_at))
                .exec(c)
                .await?;
            Ok(Ok(StateResult::Extended { expires_at }))
        }
    }
}

/// Releases the locks tied to a run (called when the run completes, fails or is
/// cancelled, in the same transaction). On PostgreSQL it also tells every replica, so that
/// acquires waiting on those locks try again.
pub async fn release_run_locks<C: ConnectionTrait>(
    c: &C,
    run_id: &str,
    now: i64,
) -> EngineResult<()> {
    let held = locks::Entity::find()
        .select_only()
        .columns([locks::Column::Namespace, locks::Column::Key])
        .filter(locks::Column::HolderRunId.eq(run_id))
        .filter(locks::Column::ExpiresAt.gt(now))
        .into_tuple::<(String, String)>()
        .all(c)
        .await?;
    if held.is_empty() {
        return Ok(());
    }
    locks::Entity::update_many()
        .col_expr(locks::Column::ExpiresAt, Expr::value(now))
        .col_expr(
            locks::Column::HolderRunId,
            Expr::value(Option::<String>::None),
        )
        .col_expr(locks::Column::UpdatedAt, Expr::value(now))
        .filter(locks::Column::HolderRunId.eq(run_id))
        .filter(locks::Column::ExpiresAt.gt(now))
        .exec(c)
        .await?;
    if c.get_database_backend() == DbBackend::Postgres {
        // No origin: the replica that committed this hears it too, which is harmless (its
        // waiters on these locks also follow the run itself).
        for (namespace, key) in held {
            notify::publish(c, "", &Wakeup::LockReleased { namespace, key }).await?;
        }
    }
    Ok(())
}

/// True when the sweeper has anything to delete at `now` (a cheap indexed read).
pub async fn anything_to_sweep<C: ConnectionTrait>(c: &C, now: i64) -> EngineResult<bool> {
    let key = entries::Entity::find()
        .select_only()
        .column(entries::Column::Key)
        .filter(entries::Column::ExpiresAt.is_not_null())
        .filter(entries::Column::ExpiresAt.lte(now))
        .limit(1)
        .into_tuple::<String>()
        .one(c)
        .await?;
    if key.is_some() {
        return Ok(true);
    }
    let lock = locks::Entity::find()
        .select_only()
        .column(locks::Column::Key)
        .filter(locks::Column::ExpiresAt.lte(now))
        .limit(1)
        .into_tuple::<String>()
        .one(c)
        .await?;
    Ok(lock.is_some())
}

/// Deletes up to `limit` expired keys and up to `limit` free lock rows (raising the
/// namespaces' token floors first); returns the rows deleted.
pub async fn sweep<C: ConnectionTrait>(c: &C, now: i64, limit: u64) -> EngineResult<u64> {
    let expired = entries::Entity::find()
        .select_only()
        .columns([entries::Column::Namespace, entries::Column::Key])
        .filter(entries::Column::ExpiresAt.is_not_null())
        .filter(entries::Column::ExpiresAt.lte(now))
        .order_by_asc(entries::Column::ExpiresAt)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_tuple::<(String, String)>()
        .all(c)
        .await?;
    let mut by_ns: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ns, key) in expired {
        by_ns.entry(ns).or_default().push(key);
    }
    let mut deleted = 0;
    for (ns, keys) in by_ns {
        deleted += entries::Entity::delete_many()
            .filter(entries::Column::Namespace.eq(ns))
            .filter(entries::Column::Key.is_in(keys))
            .filter(entries::Column::ExpiresAt.lte(now))
            .exec(c)
            .await?
            .rows_affected;
    }

    let free = locks::Entity::find()
        .select_only()
        .columns([
            locks::Column::Namespace,
            locks::Column::Key,
            locks::Column::Fence,
        ])
        .filter(locks::Column::ExpiresAt.lte(now))
        .order_by_asc(locks::Column::ExpiresAt)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_tuple::<(String, String, i64)>()
        .all(c)
        .await?;
    let mut by_ns: BTreeMap<String, (i64, Vec<String>)> = BTreeMap::new();
    for (ns, key, fence) in free {
        let e = by_ns.entry(ns).or_default();
        e.0 = e.0.max(fence);
        e.1.push(key);
    }
    for (ns, (max_fence, keys)) in by_ns {
        raise_floor(c, &ns, max_fence).await?;
        deleted += locks::Entity::delete_many()
            .filter(locks::Column::Namespace.eq(ns))
            .filter(locks::Column::Key.is_in(keys))
            .filter(locks::Column::ExpiresAt.lte(now))
            .exec(c)
            .await?
            .rows_affected;
    }
    Ok(deleted)
}

/// Raises a namespace's token floor to at least `to` (never lowers it, also when two
/// sweepers race).
async fn raise_floor<C: ConnectionTrait>(c: &C, ns: &str, to: i64) -> EngineResult<()> {
    floors::Entity::insert(floors::ActiveModel {
        namespace: Set(ns.to_owned()),
        floor: Set(to),
    })
    .on_conflict(
        OnConflict::column(floors::Column::Namespace)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(c)
    .await?;
    floors::Entity::update_many()
        .col_expr(floors::Column::Floor, Expr::value(to))
        .filter(floors::Column::Namespace.eq(ns))
        .filter(floors::Column::Floor.lt(to))
        .exec(c)
        .await?;
    Ok(())
}

/// The earliest expiry of a key or a lock row.
pub async fn next_expiry<C: ConnectionTrait>(c: &C) -> EngineResult<Option<i64>> {
    use sea_orm::sea_query::Func;
    let keys = entries::Entity::find()
        .select_only()
        .column_as(
            Expr::from(Func::min(Expr::col(entries::Column::ExpiresAt))),
            "m",
        )
        .filter(entries::Column::ExpiresAt.is_not_null())
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten();
    let locks = locks::Entity::find()
        .select_only()
        .column_as(
            Expr::from(Func::min(Expr::col(locks::Column::ExpiresAt))),
            "m",
        )
        .into_tuple::<Option<i64>>()
        .one(c)
        .await?
        .flatten();
    Ok(match (keys, locks) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
