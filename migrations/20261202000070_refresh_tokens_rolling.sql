-- Refresh tokens live in a rolling window (idle timeout); an absolute end only when the operator
-- configures one, so a family's end may be absent.
ALTER TABLE refresh_tokens ALTER COLUMN expires_at DROP NOT NULL;
