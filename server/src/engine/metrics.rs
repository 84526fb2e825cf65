//! In-process metrics, rendered in the Prometheus text exposition format (version 0.0.4)
//! by [`crate::engine::Engine::metrics_text`]. Hand-rolled atomic counters and histograms:
//! a few label sets, no dependency. Labels carry names only (namespace, job, queue), never
//! payloads, keys or run ids.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the step duration histogram, in seconds.
pub const STEP_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// `(namespace, job, queue)`.
pub type RunLabels = (String, String, String);

/// Counters of run transitions by `(namespace, job, queue)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunCounts {
    /// Runs created by `StartRun` (duplicates excluded).
    pub started: u64,
    /// Attempts delivered to workers (resumptions excluded).
    pub attempts: u64,
    /// Runs completed.
    pub completed: u64,
    /// Runs failed for good.
    pub failed: u64,
    /// Runs cancelled.
    pub cancelled: u64,
    /// Leases that expired.
    pub lease_expirations: u64,
}

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (non-cumulative) counts; the last entry is `+Inf`.
    buckets: [AtomicU64; STEP_BUCKETS.len() + 1],
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation in milliseconds.
    pub fn observe_ms(&self, ms: i64) {
        let secs = ms.max(0) as f64 / 1000.0;
        let i = STEP_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(STEP_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(ms.max(0) as u64 * 1000, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str) {
        let mut cumulative = 0;
        for (i, b) in STEP_BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.buckets[STEP_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {}", self.count.load(Relaxed));
    }
}

/// The engine's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    runs: Mutex<BTreeMap<RunLabels, RunCounts>>,
    /// Step durations (`completed_at - started_at` as reported by workers).
    pub step_duration: Histogram,
    /// Log lines stored and dropped by the cap.
    pub log_lines: AtomicU64,
    /// Log lines dropped by the per-run cap.
    pub log_lines_dropped: AtomicU64,
    /// Open `WatchRun` streams.
    pub watch_streams: AtomicU64,
    /// `ReportBatch` calls answered (past the item cap).
    pub report_batch_calls: AtomicU64,
    /// Items carried by those calls.
    pub report_batch_items: AtomicU64,
}

impl Metrics {
    /// Applies `f` to the counters of a label set.
    pub fn runs(&self, namespace: &str, job: &str, queue: &str, f: impl FnOnce(&mut RunCounts)) {
        let mut map = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let key = (namespace.to_owned(), job.to_owned(), queue.to_owned());
        f(map.entry(key).or_default());
    }

    /// Counts one `ReportBatch` call carrying `items` reports.
    pub fn record_report_batch(&self, items: usize) {
        self.report_batch_calls.fetch_add(1, Relaxed);
        self.report_batch_items
            .fetch_add(u64::try_from(items).unwrap_or(u64::MAX), Relaxed);
    }

    /// A snapshot of the run counters.
    pub fn run_counts(&self) -> Vec<(RunLabels, RunCounts)> {
        let map = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Renders counters and the step histogram.
    pub fn render(&self, out: &mut String) {
        let counts = self.run_counts();
        type Getter = fn(&RunCounts) -> u64;
        let families: [(&str, &str, Getter); 6] = [
            (
                "stackshift_runs_started_total",
                "Runs created by StartRun (idempotent duplicates excluded).",
                |c| c.started,
            ),
            (
                "stackshift_attempts_started_total",
                "Attempts delivered to workers (resumptions after a wait excluded).",
                |c| c.attempts,
            ),
            (
                "stackshift_runs_completed_total",
                "Runs that completed.",
                |c| c.completed,
            ),
            (
                "stackshift_runs_failed_total",
                "Runs that failed for good (attempts used up or non-retryable).",
                |c| c.failed,
            ),
            (
                "stackshift_runs_cancelled_total",
                "Runs that were cancelled.",
                |c| c.cancelled,
            ),
            (
                "stackshift_lease_expirations_total",
                "Attempts whose lease expired (worker stopped heartbeating).",
                |c| c.lease_expirations,
            ),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for ((ns, job, queue), c) in &counts {
                let _ = writeln!(
                    out,
                    "{name}{{namespace=\"{}\",job=\"{}\",queue=\"{}\"}} {}",
                    escape(ns),
                    escape(job),
                    escape(queue),
                    get(c)
                );
            }
        }
        let name = "stackshift_step_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Step execution time as reported by workers (started to recorded)."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        self.step_duration.render(out, name);
        for (name, help, v) in [
            (
                "stackshift_log_lines_total",
                "Handler log lines stored.",
                &self.log_lines,
            ),
            (
                "stackshift_log_lines_dropped_total",
                "Handler log lines dropped by the per-run cap.",
                &self.log_lines_dropped,
            ),
            (
                "stackshift_report_batch_calls_total",
                "ReportBatch calls answered.",
                &self.report_batch_calls,
            ),
            (
                "stackshift_report_batch_items_total",
                "Reports (step results, run outcomes) carried by ReportBatch calls.",
                &self.report_batch_items,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
    }
}

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe_ms(3);
        h.observe_ms(300);
        h.observe_ms(120_000);
        let mut s = String::new();
        h.render(&mut s, "x");
        assert!(s.contains("x_bucket{le=\"0.005\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.5\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"60\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"), "{s}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
