-- Revoking an Add-On key also ends its presence in the revoking transaction: from its commit
-- no replica routes a call to that key's socket while the socket is being closed. A socket
-- registering with the key holds the key row FOR SHARE while it writes presence, so the
-- revocation waits for it and then removes what it wrote.
CREATE OR REPLACE FUNCTION addon_key_revoked_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        DELETE FROM addon_presence WHERE key_id = NEW.key_id;
        PERFORM pg_notify('addon_key_revoked', NEW.key_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE INDEX addon_presence_key ON addon_presence (key_id);
