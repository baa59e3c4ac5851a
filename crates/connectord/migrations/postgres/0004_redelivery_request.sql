-- The same table and index as migrations/sqlite/0006 (comments there).
CREATE TABLE redelivery_request (
    delivery_guid    TEXT PRIMARY KEY,
    hook_delivery_id BIGINT NOT NULL,
    requested_at     BIGINT NOT NULL
);
CREATE INDEX redelivery_request_age ON redelivery_request (requested_at);
