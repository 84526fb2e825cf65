//! Domain types of events and durable waits, shared by the engine and the storage layer,
//! and the JSON written into the journal when a wait ends (so that every SDK replays the
//! same thing, and deleting old events never breaks a replay).

use super::model::StepKind;

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// Publication order: the first matching event is the one with the lowest `seq`.
    pub seq: i64,
    /// Owning namespace.
    pub namespace: String,
    /// The event's id (given at publish, or a server-assigned UUIDv7).
    pub id: String,
    /// The event's name.
    pub name: String,
    /// Correlation key; empty when the event has none.
    pub correlation_key: String,
    /// Payload JSON text.
    pub payload: String,
    /// When the event was stored.
    pub published_at: i64,
}

/// Everything needed to store an event.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Owning namespace.
    pub namespace: String,
    /// The event's id.
    pub id: String,
    /// The event's name.
    pub name: String,
    /// Correlation key; empty = none.
    pub correlation_key: String,
    /// Payload JSON text.
    pub payload: String,
    /// Publication time.
    pub now: i64,
    /// Runs of the jobs whose event triggers match, started in the same transaction unless
    /// the event id is a duplicate (each with the key `event:<event id>:<job>`).
    pub triggered: Vec<super::model::NewRun>,
}

/// A run that a wait resolution queued again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumedRun {
    /// The run.
    pub run_id: String,
    /// Its namespace.
    pub namespace: String,
    /// Its queue.
    pub queue: String,
    /// Its job.
    pub job: String,
}

/// What publishing an event did.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishOutcome {
    /// The stored event (for a duplicate, the one stored first under the id).
    pub event: EventRecord,
    /// True when the id was already stored: nothing changed.
    pub duplicate: bool,
    /// Runs the event resumed, oldest wait first.
    pub resumed: Vec<ResumedRun>,
    /// Runs the event started through event triggers.
    pub started: Vec<super::model::RunRecord>,
}

/// Filter for listing events.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this name.
    pub name: Option<String>,
    /// Only this correlation key.
    pub correlation_key: Option<String>,
    /// Only events published at or after this time.
    pub published_after: Option<i64>,
    /// Only events published before this time.
    pub published_before: Option<i64>,
}

/// What a run suspends on, with absolute times computed by the engine.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitSpec {
    /// Sleep until this instant.
    Sleep {
        /// Wake-up time (milliseconds).
        until: i64,
    },
    /// Wait for an event.
    Event {
        /// Event name.
        name: String,
        /// Correlation key; empty = none.
        correlation_key: String,
        /// When the wait times out (milliseconds).
        timeout_at: i64,
    },
    /// Start child runs (once per run and step id) and wait until all are final.
    Children {
        /// The children, validated, with their parent links set.
        runs: Vec<super::model::NewRun>,
    },
    /// `wait_for_any` / `wait_for_all` over several items.
    Combined {
        /// Any or all.
        mode: WaitMode,
        /// The items, in the order given.
        items: Vec<ItemSpec>,
        /// When the whole wait times out, if it has a timeout.
        timeout_at: Option<i64>,
    },
}

/// Whether a combined wait ends at the first resolved item or when every item resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMode {
    /// The first item that resolves ends the wait.
    Any,
    /// The wait ends when every item resolved.
    All,
}

/// One item of a combined wait, with absolute times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemSpec {
    /// Resolves at this instant.
    Sleep {
        /// Wake-up time (milliseconds).
        until: i64,
    },
    /// Resolves with the first matching event of the run's inbox.
    Event {
        /// Event name.
        name: String,
        /// Correlation key; empty = none.
        correlation_key: String,
    },
}

/// One item of a combined wait as a worker sends it, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemInput {
    /// Resolves this many milliseconds from now.
    SleepFor(i64),
    /// Resolves at this instant.
    SleepUntil(i64),
    /// Resolves with a matching event.
    Event {
        /// Event name.
        name: String,
        /// Correlation key; empty = none.
        correlation_key: String,
    },
}

impl WaitSpec {
    /// The journal kind of the wait's result.
    pub fn kind(&self) -> StepKind {
        match self {
            Self::Sleep { .. } => StepKind::Sleep,
            Self::Event { .. } => StepKind::Event,
            Self::Children { .. } => StepKind::Child,
            Self::Combined {
                mode: WaitMode::Any,
                ..
            } => StepKind::Any,
            Self::Combined {
                mode: WaitMode::All,
                ..
            } => StepKind::All,
        }
    }

    /// When the wait ends at the latest; `None` for a child wait (no timeout).
    pub fn wake_at(&self) -> Option<i64> {
        match self {
            Self::Sleep { until } => Some(*until),
            Self::Event { timeout_at, .. } => Some(*timeout_at),
            Self::Children { .. } => None,
            Self::Combined {
                items, timeout_at, ..
            } => items
                .iter()
                .filter_map(|i| match i {
                    ItemSpec::Sleep { until } => Some(*until),
                    ItemSpec::Event { .. } => None,
                })
                .chain(*timeout_at)
                .min(),
        }
    }
}

/// A stored wait of a `waiting` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitRecord {
    /// The waiting run.
    pub run_id: String,
    /// Its namespace.
    pub namespace: String,
    /// The wait's step id.
    pub step_id: String,
    /// `Sleep` or `Event`.
    pub kind: StepKind,
    /// For an event wait: the name.
    pub event_name: Option<String>,
    /// For an event wait: the correlation key (empty = none).
    pub correlation_key: Option<String>,
    /// When the sleep ends or the event wait times out.
    pub wake_at: Option<i64>,
    /// The run's creation time (the inbox cut-off).
    pub run_created_at: i64,
    /// When the run suspended.
    pub created_at: i64,
}

/// What `SuspendRun` did.
#[derive(Debug, Clone, PartialEq)]
pub enum SuspendOutcome {
    /// The wait resolved at once (or was already resolved); the lease is kept.
    Satisfied(super::model::StepRecord),
    /// The run is waiting; the lease is released.
    Suspended {
        /// When the timer resolves the wait at the latest (`None` for a child wait).
        wake_at: Option<i64>,
        /// The run's queue, whose concurrency the run no longer uses.
        queue: String,
        /// For a child wait: the children in the order given, with `created` true for
        /// those this request started (the others were started by an earlier request).
        children: Vec<(super::model::RunRecord, bool)>,
    },
}

/// `PublishEvent` input.
#[derive(Debug, Clone, Default)]
pub struct PublishEventInput {
    /// Event name.
    pub name: String,
    /// Payload bytes (JSON); empty = `null`.
    pub payload: Vec<u8>,
    /// Deduplication id; `None` = the server assigns one.
    pub id: Option<String>,
    /// Correlation key; `None` = no key.
    pub correlation_key: Option<String>,
}

/// What a worker asks to wait for in `SuspendRun`, before validation.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitInput {
    /// Sleep for this many milliseconds from now.
    SleepFor(i64),
    /// Sleep until this instant (milliseconds since the epoch).
    SleepUntil(i64),
    /// Wait for an event.
    Event {
        /// Event name.
        name: String,
        /// Correlation key; empty = none.
        correlation_key: String,
        /// Timeout in milliseconds; required.
        timeout_ms: Option<i64>,
    },
    /// Start child runs and wait until all of them are final.
    Children(Vec<super::requests::StartRunInput>),
    /// `wait_for_any` / `wait_for_all`.
    Combined {
        /// Any or all.
        mode: WaitMode,
        /// The items.
        items: Vec<ItemInput>,
        /// Timeout of the whole wait in milliseconds; `None` = none (then at least one
        /// item must be a sleep, so the wait cannot hold the run forever).
        timeout_ms: Option<i64>,
    },
}

/// The journal output of an event wait that timed out.
pub const TIMED_OUT_OUTPUT: &str = r#"{"timedOut":true}"#;

/// The journal output of a child wait: each child's outcome in the order given.
pub fn children_output(children: &[super::model::RunRecord]) -> String {
    use super::model::RunStatus;
    let items: Vec<serde_json::Value> = children
        .iter()
        .map(|r| {
            let mut v = serde_json::json!({
                "runId": r.id,
                "job": r.job,
                "status": r.status.as_str(),
            });
            if r.status == RunStatus::Completed {
                let result = r
                    .result
                    .as_deref()
                    .and_then(|t| serde_json::from_str(t).ok())
                    .unwrap_or(serde_json::Value::Null);
                v["result"] = result;
            } else if let Some(f) = &r.failure {
                v["failure"] = serde_json::json!({
                    "message": f.message,
                    "errorType": f.error_type,
                    "nonRetryable": f.non_retryable,
                });
            }
            v
        })
        .collect();
    serde_json::json!({ "children": items }).to_string()
}

/// The journal output of a `wait_for_any` whose item `index` resolved with `output`.
pub fn any_output(index: usize, output: &str) -> String {
    format!(r#"{{"timedOut":false,"index":{index},"output":{output}}}"#)
}

/// The journal output of a `wait_for_all`: every item's output in order (`null` for an
/// item that had not resolved when the whole wait timed out).
pub fn all_output(outputs: &[Option<String>], timed_out: bool) -> String {
    let items: Vec<&str> = outputs
        .iter()
        .map(|o| o.as_deref().unwrap_or("null"))
        .collect();
    let resolved: Vec<&str> = outputs
        .iter()
        .map(|o| if o.is_some() { "true" } else { "false" })
        .collect();
    format!(
        r#"{{"timedOut":{timed_out},"outputs":[{}],"resolved":[{}]}}"#,
        items.join(","),
        resolved.join(",")
    )
}

/// The journal output of a sleep that ended.
pub const SLEEP_OUTPUT: &str = "null";

/// The journal output of an event wait that received `event`: a copy of the event, so the
/// replay never needs the (possibly since deleted) event row. `payload` is stored, valid
/// JSON text and is embedded as is.
pub fn event_output(event: &EventRecord) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"{{"timedOut":false,"event":{{"id":{},"name":{},"correlationKey":{},"payload":{},"publishedAt":{}}}}}"#,
        text(&event.id),
        text(&event.name),
        text(&event.correlation_key),
        event.payload,
        event.published_at
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_output_is_valid_json_with_a_copy_of_the_event() {
        let ev = EventRecord {
            seq: 7,
            namespace: "ns".into(),
            id: "evt \"1\"".into(),
            name: "payment.confirmed".into(),
            correlation_key: String::new(),
            payload: r#"{"amount":42,"nested":[1,{"a":null}]}"#.into(),
            published_at: 1_700_000_000_123,
        };
        let v: serde_json::Value = serde_json::from_str(&event_output(&ev)).unwrap_or_default();
        assert_eq!(v["timedOut"], false);
        assert_eq!(v["event"]["id"], "evt \"1\"");
        assert_eq!(v["event"]["name"], "payment.confirmed");
        assert_eq!(v["event"]["correlationKey"], "");
        assert_eq!(
            v["event"]["payload"]["nested"][1]["a"],
            serde_json::Value::Null
        );
        assert_eq!(v["event"]["publishedAt"], 1_700_000_000_123_i64);
        let t: serde_json::Value = serde_json::from_str(TIMED_OUT_OUTPUT).unwrap_or_default();
        assert_eq!(t["timedOut"], true);
    }
}
