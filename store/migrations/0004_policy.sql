-- Policy as code (docs/policy.md): every plan is judged by Rego policies on
-- the agent before anything is applied. The plan itself never leaves the
-- agent; the deployment keeps the verdicts, their messages and the digest
-- of the policies that judged it.

-- Which policy set (sets/<name>/ in the agent's policy sources) judges this
-- config, besides the policies every config gets. NULL: none.
ALTER TABLE configs ADD COLUMN policy_set text
    CONSTRAINT configs_policy_set_format CHECK (policy_set ~ '^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$');
COMMENT ON COLUMN configs.policy_set IS 'Policy set (sets/<name>/ of the agents'' policy sources) that judges this config''s plans besides the common policies; NULL: none.';
ALTER TABLE config_versions ADD COLUMN policy_set text;

-- Changing the set changes what judges the config's plans: it is a new
-- version, so an approval given under the old set is refused.
CREATE OR REPLACE FUNCTION grape_config_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.spec IS DISTINCT FROM OLD.spec
       OR NEW.require_approval IS DISTINCT FROM OLD.require_approval
       OR NEW.auto_remediate IS DISTINCT FROM OLD.auto_remediate
       OR NEW.drift_schedule IS DISTINCT FROM OLD.drift_schedule
       OR NEW.policy_set IS DISTINCT FROM OLD.policy_set THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END $$;

-- Replacing a function resets its attributes: SECURITY DEFINER and the fixed
-- search_path are given again (0003 explains both).
CREATE OR REPLACE FUNCTION grape_config_record_version() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO config_versions (config_id, version, spec, require_approval, auto_remediate, drift_schedule, policy_set)
        VALUES (NEW.id, NEW.version, NEW.spec, NEW.require_approval, NEW.auto_remediate, NEW.drift_schedule, NEW.policy_set);
    END IF;
    RETURN NULL;
END $$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION grape_config_record_version() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;

-- The verdicts of the policies on the deployment's plan: {digest, set,
-- verdicts: [{kind, rule, package, file, line, msg}], denies, warnings, …}.
-- Messages are redacted on the agent; plan values are never stored.
ALTER TABLE deployments ADD COLUMN policy jsonb
    CONSTRAINT deployments_policy_object CHECK (jsonb_typeof(policy) = 'object');
COMMENT ON COLUMN deployments.policy IS 'Policy verdicts on the plan (docs/policy.md): digest of the policies, verdicts and messages; never plan values.';

ALTER TABLE deployments DROP CONSTRAINT deployments_error_kind;
ALTER TABLE deployments ADD CONSTRAINT deployments_error_kind CHECK (error_kind IN
    ('bad_config', 'git', 'init', 'plan', 'policy', 'apply', 'state_lock', 'agent_lost',
     'cancelled', 'timeout', 'rejected', 'approval_refused', 'internal'));

-- A policy warning sends the run to a person, whatever the config says. The
-- agent holds no grant on require_approval, so it can never lower it; this
-- raises it when the verdicts it records hold a warning, and the row then
-- says "approval required" like any gated deployment.
CREATE FUNCTION grape_deployment_policy_approval() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(NEW.policy -> 'warnings') = 'number' AND (NEW.policy ->> 'warnings')::numeric > 0 THEN
        NEW.require_approval := true;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER deployments_policy_approval BEFORE UPDATE OF policy ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_policy_approval();

GRANT UPDATE (policy) ON deployments TO grape_agent;

-- Supabase: a browser user may choose a config's policy set as it edits the
-- rest of the config.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') AND to_regprocedure('auth.uid()') IS NOT NULL THEN
        GRANT INSERT (policy_set), UPDATE (policy_set) ON configs TO authenticated;
    END IF;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (4, 'policy');
