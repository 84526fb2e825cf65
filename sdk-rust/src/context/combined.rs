//! `step.wait_for_any` and `step.wait_for_all` on [`Step`]: one durable wait over several
//! items (events and sleeps), with an optional timeout for the whole wait. Event items
//! follow the inbox rules of [`Step::wait_for_event`] (an event published after the run was
//! created and before the wait still matches), and one event is taken by at most one item
//! of a wait. See `docs/events.md`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::suspend_run_request::Wait;

use super::Step;
use crate::convert::{chrono_to_timestamp, duration_to_proto};
use crate::duration::IntoDuration;
use crate::events::{Event, WaitResult, wait_result_from_journal};
use crate::non_retryable;

/// One item of [`Step::wait_for_any`] / [`Step::wait_for_all`].
#[derive(Debug, Clone, PartialEq)]
pub struct WaitItem(pb::wait_item::Item);

impl WaitItem {
    /// Resolves with the first event `name` with exactly `correlation_key` from the run's
    /// inbox (empty key = only events published without one).
    pub fn event(name: impl Into<String>, correlation_key: impl Into<String>) -> Self {
        Self(pb::wait_item::Item::Event(pb::EventMatch {
            event_name: name.into(),
            correlation_key: correlation_key.into(),
        }))
    }

    /// Resolves after `duration` (counted from when the server receives the wait).
    pub fn sleep(duration: Duration) -> Self {
        Self(pb::wait_item::Item::Sleep(pb::SleepWait {
            duration: Some(duration_to_proto(duration)),
            until: None,
        }))
    }

    /// Resolves at `time`.
    pub fn sleep_until(time: DateTime<Utc>) -> Self {
        Self(pb::wait_item::Item::Sleep(pb::SleepWait {
            duration: None,
            until: Some(chrono_to_timestamp(time)),
        }))
    }
}

/// What one item of a combined wait resolved with.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// An event item received this event.
    Event(Event),
    /// A sleep item's time came.
    Slept,
}

/// The result of [`Step::wait_for_any`].
#[derive(Debug, Clone, PartialEq)]
pub enum AnyResult {
    /// Item `index` resolved first.
    Resolved {
        /// The item's position in the list given.
        index: usize,
        /// What it resolved with.
        result: ItemResult,
    },
    /// The whole wait's timeout passed first.
    TimedOut,
}

/// The result of [`Step::wait_for_all`]: each item's result in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct AllResult {
    /// True when the whole wait's timeout passed before every item resolved.
    pub timed_out: bool,
    /// Each item's result; `None` for an item that had not resolved at the timeout.
    pub items: Vec<Option<ItemResult>>,
}

fn item_result(item: &Value) -> anyhow::Result<ItemResult> {
    if item.is_null() {
        return Ok(ItemResult::Slept);
    }
    let bytes = serde_json::to_vec(item)?;
    match wait_result_from_journal(&bytes).map_err(anyhow::Error::msg)? {
        WaitResult::Received(e) => Ok(ItemResult::Event(e)),
        WaitResult::TimedOut => anyhow::bail!("an item recorded as timed out"),
    }
}

fn any_from_journal(output: &[u8]) -> anyhow::Result<AnyResult> {
    let v: Value = serde_json::from_slice(output)?;
    if v["timedOut"].as_bool() == Some(true) {
        return Ok(AnyResult::TimedOut);
    }
    let index = v["index"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no index"))? as usize;
    Ok(AnyResult::Resolved {
        index,
        result: item_result(&v["output"])?,
    })
}

fn all_from_journal(output: &[u8]) -> anyhow::Result<AllResult> {
    let v: Value = serde_json::from_slice(output)?;
    let outputs = v["outputs"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no outputs"))?;
    let resolved = v["resolved"].as_array();
    let items = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let done = resolved
                .and_then(|r| r.get(i))
                .and_then(Value::as_bool)
                .unwrap_or(true);
            done.then(|| item_result(o)).transpose()
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(AllResult {
        timed_out: v["timedOut"].as_bool() == Some(true),
        items,
    })
}

impl Step {
    /// Waits durably until the **first** of `items` resolves, or until `timeout` (for the
    /// whole wait; `None` is allowed only when a sleep item bounds the wait) passes.
    /// When several items can resolve at once, the lowest index wins. Event items of
    /// other indexes do not consume their events. While nothing resolved, the run is
    /// `waiting` and holds no worker slot; ids, replay and
    /// [`Interrupted`](crate::Interrupted) behave as for [`Step::sleep`].
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// use std::time::Duration;
    /// use stackshift::{AnyResult, ItemResult, WaitItem};
    /// let got = step
    ///     .wait_for_any(
    ///         "approval-or-reminder",
    ///         vec![
    ///             WaitItem::event("order.approved", "order_1"),
    ///             WaitItem::sleep(Duration::from_secs(24 * 3600)),
    ///         ],
    ///         None::<Duration>,
    ///     )
    ///     .await?;
    /// match got {
    ///     AnyResult::Resolved { result: ItemResult::Event(e), .. } => println!("approved: {}", e.payload),
    ///     AnyResult::Resolved { .. } => println!("a day passed: send a reminder"),
    ///     AnyResult::TimedOut => unreachable!("no timeout was given"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_any<D: IntoDuration>(
        &self,
        id: &str,
        items: Vec<WaitItem>,
        timeout: Option<D>,
    ) -> anyhow::Result<AnyResult> {
        let wait = Wait::Any(combined(id, items, timeout)?);
        let output = self
            .suspend(
                id,
                pb::JournalEntryKind::Any,
                wait,
                "waiting for any of several items",
            )
            .await?;
        any_from_journal(&output)
            .map_err(|e| non_retryable(format!("the recorded result of wait {id}: {e}")))
    }

    /// Waits durably until **every** one of `items` resolved, or until `timeout` (for the
    /// whole wait; required unless every item is a sleep) passes. Two items for the same
    /// event name and key take two successive events. Otherwise like
    /// [`Step::wait_for_any`].
    ///
    /// ```no_run
    /// # async fn demo(step: stackshift::Step) -> anyhow::Result<()> {
    /// use stackshift::WaitItem;
    /// let all = step
    ///     .wait_for_all(
    ///         "both-signatures",
    ///         vec![
    ///             WaitItem::event("contract.signed", "buyer_1"),
    ///             WaitItem::event("contract.signed", "seller_1"),
    ///         ],
    ///         Some("7d"),
    ///     )
    ///     .await?;
    /// if all.timed_out {
    ///     anyhow::bail!("not signed by both within a week");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_all<D: IntoDuration>(
        &self,
        id: &str,
        items: Vec<WaitItem>,
        timeout: Option<D>,
    ) -> anyhow::Result<AllResult> {
        let wait = Wait::All(combined(id, items, timeout)?);
        let output = self
            .suspend(
                id,
                pb::JournalEntryKind::All,
                wait,
                "waiting for all of several items",
            )
            .await?;
        all_from_journal(&output)
            .map_err(|e| non_retryable(format!("the recorded result of wait {id}: {e}")))
    }
}

fn combined<D: IntoDuration>(
    id: &str,
    items: Vec<WaitItem>,
    timeout: Option<D>,
) -> anyhow::Result<pb::CombinedWait> {
    let timeout = timeout
        .map(|t| t.into_duration())
        .transpose()
        .map_err(|e| non_retryable(format!("wait {id:?}: {e}")))?;
    Ok(pb::CombinedWait {
        items: items
            .into_iter()
            .map(|i| pb::WaitItem { item: Some(i.0) })
            .collect(),
        timeout: timeout.map(duration_to_proto),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn results_decode() {
        let ev = r#"{"timedOut":false,"event":{"id":"e1","name":"n","correlationKey":"k","payload":{"a":1},"publishedAt":1700000000000}}"#;
        let any = format!(r#"{{"timedOut":false,"index":1,"output":{ev}}}"#);
        match any_from_journal(any.as_bytes()).unwrap() {
            AnyResult::Resolved {
                index: 1,
                result: ItemResult::Event(e),
            } => assert_eq!(e.id, "e1"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            any_from_journal(br#"{"timedOut":true}"#).unwrap(),
            AnyResult::TimedOut
        );
        let all = format!(r#"{{"timedOut":true,"outputs":[{ev},null],"resolved":[true,false]}}"#);
        let r = all_from_journal(all.as_bytes()).unwrap();
        assert!(r.timed_out);
        assert!(matches!(r.items[0], Some(ItemResult::Event(_))));
        assert_eq!(r.items[1], None);
        let slept =
            all_from_journal(br#"{"timedOut":false,"outputs":[null],"resolved":[true]}"#).unwrap();
        assert_eq!(slept.items, vec![Some(ItemResult::Slept)]);
    }
}
