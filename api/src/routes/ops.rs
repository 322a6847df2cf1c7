//! Liveness, readiness and Prometheus metrics.

use std::{sync::Arc, time::Duration};

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::PlainText};
use serde::Serialize;

use super::ApiTags;
use crate::{AppState, json::Json};

pub struct OpsApi;

#[derive(Serialize, Object)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// Postgres reachability: `ok` or `unavailable` (the cause is logged, never shown).
    pub postgres: String,
    /// Redis reachability: `ok` or `unavailable` (the cause is logged, never shown).
    pub redis: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Postgres and Redis are reachable.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// A store is unreachable.
    #[oai(status = 503)]
    NotReady(Json<Health>),
}

/// `ok` or `unavailable`: this route is unauthenticated, so the driver's error text (hosts,
/// users, versions) goes to the log only.
fn reachability(
    store: &str,
    probe: Result<Result<(), String>, tokio::time::error::Elapsed>,
) -> String {
    let error = match probe {
        Ok(Ok(())) => return "ok".to_owned(),
        Ok(Err(e)) => e,
        Err(_) => "no answer within 1 s".to_owned(),
    };
    tracing::warn!(store, %error, "readiness check failed");
    "unavailable".to_owned()
}

#[OpenApi]
impl OpsApi {
    /// Liveness: the process serves requests.
    #[oai(
        path = "/healthz",
        method = "get",
        tag = "ApiTags::Operations",
        operation_id = "healthz"
    )]
    async fn healthz(&self) -> PlainText<&'static str> {
        PlainText("ok")
    }

    /// Readiness: Postgres and Redis answer within a second.
    #[oai(
        path = "/readyz",
        method = "get",
        tag = "ApiTags::Operations",
        operation_id = "readyz"
    )]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> ReadyResponse {
        let pg = tokio::time::timeout(
            Duration::from_secs(1),
            sqlx::query("SELECT 1").execute(&state.services.pool),
        )
        .await;
        let postgres = reachability(
            "postgres",
            pg.map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        );
        let mut conn = state.services.queues.connection();
        let ping = tokio::time::timeout(
            Duration::from_secs(1),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        let redis = reachability(
            "redis",
            ping.map(|r| r.map(|_| ()).map_err(|e| e.to_string())),
        );
        let ready = postgres == "ok" && redis == "ok";
        let health = Health {
            status: if ready { "ok" } else { "unavailable" }.to_owned(),
            postgres,
            redis,
        };
        if ready {
            ReadyResponse::Ready(Json(health))
        } else {
            ReadyResponse::NotReady(Json(health))
        }
    }

    /// Prometheus metrics of this process.
    #[oai(
        path = "/metrics",
        method = "get",
        tag = "ApiTags::Operations",
        operation_id = "metrics"
    )]
    async fn metrics(&self) -> PlainText<String> {
        PlainText(switchyard_shared::telemetry::prometheus().render())
    }
}
