-- Herald's initial schema: webhook configuration, and the delivery and
-- attempt tables that dashboards read. Table and column names are a stable
-- contract with those dashboards; change them only with a new migration and
-- a note to the dashboard owners.

-- ---------------------------------------------------------------------------
-- Webhook configuration.
-- ---------------------------------------------------------------------------

CREATE TABLE webhooks (
    id            uuid        PRIMARY KEY,
    tenant        text        NOT NULL DEFAULT '',
    event         text        NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    method        text        NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    url           text        NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    body_template text        NULL,
    timeout_ms    integer     NOT NULL DEFAULT 3000 CHECK (timeout_ms > 0),
    description   text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Fire looks webhooks up by (tenant, event), and Admin lists them that way.
CREATE INDEX webhooks_tenant_event_idx ON webhooks (tenant, event);

COMMENT ON TABLE webhooks IS 'Webhook configuration: which URL to call for an event of a tenant, and how.';
COMMENT ON COLUMN webhooks.id IS 'UUIDv7, assigned by Herald.';
COMMENT ON COLUMN webhooks.tenant IS 'Shop or subshop; the empty string is the default tenant.';
COMMENT ON COLUMN webhooks.event IS 'Event name, e.g. order.created.';
COMMENT ON COLUMN webhooks.enabled IS 'Disabled webhooks get no new deliveries; pending ones are cancelled.';
COMMENT ON COLUMN webhooks.method IS 'HTTP method: GET, POST, PUT, PATCH or DELETE.';
COMMENT ON COLUMN webhooks.url IS 'Target URL.';
COMMENT ON COLUMN webhooks.headers IS 'Custom request headers as a JSON object of name to value.';
COMMENT ON COLUMN webhooks.body_template IS 'Request body template; NULL sends the fired data as it is.';
COMMENT ON COLUMN webhooks.timeout_ms IS 'Time the target has to answer one attempt, in milliseconds.';
COMMENT ON COLUMN webhooks.description IS 'Free text for operators.';
COMMENT ON COLUMN webhooks.created_at IS 'When the webhook was created.';
COMMENT ON COLUMN webhooks.updated_at IS 'When the webhook was last changed.';

-- Every service keeps the webhook configuration in memory and listens on the
-- channel herald_config. A statement-level trigger sends one notification per
-- changing statement (Postgres also folds identical notifications of one
-- transaction into one), so a bulk change costs a single reload rather than
-- one per row. TRUNCATE is included because it fires no row-level DELETE.
CREATE FUNCTION herald_notify_config() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_config', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER webhooks_notify_config
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON webhooks
    FOR EACH STATEMENT
    EXECUTE FUNCTION herald_notify_config();

-- ---------------------------------------------------------------------------
-- Deliveries and their attempts.
--
-- There are deliberately no foreign keys here: a delivery outlives the webhook
-- it was made for (the history must stay readable after a webhook is deleted),
-- and attempts are written in large batches where checking a reference per row
-- would cost throughput and add lock traffic on the parent rows.
-- ---------------------------------------------------------------------------

CREATE TABLE deliveries (
    id               uuid        PRIMARY KEY,
    tenant           text        NOT NULL,
    event            text        NOT NULL,
    webhook_id       uuid        NOT NULL,
    target_url       text        NOT NULL,
    method           text        NOT NULL,
    payload          text        NULL,
    payload_kind     text        NOT NULL CHECK (payload_kind IN ('text', 'json')),
    fired_at         timestamptz NOT NULL,
    state            text        NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    last_status_code integer     NULL,
    last_error       text        NULL,
    last_attempt_at  timestamptz NULL,
    next_attempt_at  timestamptz NULL,
    finished_at      timestamptz NULL
);

-- Indexes for the dashboards' usual questions: recent deliveries of an event,
-- of a webhook, in a state, and overall.
CREATE INDEX deliveries_tenant_event_fired_idx ON deliveries (tenant, event, fired_at DESC);
CREATE INDEX deliveries_webhook_fired_idx ON deliveries (webhook_id, fired_at DESC);
CREATE INDEX deliveries_state_fired_idx ON deliveries (state, fired_at DESC);
CREATE INDEX deliveries_fired_idx ON deliveries (fired_at DESC);

COMMENT ON TABLE deliveries IS 'One row per delivery (one fired event for one webhook), updated after every attempt.';
COMMENT ON COLUMN deliveries.id IS 'UUIDv7 returned by Fire; the same across all attempts.';
COMMENT ON COLUMN deliveries.tenant IS 'Tenant the event was fired for.';
COMMENT ON COLUMN deliveries.event IS 'Event name that was fired.';
COMMENT ON COLUMN deliveries.webhook_id IS 'Webhook the delivery is for; it may have been deleted since.';
COMMENT ON COLUMN deliveries.target_url IS 'Target URL at fire time.';
COMMENT ON COLUMN deliveries.method IS 'HTTP method at fire time.';
COMMENT ON COLUMN deliveries.payload IS 'The data as fired (NUL characters removed); NULL when none was given.';
COMMENT ON COLUMN deliveries.payload_kind IS 'text or json: how the data was given to Fire.';
COMMENT ON COLUMN deliveries.fired_at IS 'When Fire accepted the event.';
COMMENT ON COLUMN deliveries.state IS 'pending, succeeded, failed or cancelled.';
COMMENT ON COLUMN deliveries.attempts IS 'Number of attempts made so far.';
COMMENT ON COLUMN deliveries.last_status_code IS 'HTTP status of the last attempt, if the target answered.';
COMMENT ON COLUMN deliveries.last_error IS 'Error of the last attempt, if it failed.';
COMMENT ON COLUMN deliveries.last_attempt_at IS 'When the last attempt started.';
COMMENT ON COLUMN deliveries.next_attempt_at IS 'When the next attempt is due, while pending.';
COMMENT ON COLUMN deliveries.finished_at IS 'When the delivery reached a final state.';

CREATE TABLE delivery_attempts (
    delivery_id      uuid        NOT NULL,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      integer     NOT NULL,
    url              text        NOT NULL,
    status_code      integer     NULL,
    error_kind       text        NULL,
    error_message    text        NULL,
    response_excerpt text        NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE INDEX delivery_attempts_started_idx ON delivery_attempts (started_at DESC);

COMMENT ON TABLE delivery_attempts IS 'One row per HTTP attempt of a delivery; never updated.';
COMMENT ON COLUMN delivery_attempts.delivery_id IS 'The delivery (deliveries.id) this attempt belongs to.';
COMMENT ON COLUMN delivery_attempts.attempt IS '1-based attempt number.';
COMMENT ON COLUMN delivery_attempts.started_at IS 'When the request was started.';
COMMENT ON COLUMN delivery_attempts.duration_ms IS 'Time until the answer or the failure, in milliseconds.';
COMMENT ON COLUMN delivery_attempts.url IS 'The URL actually requested (with the data, for GET and DELETE).';
COMMENT ON COLUMN delivery_attempts.status_code IS 'HTTP status, if the target answered.';
COMMENT ON COLUMN delivery_attempts.error_kind IS 'http_status, timeout, connection or invalid_request; NULL on success.';
COMMENT ON COLUMN delivery_attempts.error_message IS 'Human-readable reason of the failure.';
COMMENT ON COLUMN delivery_attempts.response_excerpt IS 'Start of the response body, for diagnosis.';
