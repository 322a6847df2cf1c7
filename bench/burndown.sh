#!/usr/bin/env bash
# Burn-down: a backlog of pending deliveries drains without errors while Redis holds only the
# bounded window, and autovacuum keeps up. ORDERS orders (default 100,000) × ENDPOINTS endpoints
# (default 10) pile up behind endpoints rate-limited to 1 request/s; once every event is fanned
# out the limits are lifted (`switchyard-bench --backlog`). Redis memory is sampled every 5 s;
# after the drain: failed or unfinished deliveries, dead jobs, and the hot tables' size, dead
# rows and autovacuum runs.
# Usage: bench/burndown.sh [switchyard-api binary]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p switchyard-api -p switchyard-bench
BIN=${1:-./target/release/switchyard-api}
ORDERS=${ORDERS:-100000}
ENDPOINTS=${ENDPOINTS:-10}
DB=switchyard_bench
PORT=18081
TOKEN=bench-admin-token-123456
. bench/cpu.sh
q() { psql -At -h 127.0.0.1 -U postgres "$@" $DB; }

start_system "$BIN" /tmp/burndown-api.log
redis-cli config resetstat >/dev/null
(while sleep 5; do
   echo "$(date +%s) $(redis-cli info memory | awk -F: '/^used_memory:/ {printf "%.1f", $2 / 1048576}')"
 done) >/tmp/burndown-redis.txt &
SAMPLER=$!
a0=$(ticks "$API"); p0=$(pg_ticks); t0=$(date +%s.%N)
# The CPU counters are read again when the limits are lifted, so the drain is measured alone.
./target/release/switchyard-bench --api http://127.0.0.1:$PORT --admin-token $TOKEN \
  --orders "$ORDERS" --concurrency 50 --endpoints "$ENDPOINTS" --backlog --drain-timeout-secs 3600 |
  while IFS= read -r line; do
    echo "    $line"
    case $line in backlog*) echo "$(ticks "$API") $(pg_ticks) $(date +%s.%N)" >/tmp/burndown-lift.txt ;; esac
  done
a1=$(ticks "$API"); p1=$(pg_ticks); t1=$(date +%s.%N)
read -r al pl tl </tmp/burndown-lift.txt
kill $SAMPLER
n=$((ORDERS * ENDPOINTS))
awk -v n=$n -v a=$((a1 - a0)) -v p=$((p1 - p0)) -v k="$TICK" -v w="$(echo "$t1 - $t0" | bc)" 'BEGIN {
  printf "RESULT scenario=burndown_all deliveries=%d wall_s=%.0f switchyard_cpu_ms_per_delivery=%.3f postgres_cpu_ms_per_delivery=%.3f\n",
    n, w, a * 1000 / k / n, p * 1000 / k / n }'
# The drain alone (the deliveries made while the limits held, 1/s per endpoint, are few).
awk -v n=$n -v a=$((a1 - al)) -v p=$((p1 - pl)) -v k="$TICK" -v w="$(echo "$t1 - $tl" | bc)" 'BEGIN {
  printf "RESULT scenario=burndown_drain wall_s=%.0f deliveries_per_s=%.0f switchyard_cpu_ms_per_delivery=%.3f postgres_cpu_ms_per_delivery=%.3f\n",
    w, n / w, a * 1000 / k / n, p * 1000 / k / n }'
awk '{ if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2; s++ }
  END { printf "RESULT redis_used_memory_mb min=%s max=%s samples=%d\n", min, max, s }' /tmp/burndown-redis.txt
echo "peak RSS of switchyard-api --with-worker: $(awk '/^VmHWM/ {printf "%.1f MB", $2 / 1024}' /proc/$API/status)"
echo "deliveries by status:"
q -c "SELECT status, count(*) FROM webhook_deliveries GROUP BY 1 ORDER BY 1" | sed "s/^/    /"
echo "jobs by queue and state:"
q -c "SELECT queue, state, count(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2" | sed "s/^/    /"
echo "errors in the API/worker log: $(grep -c '"level":"ERROR"' /tmp/burndown-api.log || true)"
# Autovacuum visits each database once a minute: give it (or, with autovacuum off, the janitor's
# vacuum) up to three minutes to reach the ledger after the drain.
v0=$(q -c "SELECT autovacuum_count + vacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'")
for _ in $(seq 36); do
  [ "$(q -c "SELECT autovacuum_count + vacuum_count FROM pg_stat_user_tables WHERE relname = 'jobs'")" -gt "$v0" ] && break
  sleep 5
done
echo "autovacuum: $(psql -At -h 127.0.0.1 -U postgres -c 'SHOW autovacuum' postgres)"
echo "hot tables after the drain (size incl. indexes, live and dead rows, autovacuum and janitor vacuum runs):"
q -F' | ' -c "SELECT relname, pg_size_pretty(pg_total_relation_size(relid)) AS total,
      pg_size_pretty(pg_indexes_size(relid)) AS indexes, n_live_tup, n_dead_tup,
      autovacuum_count, vacuum_count
    FROM pg_stat_user_tables
   WHERE relname IN ('jobs', 'webhook_deliveries', 'webhook_messages', 'events', 'orders',
                     'dispatch_groups') OR (relname LIKE 'webhook_attempts_%' AND n_live_tup > 0)
   ORDER BY pg_total_relation_size(relid) DESC" | sed "s/^/    /"
kill $API; wait $API 2>/dev/null || true
