//! Child runs on [`Step`]: `step.invoke` starts one child run and waits for its result,
//! `step.invoke_all` starts many (a fan-out) and waits until all of them are final. Both
//! send one `SuspendRun` with a child wait: the server starts the children in the same
//! transaction as the suspension (once per run and step id, so a replay never starts a
//! second set), and the parent holds no worker slot while it waits. When the last child
//! reaches a final status the server journals every child's outcome into the parent and
//! queues it again; the replay returns the journaled outcomes at the same call.
//! See `docs/children.md`.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::suspend_run_request::Wait;

use super::Step;
use crate::convert::duration_to_proto;
use crate::non_retryable;
use crate::run::Failure;

/// One child run to start with [`Step::invoke_all`] (or [`Step::invoke_child`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ChildRun {
    job: String,
    payload: Vec<u8>,
    queue: Option<String>,
    lease_timeout: Option<Duration>,
    priority: i32,
    concurrency_key: Option<String>,
}

impl ChildRun {
    /// A child run of `job` with `payload` (serialized to JSON). Fails when the payload
    /// cannot be serialized.
    pub fn new(job: impl Into<String>, payload: &impl Serialize) -> anyhow::Result<Self> {
        let payload = serde_json::to_vec(payload)
            .map_err(|e| non_retryable(format!("child payload is not serializable: {e}")))?;
        Ok(Self {
            job: job.into(),
            payload,
            queue: None,
            lease_timeout: None,
            priority: 0,
            concurrency_key: None,
        })
    }

    /// Runs the child on `queue` instead of the parent's queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// The child's lease timeout (1 s to 1 h).
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = Some(timeout);
        self
    }

    /// The child's delivery priority within its queue (-1000 to 1000).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// The child's concurrency key.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    fn into_proto(self) -> pb::ChildRunSpec {
        pb::ChildRunSpec {
            job: self.job,
            payload: self.payload,
            queue: self.queue.unwrap_or_default(),
            retry_policy: None,
            lease_timeout: self.lease_timeout.map(duration_to_proto),
            priority: self.priority,
            concurrency_key: self.concurrency_key.unwrap_or_default(),
        }
    }
}

/// How a child run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildStatus {
    /// It completed with a result.
    Completed,
    /// It failed (its attempts were used up, or it failed non-retryably).
    Failed,
    /// It was cancelled.
    Cancelled,
}

/// The recorded outcome of one child run.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildOutcome {
    /// The child's run id.
    pub run_id: String,
    /// The child's job.
    pub job: String,
    /// How it ended.
    pub status: ChildStatus,
    /// Its result, when completed.
    pub result: Option<Value>,
    /// Its failure (or the cancellation reason), when failed or cancelled.
    pub failure: Option<Failure>,
}

impl ChildOutcome {
    /// The child's result deserialized as `T`, or [`ChildFailed`] when the child failed or
    /// was cancelled.
    pub fn into_result<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        match self.status {
            ChildStatus::Completed => {
                let value = self.result.unwrap_or(Value::Null);
                serde_json::from_value(value).map_err(|e| {
                    non_retryable(format!(
                        "the result of child run {} ({}) does not deserialize: {e}",
                        self.run_id, self.job
                    ))
                })
            }
            _ => Err(ChildFailed {
                run_id: self.run_id,
                job: self.job,
                status: self.status,
                failure: self.failure.unwrap_or_default(),
            }
            .into()),
        }
    }
}

/// A child run started by [`Step::invoke`] failed or was cancelled. Returned (inside an
/// [`anyhow::Error`]; use `downcast_ref::<ChildFailed>()`) instead of the child's value.
/// Propagating it with `?` fails the parent without retries: the child's outcome is
/// journaled, so a retry would see the same failure.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildFailed {
    /// The child's run id.
    pub run_id: String,
    /// The child's job.
    pub job: String,
    /// [`ChildStatus::Failed`] or [`ChildStatus::Cancelled`].
    pub status: ChildStatus,
    /// The child's failure, or the cancellation reason.
    pub failure: Failure,
}

impl fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.status {
            ChildStatus::Cancelled => "was cancelled",
            _ => "failed",
        };
        write!(
            f,
            "child run {} ({}) {how}: {}",
            self.run_id, self.job, self.failure.message
        )
    }
}

impl std::error::Error for ChildFailed {}

/// The journal output of a child wait, as the server writes it.
#[derive(serde::Deserialize)]
struct Recorded {
    children: Vec<RecordedChild>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedChild {
    run_id: String,
    #[serde(default)]
    job: String,
    status: String,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    failure: Option<RecordedFailure>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedFailure {
    #[serde(default)]
    message: String,
    #[serde(default)]
    error_type: String,
    #[serde(default)]
    non_retryable: bool,
}

fn outcomes_from_journal(output: &[u8]) -> anyhow::Result<Vec<ChildOutcome>> {
    let recorded: Recorded = serde_json::from_slice(output)?;
    recorded
        .children
        .into_iter()
        .map(|c| {
            let status = match c.status.as_str() {
                "completed" => ChildStatus::Completed,
                "failed" => ChildStatus::Failed,
                "cancelled" => ChildStatus::Cancelled,
                other => anyhow::bail!("unknown child status {other:?}"),
            };
            Ok(ChildOutcome {
                run_id: c.run_id,
                job: c.job,
                status,
                result: c.result,
                failure: c.failure.map(|f| Failure {
                    message: f.message,
                    error_type: (!f.error_type.is_empty()).then_some(f.error_type),
                    non_retryable: f.non_retryable,
                    details: None,
                    stack_trace: None,
                }),
            })
        })
        .collect()
}

impl Step {
    /// Starts a child run of `job` with `payload` on the parent's queue and waits durably
    /// for its result, deserialized as `T`. A failed or cancelled child returns
    /// [`ChildFailed`].
    ///
    /// The child is started once per run and id: a replay (after a worker crash, or when
    /// the parent is delivered again after the wait) finds the same child. While the child
    /// runs, the parent is `waiting` and holds no worker slot, so a worker with a single
    /// slot can run both. When the run suspends this returns
    /// [`Interrupted`](crate::Interrupted): propagate it with `?`. Cancelling the parent
    /// cancels the child.
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// #[derive(serde::Serialize)]
    /// struct Resize { image: String, width: u32 }
    /// let url: String = step
    ///     .invoke("thumbnail", "resize-image", &Resize { image: "cat.png".into(), width: 128 })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn invoke<T: DeserializeOwned>(
        &self,
        id: &str,
        job: &str,
        payload: &impl Serialize,
    ) -> anyhow::Result<T> {
        self.invoke_child(id, ChildRun::new(job, payload)?)
            .await?
            .into_result()
    }

    /// Like [`Step::invoke`] with the child's options ([`ChildRun`]), returning its raw
    /// [`ChildOutcome`] (a failed child is an outcome here, not an error).
    pub async fn invoke_child(&self, id: &str, child: ChildRun) -> anyhow::Result<ChildOutcome> {
        let mut all = self.invoke_all(id, vec![child]).await?;
        all.pop()
            .ok_or_else(|| non_retryable(format!("the recorded child wait {id} has no child")))
    }

    /// Fan-out: starts every child (1 to 1,000) and waits durably until all of them are
    /// final. Returns their outcomes in the order given; a failed child is an outcome with
    /// [`ChildStatus::Failed`], not an error (use [`ChildOutcome::into_result`]).
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// use stackshift::ChildRun;
    /// let children = (0..50)
    ///     .map(|i| ChildRun::new("process-chunk", &serde_json::json!({ "chunk": i })))
    ///     .collect::<anyhow::Result<Vec<_>>>()?;
    /// let outcomes = step.invoke_all("process-chunks", children).await?;
    /// let mut total = 0u64;
    /// for outcome in outcomes {
    ///     total += outcome.into_result::<u64>()?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn invoke_all(
        &self,
        id: &str,
        children: Vec<ChildRun>,
    ) -> anyhow::Result<Vec<ChildOutcome>> {
        if children.is_empty() {
            return Err(non_retryable(format!(
                "step.invoke_all({id:?}) needs at least one child run"
            )));
        }
        let wait = Wait::Child(pb::ChildWait {
            children: children.into_iter().map(ChildRun::into_proto).collect(),
        });
        let output = self
            .suspend(
                id,
                pb::JournalEntryKind::Child,
                wait,
                "waiting for child runs",
            )
            .await?;
        outcomes_from_journal(&output)
            .map_err(|e| non_retryable(format!("the recorded result of child wait {id}: {e}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_decode_and_failed_children_are_typed_errors() {
        let out = br#"{"children":[{"runId":"a","job":"j","status":"completed","result":{"n":2}},
            {"runId":"b","job":"j","status":"failed","failure":{"message":"boom","errorType":"E","nonRetryable":true}}]}"#;
        let mut all = outcomes_from_journal(out).unwrap();
        let failed = all.pop().unwrap();
        let ok = all.pop().unwrap();
        assert_eq!(ok.status, ChildStatus::Completed);
        let v: serde_json::Value = ok.into_result().unwrap();
        assert_eq!(v["n"], 2);
        let err = failed.into_result::<serde_json::Value>().unwrap_err();
        let typed = err.downcast_ref::<ChildFailed>().unwrap();
        assert_eq!(typed.run_id, "b");
        assert_eq!(typed.failure.message, "boom");
        assert!(crate::error::is_non_retryable(&err));
    }
}
