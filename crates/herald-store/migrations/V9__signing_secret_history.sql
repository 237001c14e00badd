-- Each earlier signing secret signs until its own overlap ends.
--
-- previous_signing_secret and previous_secret_expires_at keep the newest
-- earlier secret (services of the previous version read only those); the
-- ones before it, still inside their own overlaps, are kept here, newest
-- first, at most four (five earlier secrets in all). Sealed like the other
-- secrets: one sealed JSON array of {"secret": "whsec_...", "expires_at_unix_us": n}.
ALTER TABLE webhooks ADD COLUMN older_signing_secrets text NULL;

COMMENT ON COLUMN webhooks.older_signing_secrets IS 'sealed JSON array of the secrets before previous_signing_secret that still sign, newest first, each with its own end';
