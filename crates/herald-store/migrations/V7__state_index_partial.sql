-- The state index holds only deliveries that did not succeed.
--
-- Nearly every delivery succeeds, most at the first attempt, and the sender
-- then writes its row once, already 'succeeded'. Indexing those rows by state
-- cost one more B-tree insertion per delivery (one of the eight a delivery
-- writes) for a filter that never needs it: listing succeeded deliveries is
-- listing almost all of them, which `deliveries_fired_idx` (or the tenant,
-- event and webhook indexes) serves with a cheap filter. The states dashboards
-- look for — failed, pending, cancelled — stay indexed. Measured with pgbench
-- on the writer's statement (64 rows, four connections): about 8 % more
-- batches per second of Postgres CPU.
--
-- A query uses this index when the planner can see that its state is not
-- 'succeeded': a literal (`state = 'failed'`) or a parameter planned with its
-- value (every ad-hoc and unnamed prepared statement).
DROP INDEX deliveries_state_fired_idx;
CREATE INDEX deliveries_state_fired_idx ON deliveries (state, fired_at DESC)
    WHERE state <> 'succeeded';
