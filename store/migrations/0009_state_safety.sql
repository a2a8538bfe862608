-- State safety (docs/operations.md, "Where state lives"): Grape must never
-- create a config's infrastructure a second time, orphan it, or roll it back
-- by accident. This migration gives the database what it needs to know:
--
--  * which deployments left a config with infrastructure (state_resources),
--    so "applied and not destroyed" is one question to the database;
--  * which agent holds a local-state config's state (config_state_holders),
--    so only that agent claims the config's deployments;
--  * the overrides a person gives on purpose (accept_empty_state,
--    accept_rollback), recorded on the deployment with who requested it;
--  * audit events (0008's audit_events, through grape_audit) for the
--    operator actions that are not config versions: config.renamed,
--    state.restored, state.holder_released, stack.replaced,
--    state.backend_moved, each with the config's id as target_id;
--  * a guard on configs: an applied config's region and backend are part of
--    its stack's identity and cannot be changed by a plain write.

-- New outcomes: the plan saw no state where Grape applied resources, or the
-- database is older than the audit repository's newest commit of the config.
ALTER TABLE deployments DROP CONSTRAINT deployments_error_kind;
ALTER TABLE deployments ADD CONSTRAINT deployments_error_kind CHECK (error_kind IN
    ('bad_config', 'git', 'init', 'plan', 'policy', 'apply', 'state_lock', 'state_missing',
     'control_plane_behind', 'agent_lost', 'cancelled', 'timeout', 'rejected', 'approval_refused', 'internal'));

ALTER TABLE deployments
    ADD COLUMN accept_empty_state boolean NOT NULL DEFAULT false,
    ADD COLUMN accept_rollback    boolean NOT NULL DEFAULT false,
    -- Resources in the config's state after this deployment applied (the
    -- plan's prior state plus its creations minus its deletions); 0 after a
    -- destroy. NULL for deployments that applied nothing or ran before 0009.
    ADD COLUMN state_resources    integer CONSTRAINT deployments_state_resources CHECK (state_resources >= 0);
COMMENT ON COLUMN deployments.accept_empty_state IS 'A person accepted that this run plans from empty state although Grape applied resources for the config (e.g. after an out-of-band destroy); requested_by says who.';
COMMENT ON COLUMN deployments.accept_rollback IS 'A person accepted that this run deploys a config version older than the audit repository''s newest commit of the config; requested_by says who.';
COMMENT ON COLUMN deployments.state_resources IS 'Resources in the config''s state after this deployment applied; 0 after a destroy.';

-- Whether Grape left infrastructure behind for a config: its last applying
-- deployment (a succeeded apply or destroy that changed or recorded state)
-- was an apply that left resources. Applies from before 0009 carry no
-- state_resources; one that created something counts as applied.
CREATE FUNCTION grape_config_applied(p_config_id uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((
        SELECT d.action = 'apply' AND coalesce(d.state_resources, 1) > 0
        FROM deployments d
        WHERE d.config_id = p_config_id AND d.status = 'succeeded' AND d.action IN ('apply', 'destroy')
          AND (d.action = 'destroy' OR d.state_resources IS NOT NULL
               OR coalesce((d.plan_summary ->> 'add')::int, 0) > 0)
        ORDER BY d.finished_at DESC, d.id DESC
        LIMIT 1), false)
$$;

-- The agent whose data dir holds a local-state config's state. Recorded by
-- the agent before its first apply of the config; the claim query then gives
-- the config's deployments to that agent alone. Agents may record a holder
-- but never change one: moving state is a person's decision.
CREATE TABLE config_state_holders (
    config_id     uuid PRIMARY KEY,
    cluster_id    text NOT NULL,
    agent_id      text NOT NULL CONSTRAINT config_state_holders_agent CHECK (length(agent_id) BETWEEN 1 AND 200),
    deployment_id uuid,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT config_state_holders_config FOREIGN KEY (config_id, cluster_id)
        REFERENCES configs (id, cluster_id) ON DELETE CASCADE
);
COMMENT ON TABLE config_state_holders IS 'Agent holding a local-state config''s terraform state: only it claims the config''s deployments.';

-- Configs applied before this migration keep their state where they were
-- applied: the agent of their last successful apply holds it. (A config on
-- the S3 backend needs no holder.)
INSERT INTO config_state_holders (config_id, cluster_id, agent_id, deployment_id, recorded_at)
SELECT DISTINCT ON (d.config_id) d.config_id, d.cluster_id, d.claimed_by, d.id, d.finished_at
FROM deployments d JOIN configs c ON c.id = d.config_id
WHERE d.status = 'succeeded' AND d.action IN ('apply', 'destroy') AND d.claimed_by IS NOT NULL
  AND coalesce(c.spec -> 'backend' ->> 'type', 'local') = 'local'
ORDER BY d.config_id, d.finished_at DESC;

-- A rename changes nothing in the cloud (state and the audit path are keyed
-- by the config's id); it is still recorded, whoever wrote it (grape config
-- rename, a browser, or raw SQL), with 0008's actor (grape_actor).
CREATE FUNCTION grape_config_audit_rename() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name THEN
        PERFORM grape_audit(grape_actor(), 'config.renamed', NEW.cluster_id, NEW.id::text,
                            jsonb_build_object('from', OLD.name, 'to', NEW.name));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER configs_audit_rename AFTER UPDATE OF name ON configs
    FOR EACH ROW EXECUTE FUNCTION grape_config_audit_rename();

-- Region and backend say where a stack lives. Changing either of an applied
-- config would make the next apply create the whole stack again (new region:
-- the old resources are orphaned; new backend: an empty state) — so the
-- database refuses it, for every writer. The way out is to destroy first, or
-- `grape config apply --replace-stack`, which queues the destroy of the
-- current version ahead of the change (the guard lets the write through while
-- that destroy is queued or running).
CREATE FUNCTION grape_config_identity_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    old_region text := coalesce(OLD.spec ->> 'region', 'eu-central-1');
    new_region text := coalesce(NEW.spec ->> 'region', 'eu-central-1');
    old_backend jsonb := coalesce(OLD.spec -> 'backend', '{"type": "local"}'::jsonb);
    new_backend jsonb := coalesce(NEW.spec -> 'backend', '{"type": "local"}'::jsonb);
    what text;
BEGIN
    IF old_region = new_region AND old_backend = new_backend THEN
        RETURN NEW;
    END IF;
    IF NOT grape_config_applied(OLD.id) THEN
        RETURN NEW;
    END IF;
    IF EXISTS (SELECT 1 FROM deployments d
               WHERE d.config_id = OLD.id AND d.action = 'destroy'
                 AND d.status IN ('queued', 'in_progress', 'awaiting_approval')) THEN
        RETURN NEW;
    END IF;
    -- `grape config apply --state-moved`: a person copied the state to the
    -- new backend and says so (audited as state.backend_moved by the same
    -- transaction). Only the backend may change that way; a moved state
    -- that is not there is caught by the agent's empty-state guard.
    IF old_region = new_region AND current_setting('grape.state_moved', true) = 'on' THEN
        RETURN NEW;
    END IF;
    IF old_region <> new_region THEN
        what := format('region %s → %s', old_region, new_region);
    ELSE
        what := format('backend %s → %s', old_backend, new_backend);
    END IF;
    RAISE EXCEPTION 'config % is applied; changing its % would create the stack again and orphan the one that exists', OLD.name, what
        USING ERRCODE = 'check_violation', CONSTRAINT = 'configs_stack_identity',
              HINT = CASE WHEN old_region <> new_region
                  THEN 'destroy it first (grape deploy --action destroy), or use grape config apply --replace-stack to queue the destroy and the re-create as two reviewable deployments (docs/operations.md, "Where state lives")'
                  ELSE 'copy the state to the new backend first, then grape config apply --state-moved; or destroy it first, or grape config apply --replace-stack (docs/operations.md, "Moving state to another backend")' END;
END $$;
CREATE TRIGGER configs_identity_guard BEFORE UPDATE OF spec ON configs
    FOR EACH ROW EXECUTE FUNCTION grape_config_identity_guard();

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['grape_config_audit_rename()', 'grape_config_identity_guard()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

-- The claim looks the holder up by primary key for each candidate.
ALTER TABLE config_state_holders ENABLE ROW LEVEL SECURITY;

GRANT SELECT, INSERT ON config_state_holders TO grape_agent;
GRANT UPDATE (state_resources) ON deployments TO grape_agent;

CREATE POLICY agent_read ON config_state_holders FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
CREATE POLICY agent_record ON config_state_holders FOR INSERT TO grape_agent
    WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));

-- Supabase: browser users read the holders (0008 governs audit_events), and
-- may ask for the overrides when they queue (deployments_requested_by
-- records them as who asked).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON config_state_holders FROM anon;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        RETURN;
    END IF;
    REVOKE ALL ON config_state_holders FROM authenticated;
    IF to_regprocedure('auth.uid()') IS NULL THEN
        RETURN;
    END IF;
    GRANT SELECT ON config_state_holders TO authenticated;
    GRANT INSERT (accept_empty_state, accept_rollback) ON deployments TO authenticated;
    CREATE POLICY user_read ON config_state_holders FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (9, 'state_safety');
