-- Webhook signals the Add-On received and the trade copier's actions, as the Add-On reports
-- them (events `webhook_signal` and `copier_action`). The Add-On's own id is the key, so a
-- resent event stores nothing twice. Kept 90 days (the bridge's purge).
CREATE TABLE addon_webhook_signals (
    user_id         uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    signal_id       text             NOT NULL,
    received_at     timestamptz      NOT NULL,
    source          text,
    strategy        text,
    alert           text,
    account         text,
    instrument      text,
    action          text,
    quantity        double precision,
    order_type      text,
    -- The Add-On's one-line summary, truncated and with secrets dropped: never the raw body.
    payload_summary text,
    outcome         text             NOT NULL
        CHECK (outcome IN ('order_placed', 'rejected', 'ignored', 'error')),
    reason          text,
    order_ids       jsonb            NOT NULL DEFAULT '[]',
    latency_ms      bigint,
    stored_at       timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, signal_id)
);
CREATE INDEX addon_webhook_signals_time
    ON addon_webhook_signals (user_id, received_at DESC, signal_id DESC);

-- One row per leader fill and follower account.
CREATE TABLE addon_copier_actions (
    user_id             uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    action_id           text             NOT NULL,
    occurred_at         timestamptz      NOT NULL,
    copier              text,
    leader_account      text             NOT NULL,
    leader_execution_id text,
    leader_order_id     text,
    instrument          text,
    leader_action       text,
    leader_quantity     double precision,
    leader_price        double precision,
    follower_account    text             NOT NULL,
    follower_instrument text,
    ratio               double precision,
    follower_quantity   double precision,
    follower_order_id   text,
    outcome             text             NOT NULL
        CHECK (outcome IN ('order_placed', 'skipped', 'rejected', 'error')),
    reason              text,
    stored_at           timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, action_id)
);
CREATE INDEX addon_copier_actions_time
    ON addon_copier_actions (user_id, occurred_at DESC, action_id DESC);
