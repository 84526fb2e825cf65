//! [`Logger`]: the handler's run-scoped logger (`ctx.log`). Lines carry a level, a message
//! and structured fields, and are tied to the run, the attempt and the step executing when
//! they were logged. They are buffered and sent in batches (`AppendLogs`): when 100 lines
//! are waiting, one second after the first waiting line, and always before the attempt
//! reports its outcome or suspends. Logging never fails the handler: lines that cannot be
//! sent (the lease is gone, the server is unreachable) are dropped.
//!
//! The server keeps at most 1,000 lines and 1 MiB per run, then stores one truncation
//! marker and drops the rest (see `docs/observability.md`).

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use stackshift_proto::v1 as pb;

use crate::client::{WorkerClient, with_timeout};
use crate::convert::chrono_to_timestamp;
use crate::worker::lease::{Lease, WRITE_TIMEOUT, write};

/// Lines buffered before a batch is sent at once.
pub(crate) const FLUSH_LINES: usize = 100;
/// Longest a line waits in the buffer.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

tokio::task_local! {
    /// The step whose body is executing (set by `Step::run`).
    pub(crate) static CURRENT_STEP: String;
}

struct Shared {
    client: WorkerClient,
    lease: Arc<Lease>,
    buffer: Mutex<Buffer>,
    /// Serializes sends so batches arrive in order.
    sending: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Buffer {
    lines: Vec<pb::LogEntry>,
    timer_armed: bool,
}

/// The run-scoped logger of a handler (`ctx.log`).
///
/// ```no_run
/// # async fn demo(ctx: stackshift::JobContext<()>) {
/// ctx.log.info("charging the card");
/// ctx.log.with_field("amount_cents", 4200).with_field("currency", "EUR").info("charged");
/// ctx.log.warn("the provider was slow");
/// # }
/// ```
#[derive(Clone)]
pub struct Logger {
    shared: Arc<Shared>,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("run_id", &self.shared.lease.run_id)
            .field("fields", &self.fields.len())
            .finish_non_exhaustive()
    }
}

impl Logger {
    pub(crate) fn new(client: WorkerClient, lease: Arc<Lease>) -> Self {
        Self {
            shared: Arc::new(Shared {
                client,
                lease,
                buffer: Mutex::new(Buffer::default()),
                sending: tokio::sync::Mutex::new(()),
            }),
            fields: serde_json::Map::new(),
        }
    }

    /// A logger that adds the field `key` to every line it logs (values that cannot be
    /// serialized are logged as their error text).
    #[must_use]
    pub fn with_field(&self, key: impl Into<String>, value: impl Serialize) -> Self {
        let mut next = self.clone();
        let value = serde_json::to_value(value)
            .unwrap_or_else(|e| serde_json::Value::String(format!("<unserializable: {e}>")));
        next.fields.insert(key.into(), value);
        next
    }

    /// Logs at debug level.
    pub fn debug(&self, message: impl Into<String>) {
        self.log(pb::LogLevel::Debug, message.into());
    }

    /// Logs at info level.
    pub fn info(&self, message: impl Into<String>) {
        self.log(pb::LogLevel::Info, message.into());
    }

    /// Logs at warn level.
    pub fn warn(&self, message: impl Into<String>) {
        self.log(pb::LogLevel::Warn, message.into());
    }

    /// Logs at error level.
    pub fn error(&self, message: impl Into<String>) {
        self.log(pb::LogLevel::Error, message.into());
    }

    fn log(&self, level: pb::LogLevel, message: String) {
        let step_id = CURRENT_STEP.try_with(Clone::clone).unwrap_or_default();
        let fields = if self.fields.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&self.fields).unwrap_or_default()
        };
        let entry = pb::LogEntry {
            level: level as i32,
            message,
            fields,
            step_id,
            at: Some(chrono_to_timestamp(Utc::now())),
            ..Default::default()
        };
        let (flush_now, arm_timer) = {
            let mut buf = self
                .shared
                .buffer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            buf.lines.push(entry);
            let arm = !buf.timer_armed;
            buf.timer_armed = true;
            (buf.lines.len() >= FLUSH_LINES, arm)
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if flush_now {
            let me = self.clone();
            rt.spawn(async move { me.flush().await });
        } else if arm_timer {
            let me = self.clone();
            rt.spawn(async move {
                tokio::time::sleep(FLUSH_INTERVAL).await;
                me.flush().await;
            });
        }
    }

    /// Sends every buffered line now. Called by the worker before it reports the
    /// attempt's outcome or suspends; handlers rarely need it.
    pub async fn flush(&self) {
        let _order = self.shared.sending.lock().await;
        let lines = {
            let mut buf = self
                .shared
                .buffer
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            buf.timer_armed = false;
            std::mem::take(&mut buf.lines)
        };
        if lines.is_empty() {
            return;
        }
        let lease = &self.shared.lease;
        let n = lines.len();
        let request = pb::AppendLogsRequest {
            run_id: lease.run_id.clone(),
            lease_token: lease.token.clone(),
            entries: lines,
        };
        let result = write(lease, "AppendLogs", || {
            let mut client = self.shared.client.clone();
            let request = with_timeout(request.clone(), WRITE_TIMEOUT);
            async move { client.append_logs(request).await }
        })
        .await;
        match result {
            Ok(r) if r.dropped > 0 => {
                tracing::debug!(
                    dropped = r.dropped,
                    "log lines dropped by the run's log cap"
                );
            }
            Ok(_) => {}
            Err(_) => tracing::debug!(lines = n, "log lines could not be sent; dropped"),
        }
    }
}
