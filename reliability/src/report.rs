//! A scenario's figures and violations: printed as a table, then one JSON line; any
//! violation fails the scenario.

use std::time::Duration;

use crate::Opts;
use crate::harness::Backend;

/// Figures and violations of one scenario.
pub struct Report {
    scenario: &'static str,
    rows: Vec<(String, serde_json::Value)>,
    violations: Vec<String>,
    backend: &'static str,
    full: bool,
}

impl Report {
    /// An empty report.
    pub fn new(scenario: &'static str, opts: &Opts) -> Self {
        Self {
            scenario,
            rows: Vec::new(),
            violations: Vec::new(),
            backend: match opts.backend {
                Backend::Sqlite => "sqlite",
                Backend::Postgres => "postgres",
            },
            full: opts.full,
        }
    }

    /// A figure (`key` in the JSON line).
    pub fn figure(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.rows.push((key.to_owned(), value.into()));
    }

    /// Records a violation unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.violation(what());
        }
    }

    /// Records a violation.
    pub fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Prints the report; returns whether the scenario passed.
    pub fn print(self, elapsed: Duration) -> bool {
        let passed = self.violations.is_empty();
        println!(
            "\n== {} ({}, {}) ==",
            self.scenario,
            self.backend,
            if self.full { "full" } else { "ci size" }
        );
        let width = self.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut json = serde_json::Map::new();
        json.insert("scenario".into(), self.scenario.into());
        json.insert("backend".into(), self.backend.into());
        json.insert("full".into(), self.full.into());
        for (k, v) in &self.rows {
            let shown = match v {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            println!("  {k:<width$}  {shown}");
            json.insert(k.clone(), v.clone());
        }
        let secs = (elapsed.as_secs_f64() * 10.0).round() / 10.0;
        json.insert("elapsed_secs".into(), secs.into());
        json.insert("passed".into(), passed.into());
        json.insert("violations".into(), self.violations.len().into());
        for v in self.violations.iter().take(20) {
            println!("  VIOLATION: {v}");
        }
        if self.violations.len() > 20 {
            println!("  ... and {} more violations", self.violations.len() - 20);
        }
        println!("  {} in {secs} s", if passed { "PASS" } else { "FAIL" });
        println!("{}", serde_json::Value::Object(json));
        passed
    }
}
