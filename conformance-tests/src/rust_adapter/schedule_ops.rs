//! The Rust adapter's schedule and trigger client commands (`create_schedule`,
//! `get_schedule`, `pause_schedule`, `resume_schedule`, `delete_schedule`,
//! `list_schedules`, `create_trigger`, `list_triggers`, `delete_trigger`), answered as
//! `docs/conformance.md` ("Ops for schedules, triggers, child runs and combined waits") says.

use std::time::Duration;

use serde_json::{Map, Value, json};
use stackshift::{
    CatchUp, Error, NewEventTrigger, NewSchedule, Schedule, ScheduleSpec, StackShift,
};

fn str_arg<'a>(c: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    c.get(k).and_then(Value::as_str)
}

/// `{schedule_id, job, paused, recent_run_ids}`.
fn schedule_json(s: &Schedule) -> Value {
    json!({
        "schedule_id": s.id,
        "job": s.job,
        "paused": s.paused,
        "recent_run_ids": s.recent_run_ids,
    })
}

/// Answers a schedule or trigger op; `None` when `op` is not one of them.
pub(super) async fn call(
    client: &StackShift,
    op: &str,
    c: &Map<String, Value>,
) -> Option<anyhow::Result<Value>> {
    let answer = match op {
        "create_schedule" => create_schedule(client, c).await,
        "get_schedule" => get_schedule(client, c).await,
        "pause_schedule" => pause_schedule(client, c).await,
        "resume_schedule" => resume_schedule(client, c).await,
        "delete_schedule" => delete_schedule(client, c).await,
        "list_schedules" => list_schedules(client).await,
        "create_trigger" => create_trigger(client, c).await,
        "list_triggers" => list_triggers(client, c).await,
        "delete_trigger" => delete_trigger(client, c).await,
        _ => return None,
    };
    Some(answer)
}

fn schedule_id(c: &Map<String, Value>) -> String {
    str_arg(c, "schedule_id").unwrap_or("").to_owned()
}

async fn create_schedule(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    let spec = match (
        str_arg(c, "cron"),
        c.get("every_ms").and_then(Value::as_u64),
    ) {
        (Some(cron), None) => {
            let spec = ScheduleSpec::cron(cron);
            match str_arg(c, "time_zone") {
                Some(tz) => spec.time_zone(tz),
                None => spec,
            }
        }
        (None, Some(ms)) => ScheduleSpec::every(Duration::from_millis(ms)),
        _ => anyhow::bail!("create_schedule takes exactly one of `cron` and `every_ms`"),
    };
    let payload = c.get("payload").cloned().unwrap_or(Value::Null);
    let mut schedule = NewSchedule::new(
        schedule_id(c),
        spec,
        str_arg(c, "job").unwrap_or(""),
        payload,
    );
    if let Some(q) = str_arg(c, "queue") {
        schedule = schedule.queue(q);
    }
    if let Some(catch_up) = str_arg(c, "catch_up") {
        schedule = schedule.catch_up(match catch_up {
            "skip" => CatchUp::Skip,
            "latest" => CatchUp::Latest,
            "all" => CatchUp::All,
            other => anyhow::bail!("catch_up must be skip, latest or all, not {other:?}"),
        });
    }
    if let Some(paused) = c.get("paused").and_then(Value::as_bool) {
        schedule = schedule.paused(paused);
    }
    let created = client.schedules().create(schedule).await?;
    let mut answer = schedule_json(&created.schedule);
    answer["created"] = json!(created.created);
    Ok(answer)
}

async fn get_schedule(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    Ok(schedule_json(
        &client.schedules().get(schedule_id(c)).await?,
    ))
}

async fn pause_schedule(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    Ok(schedule_json(
        &client.schedules().pause(schedule_id(c)).await?,
    ))
}

async fn resume_schedule(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    Ok(schedule_json(
        &client.schedules().resume(schedule_id(c)).await?,
    ))
}

async fn delete_schedule(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    client.schedules().delete(schedule_id(c)).await?;
    Ok(Value::Null)
}

/// Every schedule of the namespace (all pages).
async fn list_schedules(client: &StackShift) -> anyhow::Result<Value> {
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = client.schedules().list(1000, token).await?;
        ids.extend(page.schedules.into_iter().map(|s| s.id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(json!({ "schedule_ids": ids }))
}

async fn create_trigger(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    let mut trigger = NewEventTrigger::new(
        str_arg(c, "event").unwrap_or(""),
        str_arg(c, "job").unwrap_or(""),
    );
    if let Some(q) = str_arg(c, "queue") {
        trigger = trigger.queue(q);
    }
    if let Some(k) = str_arg(c, "key") {
        trigger = trigger.correlation_key(k);
    }
    let (stored, created) = client.triggers().create(trigger).await?;
    Ok(json!({ "trigger_id": stored.id, "created": created }))
}

/// Every trigger matching the filters (all pages).
async fn list_triggers(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    let event = str_arg(c, "event").map(str::to_owned);
    let job = str_arg(c, "job").map(str::to_owned);
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .triggers()
            .list(event.clone(), job.clone(), token)
            .await?;
        ids.extend(page.triggers.into_iter().map(|t| t.id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(json!({ "trigger_ids": ids }))
}

async fn delete_trigger(client: &StackShift, c: &Map<String, Value>) -> anyhow::Result<Value> {
    let id = str_arg(c, "trigger_id").unwrap_or("");
    if id.is_empty() {
        return Err(Error::InvalidArgument("trigger_id is required".into()).into());
    }
    client.triggers().delete(id).await?;
    Ok(Value::Null)
}
