-- What each AI client did with its grant, for the AI Clients page. Each replica buffers its
-- tool calls in memory and writes them about once a second, one statement per table
-- (store::activity); the maintenance job prunes both tables. Rows go with their grant.

-- Calls per grant, per UTC day, per tool; `errors` counts the calls that did not succeed
-- (neither answered nor held for the person's confirmation).
CREATE TABLE grant_tool_days (
    grant_id uuid    NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
    day      date    NOT NULL,
    tool     text    NOT NULL,
    -- The tool needs mcp:trade (the catalog's scope when the call was made).
    trade    boolean NOT NULL,
    calls    bigint  NOT NULL CHECK (calls > 0),
    errors   bigint  NOT NULL CHECK (errors >= 0 AND errors <= calls),
    PRIMARY KEY (grant_id, day, tool)
);
CREATE INDEX grant_tool_days_day ON grant_tool_days (day);

-- The latest calls of each grant, with when and how each ended.
CREATE TABLE grant_tool_calls (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    grant_id uuid        NOT NULL REFERENCES grants (grant_id) ON DELETE CASCADE,
    at       timestamptz NOT NULL,
    tool     text        NOT NULL,
    trade    boolean     NOT NULL,
    outcome  text        NOT NULL CHECK (outcome IN ('ok', 'tool_error', 'held', 'refused',
                             'addon_unavailable', 'failed'))
);
CREATE INDEX grant_tool_calls_grant ON grant_tool_calls (grant_id, at DESC);
