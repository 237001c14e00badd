-- Whether a webhook's requests carry W3C Trace Context.
--
-- A webhook may opt in to receive `traceparent` (W3C Trace Context) on its
-- requests, so that the receiver's own spans join the trace of the attempt
-- that called it. Off by default: a receiver that does not trace gets
-- nothing from the header, and a trace id tells a receiver about the
-- sender's traffic (which attempts belong together, and when the senders
-- sample). Existing webhooks keep sending what they sent before.
ALTER TABLE webhooks ADD COLUMN trace_context boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN webhooks.trace_context IS 'Send W3C traceparent on this webhook''s requests (opt-in; default false)';
