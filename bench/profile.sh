#!/usr/bin/env bash
# Where the CPU of a delivery goes: perf samples every process on the machine during the fan-out
# scenario (2,000 orders × 10 endpoints, 50 in flight) against a release build on a fresh
# database, and writes one flame graph per process group (Postgres, Switchyard) plus the top
# statements by total time (pg_stat_statements, when Postgres preloads it).
# Usage: bench/profile.sh <out-dir> [switchyard-api binary]
# Needs perf (linux-perf) and inferno (`cargo install inferno`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?output directory}
BIN=${2:-./target/release/switchyard-api}
mkdir -p "$OUT"
cargo build --release -q -p switchyard-api -p switchyard-bench
DB=switchyard_bench
PORT=18081
TOKEN=bench-admin-token-123456
. bench/cpu.sh
start_system "$BIN" /tmp/profile-api.log
trap 'kill $API 2>/dev/null || true' EXIT
./target/release/switchyard-bench --api http://127.0.0.1:$PORT --admin-token $TOKEN \
  --orders 2000 --concurrency 50 --endpoints 10 | tee "$OUT/fanout.txt" &
DRIVER=$!
sleep 4
perf record -a -F 199 --call-graph dwarf,16384 -o /tmp/profile.data -- sleep 8 2>/dev/null
wait $DRIVER
perf script -F +pid -i /tmp/profile.data 2>/dev/null | inferno-collapse-perf --pid > /tmp/profile.folded
# The first frame is `<thread name>-<pid>`: Postgres is every `postgres-*`, Switchyard is the
# API process (its threads are `tokio-rt-worker`, like the driver's, so select by pid).
sed -n 's/^postgres-[0-9]*;/postgres;/p' /tmp/profile.folded \
  | inferno-flamegraph --minwidth 0.2 --title "Postgres, fan-out ×10" > "$OUT/postgres.svg"
sed -n "s/^[^;]*-$API;/switchyard-api;/p" /tmp/profile.folded \
  | inferno-flamegraph --minwidth 0.2 --title "switchyard-api --with-worker, fan-out ×10" > "$OUT/switchyard.svg"
# Share of samples per process.
awk -v api="$API" '{n = $NF; p = $1; sub(/;.*/, "", p); sub(/-[0-9?]+$/, "", p)
    if ($1 ~ "^[^;]*-" api ";") p = "switchyard-api"; s[p] += n; t += n}
    END {for (k in s) printf "%6.1f%% %s\n", 100 * s[k] / t, k}' /tmp/profile.folded \
  | sort -rn | head -8 > "$OUT/processes.txt"
psql -h 127.0.0.1 -U postgres -c "SELECT calls, round(total_exec_time::numeric, 1) AS exec_ms,
    round(total_plan_time::numeric, 1) AS plan_ms, rows,
    left(regexp_replace(query, '\s+', ' ', 'g'), 120) AS query
    FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = '$DB'
    ORDER BY total_exec_time + total_plan_time DESC LIMIT 15" postgres > "$OUT/statements.txt" 2>&1 || true
cat "$OUT/processes.txt"
