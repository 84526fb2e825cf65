//! The subcommands and their execution.

use clap::Subcommand;
use serde_json::{Value, json};
use stackshift::{
    ClientOptions, ListEventsOptions, ListRunsOptions, PublishEvent, RunStatus, SetOptions,
    StackShift,
};

use crate::error::CliError;
use crate::render;
use crate::watch::RunUpdates;
use crate::{Cli, Command};

/// `stackshift runs ...`
#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        /// Only runs of this job.
        #[arg(long)]
        job: Option<String>,
        /// Only runs on this queue.
        #[arg(long)]
        queue: Option<String>,
        /// Only runs in this status (queued, running, waiting, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        /// Maximum runs to show (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one run with its attempts and steps.
    Get {
        /// The run id.
        id: String,
    },
    /// Cancel a run.
    Cancel {
        /// The run id.
        id: String,
        /// Why (recorded as the run's error).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Retry a failed or cancelled run.
    Retry {
        /// The run id.
        id: String,
    },
    /// Follow a run, printing each change, until it is completed, failed or cancelled.
    Watch {
        /// The run id.
        id: String,
    },
}

/// `stackshift events ...`
#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Publish an event (resumes runs waiting for it).
    Publish {
        /// The event name, e.g. `payment.confirmed`.
        name: String,
        /// The payload as JSON.
        #[arg(long, default_value = "null")]
        payload: String,
        /// The correlation key.
        #[arg(long)]
        correlation_key: Option<String>,
        /// The event id (deduplicates publishes).
        #[arg(long)]
        id: Option<String>,
    },
    /// List events, newest first.
    List {
        /// Only events with this name.
        #[arg(long)]
        name: Option<String>,
        /// Only events with this correlation key.
        #[arg(long)]
        correlation_key: Option<String>,
        /// Maximum events to show (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// `stackshift state ...`
#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// Print a key's value (exit 1 when the key is absent).
    Get {
        /// The key.
        key: String,
    },
    /// Set a key to a JSON value.
    Set {
        /// The key.
        key: String,
        /// The value as JSON (e.g. `42`, `'"text"'`, `'{"a":1}'`).
        value: String,
        /// Time to live, e.g. `30s`, `10m`, `1h`.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
    },
}

/// `stackshift queues ...`
#[derive(Subcommand, Debug)]
pub enum QueuesCommand {
    /// List queues with live counts.
    List,
    /// Show one queue.
    Get {
        /// The queue name.
        name: String,
    },
    /// Pause delivery from a queue.
    Pause {
        /// The queue name.
        name: String,
    },
    /// Resume delivery from a queue.
    Resume {
        /// The queue name.
        name: String,
    },
}

/// Output settings.
struct Out {
    json: bool,
}

impl Out {
    /// Prints `value` as JSON, or `text` for people.
    fn show(&self, value: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
            );
        } else {
            print!("{}", text());
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let mut options = ClientOptions::new(cli.endpoint.clone());
    if let Some(key) = cli.api_key.as_deref().filter(|k| !k.is_empty()) {
        options = options.api_key(key);
    }
    let client = StackShift::new(options).map_err(CliError::Sdk)?;
    let out = Out { json: cli.json };
    match cli.command {
        Command::Runs { command } => runs(&client, &out, command).await,
        Command::Events { command } => events(&client, &out, command).await,
        Command::State { command } => state(&client, &out, command).await,
        Command::Queues { command } => queues(&client, &out, command).await,
        Command::Schedules { command } => {
            let show = |v: &Value, text: &dyn Fn() -> String| out.show(v, text);
            crate::schedules::run(&client, &show, command).await
        }
        Command::Triggers { command } => {
            let show = |v: &Value, text: &dyn Fn() -> String| out.show(v, text);
            crate::triggers::run(&client, &show, command).await
        }
        Command::Keys { command } => {
            let key = cli.api_key.as_deref().filter(|k| !k.is_empty());
            crate::keys::run(&cli.endpoint, key, out.json, command).await
        }
    }
}

fn parse_json(what: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text)
        .map_err(|e| CliError::Input(format!("{what} is not valid JSON ({e}): {text}")))
}

fn parse_status(s: &str) -> Result<RunStatus, CliError> {
    Ok(match s {
        "queued" => RunStatus::Queued,
        "running" => RunStatus::Running,
        "waiting" => RunStatus::Waiting,
        "completed" => RunStatus::Completed,
        "failed" => RunStatus::Failed,
        "cancelled" => RunStatus::Cancelled,
        other => {
            return Err(CliError::Input(format!(
                "--status {other:?} is not one of queued, running, waiting, completed, failed, \
                 cancelled"
            )));
        }
    })
}

async fn runs(client: &StackShift, out: &Out, command: RunsCommand) -> Result<(), CliError> {
    match command {
        RunsCommand::List {
            job,
            queue,
            status,
            limit,
        } => {
            let opts = ListRunsOptions {
                job,
                queue,
                status: status.as_deref().map(parse_status).transpose()?,
                page_size: Some(limit),
                page_token: None,
                ..ListRunsOptions::default()
            };
            let page = client.list_runs(opts).await.map_err(CliError::Sdk)?;
            let value = json!({
                "runs": page.runs.iter().map(render::run_json).collect::<Vec<_>>(),
                "next_page_token": page.next_page_token,
            });
            out.show(&value, || render::runs_table(&page.runs));
        }
        RunsCommand::Get { id } => {
            let run = client.get_run(&id).await.map_err(CliError::Sdk)?;
            out.show(&render::run_json(&run), || render::run_text(&run));
        }
        RunsCommand::Cancel { id, reason } => {
            let run = client
                .cancel_run(&id, reason.as_deref())
                .await
                .map_err(CliError::Sdk)?;
            out.show(&render::run_json(&run), || {
                format!("run {} is {}\n", run.id, run.status)
            });
        }
        RunsCommand::Retry { id } => {
            let run = client.retry_run(&id).await.map_err(CliError::Sdk)?;
            out.show(&render::run_json(&run), || {
                format!(
                    "run {} is {} (attempt {})\n",
                    run.id, run.status, run.attempt
                )
            });
        }
        RunsCommand::Watch { id } => watch(client, out, id).await?,
    }
    Ok(())
}

/// Prints the run, then every change, until it is final.
async fn watch(client: &StackShift, out: &Out, id: String) -> Result<(), CliError> {
    let mut updates = RunUpdates::new(client.clone(), id);
    let mut last: Option<stackshift::Run> = None;
    loop {
        let run = updates.next().await.map_err(CliError::Sdk)?;
        if last.as_ref() != Some(&run) {
            if out.json {
                println!("{}", render::run_json(&run));
            } else {
                let prev_steps = last.as_ref().map_or(0, |l| l.steps.len());
                let changed = last
                    .as_ref()
                    .is_none_or(|l| l.status != run.status || l.attempt != run.attempt);
                for s in run.steps.iter().skip(prev_steps) {
                    println!(
                        "{}  {} {} recorded",
                        render::time(&s.completed_at),
                        render::step_kind(s.kind),
                        s.id
                    );
                }
                if changed {
                    println!(
                        "{}  run {} {} (attempt {}/{})",
                        render::time(&run.updated_at),
                        run.id,
                        run.status,
                        run.attempt,
                        run.max_attempts
                    );
                }
            }
        }
        if run.is_final() {
            if !out.json {
                if let Some(r) = &run.result {
                    println!("result: {r}");
                }
                if let Some(f) = &run.failure {
                    println!("error: {f}");
                }
            }
            return Ok(());
        }
        last = Some(run);
    }
}

async fn events(client: &StackShift, out: &Out, command: EventsCommand) -> Result<(), CliError> {
    match command {
        EventsCommand::Publish {
            name,
            payload,
            correlation_key,
            id,
        } => {
            let mut event = PublishEvent::new(name, parse_json("--payload", &payload)?);
            if let Some(k) = correlation_key {
                event = event.correlation_key(k);
            }
            if let Some(i) = id {
                event = event.id(i);
            }
            let r = client
                .events()
                .publish(event)
                .await
                .map_err(CliError::Sdk)?;
            let value = json!({
                "event": render::event_json(&r.event),
                "duplicate": r.duplicate,
                "resumed_run_count": r.resumed_run_count,
                "resumed_run_ids": r.resumed_run_ids,
                "started_run_ids": r.started_run_ids,
            });
            out.show(&value, || {
                format!(
                    "published {} ({}){}; resumed {} run(s)\n",
                    r.event.id,
                    r.event.name,
                    if r.duplicate { ", duplicate" } else { "" },
                    r.resumed_run_count
                )
            });
        }
        EventsCommand::List {
            name,
            correlation_key,
            limit,
        } => {
            let opts = ListEventsOptions {
                name,
                correlation_key,
                page_size: Some(limit),
                ..ListEventsOptions::default()
            };
            let page = client.events().list(opts).await.map_err(CliError::Sdk)?;
            let value = json!({
                "events": page.events.iter().map(render::event_json).collect::<Vec<_>>(),
                "next_page_token": page.next_page_token,
            });
            out.show(&value, || render::events_table(&page.events));
        }
    }
    Ok(())
}

async fn state(client: &StackShift, out: &Out, command: StateCommand) -> Result<(), CliError> {
    let store = client.state();
    match command {
        StateCommand::Get { key } => {
            let entry = store
                .get_entry::<Value>(&key)
                .await
                .map_err(CliError::Sdk)?
                .ok_or_else(|| CliError::Input(format!("state key {key:?} is not set")))?;
            let value = json!({
                "key": entry.key,
                "value": entry.value,
                "version": entry.version,
                "expires_at": entry.expires_at.as_ref().map(render::time),
                "updated_at": render::time(&entry.updated_at),
            });
            out.show(&value, || format!("{}\n", entry.value));
        }
        StateCommand::Set { key, value, ttl } => {
            let v = parse_json("the value", &value)?;
            let mut opts = SetOptions::default();
            if let Some(ttl) = ttl {
                let d = stackshift::parse_duration(&ttl)
                    .map_err(|e| CliError::Input(format!("--ttl {ttl:?}: {e}")))?;
                opts = opts.ttl(d);
            }
            let version = store.set(&key, &v, opts).await.map_err(CliError::Sdk)?;
            out.show(&json!({ "key": key, "version": version }), || {
                format!("set {key} (version {version})\n")
            });
        }
        StateCommand::Delete { key } => {
            let deleted = store.delete(&key).await.map_err(CliError::Sdk)?;
            out.show(&json!({ "key": key, "deleted": deleted }), || {
                if deleted {
                    format!("deleted {key}\n")
                } else {
                    format!("{key} was not set\n")
                }
            });
        }
    }
    Ok(())
}

async fn queues(client: &StackShift, out: &Out, command: QueuesCommand) -> Result<(), CliError> {
    let one = |q: stackshift::QueueInfo| {
        out.show(&render::queue_json(&q), || {
            render::queues_table(std::slice::from_ref(&q))
        });
    };
    match command {
        QueuesCommand::List => {
            let mut all = Vec::new();
            let mut token = None;
            loop {
                let page = client
                    .list_queues(Some(100), token)
                    .await
                    .map_err(CliError::Sdk)?;
                all.extend(page.queues);
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let value = json!({ "queues": all.iter().map(render::queue_json).collect::<Vec<_>>() });
            out.show(&value, || render::queues_table(&all));
        }
        QueuesCommand::Get { name } => {
            one(client.queue(name).get().await.map_err(CliError::Sdk)?);
        }
        QueuesCommand::Pause { name } => {
            one(client.queue(name).pause().await.map_err(CliError::Sdk)?);
        }
        QueuesCommand::Resume { name } => {
            one(client.queue(name).resume().await.map_err(CliError::Sdk)?);
        }
    }
    Ok(())
}
