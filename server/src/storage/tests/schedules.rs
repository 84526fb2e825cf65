//! Contract checks of schedules: create-or-get, listing, pause and resume, deletion, and
//! firing (conditional on `next_fire_at`, runs started idempotently in the same
//! transaction, exactly one of two concurrent firings applied).

use std::sync::Arc;

use crate::engine::model::StartOutcome;
use crate::engine::requests::RetryPolicyInput;
use crate::engine::schedule_model::{
    CatchUp, NewSchedule, ScheduleDefinition, ScheduleFiring, ScheduleSpec,
};
use crate::engine::store::Store;

use super::{new_run, ns};

fn definition(job: &str) -> ScheduleDefinition {
    ScheduleDefinition {
        job: job.to_owned(),
        queue: "default".to_owned(),
        payload: r#"{"report":"daily"}"#.to_owned(),
        retry: RetryPolicyInput {
            max_attempts: Some(2),
            ..Default::default()
        },
        lease_timeout_ms: Some(5_000),
        priority: 3,
        spec: ScheduleSpec::Cron {
            expression: "0 9 * * MON-FRI".to_owned(),
            time_zone: "Europe/Paris".to_owned(),
        },
        catch_up: CatchUp::All,
    }
}

fn new_schedule(ns: &str, id: &str, next: i64) -> NewSchedule {
    NewSchedule {
        namespace: ns.to_owned(),
        id: id.to_owned(),
        definition: definition("report"),
        paused: false,
        next_fire_at: next,
        now: 1_000,
    }
}

fn firing(ns: &str, id: &str, expected: i64, next: i64, keys: &[&str]) -> ScheduleFiring {
    ScheduleFiring {
        namespace: ns.to_owned(),
        id: id.to_owned(),
        expected_next_fire_at: expected,
        next_fire_at: next,
        last_fire_at: (!keys.is_empty()).then_some(expected),
        runs: keys
            .iter()
            .map(|k| {
                let mut r = new_run(ns, "report", "default", 2_000);
                r.idempotency = Some(((*k).to_owned(), 1_000_000_000));
                r
            })
            .collect(),
        now: 2_000,
    }
}

pub async fn lifecycle(store: &Arc<dyn Store>) {
    let ns = ns("sched");
    assert!(store.get_schedule(&ns, "nightly").await.unwrap().is_none());
    let (s, created) = store
        .insert_schedule(new_schedule(&ns, "nightly", 5_000))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(
        s.definition,
        definition("report"),
        "the definition round-trips"
    );
    assert_eq!(
        (s.next_fire_at, s.last_fire_at, s.paused),
        (5_000, None, false)
    );
    assert!(s.recent_run_ids.is_empty());

    let mut other = new_schedule(&ns, "nightly", 9_999);
    other.definition = definition("other-job");
    let (again, created) = store.insert_schedule(other).await.unwrap();
    assert!(!created, "an existing id is not replaced");
    assert_eq!(again, s, "the stored schedule is returned unchanged");

    let mut interval = new_schedule(&ns, "every-second", 7_000);
    interval.definition.spec = ScheduleSpec::Interval { interval_ms: 1_000 };
    interval.definition.catch_up = CatchUp::Skip;
    let (i, _) = store.insert_schedule(interval.clone()).await.unwrap();
    assert_eq!(i.definition, interval.definition);

    let page = store.list_schedules(&ns, None, 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "every-second", "listed by id");
    let rest = store
        .list_schedules(&ns, Some("every-second"), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["nightly"]
    );
    let empty = super::ns("empty");
    assert!(
        store
            .list_schedules(&empty, None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Pausing hides it from the timer; resuming sets the next time.
    let paused = store
        .set_schedule_paused(&ns, "nightly", true, None, 3_000)
        .await
        .unwrap()
        .unwrap();
    assert!(paused.paused);
    assert_eq!(paused.next_fire_at, 5_000);
    let due = store.due_schedules(10_000, 1_000).await.unwrap();
    assert!(
        due.iter()
            .any(|s| s.namespace == ns && s.id == "every-second")
    );
    assert!(!due.iter().any(|s| s.namespace == ns && s.id == "nightly"));
    assert!(
        !due.iter().any(|s| s.next_fire_at > 10_000),
        "only due ones"
    );
    let resumed = store
        .set_schedule_paused(&ns, "nightly", false, Some(20_000), 4_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((resumed.paused, resumed.next_fire_at), (false, 20_000));
    assert!(
        store
            .set_schedule_paused(&ns, "missing", true, None, 4_000)
            .await
            .unwrap()
            .is_none()
    );
    let next = store.next_schedule_fire().await.unwrap().unwrap();
    assert!(
        next <= 7_000,
        "the earliest active schedule drives the timer"
    );

    assert!(store.delete_schedule(&ns, "every-second").await.unwrap());
    assert!(!store.delete_schedule(&ns, "every-second").await.unwrap());
    assert!(
        store
            .get_schedule(&ns, "every-second")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.delete_schedule(&ns, "nightly").await.unwrap());
}

pub async fn firing_is_conditional_and_idempotent(store: &Arc<dyn Store>) {
    let ns = ns("fire");
    store
        .insert_schedule(new_schedule(&ns, "s", 5_000))
        .await
        .unwrap();
    let out = store
        .fire_schedule(firing(&ns, "s", 5_000, 6_000, &["schedule:s:5"]))
        .await
        .unwrap()
        .expect("the firing applies");
    let StartOutcome::Created(run) = &out[0] else {
        panic!("a run is created")
    };
    assert_eq!(run.idempotency_key.as_deref(), Some("schedule:s:5"));
    let s = store.get_schedule(&ns, "s").await.unwrap().unwrap();
    assert_eq!((s.next_fire_at, s.last_fire_at), (6_000, Some(5_000)));
    assert_eq!(s.recent_run_ids, vec![run.id.clone()]);

    // A stale firing (another replica already advanced it) changes nothing.
    assert!(
        store
            .fire_schedule(firing(&ns, "s", 5_000, 6_000, &["schedule:s:5"]))
            .await
            .unwrap()
            .is_none()
    );
    // A firing whose run key exists (e.g. the schedule was recreated) starts nothing new.
    let out = store
        .fire_schedule(firing(
            &ns,
            "s",
            6_000,
            8_000,
            &["schedule:s:5", "schedule:s:6"],
        ))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(&out[0], StartOutcome::Duplicate(r) if r.id == run.id));
    assert!(matches!(&out[1], StartOutcome::Created(_)));
    let s = store.get_schedule(&ns, "s").await.unwrap().unwrap();
    assert_eq!(
        s.recent_run_ids.len(),
        2,
        "only created runs are remembered"
    );
    // A firing that starts nothing (SKIP) still advances and keeps last_fire_at.
    store
        .fire_schedule(firing(&ns, "s", 8_000, 9_000, &[]))
        .await
        .unwrap()
        .unwrap();
    let s = store.get_schedule(&ns, "s").await.unwrap().unwrap();
    assert_eq!((s.next_fire_at, s.last_fire_at), (9_000, Some(6_000)));

    // Paused or deleted schedules do not fire.
    store
        .set_schedule_paused(&ns, "s", true, None, 3_000)
        .await
        .unwrap();
    assert!(
        store
            .fire_schedule(firing(&ns, "s", 9_000, 10_000, &["schedule:s:9"]))
            .await
            .unwrap()
            .is_none()
    );
    store.delete_schedule(&ns, "s").await.unwrap();
    assert!(
        store
            .fire_schedule(firing(&ns, "s", 9_000, 10_000, &["schedule:s:9"]))
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn concurrent_firings_apply_once(store: &Arc<dyn Store>) {
    for round in 0..10 {
        let ns = ns("race");
        let id = format!("r{round}");
        store
            .insert_schedule(new_schedule(&ns, &id, 5_000))
            .await
            .unwrap();
        let a = store.fire_schedule(firing(&ns, &id, 5_000, 6_000, &["k-a"]));
        let b = store.fire_schedule(firing(&ns, &id, 5_000, 6_000, &["k-b"]));
        let (a, b) = tokio::join!(a, b);
        let applied = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|o| o.is_some())
            .count();
        assert_eq!(applied, 1, "exactly one firing applies");
        let runs = store
            .list_runs(&ns, &Default::default(), None, 10)
            .await
            .unwrap();
        assert_eq!(runs.len(), 1, "exactly one run started");
    }
}
