-- Client ID Metadata Documents: a client whose client_id is an https URL is stored like a
-- registered one, with when its document was fetched and until when it may be used without
-- fetching again (Cache-Control max-age within bounds). Both NULL for registered clients.
ALTER TABLE oauth_clients
    ADD COLUMN metadata_fetched_at timestamptz,
    ADD COLUMN metadata_expires_at timestamptz;
