#!/usr/bin/env bash
# The floor under the delivery goals of issue #11 (docs/benchmarks.md): what Postgres spends on
# the rows a successful delivery writes, and nothing else, for three shapes of the delivery
# ledger. No Switchyard process runs. One backend writes, in stored procedures that commit as
# the real path does (one commit per fan-out of 10 deliveries, one per batch of 16 recorded
# attempts), into copies of today's tables (`CREATE TABLE … (LIKE … INCLUDING ALL)`: the same
# columns, defaults, checks and indexes, partial ones included; no foreign keys, no triggers,
# no locks, no probes, no dispatcher, no Redis, no concurrency). So each figure is a lower
# bound for a delivery written in that shape:
#   today   the delivery's job born `running` and its `webhook_deliveries` row `pending` (the
#           fan-out), then the job `succeeded`, the delivery `succeeded` and the attempt (the
#           record statement);
#   job     the delivery is its job: one row (the job's columns plus the delivery's), born
#           `running`, then `succeeded` beside the attempt;
#   attempt only the attempt row (as if the fan-out's own row stood for its deliveries).
# CPU is the backend's (user + system, from /proc) over the procedure call; WAL is the LSN
# distance. Usage: bench/delivery_floor.sh [deliveries] [rounds]   (defaults 100000 and 2)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
ROUNDS=${2:-2}
DB=switchyard_delivery_floor
TICK=$(getconf CLK_TCK)
psql_() { psql -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres "$@"; }

psql_ -c "DROP DATABASE IF EXISTS $DB" postgres 2>/dev/null
psql_ -c "CREATE DATABASE $DB" postgres
for f in migrations/*.sql; do psql_ $DB -f "$f" >/dev/null; done
ATTEMPTS=$(psql_ $DB -c "SELECT relname FROM pg_class WHERE relname LIKE 'webhook_attempts_p%'
                          AND relkind = 'r' ORDER BY relname DESC LIMIT 1")

psql_ $DB <<SQL
-- Time-ordered ids, as the application's UUIDv7: 48 bits of milliseconds, then random bits.
CREATE FUNCTION v7() RETURNS uuid LANGUAGE sql VOLATILE AS \$\$
  SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
          || substr(md5(random()::text), 1, 20))::uuid \$\$;
CREATE TABLE j (LIKE jobs INCLUDING ALL);
CREATE TABLE d (LIKE webhook_deliveries INCLUDING ALL);
CREATE TABLE a (LIKE $ATTEMPTS INCLUDING ALL);
-- The delivery as its job: the job's columns and indexes plus the delivery's, with today's
-- pending-only FIFO and ordering indexes on the job's state.
CREATE TABLE jd (LIKE jobs INCLUDING ALL, message_id uuid NOT NULL, endpoint_id uuid NOT NULL,
                 ordering_key text, ordering_seq bigint, last_status_code int);
CREATE UNIQUE INDEX ON jd (message_id, endpoint_id);
CREATE INDEX ON jd (endpoint_id, id);
CREATE INDEX ON jd (endpoint_id, message_id) WHERE state IN ('pending', 'queued', 'running');
CREATE INDEX ON jd (endpoint_id, ordering_key, ordering_seq)
  WHERE state IN ('pending', 'queued', 'running') AND ordering_key IS NOT NULL;

-- One fan-out: 10 deliveries of one message, one commit.
CREATE PROCEDURE fan_out(shape text, tenant uuid, endpoints uuid[]) LANGUAGE plpgsql AS \$\$
DECLARE msg uuid := v7();
BEGIN
  IF shape = 'today' THEN
    WITH jobs AS (
      INSERT INTO j (id, queue, tenant_id, subject_id, state, attempt, max_attempts, group_key,
                     lease_owner, lease_until)
      SELECT v7(), 'webhook_deliveries', tenant, v7(), 'running', 1, 10, e, 'w1',
             now() + interval '8 s' FROM unnest(endpoints) e
      RETURNING id, subject_id, group_key)
    INSERT INTO d (id, tenant_id, message_id, endpoint_id, job_id)
    SELECT subject_id, tenant, msg, group_key, id FROM jobs ON CONFLICT DO NOTHING;
  ELSIF shape = 'job' THEN
    INSERT INTO jd (id, queue, tenant_id, subject_id, state, attempt, max_attempts, group_key,
                    lease_owner, lease_until, message_id, endpoint_id)
    SELECT v7(), 'webhook_deliveries', tenant, msg, 'running', 1, 10, e, 'w1',
           now() + interval '8 s', msg, e FROM unnest(endpoints) e ON CONFLICT DO NOTHING;
  END IF;
  COMMIT;
END \$\$;

-- One record statement: 16 successful attempts, one commit.
CREATE PROCEDURE record(shape text, tenant uuid) LANGUAGE plpgsql AS \$\$
BEGIN
  IF shape = 'today' THEN
    WITH fin AS (
      UPDATE j SET state = 'succeeded', finished_at = now(), updated_at = now(),
                   lease_owner = NULL, lease_until = NULL
       WHERE id IN (SELECT id FROM j WHERE state = 'running' ORDER BY lease_until LIMIT 16)
      RETURNING id, subject_id, group_key),
    del AS (
      UPDATE d SET status = 'succeeded', attempts = 1, last_status_code = 200, updated_at = now()
        FROM fin WHERE d.id = fin.subject_id RETURNING d.id, d.message_id, d.endpoint_id)
    INSERT INTO a (id, tenant_id, delivery_id, endpoint_id, message_id, attempt,
                   webhook_timestamp, status_code, duration_ms, response_size, remote_ip,
                   ttfb_ms, connect_ms)
    SELECT v7(), tenant, id, endpoint_id, message_id, 1, 1765000000, 200, 3, 2, '127.0.0.1', 2, 0
      FROM del;
  ELSIF shape = 'job' THEN
    WITH fin AS (
      UPDATE jd SET state = 'succeeded', finished_at = now(), updated_at = now(),
                    lease_owner = NULL, lease_until = NULL, last_status_code = 200
       WHERE id IN (SELECT id FROM jd WHERE state = 'running' ORDER BY lease_until LIMIT 16)
      RETURNING id, message_id, endpoint_id)
    INSERT INTO a (id, tenant_id, delivery_id, endpoint_id, message_id, attempt,
                   webhook_timestamp, status_code, duration_ms, response_size, remote_ip,
                   ttfb_ms, connect_ms)
    SELECT v7(), tenant, id, endpoint_id, message_id, 1, 1765000000, 200, 3, 2, '127.0.0.1', 2, 0
      FROM fin;
  ELSE
    INSERT INTO a (id, tenant_id, delivery_id, endpoint_id, message_id, attempt,
                   webhook_timestamp, status_code, duration_ms, response_size, remote_ip,
                   ttfb_ms, connect_ms)
    SELECT v7(), tenant, v7(), gen_random_uuid(), v7(), 1, 1765000000, 200, 3, 2, '127.0.0.1',
           2, 0 FROM generate_series(1, 16);
  END IF;
  COMMIT;
END \$\$;

-- n deliveries: fan-outs of 10 and records of 16 interleaved, so at most ~50 run at a time.
CREATE PROCEDURE run(shape text, n int) LANGUAGE plpgsql AS \$\$
DECLARE tenant uuid := gen_random_uuid();
        endpoints uuid[] := ARRAY(SELECT gen_random_uuid() FROM generate_series(1, 10));
        made int := 0; done int := 0;
BEGIN
  WHILE done < n LOOP
    IF made < n AND made - done < 50 THEN
      CALL fan_out(shape, tenant, endpoints); made := made + 10;
    ELSE
      CALL record(shape, tenant); done := done + 16;
    END IF;
  END LOOP;
END \$\$;
SQL

# measure <shape>: the backend's CPU and the WAL over one run of N deliveries.
measure() {
  psql_ $DB <<SQL
TRUNCATE j, d, a, jd;
CHECKPOINT;
SELECT pg_backend_pid() AS pid, pg_current_wal_lsn() AS lsn \gset
\set t0 \`awk '{print \$14 + \$15}' /proc/:pid/stat\`
SELECT extract(epoch FROM clock_timestamp()) AS w0 \gset
CALL run('$1', $N);
SELECT extract(epoch FROM clock_timestamp()) AS w1 \gset
\set t1 \`awk '{print \$14 + \$15}' /proc/:pid/stat\`
SELECT format('  %s: %s ms CPU, %s WAL bytes, %s commits per delivery (%s s)', rpad('$1', 7),
              round((:t1 - :t0) * 1000.0 / $TICK / $N, 3),
              round(pg_wal_lsn_diff(pg_current_wal_lsn(), :'lsn') / $N),
              round(($N / 10 + $N / 16)::numeric / $N, 2), round((:w1 - :w0)::numeric, 1));
SQL
}

for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round ($N deliveries per shape, fan-out ×10, records of 16)"
  for shape in today job attempt; do measure $shape; done
done
psql_ -c "DROP DATABASE $DB" postgres
