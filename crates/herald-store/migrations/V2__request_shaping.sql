-- Request shaping and trust (body modes, secret headers, signatures).
--
-- Secret values (secret headers, signing secrets) are stored sealed: either
-- "enc:v1:<base64 nonce+AES-256-GCM ciphertext>" when the deployment sets
-- HERALD_ENCRYPTION_KEY, or "plain:<value>" when it does not. They live only
-- in `webhooks`, which dashboards never read.
ALTER TABLE webhooks
    ADD COLUMN body_mode text NOT NULL DEFAULT 'raw'
        CHECK (body_mode IN ('raw', 'template', 'json')),
    ADD COLUMN content_type text NULL,
    ADD COLUMN secret_headers text NULL,
    ADD COLUMN signing_secret text NULL,
    ADD COLUMN previous_signing_secret text NULL,
    ADD COLUMN previous_secret_expires_at timestamptz NULL;

COMMENT ON COLUMN webhooks.body_mode IS 'raw (data as fired), template (rendered body_template) or json (data plus envelope)';
COMMENT ON COLUMN webhooks.content_type IS 'Content-Type override; NULL follows the body mode';
COMMENT ON COLUMN webhooks.secret_headers IS 'sealed JSON object of write-only header values';
COMMENT ON COLUMN webhooks.signing_secret IS 'sealed Standard Webhooks secret (whsec_...); NULL = unsigned';
COMMENT ON COLUMN webhooks.previous_signing_secret IS 'sealed secret before the last rotation, signing until previous_secret_expires_at';
