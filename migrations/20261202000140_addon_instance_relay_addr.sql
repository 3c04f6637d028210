-- Where the other replicas reach this one's admin listener for calls to the Add-On sockets it
-- holds (`host:port`); NULL routes every call to it through `addon_calls`.
ALTER TABLE addon_instances ADD COLUMN relay_addr text;
