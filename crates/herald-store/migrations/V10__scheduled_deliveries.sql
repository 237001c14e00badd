-- Deliveries are in the log as soon as Fire answered.
--
-- Ingest records every delivery it published as 'scheduled' (no attempt
-- yet, next_attempt_at = when the first attempt is due), asynchronously and
-- in batches after the broker's confirm, so that Fire never waits for
-- Postgres. Its insert never overwrites a row: when the sender's first
-- attempt is written first (or ingest could not reach Postgres), the row is
-- the sender's, as before.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('scheduled', 'pending', 'succeeded', 'failed', 'cancelled'));

COMMENT ON COLUMN deliveries.state IS 'scheduled (fired, no attempt yet), pending (attempted, another attempt due), succeeded, failed or cancelled.';
COMMENT ON COLUMN deliveries.next_attempt_at IS 'When the next attempt is due, while scheduled or pending.';

-- The hourly health view counts scheduled deliveries in a column of their
-- own, added at the end as the view's contract requires.
CREATE OR REPLACE VIEW herald_webhook_health_hourly AS
SELECT
    d.webhook_id,
    d.tenant,
    d.event,
    date_trunc('hour', d.fired_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
    count(DISTINCT d.id)                                              AS fired,
    count(DISTINCT d.id) FILTER (WHERE d.state = 'succeeded')         AS succeeded,
    count(DISTINCT d.id) FILTER (WHERE d.state = 'failed')            AS failed,
    count(DISTINCT d.id) FILTER (WHERE d.state = 'cancelled')         AS cancelled,
    count(DISTINCT d.id) FILTER (WHERE d.state = 'pending')           AS pending,
    round(
        (count(DISTINCT d.id) FILTER (WHERE d.state = 'succeeded'))::numeric
        / nullif(count(DISTINCT d.id) FILTER (WHERE d.state IN ('succeeded', 'failed')), 0),
        4
    )                                                                 AS success_rate,
    count(a.attempt)                                                  AS attempts,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms)        AS p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms)       AS p95_ms,
    count(DISTINCT d.id) FILTER (WHERE d.state = 'scheduled')         AS scheduled
FROM deliveries d
LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
GROUP BY d.webhook_id, d.tenant, d.event, 4;
