# CPU accounting shared by the bench scripts (sourced, not run).
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
