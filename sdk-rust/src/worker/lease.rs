//! The lease an attempt runs under, and the write path every worker RPC takes.
//!
//! [`Lease`] holds the run id, the lease token, a local estimate of the lease deadline
//! (extended by each successful heartbeat) and the interrupt switch that stops the handler.
//! [`write`] sends one worker RPC: it retries `UNAVAILABLE` (and timeouts) with backoff
//! until the lease deadline has passed, turns `ABORTED`, `FAILED_PRECONDITION` and
//! `NOT_FOUND` into an interruption (the run was cancelled or the lease is gone), and
//! reports anything else as rejected.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::backoff::Backoff;
use crate::error::Interrupted;

/// Deadline of one worker write RPC.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// One attempt's lease.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The run's id.
    pub(crate) run_id: String,
    /// The opaque lease token every write carries.
    pub(crate) token: String,
    /// The lease duration.
    pub(crate) timeout: Duration,
    deadline: Mutex<Instant>,
    interrupt: CancellationToken,
    reason: Mutex<Option<String>>,
    suspended: std::sync::atomic::AtomicBool,
}

impl Lease {
    /// A lease that expires `timeout` from now (the task was just received).
    pub(crate) fn new(run_id: String, token: String, timeout: Duration) -> Self {
        Self {
            run_id,
            token,
            timeout,
            deadline: Mutex::new(Instant::now() + timeout),
            interrupt: CancellationToken::new(),
            reason: Mutex::new(None),
            suspended: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The local estimate of the lease deadline.
    pub(crate) fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a successful heartbeat sent at `sent_at`: the server extended the lease by
    /// its timeout from some moment after that.
    pub(crate) fn extended(&self, sent_at: Instant) {
        let mut deadline = self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        *deadline = (*deadline).max(sent_at + self.timeout);
    }

    /// Stops the attempt: the handler is dropped and nothing more is written.
    pub(crate) fn interrupt(&self, reason: impl Into<String>) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        drop(slot);
        self.interrupt.cancel();
    }

    /// Stops the attempt because the run suspended (a sleep or an event wait): the server
    /// released the lease and delivers the run again when the wait ends.
    pub(crate) fn suspend(&self, reason: impl Into<String>) {
        self.suspended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.interrupt(reason);
    }

    /// True once [`Lease::suspend`] was called.
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// True once [`Lease::interrupt`] was called.
    pub(crate) fn is_interrupted(&self) -> bool {
        self.interrupt.is_cancelled()
    }

    /// Resolves when the attempt is interrupted.
    pub(crate) async fn interrupted(&self) {
        self.interrupt.cancelled().await;
    }

    /// The error `step.run` returns once the attempt is interrupted.
    pub(crate) fn interrupted_error(&self) -> Interrupted {
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "the attempt was stopped".to_owned());
        Interrupted::new(reason)
    }
}

/// Why a worker write did not go through.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The run was cancelled or the lease is lost; the lease is now interrupted.
    Interrupted(Interrupted),
    /// The server stayed unreachable until the lease deadline passed; it will redeliver.
    GaveUp(Status),
    /// The server refused the write for another reason.
    Rejected(Status),
}

/// True for the codes that mean "this attempt is over": cancelled run (`ABORTED`), stale or
/// expired lease (`FAILED_PRECONDITION`), run gone (`NOT_FOUND`).
pub(crate) fn is_lease_lost(code: Code) -> bool {
    matches!(
        code,
        Code::Aborted | Code::FailedPrecondition | Code::NotFound
    )
}

/// True for failures worth retrying while the lease lasts: the server is unreachable or
/// restarting (`UNAVAILABLE`; a connection cut mid-call surfaces as `UNKNOWN` or
/// `CANCELLED`), or the call timed out. Every write is idempotent under its lease token, so
/// resending is safe.
pub(crate) fn is_transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled
    )
}

/// A human-readable reason for an interruption caused by `status`.
pub(crate) fn lost_reason(status: &Status) -> String {
    let what = match status.code() {
        Code::Aborted => "the run was cancelled",
        Code::FailedPrecondition => "the lease is no longer valid",
        Code::NotFound => "the run no longer exists",
        _ => "the attempt was stopped",
    };
    if status.message().is_empty() {
        what.to_owned()
    } else {
        format!("{what} ({})", status.message())
    }
}

/// Sends one worker write (`what` names it in logs), retrying transient failures with
/// backoff until the lease deadline passes.
pub(crate) async fn write<T, F, Fut>(
    lease: &Lease,
    what: &str,
    mut call: F,
) -> Result<T, WriteError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let mut backoff = Backoff::new();
    loop {
        if lease.is_interrupted() {
            return Err(WriteError::Interrupted(lease.interrupted_error()));
        }
        let status = match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) => status,
        };
        if is_lease_lost(status.code()) {
            lease.interrupt(lost_reason(&status));
            return Err(WriteError::Interrupted(lease.interrupted_error()));
        }
        if !is_transient(status.code()) {
            return Err(WriteError::Rejected(status));
        }
        let now = Instant::now();
        let deadline = lease.deadline();
        if now >= deadline {
            return Err(WriteError::GaveUp(status));
        }
        let delay = backoff.next_delay().min(deadline - now);
        tracing::warn!(
            run_id = %lease.run_id,
            rpc = what,
            code = ?status.code(),
            error = %status.message(),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "worker write failed; retrying while the lease lasts"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = lease.interrupted() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn lease(timeout: Duration) -> Lease {
        Lease::new("run".into(), "tok".into(), timeout)
    }

    #[tokio::test]
    async fn retries_unavailable_then_succeeds() {
        let l = lease(Duration::from_secs(30));
        let calls = AtomicU32::new(0);
        let out = write(&l, "test", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(Status::unavailable("restarting"))
                } else {
                    Ok(tonic::Response::new(7))
                }
            }
        })
        .await;
        assert!(matches!(out, Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_lease_deadline() {
        let l = lease(Duration::from_millis(300));
        let out: Result<(), _> =
            write(&l, "test", || async { Err(Status::unavailable("down")) }).await;
        assert!(matches!(out, Err(WriteError::GaveUp(_))));
        assert!(!l.is_interrupted());
    }

    #[tokio::test]
    async fn lease_lost_codes_interrupt() {
        for status in [
            Status::aborted("cancelled"),
            Status::failed_precondition("stale lease"),
            Status::not_found("no run"),
        ] {
            let l = lease(Duration::from_secs(30));
            let s = status.clone();
            let out: Result<(), _> = write(&l, "test", || {
                let s = s.clone();
                async move { Err(s) }
            })
            .await;
            assert!(matches!(out, Err(WriteError::Interrupted(_))), "{status:?}");
            assert!(l.is_interrupted());
        }
    }

    #[tokio::test]
    async fn other_errors_are_rejections() {
        let l = lease(Duration::from_secs(30));
        let out: Result<(), _> = write(&l, "test", || async {
            Err(Status::invalid_argument("bad id"))
        })
        .await;
        assert!(matches!(out, Err(WriteError::Rejected(s)) if s.code() == Code::InvalidArgument));
    }

    #[test]
    fn heartbeat_extends_the_deadline() {
        let l = lease(Duration::from_secs(3));
        let before = l.deadline();
        l.extended(Instant::now() + Duration::from_secs(1));
        assert!(l.deadline() > before);
    }
}
