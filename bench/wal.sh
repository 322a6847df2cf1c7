#!/usr/bin/env bash
# What Postgres writes per delivery: the WAL records of the fan-out scenario (2,000 orders × 10
# endpoints, 50 in flight) on a fresh database, grouped by record type and relation (heap or
# index), divided by the deliveries. WAL records are steady where CPU figures are not: the same
# build gives the same counts on a busy or a quiet machine.
# Usage: bench/wal.sh [switchyard-api binary] [extra SQL run on the fresh schema before the load]
# Needs pg_waldump (Debian's postgresql-15 package) and read access to the data directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-./target/release/switchyard-api}
EXTRA_SQL=${2:-}
cargo build --release -q -p switchyard-api -p switchyard-bench
DB=switchyard_bench
PORT=18081
TOKEN=bench-admin-token-123456
N=20000
. bench/cpu.sh
sql() { psql -At -h 127.0.0.1 -U postgres "$@"; }
start_system "$BIN" /tmp/wal-api.log
trap 'kill $API 2>/dev/null || true' EXIT
[ -n "$EXTRA_SQL" ] && sql -q -d $DB -c "$EXTRA_SQL"
sleep 3
l0=$(sql -c "SELECT pg_current_wal_insert_lsn()" postgres)
p0=$(pg_ticks); a0=$(ticks "$API")
./target/release/switchyard-bench --api http://127.0.0.1:$PORT --admin-token $TOKEN \
  --orders 2000 --concurrency 50 --endpoints 10 | sed "s/^/    /"
p1=$(pg_ticks); a1=$(ticks "$API")
l1=$(sql -c "SELECT pg_current_wal_insert_lsn()" postgres)
awk -v p=$((p1 - p0)) -v a=$((a1 - a0)) -v k="$TICK" -v n=$N 'BEGIN {
  printf "cpu per delivery: postgres %.3f ms, switchyard %.3f ms\n", p * 1000 / k / n, a * 1000 / k / n }'
sql -F' ' -d $DB -c "SELECT relfilenode, relname FROM pg_class WHERE relfilenode <> 0" > /tmp/wal-rels.txt
WALDUMP=$(ls /usr/lib/postgresql/*/bin/pg_waldump | tail -1)
"$WALDUMP" -p "$(sql -c 'SHOW data_directory' postgres)/pg_wal" -s "$l0" -e "$l1" 2>/dev/null \
  | awk -v n=$N 'NR == FNR { name[$1] = $2; next }
      match($0, /rmgr: [A-Za-z0-9]+ +len \(rec\/tot\): +[0-9]+\/ *[0-9]+/) {
        split(substr($0, RSTART, RLENGTH), f, /[ \/]+/); rm = f[2]; bytes = f[length(f)]
        d = $0; sub(/.*desc: /, "", d); sub(/[ ,].*/, "", d)
        r = "-"; if (match($0, /blkref #0: rel [0-9]+\/[0-9]+\/[0-9]+/)) {
          split(substr($0, RSTART, RLENGTH), b, "/"); r = (b[3] in name) ? name[b[3]] : b[3] }
        key = rm "/" d " " r; c[key]++; s[key] += bytes; total++; tb += bytes }
      END { printf "WAL per delivery: %.2f records, %.0f bytes\n", total / n, tb / n
            for (k in c) if (c[k] / n >= 0.05) printf "%6.2f %6.0f B  %s\n", c[k] / n, s[k] / n, k }' \
    /tmp/wal-rels.txt - | { read -r head; echo "$head"; sort -rn; }
