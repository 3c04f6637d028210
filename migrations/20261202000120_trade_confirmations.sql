-- One row per tool call held for a person's decision: what would be sent, why it was held, how
-- the person was asked, what they decided and what the Add-On answered. The row is the audit
-- trail and the single-use ticket: every transition is one `UPDATE ... WHERE state = ...`.
CREATE TABLE trade_confirmations (
    confirmation_id uuid        PRIMARY KEY,
    user_id         uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The OAuth grant of the calling client. No foreign key: the table belongs to another crate.
    grant_id        uuid        NOT NULL,
    client_id       text        NOT NULL,
    tool            text        NOT NULL,
    -- Exactly what is relayed once approved, idempotency_key included.
    arguments       jsonb       NOT NULL,
    -- SHA-256 of the tool name, a NUL and the canonical JSON of the arguments.
    args_hash       bytea       NOT NULL CHECK (length(args_hash) = 32),
    idempotency_key text,
    -- What the person is shown: summary, price and its basis, point value, notional.
    preview         jsonb       NOT NULL,
    reason          text        NOT NULL CHECK (reason IN ('policy_every', 'quantity_above',
                        'notional_above', 'size_unknown', 'always_confirmed', 'cancel_policy')),
    channel         text        NOT NULL CHECK (channel IN ('elicitation_form', 'elicitation_url', 'link')),
    revision        text        NOT NULL,
    -- The JSON-RPC id of the elicitation/create request (2025-06-18 and 2025-11-25).
    elicitation_id  text        UNIQUE,
    -- SHA-256 of the requestState secret (2026-07-28 input-required results).
    state_hash      bytea       CHECK (length(state_hash) = 32),
    state           text        NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'approved', 'rejected', 'expired', 'abandoned', 'used')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- One deadline for the decision and the use.
    expires_at      timestamptz NOT NULL,
    decided_at      timestamptz,
    decided_via     text        CHECK (decided_via IN ('page', 'elicitation', 'expiry', 'client_gone')),
    decision        text        CHECK (decision IN ('accept', 'decline', 'cancel', 'approve', 'reject')),
    decided_ip      text,
    used_at         timestamptz,
    -- vocabulary::addon::outcome_code, and the result or error replayed to a reused id.
    outcome_code    text,
    outcome         jsonb,
    finished_at     timestamptz,
    CHECK ((state = 'used') = (used_at IS NOT NULL)),
    CHECK (outcome IS NULL OR used_at IS NOT NULL)
);
CREATE INDEX trade_confirmations_user ON trade_confirmations (user_id, created_at DESC);
CREATE INDEX trade_confirmations_open ON trade_confirmations (expires_at)
    WHERE state IN ('pending', 'approved');
CREATE INDEX trade_confirmations_key ON trade_confirmations (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- A waiter on any replica re-reads the row when its state changes.
CREATE FUNCTION trade_confirmation_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('trade_confirmation', NEW.confirmation_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER trade_confirmation_changed AFTER UPDATE OF state ON trade_confirmations
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION trade_confirmation_notify();
