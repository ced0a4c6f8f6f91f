-- 0006_demo_templates.sql: the 'demo' prompt templates, for the demo model
-- (models/kinfer-demo-risk.gguf, docs/demo-model.md).
--
-- The demo model is a small model trained on one compact line of risk figures followed by
-- "\nCommentary:" (tools/demo-model/corpus.py); it cannot read the 'default' risk_report
-- prompt with its full metrics JSON. Select these with enrich.template.name = demo. The
-- completion template is the default one, so both tasks exist under the name.

INSERT INTO prompt_templates (task, name, version, description, template)
SELECT task, 'demo', 1, description, template
FROM prompt_templates
WHERE task = 'completion' AND name = 'default' AND version = 1;

INSERT INTO prompt_templates (task, name, version, description, template) VALUES
('risk_report', 'demo', 1,
 'One line of risk figures for the demo model: {{risk.summary}} then the commentary cue.',
$tmpl${{risk.summary}}
Commentary:$tmpl$);
