//! Conversions between protobuf messages and engine types for events and waits.

use stackshift_proto::v1 as pb;
use tonic::Status;

use crate::engine::event_model::{
    EventFilter, EventRecord, ItemInput, WaitInput, WaitMode, WaitRecord,
};

use crate::engine::requests::StartRunInput;

use super::convert::{dur_ms, kind_to_pb, opt, retry_from_pb, ts, ts_ms};

/// A stored event.
pub fn event_to_pb(e: &EventRecord) -> pb::Event {
    pb::Event {
        id: e.id.clone(),
        name: e.name.clone(),
        correlation_key: e.correlation_key.clone(),
        payload: e.payload.clone().into_bytes(),
        published_at: Some(ts(e.published_at)),
    }
}

/// What a waiting run is suspended on.
pub fn wait_to_pb(w: &WaitRecord) -> pb::RunWait {
    pb::RunWait {
        step_id: w.step_id.clone(),
        kind: kind_to_pb(w.kind) as i32,
        event_name: w.event_name.clone().unwrap_or_default(),
        correlation_key: w.correlation_key.clone().unwrap_or_default(),
        wake_at: w.wake_at.map(ts),
        since: Some(ts(w.created_at)),
    }
}

/// A `ListEventsRequest`'s filter.
pub fn event_filter_from_pb(r: &pb::ListEventsRequest) -> Result<EventFilter, Status> {
    Ok(EventFilter {
        name: opt(r.name.clone()),
        correlation_key: opt(r.correlation_key.clone()),
        published_after: r
            .published_after
            .as_ref()
            .map(|t| ts_ms("published_after", t))
            .transpose()?,
        published_before: r
            .published_before
            .as_ref()
            .map(|t| ts_ms("published_before", t))
            .transpose()?,
    })
}

/// A `SuspendRunRequest`'s wait.
pub fn wait_from_pb(wait: Option<pb::suspend_run_request::Wait>) -> Result<WaitInput, Status> {
    use pb::suspend_run_request::Wait;
    match wait {
        None => Err(Status::invalid_argument(
            "wait is required: set sleep, event, child, any or all",
        )),
        Some(Wait::Sleep(s)) => match (dur_ms("sleep.duration", &s.duration)?, &s.until) {
            (Some(ms), None) => Ok(WaitInput::SleepFor(ms)),
            (None, Some(until)) => Ok(WaitInput::SleepUntil(ts_ms("sleep.until", until)?)),
            _ => Err(Status::invalid_argument(
                "sleep needs exactly one of duration and until",
            )),
        },
        Some(Wait::Event(e)) => Ok(WaitInput::Event {
            timeout_ms: dur_ms("event.timeout", &e.timeout)?,
            name: e.event_name,
            correlation_key: e.correlation_key,
        }),
        Some(Wait::Child(w)) => {
            let mut children = Vec::with_capacity(w.children.len());
            for (i, c) in w.children.into_iter().enumerate() {
                let field = |f: &str| format!("child.children[{i}].{f}");
                children.push(StartRunInput {
                    job: c.job,
                    payload: c.payload,
                    queue: opt(c.queue),
                    idempotency_key: None,
                    idempotency_ttl_ms: None,
                    retry: retry_from_pb(c.retry_policy)?,
                    lease_timeout_ms: dur_ms(&field("lease_timeout"), &c.lease_timeout)?,
                    delay_ms: None,
                    run_at_ms: None,
                    priority: c.priority,
                    concurrency_key: opt(c.concurrency_key),
                });
            }
            Ok(WaitInput::Children(children))
        }
        Some(Wait::Any(w)) => combined_from_pb("any", WaitMode::Any, w),
        Some(Wait::All(w)) => combined_from_pb("all", WaitMode::All, w),
    }
}

/// A `CombinedWait` (`field` is `any` or `all`, for messages).
fn combined_from_pb(field: &str, mode: WaitMode, w: pb::CombinedWait) -> Result<WaitInput, Status> {
    use pb::wait_item::Item;
    let mut items = Vec::with_capacity(w.items.len());
    for (i, item) in w.items.into_iter().enumerate() {
        let f = |name: &str| format!("{field}.items[{i}].{name}");
        items.push(match item.item {
            None => {
                return Err(Status::invalid_argument(format!(
                    "{} needs sleep or event",
                    f("item")
                )));
            }
            Some(Item::Sleep(s)) => match (dur_ms(&f("sleep.duration"), &s.duration)?, &s.until) {
                (Some(ms), None) => ItemInput::SleepFor(ms),
                (None, Some(until)) => ItemInput::SleepUntil(ts_ms(&f("sleep.until"), until)?),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "{} needs exactly one of duration and until",
                        f("sleep")
                    )));
                }
            },
            Some(Item::Event(e)) => ItemInput::Event {
                name: e.event_name,
                correlation_key: e.correlation_key,
            },
        });
    }
    Ok(WaitInput::Combined {
        mode,
        items,
        timeout_ms: dur_ms(&format!("{field}.timeout"), &w.timeout)?,
    })
}
