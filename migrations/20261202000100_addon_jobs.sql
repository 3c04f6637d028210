-- Long work NinjaTrader 8 does for a user (backtest, compile, deploy). The row is written when
-- the tool is called and moved on by the Add-On's job events, which any replica may receive, so
-- a job outlives the client's request and the replica that started it.
CREATE TABLE addon_jobs (
    job_id              uuid             PRIMARY KEY,
    user_id             uuid             NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind                text             NOT NULL CHECK (kind IN ('backtest', 'compile', 'deploy')),
    tool                text             NOT NULL,
    -- What was asked (strategy, instrument, dates, account); never file contents.
    summary             jsonb            NOT NULL DEFAULT '{}',
    state               text             NOT NULL CHECK (state IN
                            ('starting', 'running', 'cancelling', 'completed', 'failed', 'cancelled')),
    progress            double precision CHECK (progress BETWEEN 0 AND 1),
    message             text,
    result              jsonb,
    error               text,
    -- A repeat of the starting call with the same key returns this job.
    idempotency_key     text,
    created_at          timestamptz      NOT NULL DEFAULT now(),
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    progress_at         timestamptz,
    finished_at         timestamptz,
    -- An open job with no final result by then has failed (NinjaTrader closed mid-job): a
    -- short window until the Add-On confirms the start, then `max_secs` from the start.
    expires_at          timestamptz      NOT NULL,
    max_secs            integer          NOT NULL CHECK (max_secs > 0),
    version             bigint           NOT NULL DEFAULT 0,
    CHECK ((state IN ('completed', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
CREATE INDEX addon_jobs_user ON addon_jobs (user_id, created_at DESC, job_id DESC);
CREATE UNIQUE INDEX addon_jobs_key ON addon_jobs (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX addon_jobs_open ON addon_jobs (expires_at)
    WHERE state IN ('starting', 'running', 'cancelling');

-- Waiters on any replica re-read the job when it changes.
CREATE FUNCTION addon_job_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('addon_job', NEW.job_id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER addon_job_changed AFTER UPDATE ON addon_jobs
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION addon_job_notify();
