//! `WorkerService.ReportBatch`: many step results and run outcomes in one call. Each item
//! goes through exactly the code of its single RPC (validation, engine call, status
//! mapping); the items run concurrently so that the writer's group commit takes them
//! together, and each is answered in order with its response or its error.

use futures::future::join_all;
use stackshift_proto::v1 as pb;
use tonic::Status;

use super::status::STATE_REASON_METADATA;
use super::worker::WorkerApi;
use pb::report_item::Report;
use pb::report_result::Result as Answer;

/// Most items one `ReportBatch` call may carry.
pub const MAX_REPORT_ITEMS: usize = 1_000;

impl WorkerApi {
    /// Answers a batch for namespace `ns` (already authenticated).
    pub(super) async fn batch(
        &self,
        ns: &str,
        r: pb::ReportBatchRequest,
    ) -> Result<pb::ReportBatchResponse, Status> {
        if r.items.is_empty() {
            return Err(Status::invalid_argument(
                "items is empty: send at least one report",
            ));
        }
        if r.items.len() > MAX_REPORT_ITEMS {
            return Err(Status::invalid_argument(format!(
                "items holds {} reports; at most {MAX_REPORT_ITEMS} per call: split the batch",
                r.items.len()
            )));
        }
        let metrics = self.0.engine.metrics();
        metrics.record_report_batch(r.items.len());
        let answers = join_all(r.items.into_iter().map(|item| self.item(ns, item))).await;
        Ok(pb::ReportBatchResponse {
            results: answers
                .into_iter()
                .map(|answer| pb::ReportResult {
                    result: Some(answer.unwrap_or_else(|status| {
                        Answer::Error(pb::ReportError {
                            code: status.code() as i32,
                            message: status.message().to_owned(),
                            reason: reason_of(&status),
                        })
                    })),
                })
                .collect(),
        })
    }

    /// One item, answered as its single RPC would answer it.
    async fn item(&self, ns: &str, item: pb::ReportItem) -> Result<Answer, Status> {
        match item.report {
            Some(Report::CompleteStep(r)) => self.step_item(ns, r).await.map(Answer::CompleteStep),
            Some(Report::CompleteRun(r)) => self.run_item(ns, r).await.map(Answer::CompleteRun),
            Some(Report::FailRun(r)) => self.fail_item(ns, r).await.map(Answer::FailRun),
            None => Err(Status::invalid_argument(
                "report is required: set complete_step, complete_run or fail_run",
            )),
        }
    }
}

/// The `stackshift-error-reason` metadata of `status`, or empty.
fn reason_of(status: &Status) -> String {
    status
        .metadata()
        .get(STATE_REASON_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
