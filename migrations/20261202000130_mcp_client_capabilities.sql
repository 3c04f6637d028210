-- What the client of a grant declared in its last `initialize` (2025-06-18 and 2025-11-25): the
-- server issues no session id, so a later tool call finds the capabilities by its grant.
CREATE TABLE mcp_client_capabilities (
    grant_id         uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    revision         text        NOT NULL,
    elicitation_form boolean     NOT NULL,
    elicitation_url  boolean     NOT NULL,
    client_info      jsonb       NOT NULL DEFAULT '{}',
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mcp_client_capabilities_updated ON mcp_client_capabilities (updated_at);
