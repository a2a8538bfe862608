-- The portal acts as its signed-in user (docs/portal.md, "Who the portal
-- acts as"): each request runs as role authenticated with the user's claims
-- in request.jwt.claims, as Supabase's own API does, so the policies and
-- triggers of the migrations before this one are the portal's rules too.
--
--  * Plain PostgreSQL gets what those migrations expected from Supabase: the
--    role authenticated, auth.uid(), and the grants and policies they only
--    created where both existed. A database migrated on Supabase already has
--    them; this changes nothing there.
--  * grape_fail_stale_approval ends a parked run whose config changed, for
--    a user who may approve (the owner's store does it itself).
--  * grape_queue_at_commit: a user may not name a deployment's source_commit
--    (the user_queue policy keeps it NULL), yet retrying a remediation, a
--    drift check ("Check now") and a remediation all re-run a commit. This
--    function queues them for an operator, and only at the config's last
--    applied commit, so no user can roll a config back to an older one.

-- The commit of a config's newest succeeded apply: what a drift check
-- compares with and a remediation re-applies.
CREATE FUNCTION grape_config_last_applied_commit(p_config_id uuid) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT d.commit_sha FROM deployments d
    WHERE d.config_id = p_config_id AND d.action = 'apply' AND d.status = 'succeeded' AND d.commit_sha IS NOT NULL
    ORDER BY d.finished_at DESC, d.id DESC LIMIT 1
$$;

CREATE FUNCTION grape_queue_at_commit(p_config_id uuid, p_action text, p_commit text, p_require_approval boolean,
                                      p_max_attempts integer, p_requested_by text) RETURNS deployments
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    cfg configs;
    applied text;
    d deployments;
BEGIN
    IF grape_session_is_agent() THEN
        RAISE EXCEPTION 'agents queue their own runs directly' USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT * INTO cfg FROM configs WHERE id = p_config_id;
    -- A user who may not see the config learns nothing about it.
    IF NOT FOUND OR (grape_request_uid() IS NOT NULL AND grape_user_role(cfg.cluster_id) IS NULL) THEN
        RAISE EXCEPTION 'config % not found', p_config_id USING ERRCODE = 'no_data_found';
    END IF;
    IF grape_request_uid() IS NOT NULL AND NOT grape_user_may(cfg.cluster_id, 'operator') THEN
        RAISE EXCEPTION 'queueing needs the operator, approver or admin role on cluster %', cfg.cluster_id
            USING ERRCODE = 'insufficient_privilege', HINT = 'ask an admin of the cluster: grape member add';
    END IF;
    IF p_action NOT IN ('apply', 'drift') THEN
        RAISE EXCEPTION 'only an apply or a drift check runs at a given commit, not %', p_action
            USING ERRCODE = 'check_violation', CONSTRAINT = 'grape_queue_at_commit';
    END IF;
    applied := grape_config_last_applied_commit(p_config_id);
    IF applied IS NULL THEN
        RAISE EXCEPTION 'config % was never applied: there is no commit to run', cfg.name
            USING ERRCODE = 'check_violation', CONSTRAINT = 'grape_queue_at_commit';
    END IF;
    IF p_commit IS DISTINCT FROM applied THEN
        RAISE EXCEPTION 'commit % is not config %''s last applied commit (%): running it would roll back what was applied since; queue a new deployment instead',
            left(coalesce(p_commit, 'none'), 12), cfg.name, left(applied, 12)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'grape_queue_at_commit';
    END IF;
    -- The usual triggers run: requested_by becomes the user, the approval
    -- gate is never weaker than the config's.
    INSERT INTO deployments (config_id, cluster_id, action, require_approval, source_commit, requested_by, max_attempts)
    VALUES (cfg.id, cfg.cluster_id, p_action, coalesce(p_require_approval, false), p_commit,
            coalesce(p_requested_by, ''), coalesce(p_max_attempts, CASE p_action WHEN 'drift' THEN 1 ELSE 3 END))
    RETURNING * INTO d;
    RETURN d;
END $$;

-- Approving a plan whose config changed since is refused by the guard
-- trigger (0008), which cannot also end the run: it raises. The owner's
-- store fails such a run at once; this does the same for a user allowed to
-- approve, so the run does not wait for its approval timeout. It only ends
-- a run no approval can ever start.
CREATE FUNCTION grape_fail_stale_approval(p_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    d deployments;
    current_version integer;
    msg text;
BEGIN
    SELECT * INTO d FROM deployments WHERE id = p_id FOR UPDATE;
    IF NOT FOUND OR grape_session_is_agent()
       OR (grape_request_uid() IS NOT NULL AND NOT grape_user_may(d.cluster_id, 'approver'))
       OR d.status <> 'awaiting_approval' OR d.approved_at IS NOT NULL OR d.config_version IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT c.version INTO current_version FROM configs c WHERE c.id = d.config_id;
    IF current_version = d.config_version THEN
        RETURN NULL;
    END IF;
    msg := format('approval refused: the config changed from v%s to v%s since this plan was made; queue a new deployment',
                  d.config_version, current_version);
    UPDATE deployments SET status = 'failed', error_kind = 'approval_refused', error = msg, finished_at = now(),
        lease_expires_at = NULL WHERE id = p_id;
    INSERT INTO deployment_logs (deployment_id, seq, stream, line)
    SELECT p_id, coalesce(max(l.seq), 0) + 1, 'agent', msg FROM deployment_logs l WHERE l.deployment_id = p_id;
    RETURN msg;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION grape_fail_stale_approval(uuid) SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION grape_queue_at_commit(uuid, text, text, boolean, integer, text) SET search_path = pg_catalog, %I, pg_temp',
                   current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION grape_queue_at_commit(uuid, text, text, boolean, integer, text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION grape_fail_stale_approval(uuid) FROM PUBLIC;

-- Plain PostgreSQL: the user side of 0003-0010 as it stands after them (later
-- migrations up to this one grant users nothing).
-- Skipped where both the role and auth.uid() existed, as those migrations
-- then created it themselves. A migrating role that may not create roles
-- leaves a warning, and `grape serve` refuses to start until it is done.
DO $$
DECLARE
    me text := current_user;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') AND to_regprocedure('auth.uid()') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION grape_queue_at_commit(uuid, text, text, boolean, integer, text),
                                  grape_fail_stale_approval(uuid) TO authenticated;
        RETURN;
    END IF;
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
            BEGIN
                CREATE ROLE authenticated NOLOGIN NOINHERIT;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- roles are server-wide: another database's migration made it just now
            END;
        END IF;
        -- The portal connects as the owner and switches to the role per
        -- request (SET LOCAL ROLE), which needs membership.
        IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = me) THEN
            EXECUTE format('GRANT authenticated TO %I', me);
        END IF;
        CREATE SCHEMA IF NOT EXISTS auth;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE WARNING 'role % could not create the role authenticated or the schema auth (%): the portal cannot act as its users until a superuser runs: CREATE ROLE authenticated NOLOGIN NOINHERIT; GRANT authenticated TO %; CREATE SCHEMA auth AUTHORIZATION %; and grape migrate is run again on a fresh database',
            me, SQLERRM, me, me;
        RETURN;
    END;

    -- Supabase's auth.uid(): the request's user. Through grape_request_uid,
    -- so an agent's forged claims are nobody here too.
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS 'SELECT grape_request_uid()';
        EXECUTE format('ALTER FUNCTION auth.uid() SET search_path = pg_catalog, %I, pg_temp', current_schema());
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA auth, %I TO authenticated', current_schema());

    -- 0003, with 0004 (policy_set), 0007 (approval_timeout), 0008 (roles),
    -- 0009 (state overrides) and 0010 (review_comment).
    GRANT SELECT ON clusters, agents, configs, config_versions, deployments, deployment_logs, drift_reports TO authenticated;
    GRANT INSERT (cluster_id, name, spec, require_approval, auto_remediate, drift_schedule, policy_set, approval_timeout),
          UPDATE (spec, require_approval, auto_remediate, drift_schedule, policy_set, approval_timeout) ON configs TO authenticated;
    GRANT INSERT (config_id, cluster_id, action, require_approval, requested_by, max_attempts, source_commit,
                  accept_empty_state, accept_rollback),
          UPDATE (approved_at, approved_by, cancel_requested_at, cancel_requested_by, rejected_at, review_comment)
          ON deployments TO authenticated;
    GRANT UPDATE (four_eyes, description) ON clusters TO authenticated;

    CREATE POLICY user_read ON clusters FOR SELECT TO authenticated
        USING (id IN (SELECT grape_user_clusters()));
    CREATE POLICY user_settings ON clusters FOR UPDATE TO authenticated
        USING (grape_user_may(id, 'admin')) WITH CHECK (grape_user_may(id, 'admin'));
    CREATE POLICY user_read ON agents FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_read ON configs FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_create ON configs FOR INSERT TO authenticated
        WITH CHECK (grape_user_may(cluster_id, 'admin'));
    CREATE POLICY user_edit ON configs FOR UPDATE TO authenticated
        USING (grape_user_may(cluster_id, 'admin')) WITH CHECK (grape_user_may(cluster_id, 'admin'));
    CREATE POLICY user_read ON config_versions FOR SELECT TO authenticated
        USING (config_id IN (SELECT c.id FROM configs c));
    CREATE POLICY user_read ON deployments FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_queue ON deployments FOR INSERT TO authenticated
        WITH CHECK (grape_user_may(cluster_id, 'operator') AND action IN ('plan', 'apply', 'destroy') AND source_commit IS NULL);
    CREATE POLICY user_request ON deployments FOR UPDATE TO authenticated
        USING (grape_user_may(cluster_id, 'operator')) WITH CHECK (grape_user_may(cluster_id, 'operator'));
    CREATE POLICY user_read ON deployment_logs FOR SELECT TO authenticated
        USING (EXISTS (SELECT 1 FROM deployments d WHERE d.id = deployment_logs.deployment_id));
    CREATE POLICY user_read ON drift_reports FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));

    -- 0005
    GRANT SELECT ON workspace_rewrites TO authenticated;
    CREATE POLICY user_read ON workspace_rewrites FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));

    -- 0008
    GRANT SELECT, DELETE ON memberships TO authenticated;
    GRANT INSERT (cluster_id, user_id, role), UPDATE (role) ON memberships TO authenticated;
    CREATE POLICY user_read ON memberships FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_manage ON memberships FOR ALL TO authenticated
        USING (grape_user_may(cluster_id, 'admin')) WITH CHECK (grape_user_may(cluster_id, 'admin'));
    GRANT SELECT ON audit_events TO authenticated;
    CREATE POLICY user_read ON audit_events FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    GRANT EXECUTE ON FUNCTION grape_my_role(text) TO authenticated;
    GRANT SELECT (id, cluster_id, url, format, events, created_at, created_by) ON notify_targets TO authenticated;
    CREATE POLICY user_read ON notify_targets FOR SELECT TO authenticated
        USING (grape_user_may(cluster_id, 'admin'));
    GRANT SELECT ON notify_outbox TO authenticated;
    CREATE POLICY user_read ON notify_outbox FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));

    -- 0009
    GRANT SELECT ON config_state_holders TO authenticated;
    CREATE POLICY user_read ON config_state_holders FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));

    GRANT EXECUTE ON FUNCTION grape_queue_at_commit(uuid, text, text, boolean, integer, text),
                              grape_fail_stale_approval(uuid) TO authenticated;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (12, 'portal_users');
