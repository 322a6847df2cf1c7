//! Queue probes: no-op jobs through the whole queue path (ledger, dispatcher, Redis, claim,
//! finish), the instrument of the queue floor benchmark (docs/benchmarks.md).

use std::time::Duration;

use switchyard_shared::probes;
use switchyard_tests::{TestApp, TestOptions, eventually};

use crate::batching::metric;

/// Probes enqueued `pending` in the ledger are dispatched through Redis, claimed and finished
/// by a `switchyard-api --with-worker` process, each once, their finishes sharing statements;
/// their batch reports its progress.
#[tokio::test]
async fn probes_go_through_the_whole_queue_path_and_finish_once() {
    let app = TestApp::spawn(TestOptions::no_worker()).await;
    let (_api, base) = app.api_with_worker().await;
    let batch = probes::enqueue(&app.pool, 300).await.unwrap();
    let done = eventually(Duration::from_secs(30), "300 probes finished", || async {
        let p = probes::progress(&app.pool, batch).await.unwrap();
        (p.succeeded == 300).then_some(p)
    })
    .await;
    assert_eq!(done.jobs, 300);
    assert!(done.last_finished_at >= done.enqueued_at);
    let (dispatched, once): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE dispatch_seq >= 1), count(*) FILTER (WHERE attempt = 1)
           FROM jobs WHERE queue = 'queue_probes' AND subject_id = $1",
    )
    .bind(batch)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(dispatched, 300, "every probe went through a dispatch pass");
    assert_eq!(once, 300, "every probe ran once");
    let metrics = app.get_text(&format!("{base}/metrics")).await;
    let served = metric(&metrics, "switchyard_batch_size_sum{batch=\"finish\"}");
    let statements = metric(&metrics, "switchyard_batch_size_count{batch=\"finish\"}");
    assert_eq!(served, 300.0, "every probe finished through the batch");
    assert!(
        statements < 150.0,
        "{statements} statements for 300 finishes"
    );
    let other = probes::progress(&app.pool, uuid::Uuid::now_v7())
        .await
        .unwrap();
    assert_eq!(
        (other.jobs, other.succeeded),
        (0, 0),
        "a batch counts only its own"
    );
}
