-- Syncs queued by the missed-push pass carry trigger 'reconcile'.
ALTER TABLE connector_sync_event DROP CONSTRAINT connector_sync_event_trigger_check;
ALTER TABLE connector_sync_event ADD CONSTRAINT connector_sync_event_trigger_check
    CHECK (trigger IN ('push', 'initial', 'manual', 'resync', 'reconcile'));
