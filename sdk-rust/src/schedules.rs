//! Schedules: [`Schedules`] creates, reads, lists, pauses, resumes and deletes schedules —
//! a cron expression (in a time zone) or a fixed interval that starts a run of a job at
//! each scheduled time. Each scheduled time starts at most one run (idempotency key
//! `schedule:<id>:<time>`), even with several server replicas and after downtime; see
//! `docs/schedules.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stackshift::Error> {
//! use serde_json::json;
//! use stackshift::{CatchUp, NewSchedule, ScheduleSpec, StackShift};
//!
//! let client = StackShift::from_env()?;
//! let created = client
//!     .schedules()
//!     .create(
//!         NewSchedule::new(
//!             "nightly-report",
//!             ScheduleSpec::cron("0 3 * * *").time_zone("Europe/Paris"),
//!             "build-report",
//!             json!({ "kind": "daily" }),
//!         )
//!         .catch_up(CatchUp::Latest),
//!     )
//!     .await?;
//! println!("next at {}", created.schedule.next_fire_time);
//! # Ok(()) }
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::schedule_service_client::ScheduleServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::auth::AuthInterceptor;
use crate::client::{CALL_TIMEOUT, with_timeout};
use crate::convert::{
    duration_from_proto, duration_to_proto, json_from_bytes, timestamp_to_chrono,
};
use crate::options::RetryPolicy;
use stackshift_proto::prost_types;

/// The generated `ScheduleService` client, authenticated by the client's API key.
pub type SchedulesClient = ScheduleServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleSpec {
    /// A cron expression (5 fields, or 6 with seconds first) in an IANA time zone.
    Cron {
        /// The expression, e.g. `0 9 * * MON-FRI`.
        expression: String,
        /// The time zone, e.g. `Europe/Paris`; `None` = UTC.
        time_zone: Option<String>,
    },
    /// A fixed interval (at least 1 s), aligned to the Unix epoch.
    Interval(Duration),
}

impl ScheduleSpec {
    /// A cron expression evaluated in UTC (see [`ScheduleSpec::time_zone`]).
    pub fn cron(expression: impl Into<String>) -> Self {
        Self::Cron {
            expression: expression.into(),
            time_zone: None,
        }
    }

    /// A fixed interval.
    pub fn every(interval: Duration) -> Self {
        Self::Interval(interval)
    }

    /// Sets the time zone of a cron spec (no effect on an interval).
    #[must_use]
    pub fn time_zone(self, tz: impl Into<String>) -> Self {
        match self {
            Self::Cron { expression, .. } => Self::Cron {
                expression,
                time_zone: Some(tz.into()),
            },
            other => other,
        }
    }
}

/// What a schedule does about times that passed while no server could fire it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Start nothing for missed times (a time noticed at most 5 s late still fires).
    Skip,
    /// Start one run, for the most recent missed time.
    #[default]
    Latest,
    /// Start one run per missed time, at most 100 (the most recent ones).
    All,
}

/// A schedule to create: an id, a spec, and the run it starts.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    id: String,
    spec: ScheduleSpec,
    job: String,
    payload: Result<Vec<u8>, String>,
    queue: Option<String>,
    retry_policy: Option<RetryPolicy>,
    lease_timeout: Option<Duration>,
    priority: i32,
    catch_up: Option<CatchUp>,
    paused: bool,
}

impl NewSchedule {
    /// A schedule `id` that starts `job` with `payload` (any `Serialize` value) at the
    /// times of `spec`.
    pub fn new(
        id: impl Into<String>,
        spec: ScheduleSpec,
        job: impl Into<String>,
        payload: impl Serialize,
    ) -> Self {
        Self {
            id: id.into(),
            spec,
            job: job.into(),
            payload: serde_json::to_vec(&payload).map_err(|e| e.to_string()),
            queue: None,
            retry_policy: None,
            lease_timeout: None,
            priority: 0,
            catch_up: None,
            paused: false,
        }
    }

    /// The queue the runs go to (default `default`).
    #[must_use]
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Retry policy overrides of the runs.
    #[must_use]
    pub fn retry_policy(mut self, p: RetryPolicy) -> Self {
        self.retry_policy = Some(p);
        self
    }

    /// Lease timeout of the runs' attempts.
    #[must_use]
    pub fn lease_timeout(mut self, d: Duration) -> Self {
        self.lease_timeout = Some(d);
        self
    }

    /// Delivery priority of the runs (-1000 to 1000).
    #[must_use]
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    /// The catch-up policy (default [`CatchUp::Latest`]).
    #[must_use]
    pub fn catch_up(mut self, c: CatchUp) -> Self {
        self.catch_up = Some(c);
        self
    }

    /// Creates the schedule paused.
    #[must_use]
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }
}

/// A schedule as stored by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The schedule's id.
    pub id: String,
    /// When it fires (a cron spec always has its time zone here).
    pub spec: ScheduleSpec,
    /// The job it starts.
    pub job: String,
    /// The payload of every run.
    pub payload: Value,
    /// The queue of the runs.
    pub queue: String,
    /// Retry overrides of the runs.
    pub retry_policy: Option<RetryPolicy>,
    /// Lease timeout of the runs.
    pub lease_timeout: Option<Duration>,
    /// Delivery priority of the runs.
    pub priority: i32,
    /// The catch-up policy.
    pub catch_up: CatchUp,
    /// True while paused.
    pub paused: bool,
    /// The next scheduled time it fires at (while not paused).
    pub next_fire_time: DateTime<Utc>,
    /// The scheduled time of the newest run it started.
    pub last_fire_time: Option<DateTime<Utc>>,
    /// Ids of the most recent runs it started, newest first (at most 10).
    pub recent_run_ids: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// What [`Schedules::create`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedSchedule {
    /// The schedule as stored.
    pub schedule: Schedule,
    /// False when it already existed with the same definition.
    pub created: bool,
}

/// One page of [`Schedules::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulePage {
    /// The schedules, by id.
    pub schedules: Vec<Schedule>,
    /// Pass to [`Schedules::list`] for the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Manages schedules. Get one from [`StackShift::schedules`](crate::StackShift::schedules).
#[derive(Clone, Debug)]
pub struct Schedules {
    client: SchedulesClient,
}

impl Schedules {
    pub(crate) fn new(client: SchedulesClient) -> Self {
        Self { client }
    }

    /// Creates a schedule. The same id with the same definition returns the stored one
    /// (`created: false`); with a different definition it fails with
    /// [`Error::AlreadyExists`].
    pub async fn create(&self, s: NewSchedule) -> Result<CreatedSchedule, Error> {
        let payload = s.payload.map_err(|e| {
            Error::InvalidArgument(format!("the schedule payload does not serialize: {e}"))
        })?;
        let request = pb::CreateScheduleRequest {
            schedule_id: s.id,
            spec: Some(spec_to_pb(&s.spec)),
            action: Some(pb::ScheduleAction {
                job: s.job,
                payload,
                queue: s.queue.unwrap_or_default(),
                retry_policy: s.retry_policy.map(pb::RetryPolicy::from),
                lease_timeout: s.lease_timeout.map(duration_to_proto),
                priority: s.priority,
            }),
            catch_up: s
                .catch_up
                .map_or(pb::ScheduleCatchUp::Unspecified, catch_up_to_pb)
                as i32,
            paused: s.paused,
        };
        let r = self
            .client
            .clone()
            .create_schedule(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok(CreatedSchedule {
            schedule: schedule_from_pb(r.schedule)?,
            created: r.created,
        })
    }

    /// Reads a schedule.
    pub async fn get(&self, id: impl Into<String>) -> Result<Schedule, Error> {
        let request = pb::GetScheduleRequest {
            schedule_id: id.into(),
        };
        let r = self
            .client
            .clone()
            .get_schedule(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        schedule_from_pb(r.schedule)
    }

    /// One page of schedules by id (`page_size` 0 = the server's default of 50).
    pub async fn list(
        &self,
        page_size: u32,
        page_token: Option<String>,
    ) -> Result<SchedulePage, Error> {
        let request = pb::ListSchedulesRequest {
            page_size: i32::try_from(page_size).unwrap_or(i32::MAX),
            page_token: page_token.unwrap_or_default(),
        };
        let r = self
            .client
            .clone()
            .list_schedules(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok(SchedulePage {
            schedules: r
                .schedules
                .into_iter()
                .map(|s| schedule_from_pb(Some(s)))
                .collect::<Result<_, _>>()?,
            next_page_token: (!r.next_page_token.is_empty()).then_some(r.next_page_token),
        })
    }

    /// Pauses a schedule (no-op when paused).
    pub async fn pause(&self, id: impl Into<String>) -> Result<Schedule, Error> {
        let request = pb::PauseScheduleRequest {
            schedule_id: id.into(),
        };
        let r = self
            .client
            .clone()
            .pause_schedule(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        schedule_from_pb(r.schedule)
    }

    /// Resumes a paused schedule from its first time after now (no-op when active).
    pub async fn resume(&self, id: impl Into<String>) -> Result<Schedule, Error> {
        let request = pb::ResumeScheduleRequest {
            schedule_id: id.into(),
        };
        let r = self
            .client
            .clone()
            .resume_schedule(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        schedule_from_pb(r.schedule)
    }

    /// Deletes a schedule (runs it started are kept).
    pub async fn delete(&self, id: impl Into<String>) -> Result<(), Error> {
        let request = pb::DeleteScheduleRequest {
            schedule_id: id.into(),
        };
        self.client
            .clone()
            .delete_schedule(with_timeout(request, CALL_TIMEOUT))
            .await?;
        Ok(())
    }
}

fn catch_up_to_pb(c: CatchUp) -> pb::ScheduleCatchUp {
    match c {
        CatchUp::Skip => pb::ScheduleCatchUp::Skip,
        CatchUp::Latest => pb::ScheduleCatchUp::Latest,
        CatchUp::All => pb::ScheduleCatchUp::All,
    }
}

fn spec_to_pb(s: &ScheduleSpec) -> pb::ScheduleSpec {
    let spec = match s {
        ScheduleSpec::Cron {
            expression,
            time_zone,
        } => pb::schedule_spec::Spec::Cron(pb::CronSpec {
            expression: expression.clone(),
            time_zone: time_zone.clone().unwrap_or_default(),
        }),
        ScheduleSpec::Interval(d) => pb::schedule_spec::Spec::Interval(pb::IntervalSpec {
            interval: Some(duration_to_proto(*d)),
        }),
    };
    pb::ScheduleSpec { spec: Some(spec) }
}

fn schedule_from_pb(s: Option<pb::Schedule>) -> Result<Schedule, Error> {
    let s = s.ok_or_else(|| Error::protocol("the response holds no schedule"))?;
    let spec = match s.spec.and_then(|s| s.spec) {
        Some(pb::schedule_spec::Spec::Cron(c)) => ScheduleSpec::Cron {
            expression: c.expression,
            time_zone: Some(c.time_zone),
        },
        Some(pb::schedule_spec::Spec::Interval(i)) => ScheduleSpec::Interval(
            i.interval
                .as_ref()
                .and_then(duration_from_proto)
                .ok_or_else(|| Error::protocol("schedule.spec.interval is invalid"))?,
        ),
        None => return Err(Error::protocol("schedule.spec is missing")),
    };
    let a = s
        .action
        .ok_or_else(|| Error::protocol("schedule.action is missing"))?;
    let catch_up = match pb::ScheduleCatchUp::try_from(s.catch_up) {
        Ok(pb::ScheduleCatchUp::Skip) => CatchUp::Skip,
        Ok(pb::ScheduleCatchUp::All) => CatchUp::All,
        _ => CatchUp::Latest,
    };
    let time = |t: &Option<prost_types::Timestamp>, field: &str| {
        t.as_ref()
            .and_then(timestamp_to_chrono)
            .ok_or_else(|| Error::protocol(format!("schedule.{field} is missing")))
    };
    Ok(Schedule {
        next_fire_time: time(&s.next_fire_time, "next_fire_time")?,
        created_at: time(&s.created_at, "created_at")?,
        last_fire_time: s.last_fire_time.as_ref().and_then(timestamp_to_chrono),
        id: s.id,
        spec,
        job: a.job,
        payload: json_from_bytes(&a.payload)?,
        queue: a.queue,
        retry_policy: a.retry_policy.map(RetryPolicy::from),
        lease_timeout: a.lease_timeout.as_ref().and_then(duration_from_proto),
        priority: a.priority,
        catch_up,
        paused: s.paused,
        recent_run_ids: s.recent_run_ids,
    })
}
