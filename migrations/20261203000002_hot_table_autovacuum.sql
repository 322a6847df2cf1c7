-- The ledger's hot tables change most of their rows every few seconds under load: every job row
-- is updated twice or more (claimed, finished), every delivery once. With the default thresholds
-- (20 % of the table changed) autovacuum comes late on a large ledger, and on a fresh one the
-- planner plans with no statistics at all until the first ANALYZE. Vacuum and analyze these
-- tables after ~2 % of their rows changed, without the cost-based throttle, so dead rows are
-- reclaimed while the burn-down runs and plans follow the table as it grows
-- (docs/benchmarks.md, "burn-down").
ALTER TABLE jobs SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE webhook_deliveries SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
-- Few rows, updated by every dispatcher pass and breaker change: vacuum them often.
ALTER TABLE dispatch_groups SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0);
