//! Checks of a run (`expect_run`) and of the ledger (`expect_ledger`), and the helpers that
//! describe a wire run in failure messages.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};
use stackshift::proto as pb;

use crate::case::{self, ExpectFailure};
use crate::ledger::Entry;

/// `completed`, `failed`, ... for a wire status.
pub(crate) fn status_name(status: i32) -> String {
    pb::RunStatus::try_from(status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("RUN_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("status#{status}"))
}

pub(crate) fn json_of(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// A one-line description of a run for failure messages.
pub(crate) fn summarize(run: &pb::Run) -> String {
    let failure = run.failure.as_ref().map(|f| {
        format!(
            " failure={:?}(type={:?}, non_retryable={})",
            f.message, f.r#type, f.non_retryable
        )
    });
    let steps: Vec<String> = run
        .steps
        .iter()
        .map(|s| format!("{}@{}", s.id, s.attempt))
        .collect();
    let mut result = json_of(&run.result).to_string();
    if result.len() > 300 {
        result = format!(
            "{}...",
            &result[..result
                .char_indices()
                .nth(300)
                .map_or(result.len(), |(i, _)| i)]
        );
    }
    format!(
        "status={} attempt={}/{} result={result}{} steps=[{}] attempts=[{}]",
        status_name(run.status),
        run.attempt,
        run.max_attempts,
        failure.unwrap_or_default(),
        steps.join(", "),
        run.attempts
            .iter()
            .map(|a| format!(
                "#{}:{}",
                a.number,
                a.failure
                    .as_ref()
                    .map_or("ok/running".to_owned(), |f| f.message.clone())
            ))
            .collect::<Vec<_>>()
            .join("; ")
    )
}

fn check_failure(
    what: &str,
    want: &ExpectFailure,
    got: Option<&pb::Failure>,
) -> anyhow::Result<()> {
    let f = got.with_context(|| format!("{what}: expected a failure, found none"))?;
    if let Some(m) = &want.message {
        ensure!(
            &f.message == m,
            "{what}: message {:?}, expected {m:?}",
            f.message
        );
    }
    if let Some(m) = &want.message_contains {
        ensure!(
            f.message.contains(m.as_str()),
            "{what}: message {:?} does not contain {m:?}",
            f.message
        );
    }
    if let Some(nr) = want.non_retryable {
        ensure!(
            f.non_retryable == nr,
            "{what}: non_retryable is {}, expected {nr}",
            f.non_retryable
        );
    }
    if let Some(has) = want.has_type {
        ensure!(f.r#type.is_empty() != has, "{what}: type is {:?}", f.r#type);
    }
    if let Some(t) = &want.error_type {
        ensure!(
            &f.r#type == t,
            "{what}: type {:?}, expected {t:?}",
            f.r#type
        );
    }
    if let Some(d) = &want.details {
        ensure!(
            &json_of(&f.details) == d,
            "{what}: details {}, expected {d}",
            json_of(&f.details)
        );
    }
    Ok(())
}

pub(crate) fn check_run(
    e: &case::ExpectRun,
    run: &pb::Run,
    substitute: impl Fn(&Value) -> Value,
) -> anyhow::Result<()> {
    if let Some(s) = &e.status {
        ensure!(
            &status_name(run.status) == s,
            "status is {}, expected {s}",
            status_name(run.status)
        );
    }
    if let Some(a) = e.attempt {
        ensure!(run.attempt == a, "attempt is {}, expected {a}", run.attempt);
    }
    if let Some(m) = e.max_attempts {
        ensure!(
            run.max_attempts == m,
            "max_attempts is {}, expected {m}",
            run.max_attempts
        );
    }
    if let Some(p) = &e.parent_run_id {
        let want = substitute(&Value::String(p.clone()));
        ensure!(
            Value::String(run.parent_run_id.clone()) == want,
            "parent_run_id is {:?}, expected {want}",
            run.parent_run_id
        );
    }
    if let Some(r) = &e.result {
        let want = substitute(r);
        ensure!(
            json_of(&run.result) == want,
            "result is {}, expected {want}",
            json_of(&run.result)
        );
    }
    if let Some(parts) = &e.result_at {
        let result = json_of(&run.result);
        for (path, want) in parts {
            let want = substitute(want);
            let got = pick(&result, path);
            ensure!(
                got.as_ref() == Some(&want),
                "result at {path:?} is {}, expected {want} (result {result})",
                got.map_or_else(|| "missing".to_owned(), |v| v.to_string())
            );
        }
    }
    if let Some(p) = &e.payload {
        ensure!(
            &json_of(&run.payload) == p,
            "payload is {}, expected {p}",
            json_of(&run.payload)
        );
    }
    if let Some(f) = &e.failure {
        check_failure("run failure", f, run.failure.as_ref())?;
    }
    if let Some(ids) = &e.step_ids {
        let got: Vec<&str> = run.steps.iter().map(|s| s.id.as_str()).collect();
        ensure!(
            got == ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "step ids are {got:?}, expected {ids:?}"
        );
    }
    if let Some(steps) = &e.steps {
        for (id, want) in steps {
            let step = run
                .steps
                .iter()
                .find(|s| &s.id == id)
                .with_context(|| format!("no recorded step {id:?}"))?;
            if let Some(a) = want.attempt {
                ensure!(
                    step.attempt == a,
                    "step {id}: recorded by attempt {}, expected {a}",
                    step.attempt
                );
            }
            if let Some(o) = &want.output {
                ensure!(
                    &json_of(&step.output) == o,
                    "step {id}: output {}, expected {o}",
                    json_of(&step.output)
                );
            }
            match &want.failure {
                Some(f) => check_failure(&format!("step {id}"), f, step.failure.as_ref())?,
                None => ensure!(
                    step.failure.is_none() || want.output.is_none(),
                    "step {id} failed: {:?}",
                    step.failure
                ),
            }
        }
    }
    if let Some(n) = e.attempts_count {
        ensure!(
            run.attempts.len() == n,
            "{} attempts listed, expected {n}",
            run.attempts.len()
        );
    }
    if let Some(attempts) = &e.attempts {
        for (i, want) in attempts.iter().enumerate() {
            let got = run
                .attempts
                .get(i)
                .with_context(|| format!("no attempt #{}", i + 1))?;
            if want.succeeded == Some(true) {
                ensure!(
                    got.failure.is_none(),
                    "attempt #{} failed: {:?}",
                    i + 1,
                    got.failure
                );
            }
            if let Some(f) = &want.failure {
                check_failure(&format!("attempt #{}", i + 1), f, got.failure.as_ref())?;
            }
        }
    }
    if let Some(want) = &e.timeline {
        check_timeline(want, &timeline_json(run))?;
    }
    if let Some(excluded) = &e.timeline_excludes {
        let timeline = timeline_json(run);
        for entry in timeline.as_array().into_iter().flatten() {
            let kind = entry["kind"].as_str().unwrap_or("");
            ensure!(
                !excluded.iter().any(|k| k == kind),
                "the timeline holds {kind}, which it must not: {}",
                kinds_of(&timeline)
            );
        }
    }
    if let Some(want) = &e.logs {
        check_logs(want, &logs_json(run))?;
    }
    if let Some(gap) = e.min_retry_gap_ms {
        for pair in run.attempts.windows(2) {
            let ended = pair[0]
                .ended_at
                .as_ref()
                .context("attempt without ended_at")?;
            let started = pair[1]
                .started_at
                .as_ref()
                .context("attempt without started_at")?;
            let ms = (started.seconds - ended.seconds) * 1000
                + i64::from(started.nanos - ended.nanos) / 1_000_000;
            ensure!(
                ms >= gap,
                "attempt #{} started {ms} ms after #{} ended; expected at least {gap} ms",
                pair[1].number,
                pair[0].number
            );
        }
    }
    Ok(())
}

pub(crate) fn check_ledger(
    e: &case::ExpectLedger,
    run_id: &str,
    entries: &[Entry],
) -> anyhow::Result<()> {
    let collect = |phase: &str| {
        let mut map: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for entry in entries
            .iter()
            .filter(|x| x.run_id == run_id && x.phase == phase)
        {
            map.entry(entry.step.clone())
                .or_default()
                .push(entry.attempt);
        }
        for attempts in map.values_mut() {
            attempts.sort_unstable();
        }
        map
    };
    let started = collect("start");
    let ended = collect("end");
    for (what, want, got) in [
        ("started", &e.started, &started),
        ("ended", &e.ended, &ended),
    ] {
        for (step, attempts) in want {
            let have = got.get(step).cloned().unwrap_or_default();
            ensure!(
                &have == attempts,
                "ledger: step {step} {what} in attempts {have:?}, expected {attempts:?} (all {what}: {got:?})"
            );
        }
    }
    if e.exhaustive {
        let want: BTreeSet<&String> = e.started.keys().collect();
        let have: BTreeSet<&String> = started.keys().collect();
        ensure!(
            want == have,
            "ledger: steps executed {have:?}, expected exactly {want:?}"
        );
    }
    Ok(())
}

/// A wire run's timeline as the adapters answer it: `[{kind, attempt, step_id}]`.
pub(crate) fn timeline_json(run: &pb::Run) -> Value {
    Value::Array(
        run.timeline
            .iter()
            .map(|e| {
                let kind = pb::TimelineEntryKind::try_from(e.kind).map_or_else(
                    |_| format!("KIND#{}", e.kind),
                    |k| {
                        k.as_str_name()
                            .trim_start_matches("TIMELINE_ENTRY_KIND_")
                            .to_owned()
                    },
                );
                json!({ "kind": kind, "attempt": e.attempt, "step_id": e.step_id })
            })
            .collect(),
    )
}

/// A wire run's logs as the adapters answer them: `[{level, message, fields, step_id,
/// attempt}]`.
pub(crate) fn logs_json(run: &pb::Run) -> Value {
    Value::Array(
        run.logs
            .iter()
            .map(|l| {
                let level = match pb::LogLevel::try_from(l.level) {
                    Ok(pb::LogLevel::Debug) => "debug",
                    Ok(pb::LogLevel::Warn) => "warn",
                    Ok(pb::LogLevel::Error) => "error",
                    _ => "info",
                };
                let fields = match json_of(&l.fields) {
                    Value::Null => json!({}),
                    other => other,
                };
                json!({
                    "level": level,
                    "message": l.message,
                    "fields": fields,
                    "step_id": l.step_id,
                    "attempt": l.attempt,
                })
            })
            .collect(),
    )
}

/// `KIND@attempt/step, ...` for failure messages.
fn kinds_of(timeline: &Value) -> String {
    timeline
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let step = e["step_id"].as_str().unwrap_or("");
            format!(
                "{}@{}{}",
                e["kind"].as_str().unwrap_or("?"),
                e["attempt"],
                if step.is_empty() {
                    String::new()
                } else {
                    format!("/{step}")
                }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The timeline (`[{kind, attempt, step_id}]`) holds the wanted entries in order.
pub(crate) fn check_timeline(want: &[case::TimelineMatch], timeline: &Value) -> anyhow::Result<()> {
    let entries = timeline
        .as_array()
        .with_context(|| format!("the answer has no timeline list: {timeline}"))?;
    let mut at = 0;
    for w in want {
        let (kind, attempt, step_id) = match w {
            case::TimelineMatch::Kind(k) => (k.as_str(), None, None),
            case::TimelineMatch::Entry {
                kind,
                attempt,
                step_id,
            } => (kind.as_str(), *attempt, step_id.as_deref()),
        };
        let found = entries[at..].iter().position(|e| {
            e["kind"].as_str() == Some(kind)
                && attempt.is_none_or(|a| e["attempt"].as_i64() == Some(i64::from(a)))
                && step_id.is_none_or(|s| e["step_id"].as_str() == Some(s))
        });
        match found {
            Some(i) => at += i + 1,
            None => bail!(
                "the timeline lacks {kind}{}{} in order (wanted {want:?}); it is: {}",
                attempt.map_or(String::new(), |a| format!("@{a}")),
                step_id.map_or(String::new(), |s| format!("/{s}")),
                kinds_of(timeline)
            ),
        }
    }
    Ok(())
}

/// The logs (`[{level, message, fields, step_id, attempt}]`) are exactly the wanted lines.
pub(crate) fn check_logs(want: &[case::LogMatch], logs: &Value) -> anyhow::Result<()> {
    let lines = logs
        .as_array()
        .with_context(|| format!("the answer has no logs list: {logs}"))?;
    ensure!(
        lines.len() == want.len(),
        "{} log lines, expected {}: {logs}",
        lines.len(),
        want.len()
    );
    for (i, (w, got)) in want.iter().zip(lines).enumerate() {
        let checks: [(&str, Option<Value>); 5] = [
            ("level", w.level.clone().map(Value::String)),
            ("message", w.message.clone().map(Value::String)),
            ("fields", w.fields.clone()),
            ("step_id", w.step_id.clone().map(Value::String)),
            ("attempt", w.attempt.map(|a| json!(a))),
        ];
        for (field, value) in checks {
            if let Some(value) = value {
                ensure!(
                    got.get(field) == Some(&value),
                    "log line #{}: {field} is {}, expected {value} (all lines: {logs})",
                    i + 1,
                    got.get(field).unwrap_or(&Value::Null)
                );
            }
        }
    }
    Ok(())
}

/// The value at a dot-separated `path` (object keys, array indices) in `value`; `""` = the
/// whole value.
pub(crate) fn pick(value: &Value, path: &str) -> Option<Value> {
    let mut at = value;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        at = match at {
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            Value::Object(map) => map.get(part)?,
            _ => return None,
        };
    }
    Some(at.clone())
}
