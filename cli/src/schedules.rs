//! `stackshift schedules ...`: create, list, get, pause, resume and delete schedules.

use clap::Subcommand;
use serde_json::{Value, json};
use stackshift::{CatchUp, NewSchedule, Schedule, ScheduleSpec, StackShift};

use crate::error::CliError;
use crate::render::time;
use crate::table::Table;

/// `stackshift schedules ...`
#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Create a schedule (same id and definition again: no change; another definition:
    /// an error).
    Create {
        /// The schedule id (unique per namespace).
        id: String,
        /// The job each firing starts.
        #[arg(long)]
        job: String,
        /// A cron expression: 5 fields, or 6 with seconds first (e.g. "0 9 * * MON-FRI").
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// IANA time zone of the cron expression (default UTC).
        #[arg(long, requires = "cron")]
        time_zone: Option<String>,
        /// A fixed interval instead of cron, e.g. 30s, 5m, 1h (at least 1s).
        #[arg(long)]
        every: Option<String>,
        /// The payload of every run, as JSON (default null).
        #[arg(long)]
        payload: Option<String>,
        /// The queue of the runs (default "default").
        #[arg(long)]
        queue: Option<String>,
        /// Missed times after downtime: skip, latest (default) or all.
        #[arg(long)]
        catch_up: Option<String>,
        /// Create it paused.
        #[arg(long)]
        paused: bool,
    },
    /// List schedules.
    List,
    /// Show one schedule.
    Get {
        /// The schedule id.
        id: String,
    },
    /// Pause a schedule.
    Pause {
        /// The schedule id.
        id: String,
    },
    /// Resume a paused schedule (from its next time after now).
    Resume {
        /// The schedule id.
        id: String,
    },
    /// Delete a schedule (runs it started are kept).
    Delete {
        /// The schedule id.
        id: String,
    },
}

fn catch_up_str(c: CatchUp) -> &'static str {
    match c {
        CatchUp::Skip => "skip",
        CatchUp::Latest => "latest",
        CatchUp::All => "all",
    }
}

fn spec_str(s: &ScheduleSpec) -> String {
    match s {
        ScheduleSpec::Cron {
            expression,
            time_zone,
        } => format!(
            "cron {expression} ({})",
            time_zone.as_deref().unwrap_or("UTC")
        ),
        ScheduleSpec::Interval(d) => format!("every {}ms", d.as_millis()),
    }
}

/// A schedule as JSON.
pub fn schedule_json(s: &Schedule) -> Value {
    let spec = match &s.spec {
        ScheduleSpec::Cron {
            expression,
            time_zone,
        } => json!({ "cron": expression, "time_zone": time_zone }),
        ScheduleSpec::Interval(d) => json!({ "interval_ms": d.as_millis() as u64 }),
    };
    json!({
        "id": s.id,
        "spec": spec,
        "job": s.job,
        "queue": s.queue,
        "payload": s.payload,
        "catch_up": catch_up_str(s.catch_up),
        "paused": s.paused,
        "next_fire_time": time(&s.next_fire_time),
        "last_fire_time": s.last_fire_time.as_ref().map(time),
        "recent_run_ids": s.recent_run_ids,
        "created_at": time(&s.created_at),
    })
}

/// Schedules as a table.
pub fn schedules_table(all: &[Schedule]) -> String {
    let mut t = Table::new(&["ID", "SPEC", "JOB", "PAUSED", "NEXT", "LAST", "CATCH-UP"]);
    for s in all {
        t.row(vec![
            s.id.clone(),
            spec_str(&s.spec),
            s.job.clone(),
            if s.paused { "yes" } else { "no" }.into(),
            time(&s.next_fire_time),
            s.last_fire_time.as_ref().map_or_else(|| "-".into(), time),
            catch_up_str(s.catch_up).into(),
        ]);
    }
    t.render()
}

fn parse_catch_up(s: &str) -> Result<CatchUp, CliError> {
    match s {
        "skip" => Ok(CatchUp::Skip),
        "latest" => Ok(CatchUp::Latest),
        "all" => Ok(CatchUp::All),
        other => Err(CliError::Input(format!(
            "--catch-up {other:?} is not one of skip, latest, all"
        ))),
    }
}

/// Runs a `schedules` subcommand; `show` prints a JSON value or the text.
pub async fn run(
    client: &StackShift,
    show: &dyn Fn(&Value, &dyn Fn() -> String),
    command: SchedulesCommand,
) -> Result<(), CliError> {
    let api = client.schedules();
    let one = |s: Schedule| {
        show(&schedule_json(&s), &|| {
            schedules_table(std::slice::from_ref(&s))
        });
    };
    match command {
        SchedulesCommand::Create {
            id,
            job,
            cron,
            time_zone,
            every,
            payload,
            queue,
            catch_up,
            paused,
        } => {
            let spec = match (cron, every) {
                (Some(expr), _) => {
                    let spec = ScheduleSpec::cron(expr);
                    match time_zone {
                        Some(tz) => spec.time_zone(tz),
                        None => spec,
                    }
                }
                (None, Some(every)) => ScheduleSpec::every(
                    stackshift::parse_duration(&every)
                        .map_err(|e| CliError::Input(format!("--every {every:?}: {e}")))?,
                ),
                (None, None) => {
                    return Err(CliError::Input("give --cron or --every".into()));
                }
            };
            let payload = match payload {
                Some(p) => serde_json::from_str::<Value>(&p).map_err(|e| {
                    CliError::Input(format!("--payload is not valid JSON ({e}): {p}"))
                })?,
                None => Value::Null,
            };
            let id_copy = id.clone();
            let mut new = NewSchedule::new(id, spec, job, payload).paused(paused);
            if let Some(q) = queue {
                new = new.queue(q);
            }
            if let Some(c) = catch_up {
                new = new.catch_up(parse_catch_up(&c)?);
            }
            let created = api.create(new).await.map_err(|e| match e {
                stackshift::Error::AlreadyExists(_) => CliError::Input(format!(
                    "schedule {id_copy} already exists with a different definition; delete it \
                     first (stackshift schedules delete {id_copy}) or choose another id"
                )),
                other => CliError::Sdk(other),
            })?;
            let mut value = schedule_json(&created.schedule);
            value["created"] = Value::Bool(created.created);
            show(&value, &|| {
                schedules_table(std::slice::from_ref(&created.schedule))
            });
        }
        SchedulesCommand::List => {
            let mut all = Vec::new();
            let mut token = None;
            loop {
                let page = api.list(100, token).await.map_err(CliError::Sdk)?;
                all.extend(page.schedules);
                match page.next_page_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            let value = json!({ "schedules": all.iter().map(schedule_json).collect::<Vec<_>>() });
            show(&value, &|| schedules_table(&all));
        }
        SchedulesCommand::Get { id } => one(api.get(id).await.map_err(CliError::Sdk)?),
        SchedulesCommand::Pause { id } => one(api.pause(id).await.map_err(CliError::Sdk)?),
        SchedulesCommand::Resume { id } => one(api.resume(id).await.map_err(CliError::Sdk)?),
        SchedulesCommand::Delete { id } => {
            api.delete(id.clone()).await.map_err(CliError::Sdk)?;
            show(&json!({ "deleted": id }), &|| {
                format!("deleted schedule {id}\n")
            });
        }
    }
    Ok(())
}
