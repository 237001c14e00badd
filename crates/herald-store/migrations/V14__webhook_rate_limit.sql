-- Per-webhook rate limits that hold for the whole deployment
-- (docs/protection.md).
--
-- A webhook may have a rate (requests per second) and a burst; both NULL =
-- no limit of its own (the senders' default applies). Nullable columns
-- without defaults, so that a release from before rate limits keeps
-- creating and reading webhooks during a rolling upgrade.
ALTER TABLE webhooks
    ADD COLUMN rate_limit_per_second integer CHECK (rate_limit_per_second > 0),
    ADD COLUMN rate_limit_burst integer CHECK (rate_limit_burst > 0),
    ADD CONSTRAINT webhooks_rate_limit_whole
        CHECK ((rate_limit_per_second IS NULL) = (rate_limit_burst IS NULL));

COMMENT ON COLUMN webhooks.rate_limit_per_second IS 'Requests per second the whole deployment may send this webhook; NULL = the senders'' default.';
COMMENT ON COLUMN webhooks.rate_limit_burst IS 'Most requests sent at once after a quiet spell (the token bucket''s size).';

-- One token bucket per rate-limited webhook, shared by every sender: a
-- sender takes a batch of tokens with one statement (the row lock orders
-- the senders), and the bucket refills by the database's own clock, so the
-- limit holds however many senders run and whichever of them holds the
-- deliveries. UNLOGGED: the row changes a few times a second per webhook
-- and losing it in a crash only refills the bucket, which the limit allows
-- anyway; it costs no WAL and is not copied to replicas.
CREATE UNLOGGED TABLE webhook_rate_buckets (
    webhook_id uuid PRIMARY KEY REFERENCES webhooks (id) ON DELETE CASCADE,
    -- Tokens left after the last take (fractional: the refill is continuous).
    tokens double precision NOT NULL,
    -- When `tokens` was computed, by clock_timestamp() of this database.
    updated_at timestamptz NOT NULL,
    -- What the last take gave (read back by the taker in the same statement).
    granted integer NOT NULL
);

COMMENT ON TABLE webhook_rate_buckets IS 'Token buckets of rate-limited webhooks, shared by all senders (unlogged: a lost bucket refills).';
