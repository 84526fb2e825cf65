//! The `client` action (an SDK call through the adapter, with its checks, `eventually`
//! polling and `save`) and `bind` (naming runs by ids taken from a saved answer).

use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{CLIENT_CALL_TIMEOUT, CaseRun, checks};
use crate::case;

impl CaseRun<'_> {
    pub(super) async fn client_action(&mut self, a: &case::ClientAction) -> anyhow::Result<()> {
        let mut args = match self.substitute(&Value::Object(a.args.clone())) {
            Value::Object(map) => map,
            _ => unreachable!("substitute keeps objects"),
        };
        if a.op == "start" && !args.contains_key("queue") {
            args.insert("queue".into(), json!(self.queue));
        }
        match a.api_key.as_deref() {
            None => {}
            Some("wrong") => {
                args.insert(
                    "api_key".into(),
                    json!("ssk_0000000000000000000000000000000000000000000000000000000000000000"),
                );
            }
            Some("other") => {
                args.insert("api_key".into(), json!(self.server.other_api_key));
            }
            Some(other) => bail!("api_key must be `wrong` or `other`, not {other:?}"),
        }
        let patience = a.eventually.as_deref().map(case::duration).transpose()?;
        let until = tokio::time::Instant::now() + patience.unwrap_or_default();
        loop {
            let adapter = self.adapter.as_mut().context("no adapter running")?;
            let answer = adapter
                .call(&a.op, args.clone(), CLIENT_CALL_TIMEOUT)
                .await?;
            match self.check_answer(a, &answer) {
                Ok(ok) => {
                    if let Some(ok) = ok {
                        self.keep_answer(a, ok)?;
                    }
                    return Ok(());
                }
                Err(_) if patience.is_some() && tokio::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if let Some(patience) = patience => {
                    return Err(e.context(format!("still failing after {patience:?}")));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks an adapter answer against a `client` action; `Some(ok)` = the successful
    /// answer (to save), `None` = the expected error.
    fn check_answer(
        &self,
        a: &case::ClientAction,
        answer: &Value,
    ) -> anyhow::Result<Option<Value>> {
        if let Some(code) = &a.expect_error {
            let error = answer
                .get("error")
                .with_context(|| format!("expected a {code} error, got {answer}"))?;
            let got = error.get("code").and_then(Value::as_str).unwrap_or("");
            ensure!(got == code, "expected a typed {code} error, got {error}");
            let class = error.get("type").and_then(Value::as_str).unwrap_or("");
            ensure!(
                !class.is_empty(),
                "the error has no type (the SDK must raise a typed error): {error}"
            );
            if let Some(reason) = &a.expect_reason {
                let got = error.get("reason").and_then(Value::as_str).unwrap_or("");
                ensure!(
                    got == reason,
                    "expected the typed conflict reason {reason}, got {got:?}: {error}"
                );
            }
            return Ok(None);
        }
        let ok = answer.get("ok").with_context(|| {
            format!(
                "the SDK call failed: {}",
                answer.get("error").unwrap_or(answer)
            )
        })?;
        let field = |key: &str| match ok.get(key) {
            Some(v) => v.clone(),
            None => checks::pick(ok, key).unwrap_or(Value::Null),
        };
        for (key, want) in a.expect.iter().flatten() {
            let want = self.substitute(want);
            let got = field(key);
            ensure!(
                got == want,
                "field {key}: expected {want}, got {got} (answer {ok})"
            );
        }
        for (key, other) in a.expect_not.iter().flatten() {
            let other = self.substitute(other);
            let got = field(key);
            ensure!(got != other, "field {key} is still {got} (answer {ok})");
        }
        for (lengths, exact) in [(&a.expect_len, true), (&a.expect_min_len, false)] {
            for (path, want) in lengths.iter().flatten() {
                let len = match field(path) {
                    Value::Array(items) => items.len(),
                    Value::String(s) => s.chars().count(),
                    Value::Object(map) => map.len(),
                    _ => bail!("{path} is not a list in the answer {ok}"),
                };
                if exact {
                    ensure!(
                        len == *want,
                        "{path} has {len} entries, expected {want} (answer {ok})"
                    );
                } else {
                    ensure!(
                        len >= *want,
                        "{path} has {len} entries, expected at least {want} (answer {ok})"
                    );
                }
            }
        }
        for (checks, present) in [(&a.expect_includes, true), (&a.expect_excludes, false)] {
            for (path, values) in checks.iter().flatten() {
                let list = checks::pick(ok, path)
                    .and_then(|v| v.as_array().cloned())
                    .with_context(|| format!("{path} is not a list in the answer {ok}"))?;
                for value in values {
                    let value = self.substitute(value);
                    ensure!(
                        list.contains(&value) == present,
                        "{path} {} {value} (answer {ok})",
                        if present { "lacks" } else { "holds" }
                    );
                }
            }
        }
        if let Some(want) = &a.expect_ok {
            let want = self.substitute(want);
            ensure!(ok == &want, "the answer is {ok}, expected {want}");
        }
        if let Some(want) = &a.expect_timeline {
            checks::check_timeline(want, ok.get("timeline").unwrap_or(&Value::Null))?;
        }
        if let Some(want) = &a.expect_logs {
            checks::check_logs(want, ok.get("logs").unwrap_or(&Value::Null))?;
        }
        Ok(Some(ok.clone()))
    }

    /// `save` and `as` of a successful `client` action.
    fn keep_answer(&mut self, a: &case::ClientAction, ok: Value) -> anyhow::Result<()> {
        if let Some(name) = &a.name {
            let id = ok
                .get("run_id")
                .and_then(Value::as_str)
                .context("the answer has no run_id")?;
            self.runs.insert(name.clone(), vec![id.to_owned()]);
        }
        if let Some(name) = &a.save {
            self.saved.insert(name.clone(), ok);
        }
        Ok(())
    }

    /// `bind`: names the run id (or ids) a `$saved.path` reference picks.
    pub(super) fn bind(&mut self, b: &case::BindAction) -> anyhow::Result<()> {
        let (name, path) =
            b.id.strip_prefix('$')
                .and_then(|r| r.split_once('.'))
                .with_context(|| format!("bind id must be `$saved.path`, not {:?}", b.id))?;
        let saved = self
            .saved
            .get(name)
            .with_context(|| format!("no answer saved as {name:?}"))?;
        let value = checks::pick(saved, path)
            .with_context(|| format!("{name} has no {path:?}: {saved}"))?;
        let ids = match &value {
            Value::String(id) => vec![id.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("{} is not a list of run ids: {value}", b.id))?,
            other => bail!("{} is {other}, not a run id or a list of them", b.id),
        };
        ensure!(!ids.is_empty(), "{} holds no run id", b.id);
        self.runs.insert(b.name.clone(), ids);
        Ok(())
    }
}
