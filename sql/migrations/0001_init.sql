-- 0001_init.sql: the migration ledger itself.
--
-- sql/migrate.sh runs this file on every invocation, before it consults the
-- ledger, so it must stay idempotent (IF NOT EXISTS) and hold nothing else.
-- Later migrations are plain SQL files named NNNN_topic.sql, applied once each
-- in lexical order, each inside one transaction together with its ledger row:
-- do not put BEGIN/COMMIT in them, and never edit one that has been applied
-- (migrate.sh warns when an applied file's checksum changes); add a new file.

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text        PRIMARY KEY,          -- file name, e.g. 0002_jobs.sql
    checksum   text        NOT NULL,             -- sha256 of the file as applied
    applied_at timestamptz NOT NULL DEFAULT now()
);
