//! The queue floor: no-op jobs (`shared::probes`) through the whole ledger → dispatcher →
//! Redis → claim → finish path of a running worker, timed on the database's clock, to set
//! beside raw apalis-redis consuming no-op tasks (`baseline::apalis_noop`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use switchyard_shared::probes;

/// Enqueues `n` probes in the ledger at `ledger_url` (the running system's database) and waits
/// until every one finished; prints the rate from their enqueueing to the last finish.
pub async fn run(ledger_url: &str, n: usize, timeout: Duration) -> anyhow::Result<()> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(ledger_url)
        .await
        .context("connecting to the ledger")?;
    let batch = probes::enqueue(&pool, n).await?;
    let started = Instant::now();
    let progress = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let p = probes::progress(&pool, batch).await?;
        if p.succeeded == p.jobs {
            break p;
        }
        if started.elapsed() > timeout {
            bail!(
                "{} of {} probes finished after {timeout:?}",
                p.succeeded,
                p.jobs
            );
        }
    };
    let (Some(from), Some(to)) = (progress.enqueued_at, progress.last_finished_at) else {
        bail!("no probe finished");
    };
    let secs = (to - from).as_seconds_f64();
    println!(
        "floor     {} no-op jobs enqueued → dispatched → claimed → finished in {secs:.2} s: {:.0} jobs/s",
        progress.jobs,
        progress.jobs as f64 / secs
    );
    Ok(())
}
