-- The Add-On bridge: keys, presence, cross-replica call routing, idempotency, events, activity.

-- Add-On keys: personal access tokens of the NinjaTrader 8 Add-On, stored as SHA-256 only.
CREATE TABLE addon_keys (
    key_id       uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash     bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    -- The first characters of the key ("ctak_" and 6 more), so a person can tell keys apart.
    hint         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX addon_keys_user ON addon_keys (user_id);

-- Revoking a key closes its socket on whichever replica holds it.
CREATE FUNCTION addon_key_revoked_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM pg_notify('addon_key_revoked', NEW.key_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER addon_key_revoked AFTER UPDATE OF revoked_at ON addon_keys
    FOR EACH ROW EXECUTE FUNCTION addon_key_revoked_notify();

-- One row per running bridge; a row whose heartbeat is stale belongs to a dead replica.
CREATE TABLE addon_instances (
    instance_id  uuid        PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- The one live Add-On connection of a user; deleting a dead instance removes its presence.
CREATE TABLE addon_presence (
    user_id         uuid        PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    instance_id     uuid        NOT NULL REFERENCES addon_instances (instance_id) ON DELETE CASCADE,
    connection_id   uuid        NOT NULL,
    key_id          uuid        NOT NULL,
    addon_version   text        NOT NULL,
    nt8_version     text        NOT NULL,
    features        jsonb       NOT NULL DEFAULT '[]',
    connected_since timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addon_presence_instance ON addon_presence (instance_id);

CREATE FUNCTION addon_presence_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('addon_presence', OLD.user_id::text);
    ELSIF TG_OP = 'INSERT' OR OLD.connection_id IS DISTINCT FROM NEW.connection_id THEN
        PERFORM pg_notify('addon_presence', NEW.user_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER addon_presence_changed AFTER INSERT OR UPDATE OR DELETE ON addon_presence
    FOR EACH ROW EXECUTE FUNCTION addon_presence_notify();

-- Calls relayed from one replica to the replica that holds the socket. Notifications carry the
-- call id only; arguments and outcome of any size live here.
CREATE TABLE addon_calls (
    call_id         uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    origin_instance uuid        NOT NULL,
    target_instance uuid        NOT NULL,
    connection_id   uuid        NOT NULL,
    tool            text        NOT NULL,
    arguments       jsonb       NOT NULL,
    deadline_at     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    outcome         jsonb,
    completed_at    timestamptz
);
CREATE INDEX addon_calls_pending ON addon_calls (target_instance) WHERE outcome IS NULL;
CREATE INDEX addon_calls_created ON addon_calls (created_at);

-- Trade idempotency: the first call with a key owns it; repeats within 24 h get its outcome.
CREATE TABLE addon_idempotency (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idem_key     text        NOT NULL,
    tool         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    deadline_at  timestamptz NOT NULL,
    outcome      jsonb,
    completed_at timestamptz,
    UNIQUE (user_id, idem_key)
);

-- Executions reported by the Add-On (events), de-duplicated by NinjaTrader's execution id.
CREATE TABLE addon_executions (
    user_id      uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    execution_id text             NOT NULL,
    account      text             NOT NULL,
    instrument   text             NOT NULL,
    action       text             NOT NULL CHECK (action IN ('Buy', 'Sell')),
    quantity     double precision NOT NULL CHECK (quantity > 0),
    price        double precision NOT NULL,
    commission   double precision NOT NULL DEFAULT 0,
    order_id     text,
    executed_at  timestamptz      NOT NULL,
    received_at  timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, execution_id)
);
CREATE INDEX addon_executions_time ON addon_executions (user_id, executed_at);

-- Account snapshots reported by the Add-On (events); watermarks are computed from them.
CREATE TABLE addon_account_snapshots (
    id              bigserial        PRIMARY KEY,
    user_id         uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    account         text             NOT NULL,
    cash_value      double precision NOT NULL,
    net_liquidation double precision NOT NULL,
    realized_pnl    double precision NOT NULL DEFAULT 0,
    unrealized_pnl  double precision NOT NULL DEFAULT 0,
    taken_at        timestamptz      NOT NULL,
    received_at     timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX addon_account_snapshots_account ON addon_account_snapshots (user_id, account, taken_at);

-- Every relayed call: what, how it ended, how long it took, where. Never the arguments.
CREATE TABLE addon_activity (
    id              bigserial   PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tool            text        NOT NULL,
    outcome         text        NOT NULL,
    latency_ms      bigint      NOT NULL,
    instance_id     uuid        NOT NULL,
    replayed        boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX addon_activity_user ON addon_activity (user_id, id DESC);
