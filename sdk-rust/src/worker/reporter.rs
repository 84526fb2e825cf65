//! The worker's reporter: every step result and run outcome of the worker's tasks goes out
//! through it, gathered into `ReportBatch` calls.
//!
//! Batching is natural, with no timer: a report submitted while fewer than
//! [`MAX_IN_FLIGHT`] calls are in flight is sent at once; reports submitted while the calls
//! are busy wait and all go out together in the next call (at most [`MAX_ITEMS`] reports
//! and at most [`MAX_BATCH_BYTES`] of encoded reports per call, unless one report alone is
//! larger). At low load every report travels alone, as fast as a single RPC; under load
//! one call carries many, and the server applies them in one group commit. Each submitter
//! awaits its own item's answer, which is exactly what the single RPC would have answered,
//! so callers keep their retry and error handling (see [`super::lease::write`]): a failure
//! of the whole call (e.g. `UNAVAILABLE`) answers each item with that status, and each
//! caller retries its own report.
//!
//! A server without `ReportBatch` answers `UNIMPLEMENTED`: the reporter then sends that
//! batch and every later report with the single RPCs (`CompleteStep`, `CompleteRun`,
//! `FailRun`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message as _;
use stackshift_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::{Code, Status};

use super::lease::WRITE_TIMEOUT;
use crate::client::{WorkerClient, with_timeout};
use pb::report_item::Report;
use pb::report_result::Result as Answer;

/// Most reports in one call (the server's limit, see docs/worker-protocol.md).
pub(crate) const MAX_ITEMS: usize = 1_000;
/// A call stops taking more reports once its encoded reports reach this size.
pub(crate) const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Calls in flight at once; reports arriving meanwhile wait for the next call.
pub(crate) const MAX_IN_FLIGHT: usize = 2;

/// One submitted report and where its answer goes.
struct Pending {
    report: Report,
    reply: oneshot::Sender<Result<Answer, Status>>,
}

/// What the submitters and the sending task share.
struct Shared {
    client: WorkerClient,
    /// Set once the server answered `UNIMPLEMENTED`: single RPCs from then on.
    single: AtomicBool,
}

/// Sends a worker's reports in batches; cheap to clone. The sending task ends when the
/// last clone is dropped.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::UnboundedSender<Pending>,
    shared: Arc<Shared>,
}

impl Reporter {
    /// A reporter sending through `client`; spawns its sending task (needs a runtime).
    pub(crate) fn new(client: WorkerClient) -> Self {
        let shared = Arc::new(Shared {
            client,
            single: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(gather(Arc::clone(&shared), rx));
        Self { tx, shared }
    }

    /// Records a step result; answers what `CompleteStep` would.
    pub(crate) async fn complete_step(
        &self,
        request: pb::CompleteStepRequest,
    ) -> Result<tonic::Response<pb::CompleteStepResponse>, Status> {
        match self.submit(Report::CompleteStep(request)).await? {
            Answer::CompleteStep(r) => Ok(tonic::Response::new(r)),
            other => Err(mismatch(&other)),
        }
    }

    /// Records the run's result; answers what `CompleteRun` would.
    pub(crate) async fn complete_run(
        &self,
        request: pb::CompleteRunRequest,
    ) -> Result<tonic::Response<pb::CompleteRunResponse>, Status> {
        match self.submit(Report::CompleteRun(request)).await? {
            Answer::CompleteRun(r) => Ok(tonic::Response::new(r)),
            other => Err(mismatch(&other)),
        }
    }

    /// Records a failed attempt; answers what `FailRun` would.
    pub(crate) async fn fail_run(
        &self,
        request: pb::FailRunRequest,
    ) -> Result<tonic::Response<pb::FailRunResponse>, Status> {
        match self.submit(Report::FailRun(request)).await? {
            Answer::FailRun(r) => Ok(tonic::Response::new(r)),
            other => Err(mismatch(&other)),
        }
    }

    /// Queues `report` for the next call and waits for its answer (an `Error` answer is
    /// returned as `Err`).
    async fn submit(&self, report: Report) -> Result<Answer, Status> {
        if self.shared.single.load(Ordering::Relaxed) {
            return single(&self.shared.client, report).await;
        }
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = self.tx.send(Pending { report, reply }) {
            // The sending task is gone (the runtime is shutting down): send it alone.
            return single(&self.shared.client, pending.report).await;
        }
        match answer.await {
            Ok(Ok(Answer::Error(e))) => Err(status_of(e)),
            Ok(answer) => answer,
            Err(_) => Err(Status::unavailable("the worker's reporter stopped")),
        }
    }
}

/// The sending task: takes a call slot, then every report waiting (up to the limits) into
/// one call.
async fn gather(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry = None;
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let (batch, rest) = take_batch(first, &mut rx, |p| p.report.encoded_len_of());
        carry = rest;
        tokio::spawn(send(Arc::clone(&shared), batch, permit));
    }
}

/// One call's worth of reports: `first`, then what is already waiting in `rx`, stopping
/// at [`MAX_ITEMS`] or before a report that would take the call past [`MAX_BATCH_BYTES`].
/// That report is returned to open the next call, so a call never exceeds the byte bound
/// unless it holds a single report (which then travels alone, as its single RPC would):
/// an oversized report cannot make its neighbours' call fail.
fn take_batch<T>(
    first: T,
    rx: &mut mpsc::UnboundedReceiver<T>,
    size: impl Fn(&T) -> usize,
) -> (Vec<T>, Option<T>) {
    let mut bytes = size(&first);
    let mut batch = vec![first];
    while batch.len() < MAX_ITEMS {
        let Ok(next) = rx.try_recv() else { break };
        let len = size(&next);
        if bytes + len > MAX_BATCH_BYTES {
            return (batch, Some(next));
        }
        bytes += len;
        batch.push(next);
    }
    (batch, None)
}

/// Sends one batch and hands each answer to its submitter.
async fn send(shared: Arc<Shared>, batch: Vec<Pending>, _slot: OwnedSemaphorePermit) {
    if shared.single.load(Ordering::Relaxed) {
        return send_singly(&shared, batch);
    }
    let request = pb::ReportBatchRequest {
        items: batch
            .iter()
            .map(|p| pb::ReportItem {
                report: Some(p.report.clone()),
            })
            .collect(),
    };
    let answer = shared
        .client
        .clone()
        .report_batch(with_timeout(request, WRITE_TIMEOUT))
        .await;
    match answer {
        Ok(response) => {
            let results = response.into_inner().results;
            if results.len() != batch.len() {
                let status = Status::internal(format!(
                    "the server answered {} results for {} reports",
                    results.len(),
                    batch.len()
                ));
                for p in batch {
                    let _ = p.reply.send(Err(status.clone()));
                }
                return;
            }
            for (p, result) in batch.into_iter().zip(results) {
                let answer = result
                    .result
                    .ok_or_else(|| Status::internal("the server answered a report with nothing"));
                let _ = p.reply.send(answer);
            }
        }
        Err(status) if status.code() == Code::Unimplemented => {
            tracing::info!("the server has no ReportBatch; reporting with single calls");
            shared.single.store(true, Ordering::Relaxed);
            send_singly(&shared, batch);
        }
        Err(status) => {
            for p in batch {
                let _ = p.reply.send(Err(status.clone()));
            }
        }
    }
}

/// Sends every report of `batch` with its single RPC, concurrently.
fn send_singly(shared: &Arc<Shared>, batch: Vec<Pending>) {
    for p in batch {
        let client = shared.client.clone();
        tokio::spawn(async move {
            let _ = p.reply.send(single(&client, p.report).await);
        });
    }
}

/// Sends `report` with its own RPC.
async fn single(client: &WorkerClient, report: Report) -> Result<Answer, Status> {
    let mut client = client.clone();
    Ok(match report {
        Report::CompleteStep(r) => Answer::CompleteStep(
            client
                .complete_step(with_timeout(r, WRITE_TIMEOUT))
                .await?
                .into_inner(),
        ),
        Report::CompleteRun(r) => Answer::CompleteRun(
            client
                .complete_run(with_timeout(r, WRITE_TIMEOUT))
                .await?
                .into_inner(),
        ),
        Report::FailRun(r) => Answer::FailRun(
            client
                .fail_run(with_timeout(r, WRITE_TIMEOUT))
                .await?
                .into_inner(),
        ),
    })
}

/// The status the single RPC would have answered for an item refused with `e`.
fn status_of(e: pb::ReportError) -> Status {
    let mut status = Status::new(Code::from(e.code), e.message);
    if !e.reason.is_empty()
        && let Ok(reason) = e.reason.parse()
    {
        status
            .metadata_mut()
            .insert(crate::state::REASON_METADATA, reason);
    }
    status
}

fn mismatch(answer: &Answer) -> Status {
    Status::internal(format!(
        "the server answered a report with the wrong kind of result: {answer:?}"
    ))
}

/// The encoded size of a report.
trait EncodedLen {
    fn encoded_len_of(&self) -> usize;
}

impl EncodedLen for Report {
    fn encoded_len_of(&self) -> usize {
        match self {
            Report::CompleteStep(r) => r.encoded_len(),
            Report::CompleteRun(r) => r.encoded_len(),
            Report::FailRun(r) => r.encoded_len(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn queued(sizes: &[usize]) -> mpsc::UnboundedReceiver<usize> {
        let (tx, rx) = mpsc::unbounded_channel();
        for s in sizes {
            tx.send(*s).unwrap();
        }
        rx
    }

    #[test]
    fn takes_everything_waiting_within_the_bounds() {
        let mut rx = queued(&[10, 20, 30]);
        let (batch, rest) = take_batch(5, &mut rx, |s| *s);
        assert_eq!(batch, vec![5, 10, 20, 30]);
        assert!(rest.is_none());
    }

    #[test]
    fn stops_at_the_item_limit() {
        let mut rx = queued(&vec![1; MAX_ITEMS + 5]);
        let (batch, rest) = take_batch(1, &mut rx, |s| *s);
        assert_eq!(batch.len(), MAX_ITEMS);
        assert!(rest.is_none());
        assert_eq!(rx.len(), 6);
    }

    #[test]
    fn a_report_that_would_overflow_opens_the_next_call() {
        let half = MAX_BATCH_BYTES / 2;
        let mut rx = queued(&[half, MAX_BATCH_BYTES * 3, 7]);
        let (batch, rest) = take_batch(10, &mut rx, |s| *s);
        assert_eq!(batch, vec![10, half]);
        assert_eq!(rest, Some(MAX_BATCH_BYTES * 3));
        // The oversized report then travels alone; what follows it waits for the next call.
        let (batch, rest) = take_batch(rest.unwrap(), &mut rx, |s| *s);
        assert_eq!(batch, vec![MAX_BATCH_BYTES * 3]);
        assert_eq!(rest, Some(7));
    }

    #[test]
    fn a_call_fills_up_to_the_byte_bound_exactly() {
        let mut rx = queued(&[MAX_BATCH_BYTES - 10, 1]);
        let (batch, rest) = take_batch(10, &mut rx, |s| *s);
        assert_eq!(batch, vec![10, MAX_BATCH_BYTES - 10]);
        assert_eq!(rest, Some(1));
    }
}
