# Shared by the bench scripts (sourced, not run): CPU accounting and starting the system.
TICK=$(getconf CLK_TCK)

# CPU ticks (user + system) of one process; of Postgres: every live Postgres process plus what
# the postmaster's exited children used (its cutime + cstime), so backends and autovacuum
# workers that come and go between two samples are counted too.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
PM=$(pgrep -x -o postgres)
pg_ticks() {
  local t
  t=$(awk '{print $16 + $17}' "/proc/$PM/stat")
  for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p"))); done
  echo $t
}

# start_system <switchyard-api binary> <log file>: a fresh `switchyard_bench` database and
# `sybench:*` Redis keys, statement counters reset, then `--with-worker` on $PORT; sets $API
# and returns once it is ready. Needs DB, PORT and TOKEN.
start_system() {
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $DB" postgres
  psql -q -h 127.0.0.1 -U postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
    -c "SELECT pg_stat_statements_reset()" postgres >/dev/null 2>&1 || true
  redis-cli --scan --pattern 'sybench:*' | xargs -r redis-cli del >/dev/null
  DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" \
  SWITCHYARD_ALLOW_PRIVATE_TARGETS=true SWITCHYARD_REDIS_PREFIX=sybench \
  SWITCHYARD_ADMIN_TOKEN=$TOKEN SWITCHYARD_LOG_FORMAT=json RUST_LOG=error \
    "$1" --with-worker --listen 127.0.0.1:$PORT >"$2" 2>&1 &
  API=$!
  for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.2; done
}
