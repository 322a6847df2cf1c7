#!/usr/bin/env bash
# Deliveries/s and CPU per delivery by destination kind, in one run on one system: the same
# closed-loop load (orders at 50 in flight, each to 2 endpoints of one kind) with signed HTTP
# webhooks to the local receiver, RabbitMQ (a durable queue per endpoint, persistent messages,
# publisher confirms) and NATS JetStream (one stream, acked publishes), interleaved for
# `rounds` rounds on the machine's RabbitMQ (127.0.0.1:5672) and NATS (127.0.0.1:4222).
# Usage: bench/destinations.sh [rounds] [orders]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
ORDERS=${2:-3000}
cargo build --release -q -p switchyard-api -p switchyard-bench

DB=switchyard_bench
PORT=18082
TOKEN=bench-admin-token-123456
. bench/cpu.sh
start_system ./target/release/switchyard-api /tmp/destinations-api.log
trap 'kill $API 2>/dev/null; wait $API 2>/dev/null' EXIT
bench() { ./target/release/switchyard-bench --api http://127.0.0.1:$PORT --admin-token $TOKEN "$@"; }

# CPU of the processes that serve the brokers, beside Switchyard's and Postgres's.
RMQ=$(pgrep -o -f 'beam.smp.*rabbit' || echo 0)
NATSD=$(pgrep -o -x nats-server || echo 0)
for round in $(seq "$ROUNDS"); do
  for kind in http rabbitmq nats; do
    n=$((ORDERS * 2))
    a0=$(ticks "$API"); p0=$(pg_ticks); r0=$(ticks "$RMQ"); s0=$(ticks "$NATSD"); t0=$(date +%s.%N)
    echo "## round $round, $kind"
    bench --destination $kind --orders "$ORDERS" --concurrency 50 --endpoints 2 | sed "s/^/    /"
    a1=$(ticks "$API"); p1=$(pg_ticks); r1=$(ticks "$RMQ"); s1=$(ticks "$NATSD"); t1=$(date +%s.%N)
    awk -v kind=$kind -v r=$round -v n=$n -v a=$((a1 - a0)) -v p=$((p1 - p0)) -v q=$((r1 - r0)) \
        -v s=$((s1 - s0)) -v k="$TICK" -v w="$(echo "$t1 - $t0" | bc)" 'BEGIN {
      printf "RESULT round=%d destination=%s deliveries=%d wall_s=%.1f deliveries_per_s=%.0f switchyard_cpu_ms_per_delivery=%.3f postgres_cpu_ms_per_delivery=%.3f rabbitmq_cpu_ms_per_delivery=%.3f nats_cpu_ms_per_delivery=%.3f\n",
        r, kind, n, w, n / w, a * 1000 / k / n, p * 1000 / k / n, q * 1000 / k / n, s * 1000 / k / n }'
    sleep 5
  done
done
