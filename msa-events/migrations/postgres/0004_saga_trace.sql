-- msa-events 4: the trace a saga was started in (W3C traceparent), so that an instance
-- resuming it after a crash continues that trace.

ALTER TABLE msa_sagas ADD COLUMN traceparent TEXT;
