//! `auth`: the authentication and isolation matrix, against a server that has keys (created
//! with the `keys create` command, as operators do).
//!
//! 1. Every service answers UNAUTHENTICATED to a missing key, a malformed header, an unknown
//!    key and a revoked key.
//! 2. Namespace `beta` cannot read, change, poll, wait on or complete anything of namespace
//!    `alpha`: runs (get, list, watch, wait, cancel, retry, worker writes), queues (get,
//!    list, pause), state (get, list, set, delete), locks (release, extend) and events.
//! 3. Revocation reaches requests already open: a long-poll for tasks, a run wait, a lock
//!    wait and a WatchRun stream end with UNAUTHENTICATED right after `RevokeKey`, and a
//!    poll of a key revoked with the `keys revoke` command (another process) ends within
//!    the documented bound. A task enqueued afterwards goes to a valid poller only.
//! 4. Key comparison: an unknown key that shares all but its last character with a valid key
//!    is rejected in the same time as a random one (the server looks keys up by SHA-256 and
//!    compares hashes in constant time; this is a coarse smoke check, not a proof).

use std::path::Path;
use std::time::{Duration, Instant};

use stackshift_proto::v1 as pb;
use tonic::Code;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, code_of, dur, req, req_header};
use crate::report::Report;

pub(super) const T: Duration = Duration::from_secs(10);

/// Counts checks and records failed ones.
#[derive(Default)]
pub(super) struct Checks(std::cell::Cell<u32>);

impl Checks {
    /// Records a violation `what` unless `ok`.
    pub(super) fn expect(&self, report: &mut Report, ok: bool, what: String) {
        self.0.set(self.0.get() + 1);
        report.check(ok, || what);
    }

    /// Checks made so far.
    pub(super) fn get(&self) -> u32 {
        self.0.get()
    }
}

/// Calls one RPC of every service with `header`; returns (rpc, code).
async fn every_rpc(raw: &mut Raw, header: Option<&str>) -> Vec<(&'static str, Code)> {
    let h = header;
    let mut out = Vec::new();
    let start = pb::StartRunRequest {
        job: "j".into(),
        payload: b"1".to_vec(),
        ..Default::default()
    };
    out.push((
        "StartRun",
        code_of(&raw.jobs.start_run(req_header(start, T, h)).await),
    ));
    let list = pb::ListRunsRequest::default();
    out.push((
        "ListRuns",
        code_of(&raw.jobs.list_runs(req_header(list, T, h)).await),
    ));
    let get = pb::GetRunRequest {
        run_id: "01900000-0000-7000-8000-000000000000".into(),
        wait: None,
    };
    out.push((
        "GetRun",
        code_of(&raw.jobs.get_run(req_header(get, T, h)).await),
    ));
    let poll = pb::PollTaskRequest {
        worker_id: "w".into(),
        jobs: vec![pb::JobSpec {
            name: "j".into(),
            lease_timeout: None,
        }],
        wait: Some(dur(Duration::from_millis(100))),
        ..Default::default()
    };
    out.push((
        "PollTask",
        code_of(&raw.worker.poll_task(req_header(poll, T, h)).await),
    ));
    let hb = pb::HeartbeatRequest {
        run_id: "x".into(),
        lease_token: "y".into(),
    };
    out.push((
        "Heartbeat",
        code_of(&raw.worker.heartbeat(req_header(hb, T, h)).await),
    ));
    let gs = pb::GetStateRequest {
        key: "k".into(),
        run: None,
    };
    out.push((
        "GetState",
        code_of(&raw.state.get_state(req_header(gs, T, h)).await),
    ));
    let ss = pb::SetStateRequest {
        key: "k".into(),
        value: b"1".to_vec(),
        ..Default::default()
    };
    out.push((
        "SetState",
        code_of(&raw.state.set_state(req_header(ss, T, h)).await),
    ));
    let lk = pb::AcquireLockRequest {
        key: "l".into(),
        ttl: Some(dur(T)),
        ..Default::default()
    };
    out.push((
        "AcquireLock",
        code_of(&raw.state.acquire_lock(req_header(lk, T, h)).await),
    ));
    let ev = pb::PublishEventRequest {
        name: "e".into(),
        payload: b"1".to_vec(),
        ..Default::default()
    };
    out.push((
        "PublishEvent",
        code_of(&raw.events.publish_event(req_header(ev, T, h)).await),
    ));
    let le = pb::ListEventsRequest::default();
    out.push((
        "ListEvents",
        code_of(&raw.events.list_events(req_header(le, T, h)).await),
    ));
    let gq = pb::GetQueueRequest {
        name: "default".into(),
    };
    out.push((
        "GetQueue",
        code_of(&raw.queues.get_queue(req_header(gq, T, h)).await),
    ));
    let pq = pb::PauseQueueRequest {
        name: "default".into(),
    };
    out.push((
        "PauseQueue",
        code_of(&raw.queues.pause_queue(req_header(pq, T, h)).await),
    ));
    let lks = pb::ListKeysRequest::default();
    out.push((
        "ListKeys",
        code_of(&raw.keys.list_keys(req_header(lks, T, h)).await),
    ));
    out
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let db = Db::fresh(opts).await?;
    let (_, a) = db.create_key(bin, "alpha", false)?;
    let (_, b) = db.create_key(bin, "beta", false)?;
    let (_, admin) = db.create_key(bin, "alpha", true)?;
    let mut revocable = Vec::new();
    for _ in 0..5 {
        revocable.push(db.create_key(bin, "alpha", false)?);
    }
    let (pre_id, pre_revoked) = db.create_key(bin, "alpha", false)?;
    let server = Server::start(ServerSpec::new(bin, &db)?)?;
    let mut raw = server.raw()?;
    let checks = Checks::default();

    // 1. Missing, malformed, unknown and revoked keys.
    let revoke = |raw: &mut Raw, id: String| {
        let mut keys = raw.keys.clone();
        let admin = admin.clone();
        async move {
            keys.revoke_key(req(pb::RevokeKeyRequest { id }, T, Some(&admin)))
                .await
        }
    };
    revoke(&mut raw, pre_id.clone()).await?;
    let unknown_key = format!("ssk_{}", "0".repeat(48));
    let bearer_revoked = format!("Bearer {pre_revoked}");
    let bearer_unknown = format!("Bearer {unknown_key}");
    let cases: [(&str, Option<&str>); 6] = [
        ("missing", None),
        ("basic scheme", Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l")),
        ("empty bearer", Some("Bearer ")),
        ("unknown key", Some(&bearer_unknown)),
        ("revoked key", Some(&bearer_revoked)),
        ("key with NUL", Some("Bearer ssk_\u{0}abc")),
    ];
    let mut rejected = 0u32;
    for (case, header) in cases {
        for (rpc, c) in every_rpc(&mut raw, header).await {
            if c == Code::Unauthenticated {
                rejected += 1;
            }
            checks.expect(
                report,
                c == Code::Unauthenticated,
                format!("{case}: {rpc} answered {c:?}"),
            );
        }
    }
    report.figure("unauthenticated_requests_rejected", rejected);

    // 2. Namespace isolation: alpha's objects, probed with beta's key.
    super::auth_isolation::run(&mut raw, &a, &b, report, &checks).await?;

    // 3. Revocation of requests already open.
    let api_revoked: Vec<(String, String)> = revocable.drain(..4).collect();
    let (cli_id, cli_key) = revocable.remove(0);
    let blocked = pb::AcquireLockRequest {
        key: "lock-a".into(),
        ttl: Some(dur(T)),
        wait: Some(dur(Duration::from_secs(50))),
        ..Default::default()
    };
    let long_poll = pb::PollTaskRequest {
        worker_id: "revoked-worker".into(),
        queues: vec!["rev".into()],
        jobs: vec![pb::JobSpec {
            name: "jr".into(),
            lease_timeout: None,
        }],
        max_tasks: 1,
        wait: Some(dur(Duration::from_secs(50))),
    };
    // A run that stays open, to wait on and watch.
    let start = pb::StartRunRequest {
        job: "never".into(),
        payload: b"1".to_vec(),
        queue: "idle".into(),
        ..Default::default()
    };
    let open_run = raw
        .jobs
        .start_run(req(start, T, Some(a.as_str())))
        .await?
        .into_inner()
        .run
        .map(|r| r.id)
        .unwrap_or_default();
    let lt = Duration::from_secs(55);
    let mut open: Vec<(&'static str, tokio::task::JoinHandle<(Code, Instant)>)> = Vec::new();
    {
        let (mut w, k) = (raw.worker.clone(), api_revoked[0].1.clone());
        let p = long_poll.clone();
        open.push((
            "PollTask",
            tokio::spawn(async move {
                (
                    code_of(&w.poll_task(req(p, lt, Some(&k))).await),
                    Instant::now(),
                )
            }),
        ));
        let (mut j, k, id) = (raw.jobs.clone(), api_revoked[1].1.clone(), open_run.clone());
        open.push((
            "GetRun(wait)",
            tokio::spawn(async move {
                (
                    code_of(
                        &j.get_run(req(
                            pb::GetRunRequest {
                                run_id: id,
                                wait: Some(dur(Duration::from_secs(50))),
                            },
                            lt,
                            Some(&k),
                        ))
                        .await,
                    ),
                    Instant::now(),
                )
            }),
        ));
        let (mut s, k, b2) = (raw.state.clone(), api_revoked[2].1.clone(), blocked.clone());
        open.push((
            "AcquireLock(wait)",
            tokio::spawn(async move {
                (
                    code_of(&s.acquire_lock(req(b2, lt, Some(&k))).await),
                    Instant::now(),
                )
            }),
        ));
        let (mut j, k, id) = (raw.jobs.clone(), api_revoked[3].1.clone(), open_run.clone());
        open.push((
            "WatchRun",
            tokio::spawn(async move {
                let c = match j
                    .watch_run(req(pb::WatchRunRequest { run_id: id }, lt, Some(&k)))
                    .await
                {
                    Ok(mut s) => loop {
                        match s.get_mut().message().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => break Code::Ok,
                            Err(e) => break e.code(),
                        }
                    },
                    Err(e) => e.code(),
                };
                (c, Instant::now())
            }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let revoked_at = Instant::now();
    for (id, _) in &api_revoked {
        revoke(&mut raw, id.clone()).await?;
    }
    let mut worst = Duration::ZERO;
    for (what, h) in open {
        let (c, at) = tokio::time::timeout(Duration::from_secs(20), h)
            .await
            .map_err(|_| anyhow::anyhow!("{what} still open 20 s after revocation"))??;
        let took = at.saturating_duration_since(revoked_at);
        worst = worst.max(took);
        checks.expect(
            report,
            c == Code::Unauthenticated,
            format!("open {what} ended with {c:?} after revocation"),
        );
        checks.expect(
            report,
            took < Duration::from_secs(3),
            format!("open {what} ended {took:?} after RevokeKey"),
        );
    }
    report.figure(
        "open_requests_ended_after_revoke_api_ms",
        worst.as_millis() as u64,
    );
    let c = code_of(
        &raw.state
            .get_state(req(
                pb::GetStateRequest {
                    key: "k".into(),
                    run: None,
                },
                T,
                Some(&api_revoked[0].1),
            ))
            .await,
    );
    checks.expect(
        report,
        c == Code::Unauthenticated,
        format!("a revoked key's next request answered {c:?}"),
    );

    // Revocation by another process (the CLI on the same database).
    let (mut w, k) = (raw.worker.clone(), cli_key.clone());
    let p = long_poll.clone();
    let cli_poll = tokio::spawn(async move {
        (
            code_of(&w.poll_task(req(p, lt, Some(&k))).await),
            Instant::now(),
        )
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let t = Instant::now();
    let out = std::process::Command::new(bin)
        .args(["--database-url", &db.url, "keys", "revoke", &cli_id])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "keys revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (c, at) = tokio::time::timeout(Duration::from_secs(20), cli_poll)
        .await
        .map_err(|_| anyhow::anyhow!("poll still open 20 s after keys revoke"))??;
    let took = at.saturating_duration_since(t);
    checks.expect(
        report,
        c == Code::Unauthenticated,
        format!("poll of a CLI-revoked key ended with {c:?}"),
    );
    checks.expect(
        report,
        took < Duration::from_secs(8),
        format!("poll of a CLI-revoked key ended after {took:?} (bound: 6 s)"),
    );
    report.figure(
        "open_poll_ended_after_cli_revoke_ms",
        took.as_millis() as u64,
    );

    // A task enqueued now goes to a valid poller.
    let start = pb::StartRunRequest {
        job: "jr".into(),
        payload: b"1".to_vec(),
        queue: "rev".into(),
        ..Default::default()
    };
    let rid = raw
        .jobs
        .start_run(req(start, T, Some(a.as_str())))
        .await?
        .into_inner()
        .run
        .map(|r| r.id)
        .unwrap_or_default();
    let got = raw
        .worker
        .poll_task(req(long_poll.clone(), T, Some(a.as_str())))
        .await?
        .into_inner()
        .tasks;
    checks.expect(
        report,
        got.first().is_some_and(|t| t.run_id == rid),
        "the task after revocation did not reach a valid poller".into(),
    );

    // 4. Coarse timing smoke check of key comparison.
    let mut near = a.clone();
    near.pop();
    near.push(if a.ends_with('0') { '1' } else { '0' });
    // Interleaved, so load changes hit both series alike.
    let random = unknown_key.replace('0', "7");
    let (mut near_s, mut random_s) = (Vec::new(), Vec::new());
    let mut st = raw.state.clone();
    for i in 0..600 {
        let key = if i % 2 == 0 { &near } else { &random };
        let t = Instant::now();
        let get = pb::GetStateRequest {
            key: "k".into(),
            run: None,
        };
        let _ = st.get_state(req(get, T, Some(key))).await;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if i % 2 == 0 {
            near_s.push(ms);
        } else {
            random_s.push(ms);
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (near_ms, random_ms) = (median(near_s), median(random_s));
    report.figure(
        "reject_median_ms_near_key",
        (near_ms * 1000.0).round() / 1000.0,
    );
    report.figure(
        "reject_median_ms_random_key",
        (random_ms * 1000.0).round() / 1000.0,
    );
    checks.expect(
        report,
        (near_ms - random_ms).abs() < 0.5f64.max(random_ms * 0.5),
        format!("near-key rejection {near_ms:.3} ms vs random {random_ms:.3} ms"),
    );
    report.figure("checks", checks.get());
    Ok(())
}
