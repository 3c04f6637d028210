-- The last Add-On refused as too old (below 1.13.0), one row per user, so presence can say
-- "Add-On 1.12.x is connected but too old" instead of "not connected". Written only while the
-- key is live (its row held FOR SHARE, as when registering a socket); shown only while that key
-- is live, no supported Add-On has connected since (registering deletes the row) and for 24 h.
CREATE TABLE addon_refusals (
    user_id       uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    key_id        uuid        NOT NULL REFERENCES addon_keys (key_id) ON DELETE CASCADE,
    addon_version text        NOT NULL,
    nt8_version   text        NOT NULL,
    refused_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addon_refusals_key ON addon_refusals (key_id);

-- Other replicas cache "not connected": a refusal drops their entry.
CREATE FUNCTION addon_refused_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('addon_refused', OLD.user_id::text);
    ELSE
        PERFORM pg_notify('addon_refused', NEW.user_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER addon_refused AFTER INSERT OR UPDATE OR DELETE ON addon_refusals
    FOR EACH ROW EXECUTE FUNCTION addon_refused_notify();
