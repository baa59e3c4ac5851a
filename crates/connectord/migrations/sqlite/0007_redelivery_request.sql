-- Failed deliveries connectord asked GitHub to redeliver: one row per
-- X-GitHub-Delivery, written before the request, so each is asked for at
-- most once across passes, restarts and processes. Rows older than
-- GitHub's 3-day redelivery window are pruned by the redelivery task.
CREATE TABLE redelivery_request (
    delivery_guid    TEXT PRIMARY KEY,
    -- GitHub's id of the failed attempt the request named.
    hook_delivery_id INTEGER NOT NULL,
    requested_at     INTEGER NOT NULL
);
CREATE INDEX redelivery_request_age ON redelivery_request (requested_at);
