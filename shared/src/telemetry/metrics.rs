//! Every Prometheus metric Switchyard exports, in one place: its name, type, labels and
//! meaning. Code records through these names, never through literals, so this list is the
//! whole catalogue (README "Metrics"; `deploy/` builds its dashboard and alerts on it).
//!
//! Labels are bounded: queues, states, outcomes, operations, status codes or classes, tables,
//! reasons — never a tenant, an endpoint or any other id.

/// What kind of series a metric is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

macro_rules! catalogue {
    ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(#[doc = $help] pub const $id: &str = $name;)*
        /// Every metric family, in the order of this file.
        pub const CATALOGUE: &[Metric] = &[
            $(Metric { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help },)*
        ];
    };
}

catalogue! {
    // HTTP API.
    HTTP_REQUEST_DURATION = "switchyard_http_request_duration_seconds", Histogram,
        ["operation", "status"], "API requests by OpenAPI operation and status, with their latency.";
    RATE_LIMITED = "switchyard_rate_limited_total", Counter, ["limit"],
        "Partner requests refused with 429, by the limit that refused them (`auth_failures`: a locked-out client address).";
    REQUEST_LOGS_DROPPED = "switchyard_request_logs_dropped_total", Counter, [],
        "Request-log entries dropped because too many waited for Postgres.";
    OTLP_SPANS_EXPORTED = "switchyard_otlp_spans_exported_total", Counter, [],
        "Spans sent to the OpenTelemetry collector (`SWITCHYARD_OTLP_ENDPOINT`).";
    OTLP_SPANS_DROPPED = "switchyard_otlp_spans_dropped_total", Counter, [],
        "Spans not sent: the export buffer was full, or the collector refused or could not be reached.";
    DASHBOARD_POLLS = "switchyard_dashboard_overview_polls_total", Counter, [],
        "Reads of the queues for the dashboard's live overview: one a second per API replica while anyone watches, however many do.";
    INBOUND_EVENTS = "switchyard_inbound_events_total", Counter, ["outcome"],
        "Inbound webhooks: received (`accepted`, `duplicate`, `rejected`) and processed (`completed`, `failed`).";

    // The job ledger and the queues.
    JOBS = "switchyard_jobs", Gauge, ["queue", "state"],
        "Jobs in the ledger by queue and state (pending, queued, running, dead).";
    JOBS_DUE = "switchyard_jobs_due", Gauge, ["queue"], "Pending jobs whose time has come.";
    OLDEST_DUE_JOB_AGE = "switchyard_oldest_due_job_age_seconds", Gauge, ["queue"],
        "How long the oldest due job has waited (queue latency).";
    REDIS_READY_TASKS = "switchyard_redis_ready_tasks", Gauge, ["queue"],
        "Tasks waiting in the queue's Redis list.";
    JOBS_FINISHED = "switchyard_jobs_finished_total", Counter, ["queue", "outcome"],
        "Job runs recorded, by outcome: succeeded, retry, dead, cancelled.";
    JOB_START_DELAY = "switchyard_job_start_delay_seconds", Histogram, ["queue"],
        "From a job's due time to the start of its run (enqueue to start).";
    JOB_DURATION = "switchyard_job_duration_seconds", Histogram, ["queue"],
        "How long a job's run took.";
    JOB_ERRORS = "switchyard_job_errors_total", Counter, ["queue"],
        "Runs that ended in an error before recording an outcome.";
    JOBS_DEAD = "switchyard_jobs_dead_total", Counter, ["queue"], "Jobs given up on.";
    JOBS_DEFERRED = "switchyard_jobs_deferred_total", Counter, ["queue"],
        "Runs put back without an attempt (an endpoint's rate limit, a replay's pacing).";
    STALE_TASKS = "switchyard_stale_tasks_total", Counter, [],
        "Redis tasks whose job had moved on (duplicates, superseded pushes): skipped.";
    TASKS_RUN_HERE = "switchyard_tasks_run_here_total", Counter, [],
        "Jobs run by the process that made them, without a trip through Redis.";
    SLOT_HANDOFFS = "switchyard_slot_handoffs_total", Counter, [],
        "Endpoint slots a finished delivery handed straight to the endpoint's next one.";
    CONSUMER_RESTARTS = "switchyard_consumer_restarts_total", Counter, [],
        "Queue consumers restarted after an error.";
    BATCH_SIZE = "switchyard_batch_size", Histogram, ["batch"],
        "Items per batched statement (claims, records, finishes, …).";

    // Dispatcher and reconciler.
    DISPATCHED = "switchyard_dispatched_total", Counter, ["queue"],
        "Jobs pushed to Redis by the dispatcher.";
    FAST_PATH_OVERFLOW = "switchyard_fast_path_overflow_total", Counter, ["queue"],
        "Pushes the fast path handed to the dispatcher because it was full.";
    RECONCILED = "switchyard_reconciled_total", Counter, ["reason"],
        "Jobs the reconciler put back: expired leases, tasks lost from Redis.";

    // Events and deliveries.
    EVENTS_FANNED_OUT = "switchyard_events_fanned_out_total", Counter, [],
        "Events fanned out to their endpoints.";
    WEBHOOK_ATTEMPTS = "switchyard_webhook_attempts_total", Counter, ["outcome", "status_class"],
        "Delivery attempts by outcome (succeeded, or the error class) and response status class.";
    WEBHOOK_ATTEMPT_DURATION = "switchyard_webhook_attempt_seconds", Histogram, [],
        "How long partner endpoints took to answer (delivery latency).";
    BREAKER_TRANSITIONS = "switchyard_breaker_transitions_total", Counter, ["to"],
        "Endpoint circuit breakers opening and closing.";
    ENDPOINT_BREAKERS = "switchyard_endpoint_breakers", Gauge, ["state"],
        "Enabled endpoints by breaker state (closed, open, half_open), and disabled ones.";
    ENDPOINTS_DISABLED = "switchyard_endpoints_disabled_total", Counter, ["reason"],
        "Endpoints disabled automatically, by reason.";

    // Sync.
    SYNC_ROWS = "switchyard_sync_rows_total", Counter, ["outcome"],
        "Sync rows by outcome: read, inserted, updated, unchanged, deleted, conflict, failed.";
    SYNC_RUNS_FINISHED = "switchyard_sync_runs_finished_total", Counter, ["status"],
        "Sync runs ended: succeeded, partial, failed, cancelled.";

    // Maintenance.
    PURGED_ROWS = "switchyard_purged_rows_total", Counter, ["table"],
        "Rows removed by retention, by table.";
}

/// Registers every family's help text with the recorder.
pub fn describe() {
    for m in CATALOGUE {
        match m.kind {
            Kind::Counter => ::metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => ::metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => ::metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The `status_class` label of an HTTP status (`none` without a response).
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prometheus_shaped() {
        let mut names: Vec<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
        for m in CATALOGUE {
            assert!(m.name.starts_with("switchyard_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}",
                m.name
            );
        }
    }
}
