//! [`ScheduleStore`] for [`SqlStore`]. Creating or resuming a schedule notifies the other
//! replicas on PostgreSQL (their timers must wake at its next time); a firing notifies
//! them of the runs it queued.

use std::collections::HashSet;

use async_trait::async_trait;

use crate::engine::EngineResult;
use crate::engine::model::StartOutcome;
use crate::engine::schedule_model::{NewSchedule, ScheduleFiring, ScheduleRecord};
use crate::engine::store::{ScheduleStore, Wakeup};

use super::schedule_ops;
use super::sql::SqlStore;

fn timer(s: &ScheduleRecord) -> Vec<Wakeup> {
    if s.paused {
        Vec::new()
    } else {
        vec![Wakeup::TimerAt(s.next_fire_at)]
    }
}

#[async_trait]
impl ScheduleStore for SqlStore {
    async fn insert_schedule(&self, new: NewSchedule) -> EngineResult<(ScheduleRecord, bool)> {
        self.write_notify(
            move |c| Box::pin(schedule_ops::insert(c, new)),
            |(s, created): &(ScheduleRecord, bool)| if *created { timer(s) } else { Vec::new() },
        )
        .await
    }

    async fn get_schedule(
        &self,
        namespace: &str,
        id: &str,
    ) -> EngineResult<Option<ScheduleRecord>> {
        schedule_ops::get(self.connection(), namespace, id).await
    }

    async fn list_schedules(
        &self,
        namespace: &str,
        cursor: Option<&str>,
        limit: u64,
    ) -> EngineResult<Vec<ScheduleRecord>> {
        schedule_ops::list(self.connection(), namespace, cursor, limit).await
    }

    async fn set_schedule_paused(
        &self,
        namespace: &str,
        id: &str,
        paused: bool,
        next_fire_at: Option<i64>,
        now: i64,
    ) -> EngineResult<Option<ScheduleRecord>> {
        let (ns, id) = (namespace.to_owned(), id.to_owned());
        self.write_notify(
            move |c| {
                Box::pin(async move {
                    schedule_ops::set_paused(c, &ns, &id, paused, next_fire_at, now).await
                })
            },
            |s: &Option<ScheduleRecord>| s.as_ref().map(timer).unwrap_or_default(),
        )
        .await
    }

    async fn delete_schedule(&self, namespace: &str, id: &str) -> EngineResult<bool> {
        let (ns, id) = (namespace.to_owned(), id.to_owned());
        self.writer()
            .run(move |c| Box::pin(async move { schedule_ops::delete(c, &ns, &id).await }))
            .await
    }

    async fn due_schedules(&self, now: i64, limit: u64) -> EngineResult<Vec<ScheduleRecord>> {
        schedule_ops::due(self.connection(), now, limit).await
    }

    async fn fire_schedule(
        &self,
        firing: ScheduleFiring,
    ) -> EngineResult<Option<Vec<StartOutcome>>> {
        self.write_notify(
            move |c| Box::pin(schedule_ops::fire(c, firing)),
            |out: &Option<Vec<StartOutcome>>| {
                let mut seen = HashSet::new();
                out.iter()
                    .flatten()
                    .filter_map(|o| match o {
                        StartOutcome::Created(r) => Some(r),
                        StartOutcome::Duplicate(_) => None,
                    })
                    .filter(|r| seen.insert((r.namespace.clone(), r.queue.clone(), r.job.clone())))
                    .map(|r| Wakeup::Ready {
                        namespace: r.namespace.clone(),
                        queue: r.queue.clone(),
                        job: r.job.clone(),
                    })
                    .collect()
            },
        )
        .await
    }

    async fn next_schedule_fire(&self) -> EngineResult<Option<i64>> {
        schedule_ops::next_fire(self.connection()).await
    }
}
