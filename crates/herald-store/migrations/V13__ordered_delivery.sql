-- Ordered delivery per key (docs/ordering.md).
--
-- `ordered` marks a webhook whose deliveries that share an ordering key are
-- attempted strictly in Fire order; `ordered_on_failure` says what such a
-- key does after one of its deliveries failed for good. Both have defaults,
-- so a release from before ordering keeps creating and reading webhooks
-- during a rolling upgrade (they are simply not ordered).
ALTER TABLE webhooks
    ADD COLUMN ordered boolean NOT NULL DEFAULT false,
    ADD COLUMN ordered_on_failure text NOT NULL DEFAULT 'stop'
        CHECK (ordered_on_failure IN ('stop', 'continue'));

COMMENT ON COLUMN webhooks.ordered IS 'Deliveries that share an ordering key are attempted strictly in Fire order.';
COMMENT ON COLUMN webhooks.ordered_on_failure IS 'stop: after a final failure the key''s later deliveries are held (cancelled) until an operator resumes the key; continue: the next one goes ahead.';

-- The key an ordered delivery was fired with; NULL for every other one.
ALTER TABLE deliveries ADD COLUMN ordering_key text;

COMMENT ON COLUMN deliveries.ordering_key IS 'The ordering key of a delivery to an ordered webhook; NULL otherwise.';

-- Keys stopped by a final failure (`ordered_on_failure = stop`), until an
-- operator resumes them. Read only by the sender that owns the key's
-- partition, and only for ordered webhooks that stop.
CREATE TABLE ordering_stops (
    webhook_id uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    ordering_key text NOT NULL,
    -- The delivery whose final failure stopped the key.
    delivery_id uuid NOT NULL,
    stopped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, ordering_key)
);

COMMENT ON TABLE ordering_stops IS 'Ordering keys stopped by a final failure; a row goes when an operator resumes the key.';

-- GetDelivery and the log read through this view; it gains the key at the
-- end (a delivery not attempted yet shows none).
CREATE OR REPLACE VIEW deliveries_with_scheduled AS
SELECT id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at, state,
    attempts, last_status_code, last_error, last_attempt_at, next_attempt_at, finished_at,
    resent_from, ordering_key
FROM deliveries
UNION ALL
SELECT s.id, s.tenant, s.event, s.webhook_id, s.target_url, s.method, s.payload, s.payload_kind,
    s.fired_at, 'scheduled'::text, 0, NULL::integer, NULL::text, NULL::timestamptz,
    s.next_attempt_at, NULL::timestamptz, s.resent_from, NULL::text
FROM scheduled_deliveries s
WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = s.id);
