-- Dashboards and retention.
--
-- Three views with stable, documented columns (README, "Dashboards and
-- retention") that dashboards may read instead of the tables, a read-only
-- role `herald_dashboard` for them, and the index the payload retention needs.
-- Column names and meanings of the views are a contract like the tables':
-- add columns at the end, never rename or drop one without a new migration
-- and a note to the dashboard owners.

-- ---------------------------------------------------------------------------
-- herald_delivery_log: one row per delivery, with the outcome and duration of
-- its latest attempt, and without the payload (dashboard readers need not see
-- the data shops send). Filter on fired_at (or tenant/event/webhook_id/state
-- together with fired_at): those go straight to the indexes of deliveries.
-- ---------------------------------------------------------------------------
CREATE VIEW herald_delivery_log AS
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
FROM deliveries d
LEFT JOIN delivery_attempts a ON a.delivery_id = d.id AND a.attempt = d.attempts;

COMMENT ON VIEW herald_delivery_log IS 'One row per delivery with its latest attempt; no payload. Stable columns (README).';

-- ---------------------------------------------------------------------------
-- herald_webhook_health_hourly: per webhook (with its tenant and event) and
-- UTC hour of fired_at: how many deliveries were fired, how they stand, and
-- the attempt durations of those deliveries. success_rate is
-- succeeded / (succeeded + failed): pending and cancelled deliveries neither
-- help nor hurt it; NULL when nothing has finished.
-- ---------------------------------------------------------------------------
CREATE VIEW herald_webhook_health_hourly AS
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
    percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms)       AS p95_ms
FROM deliveries d
LEFT JOIN delivery_attempts a ON a.delivery_id = d.id
GROUP BY d.webhook_id, d.tenant, d.event, 4;

COMMENT ON VIEW herald_webhook_health_hourly IS 'Per webhook and UTC hour of fired_at: fired, outcome counts, success rate, attempt duration percentiles. Stable columns (README).';

-- ---------------------------------------------------------------------------
-- herald_target_stats: per target URL over the last 24 hours of attempts
-- (by started_at), for "slowest targets" and "most failing targets". The URL
-- is the delivery's target_url (the configured one), not the attempt's url,
-- which for GET and DELETE carries the data.
-- ---------------------------------------------------------------------------
CREATE VIEW herald_target_stats AS
SELECT
    d.target_url,
    count(DISTINCT d.webhook_id)                                      AS webhooks,
    count(*)                                                          AS attempts,
    count(*) FILTER (WHERE a.error_kind IS NOT NULL)                  AS failures,
    round((count(*) FILTER (WHERE a.error_kind IS NOT NULL))::numeric / count(*), 4)
                                                                      AS failure_rate,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms)        AS p50_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms)       AS p95_ms,
    max(a.started_at)                                                 AS last_attempt_at,
    max(a.started_at) FILTER (WHERE a.error_kind IS NOT NULL)         AS last_failure_at,
    (array_agg(coalesce(a.error_message, a.error_kind) ORDER BY a.started_at DESC)
        FILTER (WHERE a.error_kind IS NOT NULL))[1]                   AS last_error
FROM delivery_attempts a
JOIN deliveries d ON d.id = a.delivery_id
WHERE a.started_at >= now() - interval '24 hours'
GROUP BY d.target_url;

COMMENT ON VIEW herald_target_stats IS 'Per target URL over the last 24 hours of attempts: volume, failures, latency, last error. Stable columns (README).';

-- ---------------------------------------------------------------------------
-- Payload retention clears deliveries.payload of rows older than its cutoff,
-- oldest first. Without this index every batch would walk (and fetch from the
-- heap) every already-cleared row before finding one that still has a
-- payload; with it, only rows still holding a payload are visited. Cleared
-- rows drop out of it.
-- ---------------------------------------------------------------------------
CREATE INDEX deliveries_payload_fired_idx ON deliveries (fired_at) WHERE payload IS NOT NULL;

-- ---------------------------------------------------------------------------
-- The read-only role dashboards use (log in as a member of it; README).
--
-- Roles are cluster-wide while this migration runs once per database, and
-- several databases of one cluster may run it at the same time (the migration
-- advisory lock is per database). Two sessions can both see no role and both
-- CREATE it; the loser fails with duplicate_object or unique_violation, which
-- is caught. A migration user without CREATEROLE cannot create it: then the
-- migration still succeeds, and the role and its grants are left to the
-- administrator (README) unless the role already exists, in which case the
-- grants below are made anyway.
-- ---------------------------------------------------------------------------
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald_dashboard') THEN
        BEGIN
            CREATE ROLE herald_dashboard NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL; -- created by a concurrent migration of another database
            WHEN insufficient_privilege THEN
                RAISE WARNING 'cannot create role herald_dashboard (no CREATEROLE); '
                    'create it and grant it as described in the README, "Dashboards and retention"';
        END;
    END IF;

    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald_dashboard') THEN
        -- Only these: not webhooks (secret headers and signing secrets live
        -- there), not the migration history, not the resend requests.
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO herald_dashboard', current_schema());
        GRANT SELECT ON herald_delivery_log, herald_webhook_health_hourly, herald_target_stats,
            deliveries, delivery_attempts TO herald_dashboard;
    END IF;
END
$$;
