-- Fair claims pick an installation first (fewest running jobs, then oldest
-- waiting job) and then its oldest runnable job: both by index seeks per
-- installation, so a claim costs the same with ten queued jobs or ten thousand.
ALTER TABLE sync_job ADD COLUMN connector_id TEXT REFERENCES connector_instance (id);
UPDATE sync_job SET connector_id = (SELECT t.connector_id FROM connector_target t WHERE t.id = sync_job.target_id);
CREATE INDEX sync_job_ready_by_connector ON sync_job (connector_id, run_at, id)
    WHERE state IN ('available', 'retryable');
CREATE INDEX sync_job_running_by_connector ON sync_job (connector_id) WHERE state = 'running';
