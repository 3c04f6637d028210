-- The trace a call routed through PostgreSQL belongs to (W3C traceparent), when traces are
-- exported, so the replica holding the socket continues it.
ALTER TABLE addon_calls ADD COLUMN traceparent text;
