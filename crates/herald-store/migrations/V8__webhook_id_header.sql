-- The delivery-id header per webhook.
--
-- One fleet of senders serves receivers that expect the delivery id in
-- different headers (PARTS SOFT's PS-WEBHOOK_EVENT-ID, Standard Webhooks'
-- webhook-id), so the name is a webhook setting; NULL keeps the senders'
-- default (HERALD_ID_HEADER). The name is stored as the user wrote it:
-- senders send it in that case over HTTP/1.1.
ALTER TABLE webhooks ADD COLUMN id_header text NULL;

COMMENT ON COLUMN webhooks.id_header IS 'Header carrying the delivery id, as written; NULL = the senders'' default (HERALD_ID_HEADER)';
