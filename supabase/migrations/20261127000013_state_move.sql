-- `grape state move` (docs/operations.md, "Moving a local state to another
-- agent"): a local state is handed from the agent holding it to another agent
-- of the cluster over a direct, pinned TLS connection between the two. The
-- database carries only the request and its metadata — who, where to dial,
-- which certificate to pin, the hash of a one-time token, the digest of what
-- arrived — never the state, which holds secrets.
--
-- A move walks requested → listening (the receiver opened its one-time
-- listener) → sending (the holder took it and dials) → done | failed.

-- Agents started with --state-handoff-addr say so, so a move to an agent
-- that cannot receive is refused when it is asked for, not after a timeout.
ALTER TABLE agents ADD COLUMN state_handoff_addr text
    CONSTRAINT agents_state_handoff_addr CHECK (length(state_handoff_addr) BETWEEN 1 AND 300);
COMMENT ON COLUMN agents.state_handoff_addr IS 'HOST:PORT the agent opens one-time listeners on to receive a moved local state (--state-handoff-addr); NULL: it cannot receive.';

CREATE TABLE state_moves (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id           text NOT NULL,
    config_id            uuid NOT NULL,
    from_agent           text NOT NULL CONSTRAINT state_moves_from CHECK (length(from_agent) BETWEEN 1 AND 200),
    to_agent             text NOT NULL CONSTRAINT state_moves_to CHECK (length(to_agent) BETWEEN 1 AND 200),
    status               text NOT NULL DEFAULT 'requested'
        CONSTRAINT state_moves_status CHECK (status IN ('requested', 'listening', 'sending', 'done', 'failed')),
    requested_by         text NOT NULL CONSTRAINT state_moves_requested_by CHECK (length(requested_by) BETWEEN 1 AND 200),
    reason               text NOT NULL DEFAULT '' CONSTRAINT state_moves_reason CHECK (length(reason) <= 1000),
    -- Published by the receiver: where to dial and the SHA-256 of the
    -- certificate it will present (self-signed, made for this move only).
    receiver_addr        text CONSTRAINT state_moves_addr CHECK (length(receiver_addr) <= 300),
    receiver_cert_sha256 text CONSTRAINT state_moves_cert CHECK (receiver_cert_sha256 ~ '^[0-9a-f]{64}$'),
    -- Published by the sender: the SHA-256 of the one-time token it presents,
    -- so the receiver accepts the state from that sender only.
    token_sha256         text CONSTRAINT state_moves_token CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    -- SHA-256 of the state file as the receiver verified and stored it.
    state_sha256         text CONSTRAINT state_moves_state_digest CHECK (state_sha256 ~ '^[0-9a-f]{64}$'),
    files                integer,
    error                text CONSTRAINT state_moves_error CHECK (length(error) <= 2000),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    expires_at           timestamptz NOT NULL DEFAULT now() + interval '5 minutes',
    finished_at          timestamptz,
    CONSTRAINT state_moves_agents CHECK (from_agent <> to_agent),
    CONSTRAINT state_moves_config FOREIGN KEY (config_id, cluster_id) REFERENCES configs (id, cluster_id) ON DELETE CASCADE
);
COMMENT ON TABLE state_moves IS 'Requests to hand a local terraform state from the agent holding it to another agent, agent to agent (the state never passes through the database).';
-- One open move per config; the claim skips configs with one.
CREATE UNIQUE INDEX state_moves_one_open ON state_moves (config_id) WHERE status IN ('requested', 'listening', 'sending');
CREATE INDEX state_moves_cluster ON state_moves (cluster_id, created_at DESC);

-- The agents of the cluster wake on grape_moves_<cluster> ("<status>:<id>");
-- moves are rare, so the commit-time lock a NOTIFY takes costs nothing here.
CREATE FUNCTION grape_state_move_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('grape_moves_' || NEW.cluster_id, NEW.status || ':' || NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER state_moves_notify AFTER INSERT OR UPDATE OF status ON state_moves
    FOR EACH ROW EXECUTE FUNCTION grape_state_move_notify();

-- The receiver ends a move: in one transaction the holder row names it and
-- the move is done, recorded in the audit trail. Agents may not change a
-- holder otherwise (0009); this function only follows a person's request,
-- only from the agent that holds the state to the one the request names,
-- and only for the caller's own cluster.
CREATE FUNCTION grape_state_move_complete(p_move uuid, p_agent text, p_state_sha256 text, p_files integer)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    m state_moves;
    caller text := grape_agent_cluster();
BEGIN
    SELECT * INTO m FROM state_moves WHERE id = p_move FOR UPDATE;
    IF NOT FOUND OR (caller IS NOT NULL AND m.cluster_id <> caller) THEN
        RAISE EXCEPTION 'state move % does not exist', p_move USING ERRCODE = 'no_data_found';
    END IF;
    IF m.status <> 'sending' OR m.to_agent <> p_agent THEN
        RAISE EXCEPTION 'state move % is %, to agent %: agent % cannot complete it', p_move, m.status, m.to_agent, p_agent
            USING ERRCODE = 'check_violation', CONSTRAINT = 'state_moves_complete';
    END IF;
    UPDATE config_state_holders SET agent_id = m.to_agent, recorded_at = now(), deployment_id = NULL
    WHERE config_id = m.config_id AND agent_id = m.from_agent;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'state move %: agent % no longer holds the state of config %', p_move, m.from_agent, m.config_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'state_moves_holder';
    END IF;
    UPDATE state_moves SET status = 'done', state_sha256 = p_state_sha256, files = p_files,
        updated_at = now(), finished_at = now()
    WHERE id = p_move;
END $$;

-- Every step that matters lands in the audit trail, whoever wrote it (the
-- CLI, an agent role, raw SQL): requested, moved, failed with its reason.
CREATE FUNCTION grape_state_move_audit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    action text;
    details jsonb := jsonb_build_object('move', NEW.id, 'from', NEW.from_agent, 'to', NEW.to_agent, 'requested_by', NEW.requested_by);
BEGIN
    IF TG_OP = 'INSERT' THEN
        action := 'state.move_requested';
        details := details || jsonb_build_object('reason', NEW.reason);
    ELSIF NEW.status = 'done' AND OLD.status <> 'done' THEN
        action := 'state.moved';
        details := details || jsonb_build_object('state_sha256', NEW.state_sha256, 'files', NEW.files, 'receiver_addr', NEW.receiver_addr);
    ELSIF NEW.status = 'failed' AND OLD.status <> 'failed' THEN
        action := 'state.move_failed';
        details := details || jsonb_build_object('error', NEW.error, 'was', OLD.status);
    ELSE
        RETURN NULL;
    END IF;
    PERFORM grape_audit(grape_actor(NEW.requested_by), action, NEW.cluster_id, NEW.config_id::text, details);
    RETURN NULL;
END $$;
CREATE TRIGGER state_moves_audit AFTER INSERT OR UPDATE OF status ON state_moves
    FOR EACH ROW EXECUTE FUNCTION grape_state_move_audit();

REVOKE EXECUTE ON FUNCTION grape_state_move_complete(uuid, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION grape_state_move_complete(uuid, text, text, integer) TO grape_agent;


-- A backend change as a state migration (`grape config apply
-- --migrate-backend`): the intent's new backend is stored and, in the same
-- transaction, a deployment is queued with migrate_state; the agent holding
-- the (local) state runs terraform's own `init -migrate-state -force-copy`
-- on it before planning, shown in its log and its audit commit. The state
-- goes from the agent's disk to the new backend directly.
ALTER TABLE deployments ADD COLUMN migrate_state boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN deployments.migrate_state IS 'This run migrates the config''s state from the backend it was applied with to the intent''s (terraform init -migrate-state); queued by grape config apply --migrate-backend.';

CREATE OR REPLACE FUNCTION grape_config_identity_guard() RETURNS trigger
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
    -- `grape config apply --migrate-backend`: the same transaction
    -- queues the deployment on which the agent holding the state runs
    -- terraform's own migration (init -migrate-state -force-copy).
    IF old_region = new_region AND current_setting('grape.migrate_backend', true) = 'on' THEN
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
                  ELSE 'grape config apply --migrate-backend has the agent holding the state migrate it (local to s3); or copy the state to the new backend first, then grape config apply --state-moved (grape config apply prints the exact commands); or destroy it first, or grape config apply --replace-stack (docs/operations.md, "Moving state to another backend")' END;
END $$;


-- The agent that migrated a local state to a shared backend stops holding
-- it: any agent may then run the config. Only for the caller's own
-- in-progress migrating run, only by the agent that claimed it.
CREATE FUNCTION grape_state_migrated(p_deployment uuid, p_agent text, p_to text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    d deployments;
    caller text := grape_agent_cluster();
BEGIN
    SELECT * INTO d FROM deployments WHERE id = p_deployment;
    IF NOT FOUND OR (caller IS NOT NULL AND d.cluster_id <> caller)
       OR d.status <> 'in_progress' OR d.claimed_by IS DISTINCT FROM p_agent OR NOT d.migrate_state THEN
        RAISE EXCEPTION 'deployment % is not a state migration agent % runs', p_deployment, p_agent
            USING ERRCODE = 'check_violation', CONSTRAINT = 'deployments_migrate_state';
    END IF;
    DELETE FROM config_state_holders WHERE config_id = d.config_id AND agent_id = p_agent;
    PERFORM grape_audit(grape_actor(d.requested_by), 'state.backend_migrated', d.cluster_id, d.config_id::text,
        jsonb_build_object('deployment', d.id, 'agent', p_agent, 'to', p_to, 'requested_by', d.requested_by));
END $$;
REVOKE EXECUTE ON FUNCTION grape_state_migrated(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION grape_state_migrated(uuid, text, text) TO grape_agent;

ALTER TABLE state_moves ENABLE ROW LEVEL SECURITY;
GRANT SELECT, UPDATE (status, receiver_addr, receiver_cert_sha256, token_sha256, error, updated_at, finished_at)
    ON state_moves TO grape_agent;
GRANT UPDATE (state_handoff_addr) ON agents TO grape_agent;
CREATE POLICY agent_read ON state_moves FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
CREATE POLICY agent_update ON state_moves FOR UPDATE TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster())) WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));

-- Supabase: browser users of the cluster read moves (no secret is in them).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        REVOKE ALL ON state_moves FROM anon;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        RETURN;
    END IF;
    REVOKE ALL ON state_moves FROM authenticated;
    IF to_regprocedure('auth.uid()') IS NULL THEN
        RETURN;
    END IF;
    GRANT SELECT ON state_moves TO authenticated;
    CREATE POLICY user_read ON state_moves FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
END $$;

-- SECURITY DEFINER functions resolve names in Grape's schema only.
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['grape_state_move_complete(uuid, text, text, integer)', 'grape_state_move_audit()',
                             'grape_config_identity_guard()', 'grape_state_migrated(uuid, text, text)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (13, 'state_move');
