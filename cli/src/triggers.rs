//! `stackshift triggers ...`: create, list and delete event triggers.

use clap::Subcommand;
use serde_json::{Value, json};
use stackshift::{EventTrigger, NewEventTrigger, StackShift};

use crate::error::CliError;
use crate::render::time;
use crate::table::Table;

/// `stackshift triggers ...`
#[derive(Subcommand, Debug)]
pub enum TriggersCommand {
    /// Subscribe a job to an event: each published event starts one run of it.
    Create {
        /// The event name.
        #[arg(long)]
        event: String,
        /// The job to start.
        #[arg(long)]
        job: String,
        /// Only events with exactly this correlation key (default: any key).
        #[arg(long)]
        correlation_key: Option<String>,
        /// The queue of the runs (default "default").
        #[arg(long)]
        queue: Option<String>,
    },
    /// List triggers.
    List {
        /// Only triggers of this event name.
        #[arg(long)]
        event: Option<String>,
        /// Only triggers of this job.
        #[arg(long)]
        job: Option<String>,
    },
    /// Delete a trigger by id.
    Delete {
        /// The trigger id.
        id: String,
    },
}

/// A trigger as JSON.
pub fn trigger_json(t: &EventTrigger) -> Value {
    json!({
        "id": t.id,
        "event": t.event_name,
        "correlation_key": t.correlation_key,
        "job": t.job,
        "queue": t.queue,
        "created_at": time(&t.created_at),
    })
}

/// Triggers as a table.
pub fn triggers_table(all: &[EventTrigger]) -> String {
    let mut t = Table::new(&["ID", "EVENT", "KEY", "JOB", "QUEUE"]);
    for tr in all {
        t.row(vec![
            tr.id.clone(),
            tr.event_name.clone(),
            tr.correlation_key.clone().unwrap_or_else(|| "*".into()),
            tr.job.clone(),
            tr.queue.clone(),
        ]);
    }
    t.render()
}

/// Runs a `triggers` subcommand; `show` prints a JSON value or the text.
pub async fn run(
    client: &StackShift,
    show: &dyn Fn(&Value, &dyn Fn() -> String),
    command: TriggersCommand,
) -> Result<(), CliError> {
    let api = client.triggers();
    match command {
        TriggersCommand::Create {
            event,
            job,
            correlation_key,
            queue,
        } => {
            let mut new = NewEventTrigger::new(event.clone(), job.clone());
            if let Some(k) = correlation_key {
                new = new.correlation_key(k);
            }
            if let Some(q) = queue {
                new = new.queue(q);
            }
            let (t, created) = api.create(new).await.map_err(|e| match e {
                stackshift::Error::AlreadyExists(_) => CliError::Input(format!(
                    "job {job} already has a trigger on event {event} with other options; \
                     delete it first (stackshift triggers list --job {job})"
                )),
                other => CliError::Sdk(other),
            })?;
            let mut value = trigger_json(&t);
            value["created"] = Value::Bool(created);
            show(&value, &|| triggers_table(std::slice::from_ref(&t)));
        }
        TriggersCommand::List { event, job } => {
            let mut all = Vec::new();
            let mut token = None;
            loop {
                let page = api
                    .list(event.clone(), job.clone(), token)
                    .await
                    .map_err(CliError::Sdk)?;
                all.extend(page.triggers);
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let value = json!({ "triggers": all.iter().map(trigger_json).collect::<Vec<_>>() });
            show(&value, &|| triggers_table(&all));
        }
        TriggersCommand::Delete { id } => {
            api.delete(id.clone()).await.map_err(CliError::Sdk)?;
            show(&json!({ "deleted": id }), &|| {
                format!("deleted trigger {id}\n")
            });
        }
    }
    Ok(())
}
