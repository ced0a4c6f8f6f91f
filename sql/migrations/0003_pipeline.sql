-- 0003_pipeline.sql: tenants, API keys, requests and batches of the async callback API.
--
-- The API (kinfer api) writes requests at acceptance; the dispatcher (kinfer dispatch)
-- upserts results and callback state; GET /v1/requests/{id} reads them. Every row is
-- scoped by tenant_id: one tenant never sees another's requests.

CREATE TABLE tenants (
    tenant_id        text        PRIMARY KEY,
    name             text        NOT NULL,
    -- Standard Webhooks secret: 'whsec_' + base64 of the key bytes. Never logged.
    webhook_secret   text        NOT NULL,
    -- Token bucket for POST requests: sustained rate and burst.
    rate_per_sec     double precision NOT NULL DEFAULT 100 CHECK (rate_per_sec > 0),
    rate_burst       integer     NOT NULL DEFAULT 200 CHECK (rate_burst > 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as the hex SHA-256 of the presented bearer token, never in clear.
CREATE TABLE api_keys (
    key_sha256       text        PRIMARY KEY CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
    tenant_id        text        NOT NULL REFERENCES tenants (tenant_id),
    label            text        NOT NULL DEFAULT '',
    revoked          boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Callback endpoints disabled after a 410 Gone answer.
CREATE TABLE disabled_endpoints (
    tenant_id        text        NOT NULL REFERENCES tenants (tenant_id),
    url              text        NOT NULL,
    disabled_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, url)
);

CREATE TABLE batches (
    batch_id         text        PRIMARY KEY,
    tenant_id        text        NOT NULL REFERENCES tenants (tenant_id),
    n_requests       integer     NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- status: accepted, enriched, running, completed, failed, expired, cancelled.
-- callback_status: pending, delivered, delivery_failed, none (no callback URL).
CREATE TABLE requests (
    request_id       text        PRIMARY KEY,
    tenant_id        text        NOT NULL REFERENCES tenants (tenant_id),
    idempotency_key  text,
    batch_id         text        REFERENCES batches (batch_id),
    custom_id        text,
    status           text        NOT NULL DEFAULT 'accepted'
        CHECK (status IN ('accepted', 'enriched', 'running', 'completed', 'failed',
                          'expired', 'cancelled')),
    callback_url     text,
    callback_status  text        NOT NULL DEFAULT 'none'
        CHECK (callback_status IN ('none', 'pending', 'delivered', 'delivery_failed')),
    callback_attempts integer    NOT NULL DEFAULT 0,
    task             text        NOT NULL DEFAULT 'completion',
    model            text,
    trace_id         text,
    request          jsonb       NOT NULL,      -- the accepted request as JSON (no secrets)
    result           jsonb,                     -- the InferenceResult as JSON, once there
    error            text,
    cancel_requested boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    delivered_at     timestamptz
);

-- The same Idempotency-Key from the same tenant maps to one request, across API processes.
CREATE UNIQUE INDEX requests_idempotency ON requests (tenant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX requests_tenant_created ON requests (tenant_id, created_at DESC);
CREATE INDEX requests_batch ON requests (batch_id) WHERE batch_id IS NOT NULL;
