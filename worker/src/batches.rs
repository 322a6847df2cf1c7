//! The statements that concurrent runs share, each served by a [`Batcher`]
//! (`switchyard_shared::batch`): claiming jobs, reading delivery targets, recording attempts,
//! finishing runs.
//! Under load one round trip and one commit serve many runs (docs/architecture.md §8).

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::PgPool;
use switchyard_shared::{
    Result,
    batch::{Batch, Batcher},
    jobs::{self, Lease, Outcome},
    queue::JobTask,
    webhooks::{
        delivery::{self, HealthPolicy, Target},
        record::{self, AttemptRecord, Handoff, Recorded},
    },
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Largest batch of each statement, and how many of each may be in flight at once.
const MAX_BATCH: usize = 64;
const IN_FLIGHT: usize = 2;

/// Claims of dispatched tasks, for every queue.
pub struct Claims {
    pub pool: PgPool,
    pub owner: String,
    pub lease: Duration,
}

impl Batch for Claims {
    type Req = JobTask;
    type Resp = Option<Lease>;
    fn run<'a>(&'a self, reqs: &'a [JobTask]) -> BoxFuture<'a, Result<Vec<Option<Lease>>>> {
        Box::pin(jobs::claim(&self.pool, reqs, &self.owner, self.lease))
    }
}

/// Targets of claimed deliveries.
pub struct Targets {
    pub pool: PgPool,
}

impl Batch for Targets {
    type Req = Uuid;
    type Resp = Option<Target>;
    fn run<'a>(&'a self, reqs: &'a [Uuid]) -> BoxFuture<'a, Result<Vec<Option<Target>>>> {
        Box::pin(delivery::load_targets(&self.pool, reqs))
    }
}

/// Outcomes of delivery attempts; the endpoint slots their successes free go to the endpoints'
/// next due deliveries, run next by the runs that freed them (`record::Handoff`), until
/// `shutdown` fires.
pub struct Records {
    pub pool: PgPool,
    pub health: HealthPolicy,
    pub owner: String,
    pub lease: Duration,
    pub group_concurrency: i64,
    pub shutdown: CancellationToken,
}

impl Batch for Records {
    type Req = Arc<AttemptRecord>;
    type Resp = Recorded;
    fn run<'a>(&'a self, reqs: &'a [Arc<AttemptRecord>]) -> BoxFuture<'a, Result<Vec<Recorded>>> {
        let handoff = (!self.shutdown.is_cancelled()).then_some(Handoff {
            owner: &self.owner,
            lease: self.lease,
            group_concurrency: self.group_concurrency,
        });
        Box::pin(record::record(&self.pool, reqs, &self.health, handoff))
    }
}

/// Finishes of runs whose outcome is all they record (`jobs::finish_many`).
pub struct Finishes {
    pub pool: PgPool,
}

impl Batch for Finishes {
    type Req = (Lease, Outcome);
    type Resp = bool;
    fn run<'a>(&'a self, reqs: &'a [(Lease, Outcome)]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(jobs::finish_many(&self.pool, reqs))
    }
}

/// The batchers of a worker process.
pub struct Batchers {
    pub claims: Batcher<Claims>,
    pub targets: Batcher<Targets>,
    pub records: Batcher<Records>,
    pub finishes: Batcher<Finishes>,
}

impl Batchers {
    /// `group_concurrency` is the default per-endpoint cap; once `shutdown` fires, successes no
    /// longer hand their slots on.
    pub fn spawn(
        pool: &PgPool,
        owner: &str,
        lease: Duration,
        health: HealthPolicy,
        group_concurrency: i64,
        shutdown: CancellationToken,
    ) -> Self {
        let claims = Claims {
            pool: pool.clone(),
            owner: owner.to_owned(),
            lease,
        };
        let records = Records {
            pool: pool.clone(),
            health,
            owner: owner.to_owned(),
            lease,
            group_concurrency,
            shutdown,
        };
        Batchers {
            claims: Batcher::spawn("claim", claims, MAX_BATCH, IN_FLIGHT),
            targets: Batcher::spawn(
                "delivery_target",
                Targets { pool: pool.clone() },
                MAX_BATCH,
                IN_FLIGHT,
            ),
            records: Batcher::spawn("attempt_record", records, MAX_BATCH, IN_FLIGHT),
            finishes: Batcher::spawn(
                "finish",
                Finishes { pool: pool.clone() },
                MAX_BATCH,
                IN_FLIGHT,
            ),
        }
    }
}
