-- OAuth 2.1 authorization server state. Every secret (session ids, authorization codes,
-- refresh tokens) is stored only as its SHA-256; signing keys' private halves are encrypted
-- under the master secret.

CREATE TABLE oauth_clients (
    client_id           text        PRIMARY KEY,
    metadata            jsonb       NOT NULL,
    -- SHA-256 of the normalised metadata and the registering IP bucket: identical
    -- re-registrations get the existing client back.
    dedup_key           bytea       NOT NULL,
    client_name         text,
    redirect_uris       text[]      NOT NULL,
    registered_ip       text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    -- NULL until one authorization completes; such clients are removed after 24 hours.
    first_authorized_at timestamptz
);
CREATE INDEX oauth_clients_dedup ON oauth_clients (dedup_key);
CREATE INDEX oauth_clients_unused ON oauth_clients (created_at) WHERE first_authorized_at IS NULL;

-- New clients per IP bucket, for the hourly registration limit (shared by every replica).
CREATE TABLE registration_events (
    ip_bucket  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX registration_events_bucket ON registration_events (ip_bucket, created_at);

CREATE TABLE browser_sessions (
    id_hash      bytea       PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX browser_sessions_user ON browser_sessions (user_id);

-- Failed sign-ins, for throttling per IP and per account.
CREATE TABLE sign_in_failures (
    ip_bucket   text        NOT NULL,
    email_lower text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sign_in_failures_ip ON sign_in_failures (ip_bucket, created_at);
CREATE INDEX sign_in_failures_email ON sign_in_failures (email_lower, created_at);

-- A consent screen shown to one browser session: single use, short-lived, its CSRF token
-- bound to the session.
CREATE TABLE consent_transactions (
    id             uuid        PRIMARY KEY,
    session_hash   bytea       NOT NULL REFERENCES browser_sessions (id_hash) ON DELETE CASCADE,
    csrf_hash      bytea       NOT NULL,
    client_id      text        NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    redirect_uri   text        NOT NULL,
    state          text,
    code_challenge text        NOT NULL,
    scope_offered  text        NOT NULL CHECK (scope_offered IN ('mcp:read', 'mcp:trade')),
    resource       text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);

-- One per consent: what a user allowed a client to do. Revoking it kills every token.
CREATE TABLE grants (
    grant_id       uuid        PRIMARY KEY,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id      text        NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    scope          text        NOT NULL CHECK (scope IN ('mcp:read', 'mcp:trade')),
    resource       text        NOT NULL,
    redirect_uri   text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    revoked_reason text
);
CREATE INDEX grants_user ON grants (user_id, created_at DESC);
CREATE INDEX grants_client ON grants (client_id);

CREATE TABLE authorization_codes (
    code_hash      bytea       PRIMARY KEY,
    client_id      text        NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri   text        NOT NULL,
    code_challenge text        NOT NULL,
    scope          text        NOT NULL CHECK (scope IN ('mcp:read', 'mcp:trade')),
    resource       text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    -- The grant created by the first exchange, revoked if the code is presented again.
    grant_id       uuid        REFERENCES grants (grant_id) ON DELETE CASCADE
);

CREATE TABLE refresh_tokens (
    token_hash     bytea       PRIMARY KEY,
    grant_id       uuid        NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Idle timeout of this token; the family's absolute end is expires_at.
    idle_expires_at timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    rotated_at     timestamptz,
    successor_hash bytea
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE signing_keys (
    kid                   text        PRIMARY KEY,
    algorithm             text        NOT NULL CHECK (algorithm = 'EdDSA'),
    public_key            bytea       NOT NULL,
    private_key_encrypted bytea       NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- Set when a newer key takes over signing; tokens it signed stay valid until verify_until.
    retired_at            timestamptz,
    verify_until          timestamptz
);

CREATE TABLE security_events (
    id         bigserial   PRIMARY KEY,
    kind       text        NOT NULL,
    client_id  text,
    user_id    uuid,
    ip         text,
    user_agent text,
    detail     jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX security_events_kind ON security_events (kind, created_at);

-- Every change that ends a grant (revocation, deletion of the grant, its client or its user)
-- tells every replica at commit, so cached grant state is dropped everywhere.
CREATE FUNCTION notify_grant_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('grant_ended', OLD.grant_id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER grants_revoked AFTER UPDATE OF revoked_at ON grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION notify_grant_ended();
CREATE TRIGGER grants_deleted AFTER DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION notify_grant_ended();
