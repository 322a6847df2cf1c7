#!/usr/bin/env bash
# The floor of the sync goal of docs/benchmarks.md (issue #13): how long the record store's
# write alone takes, at its leanest, next to the whole `COPY … TO STDOUT | COPY … FROM STDIN`
# pipeline the full sync is measured against. No Switchyard process runs: 100,000 rows shaped
# as bench/sync.sh seeds them are written once as the store's records (key, JSON, SHA-256) to
# a local file, then `COPY`'d from that file into tables of several shapes (no read from the
# source, no mapping, no hashing, no upsert: every shape's time is a lower bound on a sync's).
# Usage: bench/store_floor.sh [rows] [rounds]   (defaults 100000 and 2)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/erp_products.sh
ROWS=${1:-100000}
ROUNDS=${2:-2}
ERP=switchyard_floor_erp
COPY_DB=switchyard_floor_copy
STORE=switchyard_floor_store
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
psql_() { psql -q -At -h 127.0.0.1 -U postgres "$@"; }
now_ms() { date +%s%3N; }
seed_products $ERP $COPY_DB "$ROWS"
psql_ -c "DROP DATABASE IF EXISTS $STORE" postgres 2>/dev/null
psql_ -c "CREATE DATABASE $STORE" postgres
psql_ $ERP -c "COPY (SELECT p.* FROM erp.products p) TO STDOUT" > "$DIR/typed.tsv"
psql_ $ERP -c "COPY (SELECT p.*, sha256(convert_to(row_to_json(p)::text, 'UTF8'))
                       FROM erp.products p) TO STDOUT" > "$DIR/typed_hash.tsv"
psql_ $ERP -c "COPY (SELECT '11111111-1111-1111-1111-111111111111', 'live', 'products', sku,
                            row_to_json(p), sha256(convert_to(row_to_json(p)::text, 'UTF8'))
                       FROM erp.products p) TO STDOUT" > "$DIR/store.tsv"
psql_ $ERP -c "COPY (SELECT 7, sku, row_to_json(p), sha256(convert_to(row_to_json(p)::text, 'UTF8'))
                       FROM erp.products p) TO STDOUT" > "$DIR/scoped.tsv"

# shape <label> <DDL> <columns> <file>: COPY the file into a fresh table of that shape.
shape() {
  psql_ $STORE -c "DROP TABLE IF EXISTS r" -c "$2" >/dev/null
  local t0; t0=$(now_ms)
  psql_ $STORE -c "COPY r ($3) FROM STDIN" < "$DIR/$4"
  echo "  $1: $(( $(now_ms) - t0 )) ms"
}
STORE_COLS="tenant_id uuid NOT NULL, mode text NOT NULL, entity text NOT NULL, key text NOT NULL,
  data jsonb NOT NULL, hash bytea NOT NULL, configuration_id uuid, seen_run_id uuid,
  deleted_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, mode, entity, key)"
scoped() { echo "scope int NOT NULL, key text NOT NULL, data $1 NOT NULL, hash bytea NOT NULL,
  seen_run_id uuid, deleted_at timestamptz, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (scope, key)"; }
for round in $(seq 1 "$ROUNDS"); do
  echo "## round $round"
  psql_ $COPY_DB -c "TRUNCATE erp.products"
  t0=$(now_ms)
  psql_ $ERP -c "COPY (SELECT * FROM erp.products) TO STDOUT" | psql_ $COPY_DB -c "COPY erp.products FROM STDIN"
  echo "  copy pipeline (the goal's baseline): $(( $(now_ms) - t0 )) ms"
  shape "sync_records as it is (jsonb, 4-column key, change index)" \
    "CREATE TABLE r ($STORE_COLS); CREATE INDEX ON r (tenant_id, mode, entity, updated_at, key)" \
    "tenant_id, mode, entity, key, data, hash" store.tsv
  shape "sync_records, primary key only" "CREATE TABLE r ($STORE_COLS)" \
    "tenant_id, mode, entity, key, data, hash" store.tsv
  shape "int scope + key, jsonb, change index" \
    "CREATE TABLE r ($(scoped jsonb)); CREATE INDEX ON r (scope, updated_at, key)" "scope, key, data, hash" scoped.tsv
  shape "int scope + key, json (unparsed), change index" \
    "CREATE TABLE r ($(scoped json)); CREATE INDEX ON r (scope, updated_at, key)" "scope, key, data, hash" scoped.tsv
  shape "int scope + key, json (unparsed), primary key only" \
    "CREATE TABLE r ($(scoped json))" "scope, key, data, hash" scoped.tsv
  shape "typed columns, primary key only (the copy's own target)" \
    "CREATE TABLE r ($PRODUCTS)" "sku, name, category, price, quantity, active, updated_at" typed.tsv
  shape "typed columns + hash + change index" \
    "CREATE TABLE r ($PRODUCTS, _hash bytea, _updated timestamptz NOT NULL DEFAULT now()); CREATE INDEX ON r (_updated, sku)" \
    "sku, name, category, price, quantity, active, updated_at, _hash" typed_hash.tsv
done
for d in $ERP $COPY_DB $STORE; do psql_ -c "DROP DATABASE $d" postgres; done
