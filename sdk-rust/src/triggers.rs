//! Event triggers: [`Triggers`] subscribes jobs to events. Publishing a matching event
//! starts one run of each subscribed job (payload: the event as JSON, see
//! [`TriggeredEvent`]), in the same transaction as the event; a duplicate event id starts
//! nothing. See `docs/schedules.md`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stackshift::Error> {
//! use stackshift::{NewEventTrigger, StackShift};
//!
//! let client = StackShift::from_env()?;
//! client
//!     .triggers()
//!     .create(NewEventTrigger::new("user.signed_up", "send-welcome-email"))
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::trigger_service_client::TriggerServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::auth::AuthInterceptor;
use crate::client::{CALL_TIMEOUT, with_timeout};
use crate::convert::{duration_from_proto, duration_to_proto, timestamp_to_chrono};
use crate::options::RetryPolicy;

/// The generated `TriggerService` client, authenticated by the client's API key.
pub type TriggersClient = TriggerServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// The payload of a run started by an event trigger.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggeredEvent {
    /// The event's id.
    pub id: String,
    /// The event's name.
    pub name: String,
    /// The event's correlation key (empty when none).
    #[serde(default)]
    pub correlation_key: String,
    /// The event's payload.
    #[serde(default)]
    pub payload: Value,
    /// When the event was published, in milliseconds since the Unix epoch.
    pub published_at: i64,
}

/// A trigger to create: a job subscribed to an event name.
#[derive(Debug, Clone, Default)]
pub struct NewEventTrigger {
    event_name: String,
    job: String,
    correlation_key: Option<String>,
    queue: Option<String>,
    retry_policy: Option<RetryPolicy>,
    lease_timeout: Option<Duration>,
    priority: i32,
}

impl NewEventTrigger {
    /// Events named `event_name` start a run of `job`.
    pub fn new(event_name: impl Into<String>, job: impl Into<String>) -> Self {
        Self {
            event_name: event_name.into(),
            job: job.into(),
            ..Default::default()
        }
    }

    /// Only events with exactly this correlation key start a run.
    #[must_use]
    pub fn correlation_key(mut self, key: impl Into<String>) -> Self {
        self.correlation_key = Some(key.into());
        self
    }

    /// The queue of the runs (default `default`).
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
}

/// A stored trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTrigger {
    /// The trigger's id (assigned by the server).
    pub id: String,
    /// The event name.
    pub event_name: String,
    /// The correlation key filter; `None` = any key.
    pub correlation_key: Option<String>,
    /// The job started.
    pub job: String,
    /// The queue of the runs.
    pub queue: String,
    /// Retry overrides of the runs.
    pub retry_policy: Option<RetryPolicy>,
    /// Lease timeout of the runs.
    pub lease_timeout: Option<Duration>,
    /// Delivery priority of the runs.
    pub priority: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// One page of [`Triggers::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventTriggerPage {
    /// The triggers, by id.
    pub triggers: Vec<EventTrigger>,
    /// The token of the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Manages event triggers. Get one from [`StackShift::triggers`](crate::StackShift::triggers).
#[derive(Clone, Debug)]
pub struct Triggers {
    client: TriggersClient,
}

impl Triggers {
    pub(crate) fn new(client: TriggersClient) -> Self {
        Self { client }
    }

    /// Creates a trigger; returns it and whether it is new (the same event, key and job
    /// with the same options returns the stored one; other options fail with
    /// [`Error::AlreadyExists`]).
    pub async fn create(&self, t: NewEventTrigger) -> Result<(EventTrigger, bool), Error> {
        let request = pb::CreateEventTriggerRequest {
            event_name: t.event_name,
            correlation_key: t.correlation_key.unwrap_or_default(),
            job: t.job,
            queue: t.queue.unwrap_or_default(),
            retry_policy: t.retry_policy.map(pb::RetryPolicy::from),
            lease_timeout: t.lease_timeout.map(duration_to_proto),
            priority: t.priority,
        };
        let r = self
            .client
            .clone()
            .create_event_trigger(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok((trigger_from_pb(r.trigger)?, r.created))
    }

    /// One page of triggers, optionally of one event name and/or job.
    pub async fn list(
        &self,
        event_name: Option<String>,
        job: Option<String>,
        page_token: Option<String>,
    ) -> Result<EventTriggerPage, Error> {
        let request = pb::ListEventTriggersRequest {
            event_name: event_name.unwrap_or_default(),
            job: job.unwrap_or_default(),
            page_size: 0,
            page_token: page_token.unwrap_or_default(),
        };
        let r = self
            .client
            .clone()
            .list_event_triggers(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok(EventTriggerPage {
            triggers: r
                .triggers
                .into_iter()
                .map(|t| trigger_from_pb(Some(t)))
                .collect::<Result<_, _>>()?,
            next_page_token: (!r.next_page_token.is_empty()).then_some(r.next_page_token),
        })
    }

    /// Deletes a trigger.
    pub async fn delete(&self, id: impl Into<String>) -> Result<(), Error> {
        let request = pb::DeleteEventTriggerRequest {
            trigger_id: id.into(),
        };
        self.client
            .clone()
            .delete_event_trigger(with_timeout(request, CALL_TIMEOUT))
            .await?;
        Ok(())
    }
}

fn trigger_from_pb(t: Option<pb::EventTrigger>) -> Result<EventTrigger, Error> {
    let t = t.ok_or_else(|| Error::protocol("the response holds no trigger"))?;
    Ok(EventTrigger {
        created_at: t
            .created_at
            .as_ref()
            .and_then(timestamp_to_chrono)
            .ok_or_else(|| Error::protocol("trigger.created_at is missing"))?,
        id: t.id,
        event_name: t.event_name,
        correlation_key: (!t.correlation_key.is_empty()).then_some(t.correlation_key),
        job: t.job,
        queue: t.queue,
        retry_policy: t.retry_policy.map(RetryPolicy::from),
        lease_timeout: t.lease_timeout.as_ref().and_then(duration_from_proto),
        priority: t.priority,
    })
}
