//! [`EventStore`] for [`SqlStore`]: events, waits and the inbox. Writes that queue runs
//! (a publish resolving waits, the timer resolving due waits) or schedule a timer (a
//! suspension) also notify the other replicas on PostgreSQL. A publish can also claim,
//! in its own transaction, for parked polls of this server (the resume handoff).

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::engine::EngineResult;
use crate::engine::event_model::{
    EventFilter, EventRecord, NewEvent, PublishOutcome, ResumedRun, SuspendOutcome, WaitSpec,
};
use crate::engine::model::{ClaimRequest, LeaseRef};
use crate::engine::queue_model::ClaimOutcome;
use crate::engine::store::{ClaimPicker, EventStore, Wakeup};

use super::limits::{LimitHit, Limited};
use super::sql::SqlStore;
use super::{event_ops, handoff_claim, wait_ops};

/// One `Ready` wakeup per distinct (namespace, queue, job) of the resumed runs.
fn ready(resumed: &[ResumedRun]) -> Vec<Wakeup> {
    let mut seen = HashSet::new();
    resumed
        .iter()
        .filter(|r| seen.insert((&r.namespace, &r.queue, &r.job)))
        .map(|r| Wakeup::Ready {
            namespace: r.namespace.clone(),
            queue: r.queue.clone(),
            job: r.job.clone(),
        })
        .collect()
}

/// How long a write keeps retrying while its event key is locked by another transaction
/// (which commits within milliseconds, unless the database is unhealthy).
const BUSY_RETRY_FOR: Duration = Duration::from_secs(10);

/// Runs `attempt` again while it fails because its event key is locked by another
/// transaction (see `event_ops::lock_match_key`), with a short growing pause.
async fn retry_busy<T, F, Fut>(mut attempt: F) -> EngineResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = EngineResult<T>>,
{
    let deadline = Instant::now() + BUSY_RETRY_FOR;
    let mut pause = Duration::from_millis(1);
    loop {
        match attempt().await {
            Err(e) if event_ops::is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// The wakeups of a publish for other replicas: one `Ready` per distinct (namespace, queue,
/// job) of the runs it resumed or started, leaving out the runs it handed to local polls.
fn publish_wakeups(out: &PublishOutcome, claims: &[ClaimOutcome]) -> Vec<Wakeup> {
    let taken: HashSet<&str> = claims
        .iter()
        .flat_map(|c| c.tasks.iter().map(|t| t.run.id.as_str()))
        .collect();
    let deliverable: Vec<ResumedRun> = out
        .resumed
        .iter()
        .filter(|r| !taken.contains(r.run_id.as_str()))
        .cloned()
        .chain(
            out.started
                .iter()
                .filter(|r| !taken.contains(r.id.as_str()))
                .map(|r| ResumedRun {
                    run_id: r.id.clone(),
                    namespace: r.namespace.clone(),
                    queue: r.queue.clone(),
                    job: r.job.clone(),
                }),
        )
        .collect();
    ready(&deliverable)
}

/// The runs `out` made deliverable at `req.now` (resumed, or started and available) that
/// a poll making `req` serves, except those in `taken`.
fn served<'a>(
    out: &'a PublishOutcome,
    req: &ClaimRequest,
    taken: &HashSet<String>,
) -> Vec<&'a str> {
    let serves = |queue: &str, job: &str| {
        req.queues.iter().any(|q| q == queue) && req.jobs.iter().any(|j| j.name == job)
    };
    out.resumed
        .iter()
        .filter(|r| r.namespace == req.namespace && serves(&r.queue, &r.job))
        .map(|r| r.run_id.as_str())
        .chain(
            out.started
                .iter()
                .filter(|r| {
                    r.namespace == req.namespace
                        && r.available_at <= req.now
                        && serves(&r.queue, &r.job)
                })
                .map(|r| r.id.as_str()),
        )
        .filter(|id| !taken.contains(*id))
        .collect()
}

impl SqlStore {
    /// Publishes `new` and, with `pick`, claims in the same transaction for the requests it
    /// returns (see `EventStore::publish_event_and_claim`).
    async fn publish_with(
        &self,
        new: NewEvent,
        pick: Option<ClaimPicker>,
    ) -> EngineResult<(PublishOutcome, Vec<ClaimOutcome>)> {
        retry_busy(|| {
            let (new, pick, rotation) = (new.clone(), pick.clone(), self.rotation.clone());
            self.write_notify(
                move |c| {
                    Box::pin(async move {
                        let out = event_ops::publish(c, new).await?;
                        let mut claims = Vec::new();
                        if let Some(pick) = pick.filter(|_| !out.duplicate) {
                            let mut taken: HashSet<String> = HashSet::new();
                            for req in pick(&out) {
                                let turn = rotation.fetch_add(1, Ordering::Relaxed);
                                // The runs this publish made deliverable that the poll
                                // serves and no earlier poll took (`handoff_claim`).
                                let known = served(&out, &req, &taken);
                                let claim =
                                    handoff_claim::claim_handoff(c, req, &known, turn, "publish")
                                        .await?;
                                taken.extend(claim.tasks.iter().map(|t| t.run.id.clone()));
                                claims.push(claim);
                            }
                        }
                        Ok((out, claims))
                    })
                },
                |(out, claims): &(PublishOutcome, Vec<ClaimOutcome>)| publish_wakeups(out, claims),
            )
        })
        .await
    }
}

#[async_trait]
impl EventStore for SqlStore {
    async fn publish_event(&self, new: NewEvent) -> EngineResult<PublishOutcome> {
        Ok(self.publish_with(new, None).await?.0)
    }

    async fn publish_event_and_claim(
        &self,
        new: NewEvent,
        pick: ClaimPicker,
    ) -> EngineResult<(PublishOutcome, Vec<ClaimOutcome>)> {
        self.publish_with(new, Some(pick)).await
    }

    async fn list_events(
        &self,
        namespace: &str,
        filter: &EventFilter,
        cursor: Option<i64>,
        limit: u64,
    ) -> EngineResult<Vec<EventRecord>> {
        event_ops::list(self.connection(), namespace, filter, cursor, limit).await
    }

    async fn suspend_run(
        &self,
        lease: LeaseRef,
        step_id: String,
        wait: WaitSpec,
        now: i64,
    ) -> EngineResult<SuspendOutcome> {
        retry_busy(|| {
            let (lease, step_id, wait) = (lease.clone(), step_id.clone(), wait.clone());
            let namespace = lease.namespace.clone();
            self.write_released(
                move |c| Box::pin(wait_ops::suspend(c, lease, step_id, wait, now)),
                |out: &Limited<SuspendOutcome>| match out {
                    Ok(SuspendOutcome::Suspended {
                        wake_at, children, ..
                    }) => {
                        let created: Vec<ResumedRun> = children
                            .iter()
                            .filter(|(_, created)| *created)
                            .map(|(r, _)| ResumedRun {
                                run_id: r.id.clone(),
                                namespace: r.namespace.clone(),
                                queue: r.queue.clone(),
                                job: r.job.clone(),
                            })
                            .collect();
                        let mut w = ready(&created);
                        w.extend(wake_at.map(Wakeup::TimerAt));
                        w
                    }
                    Ok(SuspendOutcome::Satisfied(_)) | Err(_) => Vec::new(),
                },
                move |out: &Limited<SuspendOutcome>| match out {
                    Ok(SuspendOutcome::Suspended { queue, .. }) => {
                        vec![(namespace.clone(), queue.clone())]
                    }
                    Ok(SuspendOutcome::Satisfied(_)) => Vec::new(),
                    Err(hit) => hit.released(),
                },
            )
        })
        .await?
        .map_err(LimitHit::into_error)
    }

    async fn resolve_due_waits(&self, now: i64, limit: u64) -> EngineResult<Vec<ResumedRun>> {
        // Cheap read first: usually nothing is due, and that needs no write.
        match wait_ops::next_wake(self.connection()).await? {
            Some(at) if at <= now => {}
            _ => return Ok(Vec::new()),
        }
        self.write_notify(
            move |c| Box::pin(wait_ops::resolve_due(c, now, limit)),
            |out: &Vec<ResumedRun>| ready(out),
        )
        .await
    }

    async fn sweep_events(&self, cutoff: i64, limit: u64) -> EngineResult<u64> {
        self.writer()
            .run(move |c| Box::pin(event_ops::sweep(c, cutoff, limit)))
            .await
    }
}
