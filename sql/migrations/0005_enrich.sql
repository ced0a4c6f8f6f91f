-- 0005_enrich.sql: prompt templates of the enricher (kinfer enrich, docs/enrich.md).
--
-- A template is plain text with {{placeholders}} (the list is in docs/enrich.md). For a task
-- the enricher uses the ACTIVE row with the highest version under the configured name
-- (enrich.template.name, default 'default'); new wording is a new version, so the version
-- that rendered a job stays on record (the audit event names it, e.g. "default v1").
-- Templates are dollar-quoted below: every newline inside is part of the text, and there is
-- no trailing newline after the last line.

CREATE TABLE prompt_templates (
    task        text        NOT NULL CHECK (task IN ('completion', 'risk_report')),
    name        text        NOT NULL DEFAULT 'default' CHECK (name ~ '^[a-z0-9_.-]{1,64}$'),
    version     integer     NOT NULL CHECK (version > 0),
    template    text        NOT NULL,
    active      boolean     NOT NULL DEFAULT true,
    description text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task, name, version)
);

INSERT INTO prompt_templates (task, name, version, description, template) VALUES
('completion', 'default', 1,
 'Question about a customer or portfolio, with positions, limits and latest market data.',
$tmpl$You are a financial assistant for {{tenant.name}}. Answer using only the client context below.

Customer: {{customer.name}} ({{customer.id}}), risk profile {{customer.risk_profile}}
Portfolio: {{portfolio.name}} ({{portfolio.id}}), base currency {{portfolio.base_currency}}
Positions:
{{positions}}
Risk limits:
{{limits}}
Latest market data:
{{market}}

Question: {{prompt}}$tmpl$),
('risk_report', 'default', 1,
 'Narrative risk report around metrics computed by the risk module.',
$tmpl$You are a risk analyst for {{tenant.name}}. Write a concise risk report on the portfolio below: explain the value at risk, expected shortfall, concentration, limit breaches and stress results. Use only the numbers given.

Customer: {{customer.name}} ({{customer.id}}), risk profile {{customer.risk_profile}}
Portfolio: {{portfolio.name}} ({{portfolio.id}}), base currency {{portfolio.base_currency}}
As of {{risk.as_of}}; requested VaR confidence {{risk.confidence}}, horizon {{risk.horizon_days}} day(s)
Positions:
{{positions}}
Risk limits:
{{limits}}
Latest market data:
{{market}}
Risk metrics (JSON):
{{risk.metrics}}

{{prompt}}$tmpl$);
