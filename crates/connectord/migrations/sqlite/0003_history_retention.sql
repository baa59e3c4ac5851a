-- Retention keeps sync events a stored document still points at.
CREATE INDEX document_sync_event ON document (sync_event_id);
CREATE INDEX sync_job_finished ON sync_job (finished_at) WHERE state = 'finished';
CREATE INDEX webhook_delivery_received ON webhook_delivery (received_at);
