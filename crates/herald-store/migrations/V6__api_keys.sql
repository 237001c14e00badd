-- API keys of the gRPC API (README, "Authentication").
--
-- Only the SHA-256 of a token is stored, never the token: whoever reads this
-- table (a backup, a replica, a dashboard gone wrong) learns nothing that
-- lets them call the API. A token has 256 random bits, so the fast hash
-- cannot be reversed by guessing.
--
-- Not a dashboard table: herald_dashboard gets no grant on it.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL CHECK (name <> ''),
    token_prefix text        NOT NULL,
    token_hash   bytea       NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    scopes       text[]      NOT NULL
                 CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['fire', 'read', 'admin']),
    tenant       text        NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz NULL
);

COMMENT ON TABLE api_keys IS 'API keys of the gRPC API; tokens are stored only as SHA-256 hashes.';
COMMENT ON COLUMN api_keys.id IS 'UUIDv7, assigned by Herald; what RevokeApiKey takes.';
COMMENT ON COLUMN api_keys.name IS 'Who or what uses the key, for operators.';
COMMENT ON COLUMN api_keys.token_prefix IS 'The first 12 characters of the token (hrk_ and 8 more), to recognise it.';
COMMENT ON COLUMN api_keys.token_hash IS 'SHA-256 of the whole token.';
COMMENT ON COLUMN api_keys.scopes IS 'fire, read and/or admin; admin implies the others.';
COMMENT ON COLUMN api_keys.tenant IS 'The only tenant the key may act for; NULL = every tenant, empty = the default tenant.';
COMMENT ON COLUMN api_keys.created_at IS 'When the key was created.';
COMMENT ON COLUMN api_keys.revoked_at IS 'When the key was revoked; a revoked key is refused.';

-- Every ingest keeps the active keys in memory and listens on herald_api_keys,
-- so that a revocation is refused by every replica within about a second.
CREATE FUNCTION herald_notify_api_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('herald_api_keys', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT
    EXECUTE FUNCTION herald_notify_api_keys();
