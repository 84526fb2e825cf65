//! Schedules end to end, on the real server binary over SQLite and PostgreSQL: interval and
//! cron schedules fire once per scheduled time, pause/resume/delete, the catch-up policies
//! across downtime, two replicas firing each time once, and validation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::DateTime;
use serde_json::json;
use stackshift::{
    CatchUp, ClientOptions, Error, ListRunsOptions, NewSchedule, ScheduleSpec, StackShift,
};
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::schedule_service_client::ScheduleServiceClient;
use support::{Db, TestServer};
use tonic::Code;

fn client(s: &TestServer) -> StackShift {
    StackShift::new(ClientOptions::new(s.endpoint())).unwrap()
}

/// The scheduled times (ms) of a job's runs, from their `schedule:<id>:<time>` keys; fails
/// if two runs share a time.
async fn fired_times(c: &StackShift, job: &str) -> Vec<i64> {
    let page = c
        .list_runs(ListRunsOptions {
            job: Some(job.to_owned()),
            page_size: Some(1_000),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut times = BTreeSet::new();
    for run in &page.runs {
        let key = run
            .idempotency_key
            .as_deref()
            .expect("scheduled runs carry a key");
        // schedule:<id>:<RFC 3339 time> (the test ids contain no ':').
        let (_, at) = key
            .strip_prefix("schedule:")
            .and_then(|rest| rest.split_once(':'))
            .expect("key is schedule:<id>:<time>");
        let t = DateTime::parse_from_rfc3339(at).unwrap().timestamp_millis();
        assert!(times.insert(t), "two runs for the scheduled time {at}");
    }
    times.into_iter().collect()
}

async fn wait_for_count(c: &StackShift, job: &str, n: usize, within: Duration) -> Vec<i64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let times = fired_times(c, job).await;
        if times.len() >= n || tokio::time::Instant::now() >= deadline {
            return times;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn every(id: &str, job: &str, ms: u64, catch_up: CatchUp) -> NewSchedule {
    NewSchedule::new(
        id,
        ScheduleSpec::every(Duration::from_millis(ms)),
        job,
        json!({ "from": id }),
    )
    .catch_up(catch_up)
}

async fn interval_fires_pauses_resumes_and_deletes(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let created = c
        .schedules()
        .create(every("tick", "tick-job", 1_000, CatchUp::All))
        .await
        .unwrap();
    assert!(created.created);
    assert_eq!(created.schedule.catch_up, CatchUp::All);
    assert_eq!(created.schedule.next_fire_time.timestamp_subsec_millis(), 0);

    let times = wait_for_count(&c, "tick-job", 2, Duration::from_secs(5)).await;
    assert!(times.len() >= 2, "a 1 s interval fired {times:?}");
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            1_000,
            "one run per second, none skipped: {times:?}"
        );
    }
    let run = c
        .list_runs(ListRunsOptions {
            job: Some("tick-job".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .runs
        .remove(0);
    assert_eq!(run.payload, json!({ "from": "tick" }));
    let got = c.schedules().get("tick").await.unwrap();
    assert!(got.recent_run_ids.contains(&run.id));
    assert!(got.last_fire_time.is_some());

    // Paused: nothing more fires.
    let paused = c.schedules().pause("tick").await.unwrap();
    assert!(paused.paused);
    let before = fired_times(&c, "tick-job").await.len();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        fired_times(&c, "tick-job").await.len(),
        before,
        "paused schedules do not fire"
    );

    // Resumed: it fires again, from a time after the resume.
    let resumed = c.schedules().resume("tick").await.unwrap();
    assert!(!resumed.paused);
    let after = wait_for_count(&c, "tick-job", before + 1, Duration::from_secs(4)).await;
    assert!(after.len() > before, "a resumed schedule fires again");
    assert!(*after.last().unwrap() >= resumed.next_fire_time.timestamp_millis());

    // Listed, then deleted: nothing more fires.
    let page = c.schedules().list(0, None).await.unwrap();
    assert_eq!(page.schedules.len(), 1);
    c.schedules().delete("tick").await.unwrap();
    let n = fired_times(&c, "tick-job").await.len();
    let err = c.schedules().get("tick").await.unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(fired_times(&c, "tick-job").await.len(), n);
}
both_stores!(interval_fires_pauses_resumes_and_deletes);

async fn cron_with_seconds_fires_once_per_time(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    c.schedules()
        .create(
            NewSchedule::new(
                "even-seconds",
                ScheduleSpec::cron("*/2 * * * * *").time_zone("Asia/Kolkata"),
                "cron-job",
                json!(null),
            )
            .catch_up(CatchUp::All),
        )
        .await
        .unwrap();
    let times = wait_for_count(&c, "cron-job", 3, Duration::from_secs(8)).await;
    assert!(times.len() >= 3, "fired {times:?}");
    for t in &times {
        assert_eq!(t % 2_000, 0, "only even seconds match */2: {times:?}");
    }
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 2_000, "each time fires once: {times:?}");
    }
}
both_stores!(cron_with_seconds_fires_once_per_time);

async fn downtime_catch_up_follows_the_policy(db: Db) {
    let Some(mut s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    c.schedules()
        .create(every("all", "all-job", 1_000, CatchUp::All))
        .await
        .unwrap();
    c.schedules()
        .create(every("latest", "latest-job", 1_000, CatchUp::Latest))
        .await
        .unwrap();
    wait_for_count(&c, "all-job", 1, Duration::from_secs(4)).await;
    wait_for_count(&c, "latest-job", 1, Duration::from_secs(4)).await;
    s.kill9();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    s.restart();
    let c = client(&s);
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // ALL: every missed second has its run, none twice.
    let all = fired_times(&c, "all-job").await;
    for w in all.windows(2) {
        assert_eq!(w[1] - w[0], 1_000, "ALL fires every missed time: {all:?}");
    }
    assert!(all.len() >= 5, "{all:?}");
    // LATEST: the missed seconds are skipped but for the most recent one.
    let latest = fired_times(&c, "latest-job").await;
    let max_gap = latest.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(
        max_gap >= 3_000,
        "LATEST skips older missed times: {latest:?}"
    );
    assert!(latest.len() < all.len(), "latest {latest:?} vs all {all:?}");
}
both_stores!(downtime_catch_up_follows_the_policy);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_each_time_once() {
    let Some(a) = TestServer::start(Db::Postgres).await else {
        return;
    };
    let b = a.replica();
    let ca = client(&a);
    // Both replicas learn of the schedule: B through NOTIFY or its periodic re-read.
    ca.schedules()
        .create(every("shared", "shared-job", 1_000, CatchUp::All))
        .await
        .unwrap();
    let times = wait_for_count(&ca, "shared-job", 4, Duration::from_secs(8)).await;
    assert!(times.len() >= 4, "{times:?}");
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], 1_000, "each second fired once: {times:?}");
    }
    // Stop A: B alone keeps firing it.
    drop(a);
    let cb = client(&b);
    let n = times.len();
    let more = wait_for_count(&cb, "shared-job", n + 2, Duration::from_secs(15)).await;
    assert!(more.len() >= n + 2, "the surviving replica fires: {more:?}");
}

async fn validation_errors(db: Db) {
    let Some(s) = TestServer::start(db).await else {
        return;
    };
    let c = client(&s);
    let bad = |spec: ScheduleSpec| NewSchedule::new("v", spec, "job", json!(1));
    for (spec, needle) in [
        (ScheduleSpec::cron("61 * * * *"), "cron_expression"),
        (ScheduleSpec::cron("every day"), "cron_expression"),
        (ScheduleSpec::cron("0 9 30 2 *"), "never matches"),
        (
            ScheduleSpec::cron("0 9 * * *").time_zone("Europe/Atlantis"),
            "IANA",
        ),
        (
            ScheduleSpec::every(Duration::from_millis(500)),
            "at least 1s",
        ),
    ] {
        let err = c.schedules().create(bad(spec.clone())).await.unwrap_err();
        match err {
            Error::InvalidArgument(m) => assert!(m.contains(needle), "{spec:?}: {m}"),
            other => panic!("{spec:?}: {other:?}"),
        }
    }
    let err = c
        .schedules()
        .create(NewSchedule::new(
            "bad id!",
            ScheduleSpec::cron("* * * * *"),
            "job",
            1,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // Same id: same definition is idempotent, another one is ALREADY_EXISTS.
    let def = || NewSchedule::new("daily", ScheduleSpec::cron("0 9 * * *"), "job", json!(1));
    assert!(c.schedules().create(def()).await.unwrap().created);
    let again = c.schedules().create(def().paused(true)).await.unwrap();
    assert!(!again.created);
    assert!(
        !again.schedule.paused,
        "an idempotent create changes nothing"
    );
    let err = c
        .schedules()
        .create(NewSchedule::new(
            "daily",
            ScheduleSpec::cron("0 10 * * *"),
            "job",
            json!(1),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists(_)), "{err:?}");
    assert!(matches!(
        c.schedules().pause("nope").await.unwrap_err(),
        Error::NotFound(_)
    ));
    assert!(matches!(
        c.schedules().delete("nope").await.unwrap_err(),
        Error::NotFound(_)
    ));

    // Raw requests: no spec, no action, an unknown catch-up value.
    let mut raw = ScheduleServiceClient::connect(s.endpoint()).await.unwrap();
    let base = pb::CreateScheduleRequest {
        schedule_id: "raw".into(),
        spec: Some(pb::ScheduleSpec {
            spec: Some(pb::schedule_spec::Spec::Cron(pb::CronSpec {
                expression: "* * * * *".into(),
                time_zone: String::new(),
            })),
        }),
        action: Some(pb::ScheduleAction {
            job: "job".into(),
            ..Default::default()
        }),
        catch_up: 0,
        paused: false,
    };
    for (req, needle) in [
        (
            pb::CreateScheduleRequest {
                spec: None,
                ..base.clone()
            },
            "spec is required",
        ),
        (
            pb::CreateScheduleRequest {
                action: None,
                ..base.clone()
            },
            "action is required",
        ),
        (
            pb::CreateScheduleRequest {
                catch_up: 42,
                ..base.clone()
            },
            "catch_up",
        ),
    ] {
        let st = raw.create_schedule(req).await.unwrap_err();
        assert_eq!(st.code(), Code::InvalidArgument);
        assert!(st.message().contains(needle), "{}", st.message());
    }
    let ok = raw.create_schedule(base).await.unwrap().into_inner();
    let cron = match ok.schedule.unwrap().spec.unwrap().spec.unwrap() {
        pb::schedule_spec::Spec::Cron(c) => c,
        other => panic!("{other:?}"),
    };
    assert_eq!(cron.time_zone, "UTC", "an empty time zone means UTC");
}
both_stores!(validation_errors);
