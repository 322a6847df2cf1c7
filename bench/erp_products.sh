# The ERP table the sync benchmarks read (sourced by bench/sync.sh and bench/store_floor.sh):
# `erp.products`, text key, 7 columns, no index but the primary key.
PRODUCTS="sku text PRIMARY KEY, name text NOT NULL, category text NOT NULL, price numeric(12,2) NOT NULL,
       quantity integer NOT NULL, active boolean NOT NULL, updated_at timestamptz NOT NULL"

# seed_products <erp database> <copy database> <rows>: fresh databases; the ERP's table filled,
# the copy's empty (the baseline `COPY`'s target).
seed_products() {
  local erp=$1 copy=$2 rows=$3 d
  for d in "$erp" "$copy"; do
    psql -q -At -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $d" postgres 2>/dev/null
    psql -q -At -h 127.0.0.1 -U postgres -c "CREATE DATABASE $d" postgres
  done
  psql -q -At -h 127.0.0.1 -U postgres "$erp" <<SQL
CREATE SCHEMA erp;
CREATE TABLE erp.products ($PRODUCTS);
INSERT INTO erp.products
SELECT 'SKU-' || lpad(i::text, 8, '0'), 'Product number ' || i, 'category-' || (i % 50),
       (i % 10000) / 100.0 + 1, i % 1000, i % 7 <> 0, now() - interval '1 hour' + i * interval '1 ms'
  FROM generate_series(1, $rows) i;
ANALYZE erp.products;
SQL
  psql -q -At -h 127.0.0.1 -U postgres "$copy" -c "CREATE SCHEMA erp" \
    -c "CREATE TABLE erp.products ($PRODUCTS)"
}
