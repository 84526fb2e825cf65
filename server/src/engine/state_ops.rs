//! State store operations: get, set, delete, increment, list, and locks (acquire with an
//! optional wait, release, extend). Calls from inside a run are journaled by the store under
//! the run's lease; calls from outside apply directly.
//!
//! A waiting acquire never polls: it sleeps until the lock is released (a per-key
//! notification, fed by releases on this server and, on PostgreSQL, by other replicas), the
//! run holding it ends, the holder's TTL passes, or the wait is over, and only then tries
//! again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::{EngineError, EngineResult};
use super::state::{
    self, AcquireInput, CounterValue, Expiry, IncrementInput, LockAttempt, MAX_LIST_PAGE,
    RunCallInput, SetInput, StateCall, StateEntry, StateKeyInfo, StateOp, StateResult,
};
use super::{Engine, now_ms};

/// The key of a lock in the waiter registry.
pub(super) fn lock_id(namespace: &str, key: &str) -> String {
    // Keys contain no control characters, so this cannot be ambiguous.
    format!("{namespace}\n{key}")
}

fn unexpected(what: &str, r: &StateResult) -> EngineError {
    EngineError::Storage(format!("unexpected result of {what}: {r:?}"))
}

impl Engine {
    /// Applies `op` (bound to a run when `run` is given) and returns its result; a state
    /// conflict becomes [`EngineError::StateConflict`].
    async fn state_apply(
        &self,
        namespace: &str,
        op: StateOp,
        run: Option<RunCallInput>,
    ) -> EngineResult<(StateResult, bool)> {
        let run = run.map(|r| state::run_call(namespace, r)).transpose()?;
        let run_id = run.as_ref().map(|r| r.lease.run_id.clone());
        let call = StateCall {
            namespace: namespace.to_owned(),
            op,
            run,
        };
        let out = match self.store.state_apply(call, now_ms()).await {
            Ok(out) => out,
            Err(e) => {
                return Err(match run_id {
                    Some(id) => self.after_store_error(e, namespace, &id).await,
                    None => e,
                });
            }
        };
        let result = out.result.map_err(EngineError::StateConflict)?;
        if !out.replayed {
            match &result {
                StateResult::Written {
                    expires_at: Some(at),
                    ..
                }
                | StateResult::Counter {
                    expires_at: Some(at),
                    ..
                }
                | StateResult::Granted { expires_at: at, .. }
                | StateResult::Extended { expires_at: at } => self.state.sweep_timer.schedule(*at),
                _ => {}
            }
        }
        Ok((result, out.replayed))
    }

    /// Reads a key; `None` when absent or expired. Inside a run the read is journaled.
    pub async fn state_get(
        &self,
        namespace: &str,
        key: &str,
        run: Option<RunCallInput>,
    ) -> EngineResult<Option<StateEntry>> {
        state::key("key", key)?;
        if run.is_none() {
            return self.store.state_get(namespace, key, now_ms()).await;
        }
        let op = StateOp::Get {
            key: key.to_owned(),
        };
        match self.state_apply(namespace, op, run).await?.0 {
            StateResult::Entry { entry } => Ok(entry),
            r => Err(unexpected("get", &r)),
        }
    }

    /// Writes a key; returns its new version and expiry.
    pub async fn state_set(
        &self,
        namespace: &str,
        input: SetInput,
    ) -> EngineResult<(i64, Option<i64>)> {
        state::key("key", &input.key)?;
        let value = state::value(&input.value, self.config.max_state_value_bytes)?;
        state::expected_version(input.expected_version)?;
        let now = now_ms();
        let expires_at = match input.expiry {
            None => None,
            Some(Expiry::Ttl(ms)) => {
                state::ttl("ttl", ms, state::MAX_TTL_MS)?;
                Some(now + ms)
            }
            Some(Expiry::At(at)) => {
                state::expires_at(at, now)?;
                Some(at)
            }
        };
        let op = StateOp::Set {
            key: input.key,
            value,
            expires_at,
            expected_version: input.expected_version,
        };
        match self.state_apply(namespace, op, input.run).await?.0 {
            StateResult::Written {
                version,
                expires_at,
            } => Ok((version, expires_at)),
            r => Err(unexpected("set", &r)),
        }
    }

    /// Deletes a key; returns whether a live key was deleted.
    pub async fn state_delete(
        &self,
        namespace: &str,
        key: &str,
        expected_version: Option<i64>,
        run: Option<RunCallInput>,
    ) -> EngineResult<bool> {
        state::key("key", key)?;
        state::expected_version(expected_version)?;
        let op = StateOp::Delete {
            key: key.to_owned(),
            expected_version,
        };
        match self.state_apply(namespace, op, run).await? {
            (StateResult::Deleted { deleted }, replayed) => {
                if deleted && !replayed {
                    // The deleted key's row is swept later.
                    self.state.sweep_timer.schedule(now_ms());
                }
                Ok(deleted)
            }
            (r, _) => Err(unexpected("delete", &r)),
        }
    }

    /// Adds to a counter atomically; returns the counter after the increment.
    pub async fn state_increment(
        &self,
        namespace: &str,
        input: IncrementInput,
    ) -> EngineResult<CounterValue> {
        state::key("key", &input.key)?;
        let expires_at_if_created = match input.ttl_ms {
            Some(ms) => {
                state::ttl("ttl", ms, state::MAX_TTL_MS)?;
                Some(now_ms() + ms)
            }
            None => None,
        };
        let op = StateOp::Increment {
            key: input.key,
            by: input.by.unwrap_or(1),
            expires_at_if_created,
        };
        match self.state_apply(namespace, op, input.run).await?.0 {
            StateResult::Counter {
                value,
                version,
                expires_at,
            } => Ok(CounterValue {
                value,
                version,
                expires_at,
            }),
            r => Err(unexpected("increment", &r)),
        }
    }

    /// Lists live keys with a prefix; returns a page and the next page token.
    pub async fn state_list(
        &self,
        namespace: &str,
        prefix: &str,
        page_size: i32,
        page_token: Option<String>,
        run: Option<RunCallInput>,
    ) -> EngineResult<(Vec<StateKeyInfo>, Option<String>)> {
        state::prefix("prefix", prefix)?;
        let limit = match page_size {
            0 => state::DEFAULT_LIST_PAGE,
            n if n < 0 || n as u64 > MAX_LIST_PAGE => {
                return Err(EngineError::invalid(format!(
                    "page_size must be between 1 and {MAX_LIST_PAGE} (got {n})"
                )));
            }
            n => n as u64,
        };
        let after = page_token
            .map(|t| decode_page_token(&t, prefix))
            .transpose()?;
        let result = if run.is_none() {
            self.store
                .state_list(namespace, prefix, after.as_deref(), limit, now_ms())
                .await?
        } else {
            let op = StateOp::List {
                prefix: prefix.to_owned(),
                after,
                limit,
            };
            self.state_apply(namespace, op, run).await?.0
        };
        match result {
            StateResult::Keys { keys, next_after } => {
                Ok((keys, next_after.map(|k| hex::encode(k.as_bytes()))))
            }
            r => Err(unexpected("list", &r)),
        }
    }

    /// Takes a lock, waiting up to `wait_ms` for it to become free.
    pub async fn state_acquire(
        &self,
        namespace: &str,
        input: AcquireInput,
    ) -> EngineResult<LockAttempt> {
        state::key("key", &input.key)?;
        let ttl_ms = input
            .ttl_ms
            .ok_or_else(|| EngineError::invalid("ttl is required: how long to hold the lock"))?;
        state::ttl("ttl", ttl_ms, state::MAX_LOCK_TTL_MS)?;
        let wait_ms = input.wait_ms.unwrap_or(0);
        if !(0..=state::MAX_LOCK_WAIT_MS).contains(&wait_ms) {
            return Err(EngineError::invalid(format!(
                "wait must be at most {} (got {})",
                super::validate::fmt_ms(state::MAX_LOCK_WAIT_MS),
                super::validate::fmt_ms(wait_ms)
            )));
        }
        if input.release_with_run && input.run.is_none() {
            return Err(EngineError::invalid(
                "release_with_run needs a run: it ties the lock to the calling run",
            ));
        }
        // Validate the run binding before waiting, not after.
        if let Some(r) = &input.run {
            state::run_call(namespace, r.clone())?;
        }
        let deadline = Instant::now() + Duration::from_millis(wait_ms as u64);
        let id = lock_id(namespace, &input.key);
        let mut holder_run: Option<(String, Arc<Notify>)> = None;
        let outcome = loop {
            let released = self.state.lock_waiters.subscribe(&id);
            let result = self
                .try_acquire(
                    namespace,
                    &input,
                    ttl_ms,
                    deadline,
                    &released,
                    holder_run.as_ref(),
                )
                .await;
            self.state.lock_waiters.release(&id, released);
            match result {
                Ok(Step::Done(attempt)) => break Ok(attempt),
                Ok(Step::Retry { holder_run_id }) => {
                    // Follow the run holding the lock: it releases run-tied locks when it
                    // ends. Learning of a new holder run tries again at once, since the run
                    // may have ended before we subscribed.
                    let same = holder_run.as_ref().map(|(r, _)| r) == holder_run_id.as_ref();
                    if !same {
                        if let Some((r, n)) = holder_run.take() {
                            self.watchers.release(&r, n);
                        }
                        if let Some(r) = holder_run_id {
                            let n = self.watchers.subscribe(&r);
                            holder_run = Some((r, n));
                        }
                    }
                }
                Err(e) => break Err(e),
            }
        };
        if let Some((r, n)) = holder_run {
            self.watchers.release(&r, n);
        }
        outcome
    }

    /// One try of a (waiting) acquire: returns the outcome, or how to wait before the next
    /// try (after the wait already happened).
    async fn try_acquire(
        &self,
        namespace: &str,
        input: &AcquireInput,
        ttl_ms: i64,
        deadline: Instant,
        released: &Arc<Notify>,
        holder_run: Option<&(String, Arc<Notify>)>,
    ) -> EngineResult<Step> {
        // Armed before the try, so a release between the try and the wait is not missed.
        let released = released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let mut holder_done_notified = holder_run.map(|(_, n)| Box::pin(n.notified()));
        if let Some(n) = holder_done_notified.as_mut() {
            n.as_mut().enable();
        }

        let last_try = Instant::now() >= deadline || self.shutdown.is_cancelled();
        let op = StateOp::Acquire {
            key: input.key.clone(),
            ttl_ms,
            release_with_run: input.release_with_run,
            journal_busy: last_try,
        };
        let (result, replayed) = self.state_apply(namespace, op, input.run.clone()).await?;
        match result {
            StateResult::Granted { token, expires_at } => {
                Ok(Step::Done(LockAttempt::Granted { token, expires_at }))
            }
            StateResult::Busy {
                holder_expires_at, ..
            } if last_try || replayed => Ok(Step::Done(LockAttempt::Busy { holder_expires_at })),
            StateResult::Busy {
                holder_expires_at,
                holder_run_id,
            } => {
                let new_holder =
                    holder_run_id.is_some() && holder_run.map(|(r, _)| r) != holder_run_id.as_ref();
                if !new_holder {
                    // Sleep until the holder's TTL passes (plus a millisecond, since a lock
                    // is free only once its expiry is in the past), or the wait is over.
                    let until_expiry = Duration::from_millis(
                        (holder_expires_at + 1 - now_ms()).clamp(0, state::MAX_LOCK_WAIT_MS) as u64,
                    );
                    let wake = (Instant::now() + until_expiry).min(deadline);
                    let holder_done = async {
                        match holder_done_notified.as_mut() {
                            Some(n) => n.as_mut().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = &mut released => {}
                        _ = holder_done => {}
                        _ = tokio::time::sleep_until(wake) => {}
                        _ = self.shutdown.cancelled() => {}
                    }
                }
                Ok(Step::Retry { holder_run_id })
            }
            r => Err(unexpected("acquire_lock", &r)),
        }
    }

    /// Releases a lock held under `token`.
    pub async fn state_release(
        &self,
        namespace: &str,
        key: &str,
        token: i64,
        run: Option<RunCallInput>,
    ) -> EngineResult<()> {
        state::key("key", key)?;
        state::token(token)?;
        let op = StateOp::Release {
            key: key.to_owned(),
            token,
        };
        match self.state_apply(namespace, op, run).await? {
            (StateResult::Released, replayed) => {
                if !replayed {
                    self.lock_released(namespace, key);
                    // The free lock's row is garbage now; let the sweeper collect it.
                    self.state.sweep_timer.schedule(now_ms());
                }
                Ok(())
            }
            (r, _) => Err(unexpected("release_lock", &r)),
        }
    }

    /// Gives a lock held under `token` a new TTL from now; returns the new expiry.
    pub async fn state_extend(
        &self,
        namespace: &str,
        key: &str,
        token: i64,
        ttl_ms: Option<i64>,
        run: Option<RunCallInput>,
    ) -> EngineResult<i64> {
        state::key("key", key)?;
        state::token(token)?;
        let ttl_ms =
            ttl_ms.ok_or_else(|| EngineError::invalid("ttl is required: the new lock TTL"))?;
        state::ttl("ttl", ttl_ms, state::MAX_LOCK_TTL_MS)?;
        let op = StateOp::Extend {
            key: key.to_owned(),
            token,
            ttl_ms,
        };
        match self.state_apply(namespace, op, run).await?.0 {
            StateResult::Extended { expires_at } => Ok(expires_at),
            r => Err(unexpected("extend_lock", &r)),
        }
    }

    /// Wakes the acquires waiting on a lock of this server (a release here or, on
    /// PostgreSQL, on another replica).
    pub(super) fn lock_released(&self, namespace: &str, key: &str) {
        self.state.lock_waiters.finished(&lock_id(namespace, key));
    }
}

/// What one acquire try leads to.
enum Step {
    /// The final outcome.
    Done(LockAttempt),
    /// Try again (the wait for a change already happened, unless a new holder run was
    /// learned, which is subscribed to first).
    Retry { holder_run_id: Option<String> },
}

/// Page tokens are the hex of the last key returned; they must belong to the prefix.
fn decode_page_token(token: &str, prefix: &str) -> EngineResult<String> {
    let bad = || EngineError::invalid("page_token is not a token returned by ListStateKeys");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let key = String::from_utf8(bytes).map_err(|_| bad())?;
    state::key("page_token", &key).map_err(|_| bad())?;
    if !key.starts_with(prefix) {
        return Err(EngineError::invalid(
            "page_token belongs to a listing with another prefix",
        ));
    }
    Ok(key)
}
