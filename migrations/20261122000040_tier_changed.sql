-- Every change of a user's tier (and every deletion of a user) tells every replica at commit,
-- so the MCP endpoint's cached tiers are dropped everywhere and a downgrade bites at once.
CREATE FUNCTION notify_tier_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tier_changed', OLD.id::text);
    RETURN NULL;
END;
$$;
CREATE TRIGGER users_tier_changed AFTER UPDATE OF tier ON users
    FOR EACH ROW WHEN (OLD.tier IS DISTINCT FROM NEW.tier)
    EXECUTE FUNCTION notify_tier_changed();
CREATE TRIGGER users_deleted AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_tier_changed();
