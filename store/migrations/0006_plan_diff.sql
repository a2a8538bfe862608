-- The plan's attribute-level diff (docs/plan-diff.md), for reviewers: per
-- resource its action and each changed value, old -> new. Built on the
-- agent from the saved plan, sensitive values left out (redacted twice:
-- terraform's sensitive marks, then the agent's known secrets).
ALTER TABLE deployments ADD COLUMN plan_diff jsonb
    CONSTRAINT deployments_plan_diff_object CHECK (jsonb_typeof(plan_diff) = 'object');
COMMENT ON COLUMN deployments.plan_diff IS 'Attribute-level plan diff (docs/plan-diff.md): {resources: [{address, action, attributes: [{path, action, old, new, sensitive, unknown}]}], drift, outputs}; never a sensitive value.';

GRANT UPDATE (plan_diff) ON deployments TO grape_agent;

INSERT INTO grape_schema_migrations (version, name) VALUES (6, 'plan_diff');
