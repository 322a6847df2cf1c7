#!/usr/bin/env bash
# The sync scenario of docs/benchmarks.md: ROWS rows from a Postgres database playing the ERP
# into Switchyard's record store (the first run of an incremental configuration reads every
# row), then 1 % of the rows changed and an incremental run; next to the baseline, in the same
# run, a plain `COPY (SELECT …) TO STDOUT | COPY … FROM STDIN` of the same rows between the
# same two databases. Reports rows/s, wall time, CPU per 1,000 rows of the Switchyard process
# and of Postgres (all backends), and the process's peak RSS.
# Usage: bench/sync.sh [rows] [batch_size]   (defaults 100000 and 500)
#        API_BIN=path/to/switchyard-api bench/sync.sh …   (another build, e.g. a baseline)
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-100000}
BATCH=${2:-500}
API_BIN=${API_BIN:-./target/release/switchyard-api}
[ "$API_BIN" = ./target/release/switchyard-api ] && cargo build --release -q -p switchyard-api
DB=switchyard_bench
ERP=switchyard_bench_erp
COPY_DB=switchyard_bench_copy
PORT=18083
TOKEN=bench-admin-token-123456
. bench/cpu.sh
. bench/erp_products.sh
psql_() { psql -q -At -h 127.0.0.1 -U postgres "$@"; }
now_ms() { date +%s%3N; }

echo "seeding $ROWS rows into $ERP.erp.products …"
seed_products $ERP $COPY_DB $ROWS

echo "## baseline: COPY TO STDOUT | COPY FROM STDIN"
pg0=$(pg_ticks); t0=$(now_ms)
psql_ $ERP -c "COPY (SELECT * FROM erp.products) TO STDOUT" | psql_ $COPY_DB -c "COPY erp.products FROM STDIN"
t1=$(now_ms); pg1=$(pg_ticks)
copy_ms=$((t1 - t0))
echo "copy: $ROWS rows in $copy_ms ms = $((ROWS * 1000 / copy_ms)) rows/s; Postgres CPU $(( (pg1 - pg0) * 1000 / TICK )) ms = $(awk "BEGIN{printf \"%.2f\", ($pg1-$pg0)*1000/$TICK/($ROWS/1000)}") ms per 1,000 rows"

start_system "$API_BIN" /tmp/sync-bench-api.log
trap 'kill $API 2>/dev/null; wait $API 2>/dev/null' EXIT
B=http://127.0.0.1:$PORT
field() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
TENANT=$(curl -sf $B/admin/v1/tenants -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"name": "bench"}' | field "['id']")
KEY=$(curl -sf $B/admin/v1/tenants/$TENANT/api-keys -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' \
  -d '{"name": "bench", "scopes": ["integrations:write", "sync:write", "sync:read"]}' | field "['key']")
post() { curl -sf "$B$1" -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$2"; }
INTEGRATION=$(post /v1/integrations "{\"name\": \"ERP\", \"code\": \"erp\", \"type\": \"erp\",
  \"provider\": \"postgres\", \"credentials\": {\"url\": \"postgres://postgres@127.0.0.1:5432/$ERP\"}}" | field "['id']")
CONFIG=$(post /v1/sync/configurations "{\"name\": \"Products\", \"entity\": \"products\", \"mode\": \"incremental\",
  \"source\": {\"integration_id\": \"$INTEGRATION\", \"table\": \"erp.products\", \"key\": [\"sku\"]},
  \"target\": {\"store\": \"switchyard\"}, \"batch_size\": $BATCH,
  \"cursor\": {\"strategy\": \"timestamp\", \"column\": \"updated_at\", \"lag_seconds\": 0}}" | field "['id']")

# run <label>: one run to its end; prints its counters, rates and CPU.
run() {
  local api0 pg0 t0 run id status
  api0=$(ticks $API); pg0=$(pg_ticks); t0=$(now_ms)
  id=$(post /v1/sync/configurations/$CONFIG/runs '{}' | field "['id']")
  while :; do
    run=$(curl -sf $B/v1/sync/runs/$id -H "Authorization: Bearer $KEY")
    status=$(echo "$run" | field "['status']")
    [ "$status" != pending ] && [ "$status" != running ] && break
    sleep 0.05
  done
  local t1 api1 pg1
  t1=$(now_ms); api1=$(ticks $API); pg1=$(pg_ticks)
  echo "$run" | python3 -c "
import json, sys
from datetime import datetime
r = json.load(sys.stdin)
ms = (datetime.fromisoformat(r['finished_at']) - datetime.fromisoformat(r['started_at'])).total_seconds() * 1000
n = max(r['rows_read'], 1)
print(f\"$1: {r['status']}; read {r['rows_read']}, inserted {r['rows_inserted']}, updated {r['rows_updated']}, \"
      f\"unchanged {r['rows_unchanged']}, failed {r['rows_failed']} in {r['batches']} batches\")
print(f\"$1: run {ms:.0f} ms (started → finished) = {r['rows_read'] * 1000 / max(ms, 1):.0f} rows/s; \"
      f\"request → finished {$t1 - $t0} ms\")
print(f\"$1: CPU switchyard {($api1 - $api0) * 1000 / $TICK:.0f} ms = {($api1 - $api0) * 1000 / $TICK / n * 1000:.2f} ms per 1,000 rows; \"
      f\"Postgres {($pg1 - $pg0) * 1000 / $TICK:.0f} ms = {($pg1 - $pg0) * 1000 / $TICK / n * 1000:.2f} ms per 1,000 rows\")
"
}

echo "## sync: first run (every row)"
run full
echo "peak RSS of switchyard-api: $(awk '/VmHWM/ {print $2 / 1024 " MB"}' /proc/$API/status)"
psql_ $ERP -c "UPDATE erp.products SET price = price + 1, updated_at = now() WHERE random() < 0.01"
changed=$(psql_ $ERP -c "SELECT count(*) FROM erp.products WHERE updated_at > now() - interval '1 minute'")
echo "## sync: incremental run after $changed rows changed"
run incremental
echo "peak RSS of switchyard-api: $(awk '/VmHWM/ {print $2 / 1024 " MB"}' /proc/$API/status)"
stored=$(psql_ $DB -c "SELECT count(*) FROM sync_records WHERE entity = 'products' AND deleted_at IS NULL")
echo "records in the store: $stored (source: $ROWS)"
for d in $ERP $COPY_DB; do psql_ -c "DROP DATABASE IF EXISTS $d" postgres; done
