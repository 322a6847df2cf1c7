#!/usr/bin/env bash
# What one dispatcher pass reads next to a blocked backlog: EXPLAIN (ANALYZE, BUFFERS) of the
# pass's selection query, before (a baseline build's schema and query) and after (this build's).
# Seed, the same for both: one endpoint at its concurrency cap (16 running) with 100,000 due
# pending deliveries, and one healthy endpoint with one due delivery.
# Usage: bench/explain.sh <baseline switchyard-api binary>
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?baseline switchyard-api binary}
cargo build --release -q -p switchyard-api
SLOW=00000000-0000-7000-8000-00000000000a
FAST=00000000-0000-7000-8000-00000000000b

migrate() { # binary database
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $2" postgres
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$2?sslmode=disable" SWITCHYARD_REDIS_PREFIX=syexplain \
  SWITCHYARD_ADMIN_TOKEN=explain-admin-token-1 RUST_LOG=error "$1" --listen 127.0.0.1:18083 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18083/readyz >/dev/null && break; sleep 0.2; done
  kill $pid; wait $pid 2>/dev/null || true
  psql -q -h 127.0.0.1 -U postgres "$2" <<SQL
INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, group_key, run_at)
SELECT gen_random_uuid(), 'webhook_deliveries', gen_random_uuid(), gen_random_uuid(), 10,
       CASE WHEN i <= 16 THEN 'running' ELSE 'pending' END, '$SLOW', now() - interval '1 minute'
  FROM generate_series(1, 100016) AS i;
INSERT INTO jobs (id, queue, tenant_id, subject_id, max_attempts, state, group_key, run_at)
VALUES (gen_random_uuid(), 'webhook_deliveries', gen_random_uuid(), gen_random_uuid(), 10,
        'pending', '$FAST', now());
INSERT INTO dispatch_groups (key) VALUES ('$SLOW'), ('$FAST');
VACUUM ANALYZE jobs;
SQL
}

migrate "$BASE" switchyard_explain_before
migrate ./target/release/switchyard-api switchyard_explain_after

echo "## before: the blocked-groups query, then the due query filtering them out"
psql -h 127.0.0.1 -U postgres switchyard_explain_before <<SQL
EXPLAIN (ANALYZE, BUFFERS)
SELECT key FROM dispatch_groups WHERE paused_until > now()
UNION
SELECT j.group_key FROM jobs j LEFT JOIN dispatch_groups g ON g.key = j.group_key
 WHERE j.state IN ('queued', 'running') AND j.group_key IS NOT NULL
 GROUP BY j.group_key, g.max_concurrency
HAVING count(*) >= COALESCE(g.max_concurrency, 16);
EXPLAIN (ANALYZE, BUFFERS)
SELECT id, group_key FROM jobs
 WHERE queue = 'webhook_deliveries' AND state = 'pending' AND run_at <= now()
   AND (group_key IS NULL OR group_key <> ALL(ARRAY['$SLOW']::uuid[]))
 ORDER BY run_at LIMIT 500 FOR UPDATE SKIP LOCKED;
SQL

echo "## after: the skip scan over jobs_group_due (one probe per group with pending work)"
psql -h 127.0.0.1 -U postgres switchyard_explain_after <<SQL
EXPLAIN (ANALYZE, BUFFERS)
WITH RECURSIVE g(key, run_at, queue) AS (
   (SELECT group_key, run_at, queue FROM jobs
     WHERE state = 'pending' AND group_key IS NOT NULL
     ORDER BY group_key, run_at LIMIT 1)
   UNION ALL
   SELECT n.group_key, n.run_at, n.queue
     FROM g CROSS JOIN LATERAL (
          SELECT group_key, run_at, queue FROM jobs
           WHERE state = 'pending' AND group_key IS NOT NULL AND group_key > g.key
           ORDER BY group_key, run_at LIMIT 1) n)
SELECT key, queue, now() AS now FROM g WHERE run_at <= now() ORDER BY run_at LIMIT 1000;
SQL
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE switchyard_explain_before" -c "DROP DATABASE switchyard_explain_after" postgres
