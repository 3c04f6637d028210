-- When a call made with a grant's token needed more scope than the grant holds (the MCP 403
-- insufficient_scope). A refresh that follows soon after ends the grant so the client
-- authorizes again with the scope the call needed.
ALTER TABLE grants ADD COLUMN step_up_requested_at timestamptz;
