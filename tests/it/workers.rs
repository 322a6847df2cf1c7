//! The worker registry: every worker process reports itself, and operators see which run,
//! which stopped cleanly, and which went silent.

use std::time::Duration;

use serde_json::Value;
use switchyard_tests::{TestApp, TestOptions, eventually, process::WorkerProcess};

async fn workers(app: &TestApp) -> Vec<Value> {
    let (status, list) = app.admin_get_json("/admin/v1/workers").await;
    assert_eq!(status, 200);
    list["data"].as_array().unwrap().clone()
}

fn by_pid(list: &[Value], pid: u32) -> Option<Value> {
    list.iter().find(|w| w["pid"] == pid).cloned()
}

#[tokio::test]
async fn operators_see_running_stopped_and_lost_workers() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let env = app.process_env();
    let mut stopping = WorkerProcess::spawn(&env);
    let mut killed = WorkerProcess::spawn(&env);
    let (stopping_pid, killed_pid) = (stopping.pid(), killed.pid());
    let list = eventually(Duration::from_secs(20), "both workers report", || async {
        let list = workers(&app).await;
        (by_pid(&list, stopping_pid).is_some() && by_pid(&list, killed_pid).is_some())
            .then_some(list)
    })
    .await;
    let w = by_pid(&list, stopping_pid).unwrap();
    assert_eq!(w["status"], "running");
    assert!(!w["host"].as_str().unwrap().is_empty());
    assert!(
        w["id"]
            .as_str()
            .unwrap()
            .contains(&stopping_pid.to_string())
    );
    assert_eq!(w["busy"], 0);
    let queues: Vec<&str> = w["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    for q in [
        "webhook_deliveries",
        "event_fan_out",
        "sync_runs",
        "inbound_events",
    ] {
        assert!(queues.contains(&q), "{q} in {queues:?}");
    }
    assert!(w["queues"][0]["concurrency"].as_u64().unwrap() >= 1);

    // One stops cleanly; the other is killed and, silent, shows as lost once its last report
    // is 30 s old (aged here rather than waited for).
    stopping.terminate(Duration::from_secs(20)).await;
    killed.kill9();
    sqlx::query("UPDATE workers SET last_seen_at = now() - interval '31 seconds' WHERE pid = $1")
        .bind(killed_pid as i32)
        .execute(&app.pool)
        .await
        .unwrap();
    let list = workers(&app).await;
    let stopped = by_pid(&list, stopping_pid).unwrap();
    assert_eq!(stopped["status"], "stopped");
    assert!(stopped["stopped_at"].is_string());
    assert_eq!(by_pid(&list, killed_pid).unwrap()["status"], "lost");
}
