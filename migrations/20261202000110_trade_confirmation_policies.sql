-- When an order-affecting tool call needs a person's confirmation. No row means `every`, so new
-- and existing accounts get the safe default without a data migration.
CREATE TABLE trade_confirmation_policies (
    user_id         uuid             PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    mode            text             NOT NULL CHECK (mode IN ('every', 'above', 'never')),
    -- `above` confirms an order whose size is above a limit (contracts or shares).
    max_quantity    integer          CHECK (max_quantity BETWEEN 1 AND 10000),
    -- ... or whose estimated notional is above a limit (account currency).
    max_notional    double precision CHECK (max_notional > 0 AND max_notional <> 'Infinity'),
    confirm_cancels boolean          NOT NULL DEFAULT false,
    -- Never accept an answer given inside the AI client: only the CrossTrade page decides.
    page_only       boolean          NOT NULL DEFAULT false,
    updated_at      timestamptz      NOT NULL DEFAULT now(),
    CHECK (mode <> 'above' OR max_quantity IS NOT NULL OR max_notional IS NOT NULL)
);
