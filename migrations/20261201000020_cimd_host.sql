-- The host of a Client ID Metadata Document URL, so documents can be counted per host.
ALTER TABLE oauth_clients ADD COLUMN metadata_host text;
UPDATE oauth_clients
SET metadata_host = substring(client_id FROM '^https?://(\[[^]]*\]|[^/:]+)')
WHERE metadata_fetched_at IS NOT NULL;
CREATE INDEX oauth_clients_unproven_by_host ON oauth_clients (metadata_host, created_at)
    WHERE metadata_host IS NOT NULL AND first_authorized_at IS NULL;
