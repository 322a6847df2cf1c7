#!/usr/bin/env bash
# Runs the benchmark scenarios of docs/benchmarks.md against a fresh release build of
# `switchyard-api --with-worker` on this machine's Postgres and Redis.
# Usage: bench/run.sh [scenario...]
#   scenarios: burst steady fanout ingest noisy (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p switchyard-api -p switchyard-bench

DB=switchyard_bench
PORT=18081
TOKEN=bench-admin-token-123456
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" postgres
redis-cli --scan --pattern 'sybench:*' | xargs -r redis-cli del >/dev/null

DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" \
SWITCHYARD_ALLOW_PRIVATE_TARGETS=true SWITCHYARD_REDIS_PREFIX=sybench \
SWITCHYARD_ADMIN_TOKEN=$TOKEN SWITCHYARD_LOG_FORMAT=json RUST_LOG=warn \
  ./target/release/switchyard-api --with-worker --listen 127.0.0.1:$PORT &
API=$!
trap 'kill $API 2>/dev/null; wait $API 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done

bench() { ./target/release/switchyard-bench --api http://127.0.0.1:$PORT --admin-token $TOKEN "$@"; }
scenarios=("${@:-burst steady fanout ingest noisy}")
for s in ${scenarios[@]}; do
  case $s in
    burst)  echo "## burst";  bench --orders 5000 --concurrency 50 --baselines ;;
    steady) echo "## steady"; bench --orders 4000 --rate 200 ;;
    fanout) echo "## fanout"; bench --orders 2000 --concurrency 20 --endpoints 10 ;;
    ingest) echo "## ingest"; bench --orders 5000 --concurrency 64 --idempotency-keys --baselines ;;
    # 10 healthy endpoints at 40 orders/s, alone and next to one that never answers (15 s
    # timeout each: uncapped, it would need 600 worker slots).
    noisy)  echo "## noisy: alone"; bench --orders 2400 --rate 40 --endpoints 10
            sleep 5
            echo "## noisy: with a dead endpoint"; bench --orders 2400 --rate 40 --endpoints 10 --dead-endpoint ;;
    *) echo "unknown scenario $s" >&2; exit 2 ;;
  esac
  sleep 5
done
