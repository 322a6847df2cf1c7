#!/usr/bin/env bash
# How fast the janitor purges history past its retention, next to the rate the system ingests.
# Seeds a fresh database with expired history — finished jobs (8 days old; kept 7) and webhook
# messages with their deliveries (100 days old; kept 90) — then starts one
# `switchyard-api --with-worker` and times how long its janitor takes to remove all of it, with
# half as much history still within its retention beside it (1 day old, kept). Then, with that
# retained history in place and no traffic, Postgres CPU over 30 s: what an idle deployment costs.
# Usage: bench/purge.sh [jobs] [messages]   (defaults 1000000 and 250000)
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${1:-1000000}
MESSAGES=${2:-250000}
cargo build --release -q -p switchyard-api
DB=switchyard_purge
PORT=18082
URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable"
. bench/cpu.sh
sql() { psql -q -At -h 127.0.0.1 -U postgres "$@" $DB; }
start() {
  DATABASE_URL=$URL SWITCHYARD_REDIS_PREFIX=sypurge SWITCHYARD_ADMIN_TOKEN=purge-admin-token-123 \
  SWITCHYARD_LOG_FORMAT=json RUST_LOG=warn \
    ./target/release/switchyard-api --listen 127.0.0.1:$PORT "$@" >/tmp/purge-api.log 2>&1 &
  API=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done
}

psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" postgres
redis-cli --scan --pattern 'sypurge:*' | xargs -r redis-cli del >/dev/null
start # migrates, then stops: the seed goes in with no janitor running
kill $API; wait $API 2>/dev/null || true

echo "seeding $JOBS finished jobs, $MESSAGES messages and as many deliveries, and half as much kept …"
sql <<SQL
INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, created_at, updated_at, finished_at)
SELECT gen_random_uuid(), 'webhook_deliveries', gen_random_uuid(), gen_random_uuid(), 1, 'succeeded',
       now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
  FROM generate_series(1, $JOBS / 2);
INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload, created_at)
SELECT uuid_v7_floor(now() - interval '1 day' + i * interval '1 millisecond'), gen_random_uuid(),
       gen_random_uuid(), 'order.created', repeat('x', 600), now() - interval '1 day'
  FROM generate_series(1, $MESSAGES / 2) AS i;
INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, created_at, updated_at, finished_at)
SELECT gen_random_uuid(), 'webhook_deliveries', gen_random_uuid(), gen_random_uuid(), 1, 'succeeded',
       now() - interval '8 days', now() - interval '8 days', now() - interval '8 days'
  FROM generate_series(1, $JOBS);
INSERT INTO webhook_messages (id, tenant_id, event_id, event_type, payload, created_at)
SELECT uuid_v7_floor(now() - interval '100 days' + i * interval '1 millisecond'), gen_random_uuid(),
       gen_random_uuid(), 'order.created', repeat('x', 600), now() - interval '100 days'
  FROM generate_series(1, $MESSAGES) AS i;
INSERT INTO webhook_deliveries (id, tenant_id, message_id, endpoint_id, status, attempts)
SELECT m.id, m.tenant_id, m.id, gen_random_uuid(), 'succeeded', 1 FROM webhook_messages m;
VACUUM ANALYZE jobs; VACUUM ANALYZE webhook_messages; VACUUM ANALYZE webhook_deliveries;
SQL
total=$((JOBS + 2 * MESSAGES))
old="uuid_v7_floor(now() - interval '90 days')"
left() { sql -c "SELECT (SELECT count(*) FROM jobs WHERE finished_at < now() - interval '7 days')
                        + (SELECT count(*) FROM webhook_messages WHERE id < $old)
                        + (SELECT count(*) FROM webhook_deliveries WHERE id < $old)"; }
kept() { sql -c "SELECT (SELECT count(*) FROM jobs) + (SELECT count(*) FROM webhook_messages)
                        + (SELECT count(*) FROM webhook_deliveries)"; }
echo "seeded: $(left) expired rows, $(kept) in all"

t0=$(date +%s.%N)
start --with-worker
a0=$(ticks "$API")
while [ "$(left)" != 0 ]; do sleep 0.5; done
t1=$(date +%s.%N)
a1=$(ticks "$API")
# Idle with the retained history.
sleep 60 # let autovacuum finish with the purged rows
p0=$(pg_ticks); i0=$(ticks "$API")
sleep 30
p1=$(pg_ticks); i1=$(ticks "$API")
retained=$(kept)
kill $API; wait $API 2>/dev/null || true
awk -v n=$total -v w="$(echo "$t1 - $t0" | bc)" -v a=$((a1 - a0)) -v k="$TICK" 'BEGIN {
  printf "RESULT purged=%d rows in %.1f s (start included): %.0f rows/s; switchyard CPU %.1f s\n",
    n, w, n / w, a / k }'
awk -v r="$retained" -v p=$((p1 - p0)) -v a=$((i1 - i0)) -v k="$TICK" 'BEGIN {
  printf "RESULT idle with %d retained rows: postgres_cpu_pct=%.2f switchyard_cpu_pct=%.2f\n",
    r, p * 100 / k / 30, a * 100 / k / 30 }'
