#!/usr/bin/env bash
# How fast the dashboard's pages render with a million jobs in the ledger. Seeds a fresh
# database — 1,000,000 jobs over five queues (850,000 succeeded over the last day, 50,000 dead
# with 50 distinct errors, 60,000 pending (half of them retrying), 40,000 cancelled), 200
# endpoints of 100 tenants with 1,000 attempts each, 100,000 events and 50,000 orders — starts
# one release `switchyard-api` (no worker: nothing moves while pages are timed), signs in, and
# times every page 20 times with curl: median and worst. The admin API's JSON for the same data,
# timed in the same run, is the baseline.
# Usage: bench/dashboard.sh [jobs]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-1000000}
RUNS=20
cargo build --release -q -p switchyard-api
DB=switchyard_dashboard_bench
PORT=18083
BASE=http://127.0.0.1:$PORT
TOKEN=dashboard-bench-admin-token-123
URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable"
sql() { psql -q -At -h 127.0.0.1 -U postgres "$@" $DB; }
start() {
  DATABASE_URL=$URL SWITCHYARD_REDIS_PREFIX=sydashbench SWITCHYARD_ADMIN_TOKEN=$TOKEN \
  SWITCHYARD_LOG_FORMAT=json RUST_LOG=warn \
    ./target/release/switchyard-api --listen 127.0.0.1:$PORT >/tmp/dashboard-bench-api.log 2>&1 &
  API=$!
  for _ in $(seq 100); do curl -sf $BASE/readyz >/dev/null && break; sleep 0.2; done
}

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" postgres
redis-cli --scan --pattern 'sydashbench:*' | xargs -r redis-cli del >/dev/null
start # migrates
kill $API; wait $API 2>/dev/null || true

echo "seeding $JOBS jobs and the domain rows …"
sql -v ON_ERROR_STOP=1 <<SQL
CREATE FUNCTION pg_temp.v7(t timestamptz) RETURNS uuid LANGUAGE sql AS
  \$\$ SELECT (left(uuid_v7_floor(t)::text, 19) || substr(gen_random_uuid()::text, 20))::uuid \$\$;
CREATE TEMP TABLE tenants_seed AS SELECT gen_random_uuid() AS id, n FROM generate_series(0, 99) n;
INSERT INTO tenants (id, name) SELECT id, 'tenant ' || n FROM tenants_seed;
CREATE TEMP TABLE seed AS
SELECT i, now() - (i * (86400000.0 / $JOBS)) * interval '1 millisecond' AS t,
       (ARRAY['webhook_deliveries', 'event_fan_out', 'inbound_events', 'sync_runs', 'webhook_replays'])[1 + i % 5] AS queue,
       ts.id AS tenant,
       CASE WHEN i % 100 < 85 THEN 'succeeded' WHEN i % 100 < 90 THEN 'dead'
            WHEN i % 100 < 96 THEN 'pending' ELSE 'cancelled' END AS state
  FROM generate_series(1, $JOBS) s(i) JOIN tenants_seed ts ON ts.n = s.i % 100;
INSERT INTO jobs (id, queue, tenant_id, subject_id, state, attempt, max_attempts, run_at, last_error,
                  created_at, updated_at, finished_at, error_fingerprint)
SELECT pg_temp.v7(t), queue, tenant, gen_random_uuid(), state,
       CASE WHEN state = 'pending' THEN i % 2 WHEN state = 'dead' THEN 8 ELSE 1 END, 8,
       CASE WHEN state = 'pending' THEN now() + ((i % 7200) - 3600) * interval '1 second' ELSE t END,
       CASE WHEN state = 'dead' THEN 'HTTP ' || (500 + i % 50) || ' from the endpoint after ' || (i % 900) || ' ms' END,
       t, t, CASE WHEN state IN ('succeeded', 'dead', 'cancelled') THEN t END, NULL
  FROM seed;
-- What the trigger writes when a job dies (seeded jobs are born dead).
UPDATE jobs SET error_fingerprint = job_error_fingerprint(last_error) WHERE state = 'dead';
INSERT INTO webhook_endpoints (id, tenant_id, url, event_types, secret_ciphertext, secret_key_id, mode)
SELECT gen_random_uuid(), t.id, 'https://partner-' || t.n || '-' || k || '.example/hooks', ARRAY['order.*'],
       '\x00', 'bench', 'live'
  FROM tenants_seed t, generate_series(1, 2) k;
INSERT INTO webhook_attempts (id, tenant_id, delivery_id, endpoint_id, message_id, attempt,
                              webhook_timestamp, status_code, duration_ms, created_at)
SELECT pg_temp.v7(now() - n * interval '30 seconds'), e.tenant_id, gen_random_uuid(), e.id,
       gen_random_uuid(), 1, 0, CASE WHEN n % 10 = 0 THEN 503 ELSE 200 END, 20 + n % 200,
       now() - n * interval '30 seconds'
  FROM webhook_endpoints e, generate_series(1, 1000) n;
INSERT INTO events (id, tenant_id, mode, type, data, source, occurred_at)
SELECT pg_temp.v7(now() - g.i * interval '500 ms'), ts.id,
       'live', 'order.created', '{}', 'order', now() - g.i * interval '500 ms'
  FROM generate_series(1, 100000) g(i) JOIN tenants_seed ts ON ts.n = g.i % 100;
INSERT INTO orders (id, tenant_id, mode, external_id, status, currency, items, subtotal, total, customer)
SELECT pg_temp.v7(now() - g.i * interval '1 second'), ts.id,
       'live', 'ext-' || g.i, 'received', 'EUR', '[]', 1000, 1000, '{"name": "Bench"}'
  FROM generate_series(1, 50000) g(i) JOIN tenants_seed ts ON ts.n = g.i % 100;
VACUUM ANALYZE;
-- A ledger in service has its hint bits set and its visibility map current; a fresh bulk load
-- has neither until something reads it all.
SELECT count(*) FROM jobs WHERE last_error IS NOT NULL OR tenant_id IS NULL;
VACUUM ANALYZE;
SQL
echo "seeded: $(sql -c 'SELECT count(*) FROM jobs') jobs"

start
COOKIE=$(curl -s -i -X POST -d "secret=$TOKEN" $BASE/dashboard/login | tr -d '\r' \
  | sed -n 's/^set-cookie: \(sy_dashboard=[^;]*\);.*/\1/p')
[ -n "$COOKIE" ] || { echo "sign-in failed" >&2; exit 1; }
TENANT=$(sql -c "SELECT tenant_id FROM jobs LIMIT 1")
JOB=$(sql -c "SELECT id FROM jobs WHERE state = 'dead' ORDER BY finished_at DESC LIMIT 1")
AFTER=$(sql -c "SELECT id FROM jobs ORDER BY id DESC OFFSET 49 LIMIT 1")
ORDER=$(sql -c "SELECT id FROM orders ORDER BY id DESC LIMIT 1")
ENDPOINT=$(sql -c "SELECT id FROM webhook_endpoints LIMIT 1")
FROM=$(date -u -d '-3 hours' +%Y-%m-%dT%H:%M)
TO=$(date -u -d '-2 hours' +%Y-%m-%dT%H:%M)

time_page() { # label path [curl args…]
  local label=$1 path=$2; shift 2
  local times=() status
  for _ in $(seq $RUNS); do
    read -r status t < <(curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$@" "$BASE$path")
    [ "$status" = 200 ] || { echo "$label: HTTP $status" >&2; exit 1; }
    times+=("$t")
  done
  printf '%s\n' "${times[@]}" | sort -n | awk -v l="$label" '
    { a[NR] = $1 } END { printf "PAGE %-44s median %6.1f ms   worst %6.1f ms\n", l, a[int((NR + 1) / 2)] * 1000, a[NR] * 1000 }'
}
page() { time_page "$1" "$2" -H "cookie: $COOKIE"; }
admin() { time_page "$1" "$2" -H "authorization: Bearer $TOKEN"; }

echo "== baseline: the admin API's JSON for the same data"
admin "GET /admin/v1/queues" /admin/v1/queues
admin "GET /admin/v1/jobs?state=dead" "/admin/v1/jobs?state=dead&limit=50"
admin "GET /admin/v1/jobs/dead-groups" /admin/v1/jobs/dead-groups
echo "== dashboard pages"
# Nobody watched for longer than the poller's grace: the page waits for the first read.
first=()
for _ in 1 2 3 4 5; do
  sleep 7
  first+=("$(curl -s -o /dev/null -w '%{time_total}' -H "cookie: $COOKIE" $BASE/dashboard)")
done
printf '%s\n' "${first[@]}" | sort -n | awk '{ a[NR] = $1 } END {
  printf "PAGE %-44s median %6.1f ms   worst %6.1f ms\n", "overview (first viewer: waits for a read)", a[3] * 1000, a[5] * 1000 }'
page "overview (the poller runs)" /dashboard
page "jobs (all, newest first)" /dashboard/jobs
page "jobs: next page (keyset)" "/dashboard/jobs?after=$AFTER"
page "jobs: state=succeeded" "/dashboard/jobs?state=succeeded"
page "jobs: state=dead" "/dashboard/jobs?state=dead"
page "jobs: state=pending" "/dashboard/jobs?state=pending"
page "jobs: queue+dead+error text" "/dashboard/jobs?queue=webhook_deliveries&state=dead&error=HTTP+503"
page "jobs: tenant" "/dashboard/jobs?tenant=$TENANT"
page "jobs: one hour of 24" "/dashboard/jobs?from=$FROM&to=$TO"
page "job detail" "/dashboard/jobs/$JOB"
page "dead jobs by error (50,000 dead)" /dashboard/dead
page "workers" /dashboard/workers
page "endpoints (200, health of last 100 attempts)" /dashboard/endpoints
page "endpoint attempts" "/dashboard/endpoints/$ENDPOINT"
page "events" /dashboard/events
page "orders" /dashboard/orders
page "order history" "/dashboard/orders/$ORDER"
page "integrations" /dashboard/integrations
page "inbound" /dashboard/inbound
page "sync" /dashboard/sync
page "api keys" /dashboard/keys
echo "== the live overview's read (one per second while anyone watches)"
(curl -s -N -H "cookie: $COOKIE" $BASE/dashboard/live >/dev/null &) ; sleep 12
curl -s $BASE/metrics | grep '^switchyard_dashboard_overview_polls_total' || true
pkill -f "curl -s -N -H cookie: $COOKIE" 2>/dev/null || true
psql -q -At -h 127.0.0.1 -U postgres -c "SELECT 'postgres statement '|| left(regexp_replace(query, '\s+', ' ', 'g'), 60) || ' … mean ' || round(mean_exec_time::numeric, 2) || ' ms over ' || calls || ' calls'
  FROM pg_stat_statements WHERE query ILIKE '%finished_at > \$1%' OR query ILIKE '%WITH pending AS%' ORDER BY mean_exec_time DESC LIMIT 5" $DB 2>/dev/null || true
kill $API; wait $API 2>/dev/null || true
