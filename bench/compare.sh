#!/usr/bin/env bash
# Before/after in one run: the same scenarios against a baseline build and this build, in
# alternation, each on a fresh database, with the CPU each process spent per delivery.
# Usage: bench/compare.sh <baseline switchyard-api binary> [rounds]
#   e.g. git worktree add /tmp/base <commit> && (cd /tmp/base && cargo build --release -p switchyard-api)
#        bench/compare.sh /tmp/base/target/release/switchyard-api 2
# Per build and round: 30 s idle on the fresh system, steady (4000 orders at 200/s), burst
# (5000 orders, 50 in flight), noisy (2400 orders at 40/s to 10 endpoints plus one that never
# answers), fan-out (2000 orders, 50 in flight, 10 endpoints), with EVENTS=1 the same through
# POST /v1/events (this build only: the baseline may predate it), then 30 s idle with the dead
# endpoint's deliveries still waiting: Postgres CPU while nothing happens.
# Then the queue floor (this build only): raw apalis-redis no-op tasks beside no-op probe jobs
# through the whole ledger path (`switchyard-bench --queue-floor`).
# SCENARIOS="fanout burst" runs only those (names: idle steady burst noisy fanout floor events,
# and, only when named, fifo: 60 orders to two strict-FIFO endpoints, and ingest: the fan-out's
# orders with no endpoint).
# With pg_stat_statements preloaded, each scenario also reports statements per delivery, and
# the top statements by total time go to /tmp/compare-<build>-<round>-statements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?baseline switchyard-api binary}
ROUNDS=${2:-1}
cargo build --release -q -p switchyard-api -p switchyard-bench
NEW=./target/release/switchyard-api

DB=switchyard_bench
PORT=18081
TOKEN=bench-admin-token-123456
. bench/cpu.sh

bench() { ./target/release/switchyard-bench --api http://127.0.0.1:$PORT --admin-token $TOKEN "$@"; }

# Database counters of $DB: commits, rows inserted + updated + deleted, and statements run (from
# pg_stat_statements, when Postgres preloads it; else 0).
db_counts() {
  local counters="d.xact_commit, d.tup_inserted + d.tup_updated + d.tup_deleted"
  psql -At -F' ' -h 127.0.0.1 -U postgres -c "SELECT $counters,
      COALESCE((SELECT sum(calls) FROM pg_stat_statements s WHERE s.dbid = d.datid), 0)
      FROM pg_stat_database d WHERE d.datname = '$DB'" postgres 2>/dev/null ||
  psql -At -F' ' -h 127.0.0.1 -U postgres -c "SELECT $counters, 0
      FROM pg_stat_database d WHERE d.datname = '$DB'" postgres 2>/dev/null || echo "0 0 0"
}

# Peak resident memory of a process so far (VmHWM), in MB.
peak_rss_mb() { awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# measure <label> <deliveries> <bench args…>: the scenario's output, then CPU per delivery,
# commits, rows written and statements per delivery (counters read 2 s later: backends report
# them at most once a second), and the Switchyard process's peak RSS since it started.
measure() {
  local label=$1 n=$2; shift 2
  case " ${SCENARIOS:-steady burst noisy fanout events} " in *" $label "*) ;; *) return 0 ;; esac
  local a0 p0 t0 a1 p1 t1 c0 c1
  c0=$(db_counts)
  a0=$(ticks "$API"); p0=$(pg_ticks); t0=$(date +%s.%N)
  bench "$@" | sed "s/^/    /"
  sleep "${SETTLE:-0}"
  a1=$(ticks "$API"); p1=$(pg_ticks); t1=$(date +%s.%N)
  sleep 2
  c1=$(db_counts)
  awk -v l="$label" -v b="$build" -v n="$n" -v a=$((a1 - a0)) -v p=$((p1 - p0)) -v k="$TICK" \
      -v w="$(echo "$t1 - $t0" | bc)" -v c0="$c0" -v c1="$c1" -v rss="$(peak_rss_mb "$API")" 'BEGIN {
    split(c0, x, " "); split(c1, y, " ")
    printf "RESULT build=%s scenario=%s deliveries=%d wall_s=%.1f deliveries_per_s=%.0f switchyard_cpu_ms_per_delivery=%.3f postgres_cpu_ms_per_delivery=%.3f commits_per_delivery=%.2f rows_written_per_delivery=%.2f statements_per_delivery=%.2f switchyard_peak_rss_mb=%s\n",
      b, l, n, w, n / w, a * 1000 / k / n, p * 1000 / k / n, (y[1] - x[1]) / n, (y[2] - x[2]) / n, (y[3] - x[3]) / n, rss }'
}

# idle <label>: 10 s to settle, then Postgres and Switchyard CPU over 30 s with no traffic.
idle() {
  local p0 a0 p1 a1 pending
  sleep 10
  p0=$(pg_ticks); a0=$(ticks "$API")
  sleep 30
  p1=$(pg_ticks); a1=$(ticks "$API")
  pending=$(psql -At -h 127.0.0.1 -U postgres -c "SELECT count(*) FROM jobs WHERE state = 'pending'" $DB)
  awk -v b=$build -v l="$1" -v p=$((p1 - p0)) -v a=$((a1 - a0)) -v k="$TICK" -v n="$pending" 'BEGIN {
    printf "RESULT build=%s scenario=idle_%s pending_jobs=%d postgres_cpu_pct=%.2f switchyard_cpu_pct=%.2f\n",
      b, l, n, p * 100 / k / 30, a * 100 / k / 30 }'
}

for round in $(seq "$ROUNDS"); do
  for build in baseline new; do
    bin=$BASE; [ $build = new ] && bin=$NEW
    echo "## round $round, $build ($bin)"
    start_system "$bin" /tmp/compare-api.log
    case " ${SCENARIOS:-idle} " in *" idle "*) idle fresh ;; esac
    measure steady 4000 --orders 4000 --rate 200
    sleep 5
    measure burst 5000 --orders 5000 --concurrency 50
    sleep 5
    measure noisy 24000 --orders 2400 --rate 40 --endpoints 10 --dead-endpoint
    sleep 5
    measure fanout 20000 --orders 2000 --concurrency 50 --endpoints 10
    # Ingest alone (opt-in: SCENARIOS=ingest): the fan-out scenario's 2,000 orders with no
    # endpoint subscribed, 3 s allowed for their fan-outs to finish; "per delivery" is per
    # order here. A tenth of it is what each delivery of the fan-out ×10 scenario carries.
    SETTLE=3 measure ingest 2000 --orders 2000 --concurrency 50 --endpoints 0
    # Strict FIFO (opt-in: SCENARIOS=fifo): two FIFO endpoints, one delivery at a time each.
    measure fifo 120 --orders 60 --concurrency 10 --endpoints 2 --fifo --drain-timeout-secs 90
    # Queue floor (this build only: the baseline may predate probe jobs): raw apalis-redis
    # consuming no-op tasks at the worker's consumer concurrency (32), then 20,000 no-op jobs
    # through the ledger, the dispatcher, Redis, the claim and the finish.
    case " ${SCENARIOS:-steady burst noisy fanout floor} " in *" floor "*)
      if [ $build = new ]; then
        sleep 5
        bench --apalis-noop --orders 7000 --concurrency 32 | sed "s/^/    /"
        SCENARIOS=floor measure floor 20000 --orders 20000 \
          --queue-floor "postgres://postgres@127.0.0.1:5432/$DB"
      fi ;;
    esac
    if [ "${EVENTS:-0}" = 1 ] && [ $build = new ]; then
      sleep 5
      measure events 20000 --events --orders 2000 --concurrency 50 --endpoints 10
    fi
    # Idle: no traffic, the dead endpoint's deliveries parked or waiting for their retries.
    case " ${SCENARIOS:-idle} " in *" idle "*) idle after_load ;; esac
    psql -h 127.0.0.1 -U postgres -c "SELECT calls, round(total_exec_time::numeric, 1) AS total_ms,
        round((total_exec_time / calls)::numeric, 3) AS mean_ms, rows, left(regexp_replace(query, '\s+', ' ', 'g'), 160) AS query
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid AND d.datname = '$DB'
        ORDER BY total_exec_time DESC LIMIT 15" postgres >"/tmp/compare-$build-$round-statements.txt" 2>&1 || true
    kill $API; wait $API 2>/dev/null || true
    sleep 5
  done
done
