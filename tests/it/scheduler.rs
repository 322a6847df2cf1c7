//! The scheduler: periodic jobs enqueued exactly once per slot by any number of worker
//! replicas, with no leader and no gaps.

use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_tests::{TestApp, TestOptions, process::WorkerProcess};

/// Three worker processes run a 1-second schedule (the janitor's) for 30 s: every slot has
/// exactly one job, none is missing, and they all run.
#[tokio::test]
async fn three_workers_enqueue_each_slot_of_a_one_second_schedule_once() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let mut env = app.process_env();
    env.push(("SWITCHYARD_JANITOR_INTERVAL".into(), "1s".into()));
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| WorkerProcess::spawn(&env)).collect();
    tokio::time::sleep(Duration::from_secs(30)).await;
    for w in &mut workers {
        assert!(w.is_running(), "{}", w.log_text());
    }
    let slots: Vec<(String, String)> = sqlx::query_as(
        "SELECT unique_key, state FROM jobs WHERE queue = 'janitor' ORDER BY unique_key",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let times: Vec<DateTime<Utc>> = slots
        .iter()
        .map(|(key, _)| {
            let at = key.strip_prefix("janitor@").expect("a janitor slot key");
            DateTime::parse_from_rfc3339(at)
                .unwrap()
                .with_timezone(&Utc)
        })
        .collect();
    assert!(times.len() >= 28, "{} slots in 30 s", times.len());
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            chrono::Duration::seconds(1),
            "consecutive slots, none twice, none missing: {pair:?}"
        );
    }
    let newest = *times.last().unwrap();
    assert!(
        Utc::now() - newest < chrono::Duration::seconds(3),
        "the schedule is current"
    );
    // All but the newest few have run (once each: a job per slot, claimed once).
    let done = slots.iter().filter(|(_, s)| s == "succeeded").count();
    assert!(done >= times.len() - 3, "{done} of {} ran", times.len());
    for w in &mut workers {
        w.terminate(Duration::from_secs(10)).await;
    }
}
