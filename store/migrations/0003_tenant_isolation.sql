-- Tenant isolation, enforced by PostgreSQL rather than by the agent's good
-- behaviour (docs/security.md explains the model).
--
--  * Every agent of a cluster logs in as that cluster's own LOGIN role
--    (grape_agent_<id>, made by `grape cluster create`), a member of the
--    NOLOGIN group grape_agent. grape_agent_roles maps the role to its cluster.
--    Row-level security limits a member of grape_agent to its cluster's rows.
--  * A Supabase browser client (role authenticated) sees the clusters whose
--    owner_id is its auth.uid() or whose org_id is its JWT's
--    app_metadata.org_id, and those clusters' rows. anon sees nothing.
--  * RLS is ENABLEd, not FORCEd: the tables' owner (whoever ran the
--    migrations: `grape migrate`, Supabase's postgres) keeps full access, as do
--    superusers and BYPASSRLS roles such as Supabase's service_role. FORCE
--    would make the admin CLI, the rescuer of last resort and the migrations
--    themselves subject to policies written for tenants.
--
-- Runs on plain PostgreSQL and on Supabase: the authenticated/anon parts are
-- created only when those roles (and auth.uid()) exist.

-- Ownership, for Supabase front ends. NULL: no browser user sees the cluster.
ALTER TABLE clusters
    ADD COLUMN owner_id uuid,
    ADD COLUMN org_id   text CONSTRAINT clusters_org_id_length CHECK (length(org_id) BETWEEN 1 AND 200);
CREATE INDEX clusters_owner ON clusters (owner_id) WHERE owner_id IS NOT NULL;
CREATE INDEX clusters_org ON clusters (org_id) WHERE org_id IS NOT NULL;
COMMENT ON COLUMN clusters.owner_id IS 'Supabase auth user (auth.uid()) who may see and operate this cluster from a browser.';
COMMENT ON COLUMN clusters.org_id IS 'Organisation whose members (JWT app_metadata.org_id) may see and operate this cluster from a browser.';

-- The group every agent role belongs to. Roles belong to the whole server while
-- migrations run per database, so another database may have created it, or be
-- creating it right now (the second CREATE then fails on the unique index).
DO $$
DECLARE
    r pg_roles%ROWTYPE;
BEGIN
    SELECT * INTO r FROM pg_roles WHERE rolname = 'grape_agent';
    IF NOT FOUND THEN
        BEGIN
            CREATE ROLE grape_agent NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created concurrently by a migration of another database
        END;
        SELECT * INTO r FROM pg_roles WHERE rolname = 'grape_agent';
    END IF;
    -- Every policy below trusts that membership in grape_agent grants no more
    -- than the policies say. A pre-existing role that bypasses RLS would void that.
    IF r.rolsuper OR r.rolbypassrls OR r.rolcanlogin THEN
        RAISE EXCEPTION 'role grape_agent exists with LOGIN, SUPERUSER or BYPASSRLS; Grape''s agent isolation needs a plain NOLOGIN group'
            USING HINT = 'ALTER ROLE grape_agent NOLOGIN NOSUPERUSER NOBYPASSRLS, then migrate again';
    END IF;
END $$;

-- Which login role serves which cluster. Only the owner reads it; agents learn
-- their own cluster through grape_agent_cluster().
CREATE TABLE grape_agent_roles (
    role_name  text PRIMARY KEY CONSTRAINT grape_agent_roles_name CHECK (length(role_name) BETWEEN 1 AND 63),
    cluster_id text NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grape_agent_roles_cluster ON grape_agent_roles (cluster_id);
COMMENT ON TABLE grape_agent_roles IS 'Login role of each cluster''s agents; row-level security limits the role to that cluster.';

-- The cluster of the role this session logged in as, or NULL. session_user,
-- not current_user: inside a SECURITY DEFINER function current_user is the
-- function's owner. So an agent is the role it authenticated as; a privileged
-- session that merely SET ROLEs to an agent role maps to no cluster and sees
-- nothing (fail closed). Policies call it as (SELECT grape_agent_cluster()) so
-- it runs once per statement, not once per row.
CREATE FUNCTION grape_agent_cluster() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT cluster_id FROM grape_agent_roles WHERE role_name = session_user
$$;

-- Supabase request identity: PostgREST and Realtime put the verified JWT into
-- request.jwt.claims. Read directly (not through auth.jwt()) so these helpers
-- exist on plain PostgreSQL too, where the setting is simply absent.
CREATE FUNCTION grape_request_claims() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT nullif(current_setting('request.jwt.claims', true), '')::jsonb
$$;

-- The organisation claim lives in app_metadata, which only the service role
-- can write (user_metadata is editable by the user and must not be trusted).
CREATE FUNCTION grape_request_org() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT grape_request_claims() -> 'app_metadata' ->> 'org_id'
$$;

-- Who a browser request is, for the audit columns (*_by): the JWT's email,
-- else its subject. NULL outside a Supabase request.
CREATE FUNCTION grape_request_identity() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT nullif(coalesce(grape_request_claims() ->> 'email', grape_request_claims() ->> 'sub'), '')
$$;

-- An agent's log lines go through this function rather than COPY: PostgreSQL
-- refuses COPY FROM into a table with row-level security for any role the
-- policies apply to (0A000), and a per-row INSERT policy costs a deployments
-- lookup per line. This checks once per batch what the agent_append policy
-- checks per row — the deployment is of the caller's cluster and in progress
-- (or changed by this very transaction, as the rescuer does before writing
-- its note) — then inserts as the owner. Rows already stored are skipped (the
-- retry of a batch whose commit was not acknowledged); the result is the
-- number of rows inserted. Sessions that bypass RLS anyway (owner, superuser,
-- BYPASSRLS) may call it too, so one code path serves both.
CREATE FUNCTION grape_append_logs(p_deployment_id uuid, p_seqs bigint[], p_streams text[], p_lines text[], p_created timestamptz[])
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    caller_cluster text := grape_agent_cluster();
    d record;
    n bigint;
BEGIN
    IF caller_cluster IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = session_user AND (r.rolsuper OR r.rolbypassrls))
           AND NOT pg_has_role(session_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'deployment_logs'::regclass), 'USAGE') THEN
            RAISE EXCEPTION 'role % is not an agent role of any cluster', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSE
        SELECT dep.cluster_id, dep.status, dep.updated_at INTO d FROM deployments dep WHERE dep.id = p_deployment_id;
        -- One message whether the deployment is missing or another cluster's:
        -- an agent must not learn which ids exist elsewhere.
        IF NOT FOUND OR d.cluster_id <> caller_cluster THEN
            RAISE EXCEPTION 'deployment % is not a deployment of cluster %', p_deployment_id, caller_cluster
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        IF d.status <> 'in_progress' AND d.updated_at <> now() THEN
            RAISE EXCEPTION 'deployment % is %, not in progress: its log is closed to agents', p_deployment_id, d.status
                USING ERRCODE = 'insufficient_privilege', HINT = 'the lease was lost or the deployment ended';
        END IF;
    END IF;
    IF cardinality(p_seqs) IS DISTINCT FROM cardinality(p_streams)
       OR cardinality(p_seqs) IS DISTINCT FROM cardinality(p_lines)
       OR cardinality(p_seqs) IS DISTINCT FROM cardinality(p_created) THEN
        RAISE EXCEPTION 'grape_append_logs: seqs, streams, lines and created must have the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO deployment_logs (deployment_id, seq, stream, line, created_at)
    SELECT p_deployment_id, u.seq, u.stream, u.line, coalesce(u.created_at, now())
    FROM unnest(p_seqs, p_streams, p_lines, p_created) AS u(seq, stream, line, created_at)
    ON CONFLICT (deployment_id, seq) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Cancel and approve requests written straight into deployments (a browser
-- client has no Go in between) get the rules Store.RequestCancel and
-- Store.Approve apply: approve only what awaits approval and only while the
-- config is unchanged since the plan; a cancel of something not running ends
-- it at once. Timestamps come from the server, and a Supabase user is
-- recorded as who the JWT says, not as whatever the client wrote.
CREATE FUNCTION grape_deployment_request_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    current_version integer;
    who text := grape_request_identity();
    msg text;
BEGIN
    IF NEW.approved_at IS DISTINCT FROM OLD.approved_at THEN
        IF OLD.approved_at IS NOT NULL THEN
            NEW.approved_at := OLD.approved_at; -- approving twice is harmless
            NEW.approved_by := OLD.approved_by;
        ELSIF OLD.status <> 'awaiting_approval' OR NEW.status <> 'awaiting_approval' THEN
            RAISE EXCEPTION 'deployment % is %, not awaiting approval', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        ELSE
            SELECT c.version INTO current_version FROM configs c WHERE c.id = OLD.config_id;
            IF OLD.config_version IS NOT NULL AND current_version <> OLD.config_version THEN
                RAISE EXCEPTION 'approval refused: the config changed from v% to v% since this plan was made; queue a new deployment',
                    OLD.config_version, current_version USING ERRCODE = 'check_violation';
            END IF;
            NEW.approved_at := now();
            NEW.approved_by := coalesce(who, NEW.approved_by);
        END IF;
    END IF;
    IF NEW.cancel_requested_at IS DISTINCT FROM OLD.cancel_requested_at THEN
        IF OLD.cancel_requested_at IS NOT NULL THEN
            NEW.cancel_requested_at := OLD.cancel_requested_at; -- the first request stands
            NEW.cancel_requested_by := OLD.cancel_requested_by;
        ELSIF OLD.status IN ('succeeded', 'failed', 'cancelled') THEN
            RAISE EXCEPTION 'deployment % is already %', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        ELSE
            NEW.cancel_requested_at := now();
            NEW.cancel_requested_by := coalesce(who, NEW.cancel_requested_by);
            -- Nothing runs a queued or parked deployment: end it now. (The Go
            -- store sets these columns itself in the same UPDATE.)
            IF NEW.status IN ('queued', 'awaiting_approval') THEN
                msg := format('cancelled by %s before %s', coalesce(NEW.cancel_requested_by, 'a user'),
                              CASE NEW.status WHEN 'queued' THEN 'it started' ELSE 'approval' END);
                NEW.status := 'cancelled';
                NEW.error_kind := 'cancelled';
                NEW.error := msg;
                NEW.finished_at := now();
                NEW.lease_expires_at := NULL;
                INSERT INTO deployment_logs (deployment_id, seq, stream, line)
                SELECT NEW.id, coalesce(max(l.seq), 0) + 1, 'agent', msg FROM deployment_logs l WHERE l.deployment_id = NEW.id;
            END IF;
        END IF;
    END IF;
    RETURN NEW;
END $$;

-- Only statements that name these columns pay for the trigger: heartbeats and
-- phase changes do not.
CREATE TRIGGER deployments_request_guard BEFORE UPDATE OF approved_at, cancel_requested_at ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_request_guard();

-- A deployment queued from a browser is recorded as requested by the JWT's
-- user, whatever requested_by the client sent.
CREATE FUNCTION grape_deployment_requested_by() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.requested_by := coalesce(grape_request_identity(), NEW.requested_by);
    RETURN NEW;
END $$;

CREATE TRIGGER deployments_requested_by BEFORE INSERT ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_requested_by();

-- Config history is written by the configs trigger alone. As SECURITY
-- DEFINER it works for a browser user editing its config without that user
-- holding INSERT on config_versions (which would let it forge history).
ALTER FUNCTION grape_config_record_version() SECURITY DEFINER;

-- SECURITY DEFINER functions run with a fixed search_path: the schema Grape was
-- migrated into, and pg_temp last (explicitly — otherwise it is searched
-- first, and any role with TEMP could shadow deployments with a temp table).
DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'grape_agent_cluster()',
        'grape_append_logs(uuid, bigint[], text[], text[], timestamptz[])',
        'grape_deployment_request_guard()',
        'grape_config_record_version()'
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

-- Functions are executable by PUBLIC by default (and Supabase grants new
-- functions to anon and authenticated): keep the two an agent needs to itself.
REVOKE EXECUTE ON FUNCTION grape_agent_cluster() FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION grape_append_logs(uuid, bigint[], text[], text[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION grape_agent_cluster() TO grape_agent;
GRANT EXECUTE ON FUNCTION grape_append_logs(uuid, bigint[], text[], text[], timestamptz[]) TO grape_agent;

-- Row-level security on every Grape table. With RLS on and no policy for a
-- role, that role sees and changes nothing.
ALTER TABLE clusters ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE configs ENABLE ROW LEVEL SECURITY;
ALTER TABLE config_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE deployments ENABLE ROW LEVEL SECURITY;
ALTER TABLE deployment_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE drift_reports ENABLE ROW LEVEL SECURITY;
ALTER TABLE grape_agent_roles ENABLE ROW LEVEL SECURITY;
ALTER TABLE grape_schema_migrations ENABLE ROW LEVEL SECURITY;

-- What an agent may do at all (the policies then say to which rows). Column
-- lists keep it off what people decide: approvals, cancel requests, the
-- config a deployment runs, its action and attempts budget.
GRANT SELECT ON clusters, agents, configs, config_versions, deployments, deployment_logs, drift_reports,
    grape_schema_migrations TO grape_agent;
GRANT INSERT (id, cluster_id, hostname, version, started_at, last_heartbeat_at, stopped_at),
      UPDATE (cluster_id, hostname, version, started_at, last_heartbeat_at, stopped_at) ON agents TO grape_agent;
-- INSERT: drift checks and remediation runs are queued by the agent itself.
GRANT INSERT (config_id, cluster_id, action, require_approval, source_commit, requested_by, max_attempts),
      UPDATE (status, phase, claimed_by, claimed_at, heartbeat_at, lease_expires_at, started_at, finished_at,
              attempt, error, error_kind, commit_sha, plan_summary, outputs, cost) ON deployments TO grape_agent;
GRANT INSERT ON deployment_logs, drift_reports TO grape_agent;

CREATE POLICY agent_read ON clusters FOR SELECT TO grape_agent
    USING (id = (SELECT grape_agent_cluster()));

CREATE POLICY agent_read ON agents FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
CREATE POLICY agent_register ON agents FOR INSERT TO grape_agent
    WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));
-- An existing agents row of another cluster fails USING, so an upsert of its id
-- is refused with an error rather than moving that agent into this cluster.
CREATE POLICY agent_update ON agents FOR UPDATE TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()))
    WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));

CREATE POLICY agent_read ON configs FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));

CREATE POLICY agent_read ON config_versions FOR SELECT TO grape_agent
    USING (config_id IN (SELECT c.id FROM configs c WHERE c.cluster_id = (SELECT grape_agent_cluster())));

CREATE POLICY agent_read ON deployments FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
CREATE POLICY agent_queue ON deployments FOR INSERT TO grape_agent
    WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));
-- Claim (SELECT … FOR UPDATE SKIP LOCKED needs both the UPDATE privilege and
-- this policy), lease, phase, outcome and rescue. Finished deployments are
-- history: no agent credential can rewrite them.
CREATE POLICY agent_update ON deployments FOR UPDATE TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()) AND status IN ('queued', 'in_progress', 'awaiting_approval'))
    WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));

-- Log policies look the deployment up by primary key for each line read, so a
-- read costs the same however long the cluster's history grows (an IN
-- (SELECT …) form hashes every deployment of the cluster on every read).
CREATE POLICY agent_read ON deployment_logs FOR SELECT TO grape_agent
    USING (EXISTS (
        SELECT 1 FROM deployments d
        WHERE d.id = deployment_logs.deployment_id AND d.cluster_id = (SELECT grape_agent_cluster())));
-- Lines only into a deployment of this cluster that is running, or whose state
-- this transaction just changed (updated_at is set to now(), the transaction
-- start, by the deployments_touch trigger): the rescuer's and the canceller's
-- notes. grape_append_logs applies the same rule once per batch.
CREATE POLICY agent_append ON deployment_logs FOR INSERT TO grape_agent
    WITH CHECK (EXISTS (
        SELECT 1 FROM deployments d
        WHERE d.id = deployment_logs.deployment_id
          AND d.cluster_id = (SELECT grape_agent_cluster())
          AND (d.status = 'in_progress' OR d.updated_at = now())));

CREATE POLICY agent_read ON drift_reports FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
-- The (config_id, cluster_id) foreign key already ties the config to the
-- cluster; the deployment reference must be one of this config's runs too
-- (foreign keys are checked without RLS, so it would otherwise accept, and
-- confirm the existence of, another cluster's deployment id).
CREATE POLICY agent_report ON drift_reports FOR INSERT TO grape_agent
    WITH CHECK (cluster_id = (SELECT grape_agent_cluster())
                AND (deployment_id IS NULL OR EXISTS (
                    SELECT 1 FROM deployments d
                    WHERE d.id = drift_reports.deployment_id AND d.config_id = drift_reports.config_id)));

-- Which schema version this is tells nobody anything about a tenant.
CREATE POLICY agent_read ON grape_schema_migrations FOR SELECT TO grape_agent USING (true);

-- Supabase. Its default privileges grant ALL on every new table in public to
-- anon, authenticated and service_role; RLS is what stands between a browser
-- and the data, and the grants are narrowed to what the policies allow.
-- service_role keeps its grants: it has BYPASSRLS and is the server side.
DO $$
DECLARE
    t text;
    grape_tables text[] := ARRAY['clusters', 'agents', 'configs', 'config_versions', 'deployments',
                                 'deployment_logs', 'drift_reports', 'grape_agent_roles', 'grape_schema_migrations'];
    fns text[] := ARRAY['grape_agent_cluster()', 'grape_append_logs(uuid, bigint[], text[], text[], timestamptz[])'];
BEGIN
    FOREACH t IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = t) THEN
            EXECUTE format('REVOKE ALL ON %s FROM %I', array_to_string(grape_tables, ', '), t);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', array_to_string(fns, ', '), t);
        END IF;
    END LOOP;

    -- Without auth.uid() there is no way to tell browser users apart: then
    -- authenticated gets no policy, and so sees nothing.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') OR to_regprocedure('auth.uid()') IS NULL THEN
        RETURN;
    END IF;

    GRANT SELECT ON clusters, agents, configs, config_versions, deployments, deployment_logs, drift_reports TO authenticated;
    GRANT INSERT (cluster_id, name, spec, require_approval, auto_remediate, drift_schedule),
          UPDATE (spec, require_approval, auto_remediate, drift_schedule) ON configs TO authenticated;
    -- Queue (status is not grantable: the row starts queued) and request
    -- cancel/approval (deployments_request_guard applies the rules).
    GRANT INSERT (config_id, cluster_id, action, require_approval, requested_by, max_attempts),
          UPDATE (approved_at, approved_by, cancel_requested_at, cancel_requested_by) ON deployments TO authenticated;

    -- The cluster is the unit of ownership; every other table follows its
    -- cluster through a subquery on clusters, itself filtered by this policy.
    CREATE POLICY user_read ON clusters FOR SELECT TO authenticated
        USING (owner_id = (SELECT auth.uid()) OR org_id = (SELECT grape_request_org()));
    CREATE POLICY user_read ON agents FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_read ON configs FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_create ON configs FOR INSERT TO authenticated
        WITH CHECK (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_edit ON configs FOR UPDATE TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c))
        WITH CHECK (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_read ON config_versions FOR SELECT TO authenticated
        USING (config_id IN (SELECT c.id FROM configs c));
    CREATE POLICY user_read ON deployments FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_queue ON deployments FOR INSERT TO authenticated
        WITH CHECK (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_request ON deployments FOR UPDATE TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c))
        WITH CHECK (cluster_id IN (SELECT c.id FROM clusters c));
    CREATE POLICY user_read ON deployment_logs FOR SELECT TO authenticated
        USING (EXISTS (SELECT 1 FROM deployments d WHERE d.id = deployment_logs.deployment_id));
    CREATE POLICY user_read ON drift_reports FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (3, 'tenant_isolation');
