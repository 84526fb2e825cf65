//! `flood`: one namespace sends 10x its request rate limit (`--rate-limit-per-namespace
//! 100`, flood paced at 1,000 requests/s from 32 concurrent callers over 4 connections)
//! while another namespace works normally.
//!
//! Checks: the flooding namespace gets RESOURCE_EXHAUSTED with a retry hint
//! (`retry-after-ms` metadata) and no more than its rate is served; the other namespace is
//! never refused and its median latency stays within 2x of its baseline (plus 1 ms for
//! timer noise on a shared machine); the server's memory stays bounded.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use stackshift_proto::v1 as pb;
use tonic::Code;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, req, rss_mib};
use crate::report::Report;

const RATE: u32 = 100;

/// Median latency (ms) of `n` reads by `key`, one every `every`, and the refusals seen.
async fn probe(raw: &mut Raw, key: &str, n: usize, every: Duration) -> (f64, u64) {
    let mut samples = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = raw
            .state
            .get_state(req(
                pb::GetStateRequest {
                    key: "k".into(),
                    run: None,
                },
                Duration::from_secs(10),
                Some(key),
            ))
            .await;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        if r.is_err() {
            refused += 1;
        }
        tokio::time::sleep(every).await;
    }
    samples.sort_by(f64::total_cmp);
    (samples[samples.len() / 2], refused)
}

pub async fn run(opts: &Opts, bin: &Path, report: &mut Report) -> anyhow::Result<()> {
    let secs = opts.size(15u64, 4);
    let db = Db::fresh(opts).await?;
    let (_, a) = db.create_key(bin, "flood-a", false)?;
    let (_, b) = db.create_key(bin, "flood-b", false)?;
    let server = Server::start(
        ServerSpec::new(bin, &db)?
            .args(["--rate-limit-per-namespace".to_owned(), RATE.to_string()]),
    )?;
    let mut probe_raw = server.raw()?;
    let every = Duration::from_millis(25);
    let _ = probe(&mut probe_raw, &b, 20, every).await;
    let (baseline, _) = probe(&mut probe_raw, &b, 80, every).await;
    let rss0 = rss_mib(server.pid())?;

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, served, refused, hinted) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut flooders = Vec::new();
    for _ in 0..4 {
        let ch = server.channel()?;
        for _ in 0..8 {
            let mut raw = Raw::new(ch.clone())?;
            let (a, stop, sent, served, refused, hinted) = (
                a.clone(),
                stop.clone(),
                sent.clone(),
                served.clone(),
                refused.clone(),
                hinted.clone(),
            );
            flooders.push(tokio::spawn(async move {
                // 32 flooders together send 10x the namespace's rate.
                let mut tick =
                    tokio::time::interval(Duration::from_secs_f64(32.0 / (10.0 * f64::from(RATE))));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    let r = raw
                        .state
                        .get_state(req(
                            pb::GetStateRequest {
                                key: "k".into(),
                                run: None,
                            },
                            Duration::from_secs(10),
                            Some(&a),
                        ))
                        .await;
                    match r {
                        Ok(_) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) if s.code() == Code::ResourceExhausted => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            if s.metadata().get("retry-after-ms").is_some()
                                && s.message().contains("retry after")
                            {
                                hinted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {}
                    }
                }
            }));
        }
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = ((secs * 1000 - 1000) / 25) as usize;
    let (during, b_refused) = probe(&mut probe_raw, &b, n, every).await;
    while t.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed().as_secs_f64();
    for f in flooders {
        let _ = f.await;
    }
    let rss1 = rss_mib(server.pid())?;
    let (sent, served, refused, hinted) = (
        sent.load(Ordering::Relaxed),
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        hinted.load(Ordering::Relaxed),
    );
    let offered = sent as f64 / elapsed;
    let r2 = |v: f64| (v * 100.0).round() / 100.0;
    report.figure("rate_limit_per_sec", RATE);
    report.figure("flood_secs", r2(elapsed));
    report.figure("flood_offered_per_sec", r2(offered));
    report.figure("flood_served", served);
    report.figure("flood_refused", refused);
    report.figure("flood_refusals_with_retry_hint", hinted);
    report.figure("other_ns_median_ms_baseline", r2(baseline));
    report.figure("other_ns_median_ms_during_flood", r2(during));
    report.figure("other_ns_refused", b_refused);
    report.figure("server_rss_mib_before", r2(rss0));
    report.figure("server_rss_mib_after", r2(rss1));
    report.check(offered >= 9.5 * f64::from(RATE), || {
        format!("the flood reached only {offered:.0} req/s (< 10x {RATE})")
    });
    let allowed = f64::from(RATE) * (elapsed + 1.0) * 1.05;
    report.check((served as f64) <= allowed, || {
        format!("{served} flood requests served, more than {allowed:.0}")
    });
    report.check(refused > 0 && hinted == refused, || {
        format!("{hinted} of {refused} refusals carried a retry hint")
    });
    report.check(b_refused == 0, || {
        format!("the other namespace was refused {b_refused} times")
    });
    report.check(during <= 2.0 * baseline + 1.0, || {
        format!(
            "other namespace median {during:.2} ms during the flood vs {baseline:.2} ms baseline"
        )
    });
    report.check(rss1 - rss0 < 50.0, || {
        format!("server RSS grew {:.1} MiB during the flood", rss1 - rss0)
    });
    Ok(())
}
