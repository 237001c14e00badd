-- Idempotent Fire (README, "Idempotent Fire").
--
-- One row per (tenant, idempotency key) used in a Fire call. Ingest writes the
-- row with the delivery ids it is about to publish *before* publishing, in a
-- statement of its own, so that a call that crashes or fails half-way leaves
-- the ids behind and its retry publishes the same ids again (receivers
-- de-duplicate on the Webhook-Id header) instead of new ones.
--
-- Not a dashboard table: herald_dashboard gets no grant on it.
CREATE TABLE fire_idempotency (
    tenant       text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    webhook_ids  uuid[]      NOT NULL,
    delivery_ids uuid[]      NOT NULL,
    state        text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'confirmed')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant, key),
    CHECK (cardinality(webhook_ids) = cardinality(delivery_ids))
);

-- Retention deletes expired rows in batches, oldest first.
CREATE INDEX fire_idempotency_expires_idx ON fire_idempotency (expires_at);

COMMENT ON TABLE fire_idempotency IS 'Idempotency keys of Fire calls with the deliveries each one created; read only within its window.';
COMMENT ON COLUMN fire_idempotency.tenant IS 'Tenant of the Fire call; a key is scoped to its tenant.';
COMMENT ON COLUMN fire_idempotency.key IS 'FireRequest.idempotency_key, chosen by the caller.';
COMMENT ON COLUMN fire_idempotency.request_hash IS 'SHA-256 of event, payload kind and payload (herald_core::idempotency::fire_request_hash); a repeat with another hash is refused.';
COMMENT ON COLUMN fire_idempotency.webhook_ids IS 'Webhooks the call delivers to, in the order of delivery_ids.';
COMMENT ON COLUMN fire_idempotency.delivery_ids IS 'Delivery ids of the call (deliveries.id once the sender wrote them), one per webhook_ids entry.';
COMMENT ON COLUMN fire_idempotency.state IS 'pending: the deliveries may not all be queued yet (a retry publishes them again, same ids); confirmed: the broker confirmed every one.';
COMMENT ON COLUMN fire_idempotency.created_at IS 'When the key was first used (also the fired_at of its deliveries).';
COMMENT ON COLUMN fire_idempotency.confirmed_at IS 'When the broker had confirmed every delivery; NULL while pending.';
COMMENT ON COLUMN fire_idempotency.expires_at IS 'End of the key''s window (created_at + HERALD_IDEMPOTENCY_WINDOW_HOURS of the ingest that wrote it); afterwards the key counts as unused and retention deletes the row.';
