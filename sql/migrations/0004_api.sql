-- 0004_api.sql: bookkeeping the HTTP API (kinfer api) needs on top of 0003_pipeline.sql.
--
-- enqueued_at: set once Kafka acknowledged the request's InferenceRequest record. A row whose
-- enqueued_at is NULL is "maybe not in Kafka": the API inserted it and is waiting for the
-- delivery report, or crashed meanwhile. An Idempotency-Key replay of such a row answers 409
-- (in progress) while it is young, and re-produces the stored record (same request_id) once
-- it is older than api.idempotency.stale, so a lost record is never reported as accepted.
-- When Kafka refuses the record the API deletes the row (single requests) or marks it
-- failed (batch lines, whose batch row already exists).
-- batch_line: 1-based line of a batch request, so results come back in submission order.
ALTER TABLE requests ADD COLUMN enqueued_at timestamptz;
ALTER TABLE requests ADD COLUMN batch_line integer;
