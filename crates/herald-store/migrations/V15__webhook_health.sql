-- Circuit breakers per webhook (docs/protection.md).
--
-- A webhook may override the senders' breaker defaults: consecutive
-- failures that open it, and its first cool-down. NULL = the default, so
-- that an older release keeps working on this schema.
ALTER TABLE webhooks
    ADD COLUMN breaker_failures integer CHECK (breaker_failures > 0),
    ADD COLUMN breaker_cooldown_ms integer CHECK (breaker_cooldown_ms > 0);

COMMENT ON COLUMN webhooks.breaker_failures IS 'Consecutive failed attempts (timeouts, connection errors, 5xx, 408, 429) that open the breaker; NULL = the senders'' default.';
COMMENT ON COLUMN webhooks.breaker_cooldown_ms IS 'The breaker''s first cool-down; NULL = the senders'' default.';

-- A webhook's health as every sender shares it: written only when an
-- attempt fails, or succeeds after failures, so a healthy webhook costs no
-- write here. A row exists only for webhooks that have failed since they
-- were created.
CREATE TABLE webhook_health (
    webhook_id uuid PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
    -- Failed attempts in a row that count for the breaker.
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- The first failed attempt since the last success (NULL: the last one
    -- succeeded).
    failing_since timestamptz,
    breaker text NOT NULL DEFAULT 'closed' CHECK (breaker IN ('closed', 'open', 'half_open')),
    -- When the breaker opened in this outage.
    opened_at timestamptz,
    -- When the current cool-down ends.
    open_until timestamptz,
    -- The current cool-down (doubles after each failed probe).
    cooldown_ms bigint,
    -- While half open: until when the one probe attempt is out.
    probe_until timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What every sender reads each second: the webhooks that are failing or
-- whose breaker is not closed.
CREATE INDEX webhook_health_troubled_idx ON webhook_health (webhook_id)
    WHERE breaker <> 'closed' OR failing_since IS NOT NULL;

COMMENT ON TABLE webhook_health IS 'Per-webhook failure streak and circuit breaker, shared by all senders.';
