WITH locked AS (SELECT pg_try_advisory_xact_lock(7274693712345) AS ok),
gone AS (
    DELETE FROM scheduled_deliveries WHERE ctid = ANY(ARRAY(
        SELECT s.ctid FROM scheduled_deliveries s, locked
        WHERE locked.ok AND s.next_attempt_at <= now()
          AND EXISTS (SELECT 1 FROM deliveries d WHERE d.id = s.id)
        LIMIT 64))
    RETURNING 1
)
SELECT count(*) FROM gone;
