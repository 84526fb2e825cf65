//! Observability operations: handler logs (`AppendLogs`), following a run live
//! (`WatchRun`) and the Prometheus text of `/metrics`.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::mpsc;

use super::client_ops::validate_run_id;
use super::error::{EngineError, EngineResult};
use super::metrics::escape;
use super::model::{LeaseRef, RunDetail};
use super::obs_model::{
    AppendOutcome, LogLevel, MAX_LOG_BATCH, MAX_LOG_FIELDS_BYTES, MAX_LOG_MESSAGE_BYTES, NewLog,
};
use super::{Engine, now_ms, validate};

/// Most `WatchRun` streams open at once per server process.
pub const MAX_WATCH_STREAMS: u64 = 10_000;
/// Messages buffered per `WatchRun` stream before the server waits for the client.
pub const WATCH_BUFFER: usize = 16;
/// While a watch is open, the run is re-read at least this often even without an in-process
/// notification: the fallback for changes made by another server replica.
pub const WATCH_FALLBACK: Duration = Duration::from_secs(2);

/// A log line as a worker sent it.
#[derive(Debug, Clone)]
pub struct LogInput {
    /// Severity (`None` = info).
    pub level: Option<LogLevel>,
    /// Message.
    pub message: String,
    /// Structured fields as JSON bytes (empty = none).
    pub fields: Vec<u8>,
    /// Step executing, if any.
    pub step_id: Option<String>,
    /// Worker clock (ms); `None` = receive time.
    pub at: Option<i64>,
}

/// One message of a watch: the run (first in full, then with only new timeline entries and
/// log lines) and whether it is the last.
#[derive(Debug, Clone)]
pub struct WatchUpdate {
    /// The run.
    pub detail: RunDetail,
    /// True for the last message (the run is final).
    pub last: bool,
}

impl Engine {
    /// Stores log lines of the attempt holding `token` (see `docs/observability.md`).
    pub async fn append_logs(
        &self,
        namespace: &str,
        run_id: &str,
        token: &str,
        lines: Vec<LogInput>,
    ) -> EngineResult<AppendOutcome> {
        validate_run_id(run_id)?;
        if token.is_empty() || token.len() > 64 {
            return Err(EngineError::invalid(
                "lease_token must be the token of the task being executed",
            ));
        }
        if lines.len() > MAX_LOG_BATCH {
            return Err(EngineError::invalid(format!(
                "at most {MAX_LOG_BATCH} log entries per request (got {})",
                lines.len()
            )));
        }
        let now = now_ms();
        let mut out = Vec::with_capacity(lines.len());
        for l in lines {
            let fields = if l.fields.is_empty() {
                None
            } else {
                let text = validate::json("entries[].fields", &l.fields, MAX_LOG_FIELDS_BYTES)?;
                if !text.trim_start().starts_with('{') {
                    return Err(EngineError::invalid(
                        "entries[].fields must be a JSON object",
                    ));
                }
                Some(text)
            };
            if let Some(step) = &l.step_id {
                validate::text_id("entries[].step_id", step, validate::MAX_STEP_ID_LEN + 12)?;
            }
            out.push(NewLog {
                level: l.level.unwrap_or(LogLevel::Info),
                message: cut(l.message, MAX_LOG_MESSAGE_BYTES),
                fields,
                step_id: l.step_id,
                at: l.at.unwrap_or(now),
            });
        }
        let lease = LeaseRef {
            namespace: namespace.to_owned(),
            run_id: run_id.to_owned(),
            token: token.to_owned(),
        };
        let res = self.store.append_logs(lease, out, now).await?;
        self.metrics
            .log_lines
            .fetch_add(res.accepted as u64, Relaxed);
        self.metrics
            .log_lines_dropped
            .fetch_add(res.dropped as u64, Relaxed);
        self.watchers.changed(run_id);
        Ok(res)
    }

    /// Follows a run: the receiver gets the run in full, then one update per change, and
    /// closes after the update in which the run is final (or on shutdown, or an error).
    pub async fn watch_run(
        self: &Arc<Self>,
        namespace: &str,
        run_id: &str,
    ) -> EngineResult<mpsc::Receiver<EngineResult<WatchUpdate>>> {
        validate_run_id(run_id)?;
        if self.metrics.watch_streams.fetch_add(1, Relaxed) >= MAX_WATCH_STREAMS {
            self.metrics.watch_streams.fetch_sub(1, Relaxed);
            return Err(EngineError::ResourceExhausted(format!(
                "too many WatchRun streams are open (limit {MAX_WATCH_STREAMS}); use GetRun"
            )));
        }
        let guard = WatchGuard(self.clone());
        let notify = self.watchers.subscribe(run_id);
        let first = match self.read_watch(namespace, run_id).await {
            Ok(d) => d,
            Err(e) => {
                self.watchers.release(run_id, notify);
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let engine = self.clone();
        let (ns, id) = (namespace.to_owned(), run_id.to_owned());
        tokio::spawn(async move {
            let _guard = guard;
            let mut last_tl = first.timeline.last().map_or(0, |t| t.id);
            let mut last_log = first.logs.last().map_or(0, |l| l.id);
            let mut last_status = first.run.status;
            let mut done = first.run.status.is_final();
            let mut update = Some(first);
            loop {
                let notified = notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if let Some(detail) = update.take() {
                    let send = tx.send(Ok(WatchUpdate { detail, last: done }));
                    if send.await.is_err() || done {
                        break;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(WATCH_FALLBACK) => {}
                    _ = tx.closed() => break,
                    _ = engine.shutdown.cancelled() => break,
                }
                match engine.read_watch(&ns, &id).await {
                    Ok(mut d) => {
                        d.timeline.retain(|t| t.id > last_tl);
                        d.logs.retain(|l| l.id > last_log);
                        if d.timeline.is_empty() && d.logs.is_empty() && d.run.status == last_status
                        {
                            continue;
                        }
                        last_tl = d.timeline.last().map_or(last_tl, |t| t.id);
                        last_log = d.logs.last().map_or(last_log, |l| l.id);
                        last_status = d.run.status;
                        done = d.run.status.is_final();
                        update = Some(d);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
            }
            engine.watchers.release(&id, notify);
        });
        Ok(rx)
    }

    async fn read_watch(&self, namespace: &str, run_id: &str) -> EngineResult<RunDetail> {
        self.store
            .get_run_detail(namespace, run_id)
            .await?
            .ok_or_else(|| EngineError::run_not_found(run_id))
    }

    /// The Prometheus text exposition of every metric. Queue depths are read from the
    /// store (one grouped count over an index).
    pub async fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP stackshift_open_long_polls PollTask calls waiting for work.\n\
             # TYPE stackshift_open_long_polls gauge\nstackshift_open_long_polls {}",
            self.open_polls()
        );
        let _ = writeln!(
            out,
            "# HELP stackshift_watch_streams Open WatchRun streams.\n\
             # TYPE stackshift_watch_streams gauge\nstackshift_watch_streams {}",
            self.metrics.watch_streams.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP stackshift_queue_depth Queued runs (deliverable now or later).\n\
             # TYPE stackshift_queue_depth gauge"
        );
        match self.store.queue_depths().await {
            Ok(depths) => {
                for (ns, queue, n) in depths {
                    let _ = writeln!(
                        out,
                        "stackshift_queue_depth{{namespace=\"{}\",queue=\"{}\"}} {n}",
                        escape(&ns),
                        escape(&queue)
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read queue depths"),
        }
        let stats = self.store.commit_stats();
        let name = "stackshift_commit_batch_size";
        let _ = writeln!(
            out,
            "# HELP {name} Writes per group commit.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (le, n) in &stats.batches {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", stats.commits);
        let _ = writeln!(out, "{name}_sum {}", stats.writes);
        let _ = writeln!(out, "{name}_count {}", stats.commits);
        let name = "stackshift_writer_statements_total";
        let _ = writeln!(
            out,
            "# HELP {name} Statements (database round trips) run by the group-commit writer, \
             including BEGIN, savepoints and COMMIT.\n# TYPE {name} counter\n{name} {}",
            stats.statements
        );
        out
    }

    /// Counts and announces a change of a run (timeline, logs or status).
    pub(crate) fn run_changed(&self, run_id: &str) {
        self.watchers.changed(run_id);
    }
}

/// Decrements the open-watch gauge when a watch ends.
struct WatchGuard(Arc<Engine>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.metrics.watch_streams.fetch_sub(1, Relaxed);
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
