//! Events: [`Events`] publishes events (which resume the runs waiting for them) and lists
//! stored events; [`Event`] is an event as stored, and [`WaitResult`] is what
//! [`Step::wait_for_event`](crate::Step::wait_for_event) returns.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stackshift::Error> {
//! use serde_json::json;
//! use stackshift::{PublishEvent, StackShift};
//!
//! let client = StackShift::from_env()?;
//! let published = client
//!     .events()
//!     .publish(
//!         PublishEvent::new("payment.confirmed", json!({ "amount": 4200 }))
//!             .correlation_key("pay_123")
//!             .id("stripe:evt_1N2b3c"), // a webhook delivered twice is stored once
//!     )
//!     .await?;
//! println!("resumed {} run(s)", published.resumed_run_count);
//! # Ok(()) }
//! ```

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::events_service_client::EventsServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::auth::AuthInterceptor;
use crate::client::{CALL_TIMEOUT, with_timeout};
use crate::convert::{chrono_to_timestamp, json_from_bytes, timestamp_to_chrono};

/// The generated `EventsService` client, authenticated by the client's API key.
pub type EventsClient = EventsServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// An event as stored by the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's id (given at publish, or assigned by the server).
    pub id: String,
    /// The event's name, e.g. `payment.confirmed`.
    pub name: String,
    /// The correlation key; `None` when the event has none.
    pub correlation_key: Option<String>,
    /// The payload (`null` when published without one).
    pub payload: Value,
    /// When the server stored the event.
    pub published_at: DateTime<Utc>,
}

impl Event {
    /// The payload deserialized into `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_value(self.payload.clone())?)
    }
}

/// What a wait for an event returned: the event, or the timeout passed first.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitResult<T> {
    /// A matching event arrived (possibly before the wait began: see `docs/events.md`).
    Received(T),
    /// The timeout passed without a matching event.
    TimedOut,
}

impl<T> WaitResult<T> {
    /// The event, or `None` when the wait timed out.
    pub fn received(self) -> Option<T> {
        match self {
            WaitResult::Received(t) => Some(t),
            WaitResult::TimedOut => None,
        }
    }

    /// True when the wait timed out.
    pub fn is_timed_out(&self) -> bool {
        matches!(self, WaitResult::TimedOut)
    }
}

/// An event to publish: a name, a JSON payload, and optionally an id (a repeated id is
/// ignored by the server) and a correlation key (only waits for the same key match).
///
/// ```
/// use serde_json::json;
/// use stackshift::PublishEvent;
///
/// let event = PublishEvent::new("payment.confirmed", json!({ "amount": 4200 }))
///     .correlation_key("pay_123")
///     .id("stripe:evt_1N2b3c");
/// ```
#[derive(Debug, Clone)]
pub struct PublishEvent {
    name: String,
    payload: Result<Vec<u8>, String>,
    id: Option<String>,
    correlation_key: Option<String>,
}

impl PublishEvent {
    /// An event named `name` with `payload` (any `Serialize` value). A payload that does
    /// not serialize is reported by [`Events::publish`] as [`Error::InvalidArgument`].
    pub fn new(name: impl Into<String>, payload: impl Serialize) -> Self {
        Self {
            name: name.into(),
            payload: serde_json::to_vec(&payload).map_err(|e| e.to_string()),
            id: None,
            correlation_key: None,
        }
    }

    /// The id used for deduplication: publishing an id the server already stores (within
    /// the retention period) does nothing and reports `duplicate`.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The correlation key: the event only resumes waits for exactly this key.
    #[must_use]
    pub fn correlation_key(mut self, key: impl Into<String>) -> Self {
        self.correlation_key = Some(key.into());
        self
    }
}

/// What [`Events::publish`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishResult {
    /// The stored event (for a duplicate: the event stored first under the id).
    pub event: Event,
    /// True when the id was already stored: nothing was stored and nothing resumed.
    pub duplicate: bool,
    /// How many waiting runs the event resumed.
    pub resumed_run_count: u64,
    /// The resumed runs' ids, at most 100 (oldest wait first).
    pub resumed_run_ids: Vec<String>,
    /// The runs the event started through event triggers (one per subscribed job).
    pub started_run_ids: Vec<String>,
}

/// Filters and paging for [`Events::list`]. `None` means "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListEventsOptions {
    /// Only events with this name.
    pub name: Option<String>,
    /// Only events with this correlation key.
    pub correlation_key: Option<String>,
    /// Only events published at or after this time.
    pub published_after: Option<DateTime<Utc>>,
    /// Only events published before this time.
    pub published_before: Option<DateTime<Utc>>,
    /// Maximum events to return (1-1000); the server's default is 50.
    pub page_size: Option<u32>,
    /// The `next_page_token` of a previous page.
    pub page_token: Option<String>,
}

/// One page of [`Events::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    /// The events, newest first.
    pub events: Vec<Event>,
    /// Pass as `page_token` to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

/// Publishes and lists events. Get one from [`StackShift::events`](crate::StackShift::events).
#[derive(Clone, Debug)]
pub struct Events {
    client: EventsClient,
}

impl Events {
    pub(crate) fn new(client: EventsClient) -> Self {
        Self { client }
    }

    /// Publishes an event. It resumes every run waiting for it (same name and correlation
    /// key) and stays in the inbox for runs that reach their wait later.
    pub async fn publish(&self, event: PublishEvent) -> Result<PublishResult, Error> {
        let payload = event.payload.map_err(|e| {
            Error::InvalidArgument(format!("the event payload does not serialize: {e}"))
        })?;
        let request = pb::PublishEventRequest {
            name: event.name,
            payload,
            id: event.id.unwrap_or_default(),
            correlation_key: event.correlation_key.unwrap_or_default(),
        };
        let response = self
            .client
            .clone()
            .publish_event(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok(PublishResult {
            event: event_from_pb(
                response
                    .event
                    .ok_or_else(|| Error::protocol("the response holds no event"))?,
            )?,
            duplicate: response.duplicate,
            resumed_run_count: u64::try_from(response.resumed_run_count).unwrap_or(0),
            resumed_run_ids: response.resumed_run_ids,
            started_run_ids: response.started_run_ids,
        })
    }

    /// One page of stored events, newest first.
    pub async fn list(&self, opts: ListEventsOptions) -> Result<EventPage, Error> {
        let request = pb::ListEventsRequest {
            name: opts.name.unwrap_or_default(),
            correlation_key: opts.correlation_key.unwrap_or_default(),
            published_after: opts.published_after.map(chrono_to_timestamp),
            published_before: opts.published_before.map(chrono_to_timestamp),
            page_size: opts
                .page_size
                .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            page_token: opts.page_token.unwrap_or_default(),
        };
        let response = self
            .client
            .clone()
            .list_events(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok(EventPage {
            events: response
                .events
                .into_iter()
                .map(event_from_pb)
                .collect::<Result<_, _>>()?,
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
        })
    }
}

/// Decodes a wire event.
fn event_from_pb(e: pb::Event) -> Result<Event, Error> {
    Ok(Event {
        payload: json_from_bytes(&e.payload)?,
        published_at: e
            .published_at
            .as_ref()
            .and_then(timestamp_to_chrono)
            .ok_or_else(|| Error::protocol("event.published_at is missing"))?,
        correlation_key: (!e.correlation_key.is_empty()).then_some(e.correlation_key),
        id: e.id,
        name: e.name,
    })
}

/// The JSON the server journals for an ended event wait (`JOURNAL_ENTRY_KIND_EVENT`).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    timed_out: bool,
    event: Option<EnvelopeEvent>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeEvent {
    id: String,
    name: String,
    #[serde(default)]
    correlation_key: String,
    #[serde(default)]
    payload: Value,
    published_at: i64,
}

/// Decodes the journal output of an event wait.
pub(crate) fn wait_result_from_journal(output: &[u8]) -> Result<WaitResult<Event>, String> {
    let envelope: Envelope =
        serde_json::from_slice(output).map_err(|e| format!("not an event wait result: {e}"))?;
    if envelope.timed_out {
        return Ok(WaitResult::TimedOut);
    }
    let e = envelope
        .event
        .ok_or_else(|| "an event wait result without its event".to_owned())?;
    Ok(WaitResult::Received(Event {
        published_at: DateTime::from_timestamp_millis(e.published_at)
            .ok_or_else(|| format!("publishedAt {} is out of range", e.published_at))?,
        correlation_key: (!e.correlation_key.is_empty()).then_some(e.correlation_key),
        id: e.id,
        name: e.name,
        payload: e.payload,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn journal_results_decode() {
        let out = br#"{"timedOut":false,"event":{"id":"e1","name":"payment.confirmed","correlationKey":"pay_1","payload":{"amount":5},"publishedAt":1700000000123}}"#;
        let WaitResult::Received(ev) = wait_result_from_journal(out).unwrap() else {
            panic!("expected an event");
        };
        assert_eq!(ev.id, "e1");
        assert_eq!(ev.correlation_key.as_deref(), Some("pay_1"));
        assert_eq!(ev.payload, json!({"amount": 5}));
        assert_eq!(ev.published_at.timestamp_millis(), 1_700_000_000_123);
        #[derive(serde::Deserialize)]
        struct P {
            amount: u32,
        }
        assert_eq!(ev.payload_as::<P>().unwrap().amount, 5);
        assert_eq!(
            wait_result_from_journal(br#"{"timedOut":true}"#).unwrap(),
            WaitResult::TimedOut
        );
        assert!(wait_result_from_journal(b"null").is_err());
        assert!(wait_result_from_journal(br#"{"timedOut":false}"#).is_err());
    }

    #[test]
    fn wait_result_helpers() {
        assert_eq!(WaitResult::Received(3).received(), Some(3));
        assert!(WaitResult::<u8>::TimedOut.is_timed_out());
    }

    #[test]
    fn unserializable_payloads_are_kept_as_errors() {
        let mut map = std::collections::HashMap::new();
        map.insert((1, 2), 3); // tuple keys do not serialize to JSON
        let e = PublishEvent::new("x", map);
        assert!(e.payload.is_err());
    }
}
