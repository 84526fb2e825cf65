//! The actions `start`, `publish`, `expect_increasing`, `expect_elapsed` and `expect_order`.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use stackshift::PublishEvent;
use stackshift::proto as pb;

use super::checks::{json_of, pick};
use super::{CaseRun, proto_duration, status_error};
use crate::case;
use crate::ledger;

impl CaseRun<'_> {
    pub(super) async fn publish(&mut self, p: &case::PublishAction) -> anyhow::Result<()> {
        // The runner's own client publishes (the SDK under test is the adapter's).
        let text = |s: &str| match self.substitute(&Value::String(s.to_owned())) {
            Value::String(s) => s,
            other => other.to_string(),
        };
        let mut event = PublishEvent::new(text(&p.name), self.substitute(&p.payload));
        if let Some(k) = &p.key {
            event = event.correlation_key(text(k));
        }
        if let Some(id) = &p.event_id {
            event = event.id(text(id));
        }
        let response = self.client.events().publish(event).await?;
        if let Some(n) = p.matched {
            ensure!(
                i64::try_from(response.resumed_run_count)? == n,
                "the event resumed {} runs, expected {n}",
                response.resumed_run_count
            );
        }
        if let Some(d) = p.duplicate {
            ensure!(
                response.duplicate == d,
                "duplicate is {}, expected {d}",
                response.duplicate
            );
        }
        if let Some(n) = p.started {
            ensure!(
                response.started_run_ids.len() == n,
                "the event started {} runs ({:?}) through triggers, expected {n}",
                response.started_run_ids.len(),
                response.started_run_ids
            );
        }
        if let Some(name) = &p.save {
            self.saved.insert(
                name.clone(),
                serde_json::json!({
                    "event_id": response.event.id,
                    "duplicate": response.duplicate,
                    "matched": response.resumed_run_count,
                    "started_run_ids": response.started_run_ids,
                }),
            );
        }
        Ok(())
    }

    /// The value a [`case::ValueRef`] names.
    async fn value_of(&self, r: &case::ValueRef) -> anyhow::Result<Value> {
        let (source, what) = match (&r.saved, &r.run) {
            (Some(name), None) => (
                self.saved
                    .get(name)
                    .cloned()
                    .with_context(|| format!("no answer saved as {name:?}"))?,
                format!("saved {name}"),
            ),
            (None, Some(run)) => {
                let id = self.run_id(run)?;
                let wire = self.get_run(&id, None).await?;
                (json_of(&wire.result), format!("the result of run {run}"))
            }
            _ => bail!("a value names exactly one of `saved` and `run`"),
        };
        pick(&source, &r.path).with_context(|| format!("{what} has no {:?}: {source}", r.path))
    }

    pub(super) async fn expect_increasing(&self, refs: &[case::ValueRef]) -> anyhow::Result<()> {
        let mut previous: Option<(f64, Value)> = None;
        for r in refs {
            let value = self.value_of(r).await?;
            let n = value
                .as_f64()
                .with_context(|| format!("{r:?} is {value}, not a number"))?;
            if let Some((p, pv)) = &previous {
                ensure!(n > *p, "{value} ({r:?}) is not larger than {pv}");
            }
            previous = Some((n, value));
        }
        Ok(())
    }

    /// A moment of a run in ms since the epoch: `created` or `STEP:start|end` (first line).
    async fn moment(&self, run_id: &str, moment: &str) -> anyhow::Result<f64> {
        if moment == "created" {
            let run = self.get_run(run_id, None).await?;
            let t = run.created_at.context("the run has no created_at")?;
            #[allow(clippy::cast_precision_loss)]
            return Ok(t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6);
        }
        let (step, phase) = moment.rsplit_once(':').with_context(|| {
            format!("a moment is `created` or `STEP:start|end`, not {moment:?}")
        })?;
        ledger::read(&self.ledger)?
            .iter()
            .filter(|e| e.run_id == run_id && e.step == step && e.phase == phase)
            .map(|e| e.t)
            .min_by(f64::total_cmp)
            .with_context(|| format!("the ledger has no {phase} of step {step}"))
    }

    pub(super) async fn expect_elapsed(&self, e: &case::ExpectElapsed) -> anyhow::Result<()> {
        for id in self.run_ids(&e.run)? {
            let from = self.moment(&id, &e.from).await?;
            let to = self.moment(&id, &e.to).await?;
            let ms = to - from;
            if let Some(min) = e.min_ms {
                ensure!(
                    ms >= min,
                    "{} -> {}: {ms:.0} ms, expected at least {min} ms",
                    e.from,
                    e.to
                );
            }
            if let Some(max) = e.max_ms {
                ensure!(
                    ms <= max,
                    "{} -> {}: {ms:.0} ms, expected at most {max} ms",
                    e.from,
                    e.to
                );
            }
        }
        Ok(())
    }

    pub(super) fn expect_order(&self, o: &case::ExpectOrder) -> anyhow::Result<()> {
        let entries = ledger::read(&self.ledger)?;
        let mut firsts: BTreeMap<String, f64> = BTreeMap::new();
        for e in entries
            .iter()
            .filter(|e| e.step == o.step && e.phase == "start")
        {
            let t = firsts.entry(e.run_id.clone()).or_insert(e.t);
            *t = t.min(e.t);
        }
        let mut order = Vec::new();
        for name in &o.runs {
            let id = self.run_id(name)?;
            let t = firsts
                .get(&id)
                .with_context(|| format!("run {name} never started step {}", o.step))?;
            order.push((*t, name.clone()));
        }
        let mut sorted = order.clone();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let got: Vec<&String> = sorted.iter().map(|(_, n)| n).collect();
        ensure!(
            got == o.runs.iter().collect::<Vec<_>>(),
            "step {} started in the order {got:?}, expected {:?}",
            o.step,
            o.runs
        );
        Ok(())
    }
}

impl CaseRun<'_> {
    /// `start`: `StartRun` through the raw API (`count` times), naming the run(s).
    pub(super) async fn start(&mut self, a: &case::StartAction) -> anyhow::Result<()> {
        let duration = |d: &Option<String>| d.as_deref().map(case::duration).transpose();
        let policy = (a.max_attempts.is_some()
            || a.initial_interval.is_some()
            || a.backoff_coefficient.is_some())
        .then(|| {
            anyhow::Ok(pb::RetryPolicy {
                max_attempts: a.max_attempts.unwrap_or(0),
                initial_interval: duration(&a.initial_interval)?.map(proto_duration),
                backoff_coefficient: a.backoff_coefficient.unwrap_or(0.0),
                maximum_interval: None,
            })
        })
        .transpose()?;
        let lease = duration(&a.lease_timeout)?.map(proto_duration);
        let delay = duration(&a.delay)?.map(proto_duration);
        let run_at_in = duration(&a.run_at_in)?;
        let mut ids = Vec::new();
        for _ in 0..a.count.unwrap_or(1).max(1) {
            let request = pb::StartRunRequest {
                job: a.job.clone(),
                payload: serde_json::to_vec(&self.substitute(&a.payload))?,
                queue: self.queue_name(a.queue.as_deref()),
                idempotency_key: a.idempotency_key.clone().unwrap_or_default(),
                idempotency_ttl: None,
                retry_policy: policy,
                lease_timeout: lease,
                delay,
                run_at: run_at_in
                    .map(|d| prost_types::Timestamp::from(std::time::SystemTime::now() + d)),
                priority: a.priority.unwrap_or(0),
                concurrency_key: a.concurrency_key.clone().unwrap_or_default(),
            };
            let response = self
                .client
                .jobs_client()
                .start_run(request)
                .await
                .map_err(status_error)?
                .into_inner();
            ids.push(response.run.context("StartRun returned no run")?.id);
        }
        self.runs.insert(a.name.clone(), ids);
        Ok(())
    }
}
