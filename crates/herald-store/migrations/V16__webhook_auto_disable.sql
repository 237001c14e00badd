-- Herald disables a webhook whose attempts have all failed for too long, or
-- whose receiver answered 410 Gone (docs/protection.md), and says why.
--
-- All three nullable without defaults, so that an older release keeps
-- working on this schema: NULL = the senders' default window, and a
-- webhook disabled by a person (or enabled) has no reason.
ALTER TABLE webhooks
    ADD COLUMN auto_disable_after_s integer CHECK (auto_disable_after_s > 0),
    ADD COLUMN disabled_reason text,
    ADD COLUMN disabled_at timestamptz;

COMMENT ON COLUMN webhooks.auto_disable_after_s IS 'Seconds every attempt may fail before Herald disables the webhook; NULL = the senders'' default.';
COMMENT ON COLUMN webhooks.disabled_reason IS 'Why Herald disabled the webhook; NULL when enabled or disabled by a person. Cleared on enabling.';
COMMENT ON COLUMN webhooks.disabled_at IS 'When Herald disabled the webhook.';
