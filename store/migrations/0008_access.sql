-- Access: roles per cluster, four eyes on approvals, an audit trail and the
-- intent limits, enforced by PostgreSQL so every front end (the CLI, the
-- portal, a Supabase client writing rows directly) obeys one set of rules
-- (docs/security.md, "People").
--
--  * memberships (cluster, user, role): viewer reads; operator also queues
--    plan/apply/destroy and cancels; approver also approves and rejects;
--    admin also edits configs and their settings, the cluster's settings and
--    its memberships. A cluster's owner_id, and members of its org_id, are
--    admins, so the rules of 0003 keep working.
--  * four eyes: who requested a deployment cannot approve it, unless the
--    cluster's four_eyes setting is off. Checked by the guard trigger.
--  * audit_events: append-only, written by triggers (SECURITY DEFINER) so
--    Supabase clients are audited too; only the tables' owner may change or
--    delete a row.
--  * An agent's session never counts as a user: claims it sets in
--    request.jwt.claims are ignored.

-- Four eyes is on for clusters created from now on. Clusters that exist when
-- this migration runs keep today's behaviour (one person may request and
-- approve) until an admin turns it on: an upgrade must not lock a one-person
-- team out of its own approvals.
ALTER TABLE clusters ADD COLUMN four_eyes boolean NOT NULL DEFAULT false;
ALTER TABLE clusters ALTER COLUMN four_eyes SET DEFAULT true;
COMMENT ON COLUMN clusters.four_eyes IS 'When true, whoever requested a deployment cannot approve it.';

-- Who did it, kept next to the display names (*_by): a user's email can
-- change, their id cannot.
ALTER TABLE deployments
    ADD COLUMN requested_by_uid uuid,
    ADD COLUMN approved_by_uid  uuid,
    ADD COLUMN rejected_by      text;

CREATE TABLE memberships (
    cluster_id text NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    role       text NOT NULL CONSTRAINT memberships_role CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL DEFAULT '',
    PRIMARY KEY (cluster_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);
COMMENT ON TABLE memberships IS 'Role of a user (Supabase auth.uid(), or the id the portal maps a sign-in to) on a cluster.';

-- History outlives what it describes: no foreign keys, so deleting a cluster
-- keeps its trail.
CREATE TABLE audit_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text NOT NULL,
    action     text NOT NULL,
    cluster_id text,
    target_id  text,
    details    jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_cluster_at ON audit_events (cluster_id, at);
CREATE INDEX audit_events_at ON audit_events (at);
COMMENT ON TABLE audit_events IS 'Append-only record of who did what, written by triggers; only the owner may change it.';

-- Whether this session logged in as an agent role (mapped, or merely a member
-- of grape_agent: a role whose mapping was revoked is still no user). Direct
-- membership only: pg_has_role is true for superusers on every role.
CREATE FUNCTION grape_session_is_agent() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT EXISTS (SELECT 1 FROM grape_agent_roles WHERE role_name = session_user)
        OR EXISTS (SELECT 1 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
                   WHERE r.rolname = session_user AND m.roleid = (SELECT oid FROM pg_roles WHERE rolname = 'grape_agent'))
$$;

-- The claims of 0003, now refused to agents: any role can set the GUC, so
-- only sessions that are not agents may speak for a user.
-- (The setting is read first: without claims, as on every agent and CLI
-- write, the agent check costs nothing.)
CREATE OR REPLACE FUNCTION grape_request_claims() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN nullif(current_setting('request.jwt.claims', true), '') IS NULL THEN NULL
                WHEN grape_session_is_agent() THEN NULL
                ELSE current_setting('request.jwt.claims', true)::jsonb END
$$;

-- The signed-in user of this request (the JWT's sub), or NULL.
CREATE FUNCTION grape_request_uid() RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN nullif(grape_request_claims() ->> 'sub', '')::uuid;
EXCEPTION WHEN invalid_text_representation THEN
    RETURN NULL; -- a subject that is not a user id is no user
END $$;

-- Who did it, for the audit trail: the user id of a signed-in user, the agent
-- role, or — for the tables' owner, the trusted side — what the session says
-- it acts for (the CLI sets grape.actor to cli:<os user>; the portal to its
-- signed-in user), else the row's own *_by column, else the login role.
CREATE FUNCTION grape_actor(fallback text DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN grape_session_is_agent() THEN 'agent:' || session_user
        ELSE coalesce(grape_request_uid()::text, nullif(fallback, ''),
                      nullif(current_setting('grape.actor', true), ''), session_user::text)
    END
$$;

CREATE FUNCTION grape_role_rank(role text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE role WHEN 'viewer' THEN 1 WHEN 'operator' THEN 2 WHEN 'approver' THEN 3 WHEN 'admin' THEN 4 ELSE 0 END
$$;

-- The request user's role on a cluster, or NULL: the highest of their
-- membership and ownership (owner_id or org_id: admin). SECURITY DEFINER so
-- policies on clusters and memberships can call it without recursing.
CREATE FUNCTION grape_user_role(p_cluster text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    WITH me AS (SELECT grape_request_uid() AS uid, grape_request_org() AS org)
    SELECT r FROM (
        SELECT 'admin' AS r FROM clusters c, me
        WHERE c.id = p_cluster AND me.uid IS NOT NULL
          AND (c.owner_id = me.uid OR (me.org IS NOT NULL AND c.org_id = me.org))
        UNION ALL
        SELECT m.role FROM memberships m, me WHERE m.cluster_id = p_cluster AND m.user_id = me.uid
    ) x ORDER BY grape_role_rank(r) DESC LIMIT 1
$$;

-- Every cluster the request user has a role on, for the read policies: one
-- call per statement (a hashed subplan), not three lookups per cluster row.
CREATE FUNCTION grape_user_clusters() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
    WITH me AS (SELECT grape_request_uid() AS uid, grape_request_org() AS org)
    SELECT c.id FROM clusters c, me
    WHERE me.uid IS NOT NULL AND (c.owner_id = me.uid OR (me.org IS NOT NULL AND c.org_id = me.org))
    UNION
    SELECT m.cluster_id FROM memberships m, me WHERE m.user_id = me.uid
$$;

CREATE FUNCTION grape_user_may(p_cluster text, p_role text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT grape_role_rank(grape_user_role(p_cluster)) >= grape_role_rank(p_role)
$$;

-- The caller's role on a cluster, for front ends deciding which buttons to
-- show (the database refuses the rest anyway): a signed-in user's role; admin
-- for the tables' owner and roles that bypass RLS; NULL for agents and anyone
-- else.
CREATE FUNCTION grape_my_role(p_cluster text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN grape_session_is_agent() THEN NULL
        WHEN grape_request_uid() IS NOT NULL THEN grape_user_role(p_cluster)
        WHEN EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = current_user AND (r.rolsuper OR r.rolbypassrls))
          OR pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'clusters'::regclass), 'USAGE')
            THEN CASE WHEN EXISTS (SELECT 1 FROM clusters WHERE id = p_cluster) THEN 'admin' END
    END
$$;

-- The cluster of a config, for triggers on tables that only name the config.
-- Deployments: requested_by follows the user as before, and the user's id is
-- kept for the four-eyes check.
CREATE OR REPLACE FUNCTION grape_deployment_requested_by() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.requested_by := coalesce(grape_request_identity(), NEW.requested_by);
    NEW.requested_by_uid := grape_request_uid();
    RETURN NEW;
END $$;

-- The approval, rejection and cancel rules of 0003, plus roles and four eyes.
-- A user needs operator to cancel and approver to approve or reject (the
-- UPDATE policy already requires operator). The *_by columns only change
-- together with their action, so nobody rewrites who approved.
CREATE OR REPLACE FUNCTION grape_deployment_request_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    current_version integer;
    who text := grape_request_identity();
    uid uuid := grape_request_uid();
    four_eyes boolean;
    approver text;
    msg text;
BEGIN
    IF NEW.approved_at IS NOT DISTINCT FROM OLD.approved_at THEN
        NEW.approved_by := OLD.approved_by;
        NEW.approved_by_uid := OLD.approved_by_uid;
    ELSIF OLD.approved_at IS NOT NULL THEN
        NEW.approved_at := OLD.approved_at; -- approving twice is harmless
        NEW.approved_by := OLD.approved_by;
        NEW.approved_by_uid := OLD.approved_by_uid;
    ELSE
        IF uid IS NOT NULL AND NOT grape_user_may(OLD.cluster_id, 'approver') THEN
            RAISE EXCEPTION 'approving needs the approver or admin role on cluster %', OLD.cluster_id
                USING ERRCODE = 'insufficient_privilege', HINT = 'ask an admin of the cluster: grape member add';
        END IF;
        IF OLD.status <> 'awaiting_approval' OR NEW.status <> 'awaiting_approval' THEN
            RAISE EXCEPTION 'deployment % is %, not awaiting approval', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT c.version INTO current_version FROM configs c WHERE c.id = OLD.config_id;
        IF OLD.config_version IS NOT NULL AND current_version <> OLD.config_version THEN
            RAISE EXCEPTION 'approval refused: the config changed from v% to v% since this plan was made; queue a new deployment',
                OLD.config_version, current_version USING ERRCODE = 'check_violation';
        END IF;
        approver := coalesce(who, nullif(NEW.approved_by, ''));
        SELECT c.four_eyes INTO four_eyes FROM clusters c WHERE c.id = OLD.cluster_id;
        IF four_eyes AND ((uid IS NOT NULL AND uid = OLD.requested_by_uid)
                          OR (approver IS NOT NULL AND approver = nullif(OLD.requested_by, ''))) THEN
            RAISE EXCEPTION 'approval refused: % requested this deployment and cannot also approve it (four eyes)', approver
                USING ERRCODE = 'insufficient_privilege',
                      HINT = format('ask another approver, or turn four eyes off: grape cluster set %s --four-eyes off', OLD.cluster_id);
        END IF;
        NEW.approved_at := now();
        NEW.approved_by := approver;
        NEW.approved_by_uid := uid;
    END IF;

    IF NEW.rejected_at IS NOT DISTINCT FROM OLD.rejected_at THEN
        NEW.rejected_by := OLD.rejected_by;
    ELSIF OLD.rejected_at IS NOT NULL THEN
        NEW.rejected_at := OLD.rejected_at;
        NEW.rejected_by := OLD.rejected_by;
    ELSE
        IF uid IS NOT NULL AND NOT grape_user_may(OLD.cluster_id, 'approver') THEN
            RAISE EXCEPTION 'rejecting needs the approver or admin role on cluster %', OLD.cluster_id
                USING ERRCODE = 'insufficient_privilege', HINT = 'ask an admin of the cluster: grape member add';
        END IF;
        IF OLD.status <> 'awaiting_approval' OR OLD.approved_at IS NOT NULL THEN
            RAISE EXCEPTION 'deployment % is %, not awaiting approval', OLD.id, OLD.status
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.rejected_at := now();
        NEW.rejected_by := coalesce(who, nullif(NEW.rejected_by, ''), 'a user');
        -- A browser client writes rejected_at alone; the Go store ends the
        -- run and writes its note in the same UPDATE.
        IF NEW.status = 'awaiting_approval' THEN
            msg := 'rejected by ' || NEW.rejected_by;
            NEW.status := 'cancelled';
            NEW.error_kind := 'rejected';
            NEW.error := msg;
            NEW.finished_at := now();
            NEW.lease_expires_at := NULL;
            INSERT INTO deployment_logs (deployment_id, seq, stream, line)
            SELECT NEW.id, coalesce(max(l.seq), 0) + 1, 'agent', msg FROM deployment_logs l WHERE l.deployment_id = NEW.id;
        END IF;
    END IF;

    IF NEW.cancel_requested_at IS NOT DISTINCT FROM OLD.cancel_requested_at THEN
        NEW.cancel_requested_by := OLD.cancel_requested_by;
    ELSIF OLD.cancel_requested_at IS NOT NULL THEN
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
    RETURN NEW;
END $$;

-- Every column that says who decided fires the guard, so writing approved_by
-- alone cannot rewrite an approval.
DROP TRIGGER deployments_request_guard ON deployments;
CREATE TRIGGER deployments_request_guard
    BEFORE UPDATE OF approved_at, approved_by, approved_by_uid, rejected_at, rejected_by,
                     cancel_requested_at, cancel_requested_by ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_request_guard();

-- The intent limits of `grape config apply` (render.MaxIntentSize and
-- MaxIntentDepth), with its messages, for rows written directly. The size is
-- of the stored (normalised) text, which is never larger than what the CLI
-- measured for the same document.
CREATE FUNCTION grape_jsonb_deeper_than(j jsonb, lim integer) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb;
BEGIN
    IF jsonb_typeof(j) NOT IN ('object', 'array') THEN
        RETURN false;
    END IF;
    IF lim <= 0 THEN
        RETURN true;
    END IF;
    FOR v IN SELECT e.value FROM jsonb_each(CASE WHEN jsonb_typeof(j) = 'object' THEN j ELSE '{}'::jsonb END) e
             UNION ALL
             SELECT a.value FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j) = 'array' THEN j ELSE '[]'::jsonb END) a LOOP
        IF grape_jsonb_deeper_than(v, lim - 1) THEN
            RETURN true;
        END IF;
    END LOOP;
    RETURN false;
END $$;

CREATE FUNCTION grape_config_limits() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    size integer := octet_length(NEW.spec::text);
BEGIN
    IF size > 1048576 THEN
        RAISE EXCEPTION 'invalid intent: intent: is % bytes; the limit is 1048576 (1 MiB): keep only what differs from the module defaults', size
            USING ERRCODE = 'check_violation';
    END IF;
    IF grape_jsonb_deeper_than(NEW.spec, 32) THEN
        RAISE EXCEPTION 'invalid intent: intent: nested more than 32 levels deep; flatten the structure'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER configs_limits BEFORE INSERT OR UPDATE OF spec ON configs
    FOR EACH ROW EXECUTE FUNCTION grape_config_limits();

-- Memberships record who added them.
CREATE FUNCTION grape_membership_stamp() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.created_at := now();
        NEW.created_by := grape_actor(NEW.created_by);
    ELSE
        NEW.cluster_id := OLD.cluster_id;
        NEW.user_id := OLD.user_id;
        NEW.created_at := OLD.created_at;
        NEW.created_by := OLD.created_by;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER memberships_stamp BEFORE INSERT OR UPDATE ON memberships
    FOR EACH ROW EXECUTE FUNCTION grape_membership_stamp();

-- The audit writers. SECURITY DEFINER: the caller needs no privilege on
-- audit_events, and so has none to forge it with.
CREATE FUNCTION grape_audit(p_actor text, p_action text, p_cluster text, p_target text, p_details jsonb) RETURNS void
LANGUAGE sql SECURITY DEFINER AS $$
    INSERT INTO audit_events (actor, action, cluster_id, target_id, details)
    VALUES (p_actor, p_action, p_cluster, p_target,
            jsonb_strip_nulls(coalesce(p_details, '{}'::jsonb)
                              || jsonb_build_object('email', CASE WHEN grape_request_uid() IS NOT NULL
                                                                  THEN grape_request_claims() ->> 'email' END)))
$$;

CREATE FUNCTION grape_audit_config() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM grape_audit(grape_actor(), 'config.created', NEW.cluster_id, NEW.id::text,
                            jsonb_build_object('name', NEW.name, 'version', NEW.version));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM grape_audit(grape_actor(), 'config.deleted', OLD.cluster_id, OLD.id::text,
                            jsonb_build_object('name', OLD.name, 'version', OLD.version));
    ELSIF NEW.version <> OLD.version THEN
        PERFORM grape_audit(grape_actor(), 'config.changed', NEW.cluster_id, NEW.id::text,
                            jsonb_build_object('name', NEW.name, 'version', NEW.version, 'from_version', OLD.version));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER configs_audit AFTER INSERT OR UPDATE OR DELETE ON configs
    FOR EACH ROW EXECUTE FUNCTION grape_audit_config();

CREATE FUNCTION grape_audit_deployment() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    base jsonb;
BEGIN
    base := jsonb_build_object('config_id', NEW.config_id, 'action', NEW.action, 'config_version', NEW.config_version);
    IF TG_OP = 'INSERT' THEN
        PERFORM grape_audit(grape_actor(NEW.requested_by), 'deployment.queued', NEW.cluster_id, NEW.id::text,
                            base || jsonb_build_object('requested_by', NEW.requested_by, 'require_approval', NEW.require_approval));
        RETURN NULL;
    END IF;
    IF NEW.approved_at IS NOT NULL AND OLD.approved_at IS NULL THEN
        PERFORM grape_audit(grape_actor(NEW.approved_by), 'deployment.approved', NEW.cluster_id, NEW.id::text,
                            base || jsonb_build_object('approved_by', NEW.approved_by, 'requested_by', NEW.requested_by));
    END IF;
    IF NEW.rejected_at IS NOT NULL AND OLD.rejected_at IS NULL THEN
        PERFORM grape_audit(grape_actor(NEW.rejected_by), 'deployment.rejected', NEW.cluster_id, NEW.id::text,
                            base || jsonb_build_object('rejected_by', NEW.rejected_by));
    END IF;
    IF NEW.cancel_requested_at IS NOT NULL AND OLD.cancel_requested_at IS NULL THEN
        PERFORM grape_audit(grape_actor(NEW.cancel_requested_by), 'deployment.cancelled', NEW.cluster_id, NEW.id::text,
                            base || jsonb_build_object('cancel_requested_by', NEW.cancel_requested_by, 'status', NEW.status));
    END IF;
    IF NEW.error_kind = 'approval_refused' AND OLD.error_kind IS DISTINCT FROM 'approval_refused' THEN
        PERFORM grape_audit(grape_actor(), 'deployment.approval_refused', NEW.cluster_id, NEW.id::text,
                            base || jsonb_build_object('error', NEW.error));
    END IF;
    RETURN NULL;
END $$;

-- Only statements naming these columns pay for the trigger: heartbeats and
-- phase changes do not.
CREATE TRIGGER deployments_audit_insert AFTER INSERT ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_audit_deployment();
-- WHEN keeps the claim loop's updates (claim, heartbeat, finish) from
-- calling the function at all.
CREATE TRIGGER deployments_audit_update AFTER UPDATE OF approved_at, rejected_at, cancel_requested_at, error_kind ON deployments
    FOR EACH ROW
    WHEN (OLD.approved_at IS DISTINCT FROM NEW.approved_at OR OLD.rejected_at IS DISTINCT FROM NEW.rejected_at
          OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at
          OR (NEW.error_kind = 'approval_refused' AND OLD.error_kind IS DISTINCT FROM NEW.error_kind))
    EXECUTE FUNCTION grape_audit_deployment();

CREATE FUNCTION grape_audit_membership() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM grape_audit(grape_actor(), 'membership.added', NEW.cluster_id, NEW.user_id::text,
                            jsonb_build_object('role', NEW.role));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM grape_audit(grape_actor(), 'membership.removed', OLD.cluster_id, OLD.user_id::text,
                            jsonb_build_object('role', OLD.role));
    ELSIF NEW.role <> OLD.role THEN
        PERFORM grape_audit(grape_actor(), 'membership.changed', NEW.cluster_id, NEW.user_id::text,
                            jsonb_build_object('role', NEW.role, 'from_role', OLD.role));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER memberships_audit AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION grape_audit_membership();

CREATE FUNCTION grape_audit_cluster() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM grape_audit(grape_actor(), 'cluster.created', NEW.id, NEW.id,
                            jsonb_build_object('four_eyes', NEW.four_eyes));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM grape_audit(grape_actor(), 'cluster.deleted', OLD.id, OLD.id, '{}'::jsonb);
    ELSIF (NEW.four_eyes, NEW.owner_id, NEW.org_id) IS DISTINCT FROM (OLD.four_eyes, OLD.owner_id, OLD.org_id) THEN
        PERFORM grape_audit(grape_actor(), 'cluster.changed', NEW.id, NEW.id,
                            jsonb_build_object('four_eyes', NEW.four_eyes, 'owner_id', NEW.owner_id, 'org_id', NEW.org_id,
                                               'from', jsonb_build_object('four_eyes', OLD.four_eyes, 'owner_id', OLD.owner_id, 'org_id', OLD.org_id)));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER clusters_audit AFTER INSERT OR UPDATE OR DELETE ON clusters
    FOR EACH ROW EXECUTE FUNCTION grape_audit_cluster();

CREATE FUNCTION grape_audit_agent_role() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM grape_audit(grape_actor(), 'agent_role.created', NEW.cluster_id, NEW.role_name, '{}'::jsonb);
    ELSE
        PERFORM grape_audit(grape_actor(), 'agent_role.revoked', OLD.cluster_id, OLD.role_name, '{}'::jsonb);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER grape_agent_roles_audit AFTER INSERT OR DELETE ON grape_agent_roles
    FOR EACH ROW EXECUTE FUNCTION grape_audit_agent_role();

-- Password rotation touches no table; the role script reports it here.
-- Reserved to the owner (it runs the script).
CREATE FUNCTION grape_audit_agent_role_rotated(p_role text, p_cluster text) RETURNS void
LANGUAGE sql AS $$
    SELECT grape_audit(grape_actor(), 'agent_role.rotated', p_cluster, p_role, '{}'::jsonb)
$$;

-- Append-only: grants keep non-owners from writing at all; this stops
-- everyone but the owner (and superusers, who can do anything) from changing
-- history, even a role someone later grants UPDATE or DELETE to.
CREATE FUNCTION grape_audit_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = TG_RELID), 'USAGE') THEN
        RAISE EXCEPTION 'audit_events is append-only: % is refused to role %', TG_OP, current_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER audit_events_immutable BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION grape_audit_immutable();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION grape_audit_immutable();

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY[
        'grape_session_is_agent()',
        'grape_user_role(text)',
        'grape_user_clusters()',
        'grape_deployment_request_guard()',
        'grape_audit(text, text, text, text, jsonb)',
        'grape_audit_config()',
        'grape_audit_deployment()',
        'grape_audit_membership()',
        'grape_audit_cluster()',
        'grape_audit_agent_role()'
    ] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END $$;

REVOKE EXECUTE ON FUNCTION grape_audit(text, text, text, text, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION grape_audit_agent_role_rotated(text, text) FROM PUBLIC;

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;

-- Agents: nothing on memberships or the trail.
-- Supabase: narrow the default grants, then the rules per role.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = t) THEN
            EXECUTE format('REVOKE EXECUTE ON FUNCTION grape_audit(text, text, text, text, jsonb), grape_audit_agent_role_rotated(text, text) FROM %I', t);
            -- Not even the server side rewrites history.
            EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_events FROM %I', t);
            IF t <> 'service_role' THEN
                EXECUTE format('REVOKE ALL ON memberships, audit_events FROM %I', t);
            END IF;
        END IF;
    END LOOP;

    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') OR to_regprocedure('auth.uid()') IS NULL THEN
        RETURN;
    END IF;

    -- Who may see a cluster at all: any role on it.
    DROP POLICY user_read ON clusters;
    CREATE POLICY user_read ON clusters FOR SELECT TO authenticated
        USING (id IN (SELECT grape_user_clusters()));
    GRANT UPDATE (four_eyes, description) ON clusters TO authenticated;
    CREATE POLICY user_settings ON clusters FOR UPDATE TO authenticated
        USING (grape_user_may(id, 'admin')) WITH CHECK (grape_user_may(id, 'admin'));

    -- Configs and their settings: admins.
    DROP POLICY user_create ON configs;
    DROP POLICY user_edit ON configs;
    CREATE POLICY user_create ON configs FOR INSERT TO authenticated
        WITH CHECK (grape_user_may(cluster_id, 'admin'));
    CREATE POLICY user_edit ON configs FOR UPDATE TO authenticated
        USING (grape_user_may(cluster_id, 'admin')) WITH CHECK (grape_user_may(cluster_id, 'admin'));

    -- Queue and cancel: operators; approve and reject: approvers (the guard).
    DROP POLICY user_queue ON deployments;
    DROP POLICY user_request ON deployments;
    CREATE POLICY user_queue ON deployments FOR INSERT TO authenticated
        WITH CHECK (grape_user_may(cluster_id, 'operator') AND action IN ('plan', 'apply', 'destroy') AND source_commit IS NULL);
    -- Granted so a client (and the Go store, which names every column) may
    -- send it; the policy keeps it NULL: re-applying an old commit is the
    -- agent's remediation, not a user's free choice.
    GRANT INSERT (source_commit) ON deployments TO authenticated;
    CREATE POLICY user_request ON deployments FOR UPDATE TO authenticated
        USING (grape_user_may(cluster_id, 'operator')) WITH CHECK (grape_user_may(cluster_id, 'operator'));
    GRANT UPDATE (rejected_at) ON deployments TO authenticated;

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
END $$;

-- Notifications (docs/notifications.md): webhook targets per cluster and an
-- outbox the triggers fill in the same transaction as the change they
-- report, so no event is lost and none is sent for a change rolled back. The
-- cluster's agents deliver them (at least once, in order per deployment).
CREATE TABLE notify_targets (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id text NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    url        text NOT NULL CONSTRAINT notify_targets_url CHECK (url ~ '^https?://[^\s]+$' AND length(url) <= 2000),
    format     text NOT NULL DEFAULT 'json' CONSTRAINT notify_targets_format CHECK (format IN ('json', 'slack')),
    -- NULL: every event.
    events     text[] CONSTRAINT notify_targets_events CHECK (events <@ ARRAY['deployment.awaiting_approval', 'deployment.failed',
                   'deployment.succeeded', 'deployment.cancelled', 'drift.detected', 'drift.resolved']),
    -- The HMAC key of X-Grape-Signature. The agent must sign with it, so it
    -- cannot be stored hashed; only the owner and this cluster's agents read it.
    secret     text NOT NULL CONSTRAINT notify_targets_secret CHECK (length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL DEFAULT ''
);
CREATE INDEX notify_targets_cluster ON notify_targets (cluster_id);

CREATE TABLE notify_outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id     uuid NOT NULL REFERENCES notify_targets (id) ON DELETE CASCADE,
    cluster_id    text NOT NULL,
    deployment_id uuid,
    event         text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    attempts      integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until  timestamptz,
    delivered_at  timestamptz,
    gave_up_at    timestamptz,
    last_error    text
);
CREATE INDEX notify_outbox_pending ON notify_outbox (cluster_id, target_id, id) WHERE delivered_at IS NULL AND gave_up_at IS NULL;

CREATE FUNCTION grape_notify_enqueue(p_cluster text, p_deployment uuid, p_event text, p_payload jsonb) RETURNS void
LANGUAGE sql SECURITY DEFINER AS $$
    INSERT INTO notify_outbox (target_id, cluster_id, deployment_id, event, payload)
    SELECT t.id, p_cluster, p_deployment, p_event,
           p_payload || jsonb_build_object('event', p_event, 'cluster_id', p_cluster, 'at', now())
    FROM notify_targets t
    WHERE t.cluster_id = p_cluster AND (t.events IS NULL OR p_event = ANY (t.events))
$$;

CREATE FUNCTION grape_notify_deployment() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    ev text;
BEGIN
    IF NEW.status IS NOT DISTINCT FROM OLD.status OR NEW.action = 'drift' THEN
        RETURN NULL;
    END IF;
    ev := CASE NEW.status WHEN 'awaiting_approval' THEN 'deployment.awaiting_approval'
                          WHEN 'failed' THEN 'deployment.failed'
                          WHEN 'succeeded' THEN 'deployment.succeeded'
                          WHEN 'cancelled' THEN 'deployment.cancelled' END;
    IF ev IS NOT NULL THEN
        PERFORM grape_notify_enqueue(NEW.cluster_id, NEW.id, ev, jsonb_build_object(
            'deployment_id', NEW.id, 'config_id', NEW.config_id,
            'config_name', (SELECT c.name FROM configs c WHERE c.id = NEW.config_id),
            'action', NEW.action, 'status', NEW.status, 'requested_by', NEW.requested_by,
            'error_kind', NEW.error_kind, 'error', NEW.error, 'commit_sha', NEW.commit_sha,
            'plan_summary', NEW.plan_summary -> 'counts'));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER deployments_notify_targets AFTER UPDATE OF status ON deployments
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NEW.action <> 'drift'
          AND NEW.status IN ('awaiting_approval', 'failed', 'succeeded', 'cancelled'))
    EXECUTE FUNCTION grape_notify_deployment();

-- Drift is news when it starts and when it ends, not on every check.
CREATE FUNCTION grape_notify_drift() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    prev text;
BEGIN
    IF NEW.status NOT IN ('drifted', 'in_sync') THEN
        RETURN NULL;
    END IF;
    SELECT r.status INTO prev FROM drift_reports r
    WHERE r.config_id = NEW.config_id AND r.id <> NEW.id AND r.status IN ('drifted', 'in_sync')
    ORDER BY r.checked_at DESC, r.id DESC LIMIT 1;
    IF NEW.status = 'drifted' AND prev IS DISTINCT FROM 'drifted' OR NEW.status = 'in_sync' AND prev = 'drifted' THEN
        PERFORM grape_notify_enqueue(NEW.cluster_id, NULL,
            CASE NEW.status WHEN 'drifted' THEN 'drift.detected' ELSE 'drift.resolved' END,
            jsonb_build_object('config_id', NEW.config_id,
                               'config_name', (SELECT c.name FROM configs c WHERE c.id = NEW.config_id),
                               'drift_report_id', NEW.id, 'commit_sha', NEW.commit_sha,
                               'resources', (SELECT jsonb_agg(r ->> 'address') FROM jsonb_array_elements(NEW.details -> 'resources') r)));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER drift_reports_notify_targets AFTER INSERT ON drift_reports
    FOR EACH ROW EXECUTE FUNCTION grape_notify_drift();

DO $$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['grape_notify_enqueue(text, uuid, text, jsonb)', 'grape_notify_deployment()', 'grape_notify_drift()'] LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
    END LOOP;
END $$;
REVOKE EXECUTE ON FUNCTION grape_notify_enqueue(text, uuid, text, jsonb) FROM PUBLIC;

ALTER TABLE notify_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE notify_outbox ENABLE ROW LEVEL SECURITY;

-- The cluster's agents read their targets (with the secret) and work their
-- outbox; nothing else.
GRANT SELECT ON notify_targets TO grape_agent;
GRANT SELECT, UPDATE (attempts, next_attempt_at, locked_until, delivered_at, gave_up_at, last_error) ON notify_outbox TO grape_agent;
CREATE POLICY agent_read ON notify_targets FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
CREATE POLICY agent_read ON notify_outbox FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));
CREATE POLICY agent_deliver ON notify_outbox FOR UPDATE TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster())) WITH CHECK (cluster_id = (SELECT grape_agent_cluster()));

-- Supabase: admins see their cluster's targets, never a secret; deliveries
-- are visible to anyone with a role on the cluster.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = t) THEN
            EXECUTE format('REVOKE ALL ON notify_targets, notify_outbox FROM %I', t);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION grape_notify_enqueue(text, uuid, text, jsonb) FROM %I', t);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') OR to_regprocedure('auth.uid()') IS NULL THEN
        RETURN;
    END IF;
    GRANT SELECT (id, cluster_id, url, format, events, created_at, created_by) ON notify_targets TO authenticated;
    CREATE POLICY user_read ON notify_targets FOR SELECT TO authenticated
        USING (grape_user_may(cluster_id, 'admin'));
    GRANT SELECT ON notify_outbox TO authenticated;
    CREATE POLICY user_read ON notify_outbox FOR SELECT TO authenticated
        USING (cluster_id IN (SELECT c.id FROM clusters c));
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (8, 'access');
