-- Resending deliveries (Admin ResendDelivery / ReplayFailed).
--
-- A resent delivery is a new delivery (new id, full schedule) that points at
-- the delivery whose data it sends again. No foreign key, for the same
-- reasons as the rest of the delivery tables (the original may be removed by
-- retention before its resend).
ALTER TABLE deliveries ADD COLUMN resent_from uuid NULL;

COMMENT ON COLUMN deliveries.resent_from IS 'The delivery this one re-sends (its data, to the same webhook); NULL for fired and test deliveries.';

-- "Which deliveries re-send this one?" Partial: almost every row is NULL.
CREATE INDEX deliveries_resent_from_idx ON deliveries (resent_from) WHERE resent_from IS NOT NULL;

-- One row per resend or replay request, so that a repeated request (a double
-- click, a retried call) answers the recorded deliveries instead of sending
-- them again.
CREATE TABLE delivery_resends (
    request_id   text        PRIMARY KEY,
    kind         text        NOT NULL CHECK (kind IN ('resend', 'replay')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivery_ids uuid[]      NOT NULL
);

COMMENT ON TABLE delivery_resends IS 'Resend and replay requests with the deliveries each one created.';
COMMENT ON COLUMN delivery_resends.request_id IS 'Chosen by the caller; a repeated id answers the recorded deliveries.';
COMMENT ON COLUMN delivery_resends.kind IS 'resend (one delivery) or replay (the failed deliveries of a webhook in a range).';
COMMENT ON COLUMN delivery_resends.created_at IS 'When the request was made.';
COMMENT ON COLUMN delivery_resends.delivery_ids IS 'The new deliveries (deliveries.id) the request created.';
