-- Issue 16 §1: a non-secret operation whose ticket expired with no result is
-- closed by the server as `expired` (error `outcome_unknown`): the agent
-- refuses an expired ticket, so nothing more can happen under it, but
-- whether the card applied the command before its answer was lost is not
-- known. Secret changes are never closed this way (they are settled).
ALTER TABLE operations DROP CONSTRAINT IF EXISTS operations_state_check;
ALTER TABLE operations ADD CONSTRAINT operations_state_check
    CHECK (state IN ('pending', 'succeeded', 'failed', 'expired'));
-- The sweep looks for pending rows only.
CREATE INDEX operations_pending_idx ON operations (ticket_expires_at) WHERE state = 'pending';
