//! Locks: [`State::lock`] and [`State::try_lock`] take a lock for a TTL and return a
//! [`LockGuard`] carrying the fencing token, which can [`extend`](LockGuard::extend) and
//! [`release`](LockGuard::release) it.
//!
//! A lock expires after its TTL unless extended, so work abandoned by a crashed owner can
//! recover: keep TTLs short and extend while working. Every grant carries a fencing token
//! larger than all earlier tokens of that lock (also across expiry and server restarts):
//! pass it to the systems the lock protects, so they can refuse writes from an owner whose
//! lock has expired meanwhile. Dropping a guard does not release the lock (its TTL, or the
//! end of the run it is tied to, does).

use std::time::Duration;

use chrono::{DateTime, Utc};
use stackshift_proto::v1 as pb;

use super::{State, required_time};
use crate::Error;
use crate::convert::duration_to_proto;
use crate::duration::{IntoDuration, ParseDurationError};

/// Options of [`State::lock`] and [`State::try_lock`].
#[derive(Debug, Clone)]
pub struct LockOptions {
    ttl: Result<Duration, ParseDurationError>,
    wait: Option<Result<Duration, ParseDurationError>>,
    release_with_run: Option<bool>,
}

impl LockOptions {
    /// Hold the lock for `ttl` (more than zero, at most 24 h) unless extended or released.
    pub fn new(ttl: impl IntoDuration) -> Self {
        Self {
            ttl: ttl.into_duration(),
            wait: None,
            release_with_run: None,
        }
    }

    /// Wait up to this long (at most 60 s) for a held lock to become free. The server wakes
    /// the call when the lock is released or expires; nothing polls.
    #[must_use]
    pub fn wait(mut self, wait: impl IntoDuration) -> Self {
        self.wait = Some(wait.into_duration());
        self
    }

    /// Inside a run: whether the lock is released when the run completes, fails or is
    /// cancelled (default `true`). Outside a run it must stay unset.
    #[must_use]
    pub fn release_with_run(mut self, release: bool) -> Self {
        self.release_with_run = Some(release);
        self
    }
}

/// The outcome of [`State::try_lock`].
#[derive(Debug)]
pub enum LockAttempt {
    /// The lock is ours.
    Acquired(LockGuard),
    /// Someone else holds it.
    Busy {
        /// When the holder's lock expires, unless it is extended or released first.
        holder_expires_at: DateTime<Utc>,
    },
}

/// A held lock. Extend it while working; release it when done.
#[derive(Debug, Clone)]
pub struct LockGuard {
    state: State,
    key: String,
    token: i64,
    expires_at: DateTime<Utc>,
}

impl LockGuard {
    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The fencing token: larger than every token this lock had before.
    pub fn token(&self) -> i64 {
        self.token
    }

    /// When the lock expires (as of the grant or the last extension).
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Gives the lock a new TTL counted from now. Fails with [`Error::Conflict`] (reason
    /// `LOCK_NOT_HELD`) when the lock expired or was taken by someone else meanwhile.
    pub async fn extend(&mut self, ttl: impl IntoDuration) -> Result<DateTime<Utc>, Error> {
        let request = pb::ExtendLockRequest {
            key: self.key.clone(),
            fencing_token: self.token,
            ttl: Some(duration_to_proto(ttl.into_duration()?)),
            run: None,
        };
        let response = self
            .state
            .invoke(
                "ExtendLock",
                request,
                Duration::ZERO,
                |mut c, r| async move { c.extend_lock(r).await },
            )
            .await?;
        self.expires_at = required_time(response.expires_at.as_ref(), "expires_at")?;
        Ok(self.expires_at)
    }

    /// Releases the lock. Fails with [`Error::Conflict`] (reason `LOCK_NOT_HELD`) when the
    /// token no longer holds it.
    pub async fn release(self) -> Result<(), Error> {
        let request = pb::ReleaseLockRequest {
            key: self.key.clone(),
            fencing_token: self.token,
            run: None,
        };
        self.state
            .invoke(
                "ReleaseLock",
                request,
                Duration::ZERO,
                |mut c, r| async move { c.release_lock(r).await },
            )
            .await?;
        Ok(())
    }
}

impl State {
    /// Takes the lock `key`, waiting as `opts` says; `None` when it stayed busy.
    ///
    /// ```no_run
    /// # async fn demo(state: stackshift::State) -> Result<(), stackshift::Error> {
    /// use stackshift::LockOptions;
    /// if let Some(lock) = state
    ///     .lock("search-index:cus_1", LockOptions::new("30s").wait("5s"))
    ///     .await?
    /// {
    ///     // ... rebuild, passing lock.token() to the index so stale owners are refused ...
    ///     lock.release().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn lock(&self, key: &str, opts: LockOptions) -> Result<Option<LockGuard>, Error> {
        Ok(match self.try_lock(key, opts).await? {
            LockAttempt::Acquired(guard) => Some(guard),
            LockAttempt::Busy { .. } => None,
        })
    }

    /// Like [`State::lock`], also telling when a busy lock's holder expires.
    pub async fn try_lock(&self, key: &str, opts: LockOptions) -> Result<LockAttempt, Error> {
        let ttl = opts.ttl?;
        let wait = opts.wait.transpose()?;
        let release_with_run = opts.release_with_run.unwrap_or_else(|| self.is_journaled());
        let request = pb::AcquireLockRequest {
            key: key.to_owned(),
            ttl: Some(duration_to_proto(ttl)),
            wait: wait.map(duration_to_proto),
            release_with_run,
            run: None,
        };
        let response = self
            .invoke(
                "AcquireLock",
                request,
                wait.unwrap_or_default(),
                |mut c, r| async move { c.acquire_lock(r).await },
            )
            .await?;
        if response.granted {
            Ok(LockAttempt::Acquired(LockGuard {
                state: self.clone(),
                key: key.to_owned(),
                token: response.fencing_token,
                expires_at: required_time(response.expires_at.as_ref(), "expires_at")?,
            }))
        } else {
            Ok(LockAttempt::Busy {
                holder_expires_at: required_time(
                    response.holder_expires_at.as_ref(),
                    "holder_expires_at",
                )?,
            })
        }
    }
}
