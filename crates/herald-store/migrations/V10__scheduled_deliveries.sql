-- Deliveries are in the log as soon as Fire answered.
--
-- Ingest records every delivery it published, right after the broker's
-- confirm and without Fire waiting for it, in `scheduled_deliveries`: one
-- row per delivery that has no row in `deliveries` yet. A table of its own,
-- with its primary key as the only index, because ingest writes a row for
-- every Fire: an insert here costs Postgres about a quarter of one into
-- `deliveries` with its four secondary indexes, and the sender's first write
-- stays a plain insert instead of an update of every index. Ingest removes a
-- row here once its delivery has a row in `deliveries`; until then (and for
-- the rare row written after the sender's), the view below shows each
-- delivery once, the sender's row first.
CREATE TABLE scheduled_deliveries (
    id              uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    event           text        NOT NULL,
    webhook_id      uuid        NOT NULL,
    target_url      text        NOT NULL,
    method          text        NOT NULL,
    payload         text        NULL,
    payload_kind    text        NOT NULL,
    fired_at        timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    resent_from     uuid        NULL
);

COMMENT ON TABLE scheduled_deliveries IS 'Deliveries fired and queued that have no row in deliveries yet (written by ingest, removed once the sender wrote the delivery).';
COMMENT ON COLUMN scheduled_deliveries.next_attempt_at IS 'When the first attempt is due.';

-- Every delivery once: the sender's row, or else the scheduled one (state
-- 'scheduled', no attempt). Filters on its columns reach both tables' rows,
-- and a filter on another state leaves the scheduled part out at planning.
CREATE VIEW deliveries_with_scheduled AS
SELECT id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at, state,
    attempts, last_status_code, last_error, last_attempt_at, next_attempt_at, finished_at,
    resent_from
FROM deliveries
UNION ALL
SELECT s.id, s.tenant, s.event, s.webhook_id, s.target_url, s.method, s.payload, s.payload_kind,
    s.fired_at, 'scheduled'::text, 0, NULL::integer, NULL::text, NULL::timestamptz,
    s.next_attempt_at, NULL::timestamptz, s.resent_from
FROM scheduled_deliveries s
WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = s.id);

COMMENT ON VIEW deliveries_with_scheduled IS 'deliveries plus the scheduled deliveries that have no row there yet (state scheduled).';

-- The dashboards' views show scheduled deliveries too; their columns stay as
-- they were, the hourly view gains a scheduled count at the end.
CREATE OR REPLACE VIEW herald_delivery_log AS
SELECT
    d.id,
    d.tenant,
    d.event,
    d.webhook_id,
    d.target_url,
    d.method,
    d.state,
    d.attempts,
    d.last_status_code,
    d.last_error,
    a.error_kind      AS last_error_kind,
    d.fired_at,
    d.last_attempt_at,
    d.next_attempt_at,
    d.finished_at,
    a.duration_ms     AS last_duration_ms,
    d.payload_kind,
    d.resent_from
FROM deliveries_with_scheduled d
LEFT JOIN delivery_attempts a ON a.delivery_id = d.id AND a.attempt = d.attempts;

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
FROM deliveries_with_scheduled d
LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
GROUP BY d.webhook_id, d.tenant, d.event, 4;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald_dashboard') THEN
        GRANT SELECT ON scheduled_deliveries, deliveries_with_scheduled TO herald_dashboard;
    END IF;
END
$$;
