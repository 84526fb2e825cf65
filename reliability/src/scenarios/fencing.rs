//! `lock-fencing`: holder A takes a lock with a short TTL and is paused past its expiry;
//! B takes the lock; A then extends and releases with its old token. Every few rounds the
//! server is killed with SIGKILL and restarted between rounds.
//!
//! Checks: A's writes answer FAILED_PRECONDITION and leave B holding the lock (a third
//! caller is refused); every granted token is strictly larger than all earlier ones for
//! that key, across expiry and restarts.

use std::path::Path;
use std::time::Duration;

use rand::Rng;
use stackshift_proto::v1 as pb;

use crate::Opts;
use crate::harness::{Db, Raw, Server, ServerSpec, dur, req};
use crate::report::Report;

const T: Duration = Duration::from_secs(10);

async fn acquire(
    raw: &mut Raw,
    key: &str,
    ttl: Duration,
) -> anyhow::Result<pb::AcquireLockResponse> {
    Ok(raw
        .state
        .acquire_lock(req(
            pb::AcquireLockRequest {
                key: key.into(),
                ttl: Some(dur(ttl)),
                ..Default::default()
            },
            T,
            None,
        ))
        .await?
        .into_inner())
}

fn code<R>(r: Result<tonic::Response<R>, tonic::Status>) -> tonic::Code {
    r.map_or_else(|s| s.code(), |_| tonic::Code::Ok)
}

pub async fn run(
    opts: &Opts,
    bin: &Path,
    mut rng: rand::rngs::StdRng,
    report: &mut Report,
) -> anyhow::Result<()> {
    let rounds = opts.size(60u32, 12);
    let db = Db::fresh(opts).await?;
    let mut server = Server::start(ServerSpec::new(bin, &db)?)?;
    let mut raw = server.raw()?;
    let mut last = 0i64;
    let (mut stale_writes, mut stale_accepted, mut kills, mut not_monotonic) =
        (0u64, 0u64, 0u32, 0u64);
    for round in 0..rounds {
        let key = "fenced-resource";
        let a = acquire(&mut raw, key, Duration::from_millis(300)).await?;
        anyhow::ensure!(a.granted, "round {round}: A was not granted a free lock");
        // A is paused past its lease.
        tokio::time::sleep(Duration::from_millis(rng.random_range(350..600))).await;
        let b = acquire(&mut raw, key, Duration::from_secs(10)).await?;
        anyhow::ensure!(
            b.granted,
            "round {round}: B was not granted the expired lock"
        );
        for (who, t) in [("A", a.fencing_token), ("B", b.fencing_token)] {
            if t <= last {
                not_monotonic += 1;
                report.violation(format!(
                    "round {round}: {who}'s token {t} is not above {last}"
                ));
            }
            last = last.max(t);
        }
        let ext = raw
            .state
            .extend_lock(req(
                pb::ExtendLockRequest {
                    key: key.into(),
                    fencing_token: a.fencing_token,
                    ttl: Some(dur(Duration::from_secs(60))),
                    run: None,
                },
                T,
                None,
            ))
            .await;
        let rel = raw
            .state
            .release_lock(req(
                pb::ReleaseLockRequest {
                    key: key.into(),
                    fencing_token: a.fencing_token,
                    run: None,
                },
                T,
                None,
            ))
            .await;
        for (what, c) in [("ExtendLock", code(ext)), ("ReleaseLock", code(rel))] {
            stale_writes += 1;
            if c == tonic::Code::Ok {
                stale_accepted += 1;
            }
            report.check(c == tonic::Code::FailedPrecondition, || {
                format!("round {round}: {what} with A's stale token answered {c:?}")
            });
        }
        let c = acquire(&mut raw, key, Duration::from_secs(1)).await?;
        report.check(!c.granted, || {
            format!("round {round}: a third caller got the lock B holds")
        });
        let ok = raw
            .state
            .release_lock(req(
                pb::ReleaseLockRequest {
                    key: key.into(),
                    fencing_token: b.fencing_token,
                    run: None,
                },
                T,
                None,
            ))
            .await;
        report.check(ok.is_ok(), || {
            format!("round {round}: B could not release its lock")
        });
        if round % 3 == 2 {
            server.restart()?;
            kills += 1;
            raw = server.raw()?;
        }
    }
    report.figure("rounds", rounds);
    report.figure("kill9_between_rounds", kills);
    report.figure("stale_token_writes_tried", stale_writes);
    report.figure("stale_token_writes_accepted", stale_accepted);
    report.figure("tokens_not_increasing", not_monotonic);
    report.figure("last_token", last);
    Ok(())
}
