-- Notifications, continued (docs/notifications.md).
--
-- deployment.waiting: a run that has waited too long — a plan awaiting
-- approval past half its config's approval timeout, or a deployment queued
-- longer than the agent's --wait-notify-after — is news once, not on every
-- sweep of every agent. The notice row is the dedupe: its primary key makes
-- the second agent's INSERT a no-op, so the event is enqueued exactly once
-- per deployment and reason, in the transaction that records the notice.
CREATE TABLE deployment_wait_notices (
    deployment_id uuid NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    reason        text NOT NULL CONSTRAINT deployment_wait_notices_reason CHECK (reason IN ('awaiting_approval', 'queued')),
    cluster_id    text NOT NULL,
    noticed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, reason)
);
ALTER TABLE deployment_wait_notices ENABLE ROW LEVEL SECURITY;

ALTER TABLE notify_targets DROP CONSTRAINT notify_targets_events;
ALTER TABLE notify_targets ADD CONSTRAINT notify_targets_events CHECK (events <@ ARRAY['deployment.awaiting_approval',
    'deployment.failed', 'deployment.succeeded', 'deployment.cancelled', 'deployment.waiting',
    'drift.detected', 'drift.resolved']);

-- Webhook targets are in the audit trail: who added, removed or rotated
-- the secret of which one. Never the URL (Slack keeps its secret in the
-- path) nor the secret.
CREATE FUNCTION grape_audit_notify_target() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM grape_audit(grape_actor(), 'webhook.added', NEW.cluster_id, NEW.id::text,
                            jsonb_build_object('format', NEW.format, 'events', NEW.events));
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM grape_audit(grape_actor(), 'webhook.removed', OLD.cluster_id, OLD.id::text, '{}'::jsonb);
    ELSIF NEW.secret IS DISTINCT FROM OLD.secret THEN
        PERFORM grape_audit(grape_actor(), 'webhook.secret_rotated', NEW.cluster_id, NEW.id::text, '{}'::jsonb);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER notify_targets_audit AFTER INSERT OR UPDATE OR DELETE ON notify_targets
    FOR EACH ROW EXECUTE FUNCTION grape_audit_notify_target();

-- grape prune deletes delivered and dead outbox rows by age, a batch at a
-- time: without an index every batch would scan the whole outbox.
CREATE INDEX notify_outbox_created ON notify_outbox (created_at);

-- grape_note_long_waits records and announces the cluster's long waits that
-- were not announced yet, and returns them (the agent logs each). An agent
-- role may only sweep its own cluster; the owner (and roles bypassing RLS)
-- any. p_queued_after NULL: queued deployments are not watched.
CREATE FUNCTION grape_note_long_waits(p_cluster text, p_queued_after interval)
RETURNS TABLE (deployment_id uuid, reason text, waiting_since timestamptz, expires_at timestamptz, blocked_by uuid)
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    caller_cluster text := grape_agent_cluster();
    w record;
BEGIN
    IF caller_cluster IS NULL THEN
        IF NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = session_user AND (r.rolsuper OR r.rolbypassrls))
           AND NOT pg_has_role(session_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'deployments'::regclass), 'USAGE') THEN
            RAISE EXCEPTION 'role % is not an agent role of any cluster', session_user
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF caller_cluster IS DISTINCT FROM p_cluster THEN
        RAISE EXCEPTION 'an agent of cluster % may not sweep cluster %', caller_cluster, p_cluster
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    FOR w IN
        WITH candidates AS (
            SELECT d.id, 'awaiting_approval'::text AS why, coalesce(d.awaiting_approval_at, d.updated_at) AS since,
                   coalesce(d.awaiting_approval_at, d.updated_at) + c.approval_timeout AS expires, NULL::uuid AS blocker
            FROM deployments d JOIN configs c ON c.id = d.config_id
            WHERE d.cluster_id = p_cluster AND d.status = 'awaiting_approval'
              AND coalesce(d.awaiting_approval_at, d.updated_at) + c.approval_timeout / 2 < now()
              AND NOT EXISTS (SELECT 1 FROM deployment_wait_notices n
                              WHERE n.deployment_id = d.id AND n.reason = 'awaiting_approval')
            UNION ALL
            -- Queued since it was requested, last claimed (a requeue) or
            -- approved (the approved plan queues again), whichever is last.
            SELECT d.id, 'queued', greatest(d.created_at, d.claimed_at, d.approved_at), NULL,
                   (SELECT b.id FROM deployments b WHERE b.config_id = d.config_id
                      AND b.status IN ('in_progress', 'awaiting_approval') LIMIT 1)
            FROM deployments d
            WHERE p_queued_after IS NOT NULL AND d.cluster_id = p_cluster AND d.status = 'queued'
              AND d.action <> 'drift' -- a drift check behind a blocker is the blocker's news
              AND greatest(d.created_at, d.claimed_at, d.approved_at) + p_queued_after < now()
              AND NOT EXISTS (SELECT 1 FROM deployment_wait_notices n
                              WHERE n.deployment_id = d.id AND n.reason = 'queued')
        ), noted AS (
            -- The NOT EXISTS above spares the sweeps' writes for waits
            -- announced long ago; this conflict clause is what makes a
            -- race between two agents announce once.
            INSERT INTO deployment_wait_notices (deployment_id, reason, cluster_id)
            SELECT id, why, p_cluster FROM candidates
            ON CONFLICT DO NOTHING
            RETURNING deployment_wait_notices.deployment_id, deployment_wait_notices.reason
        )
        SELECT c.*, d.config_id, d.action, d.status, d.requested_by,
               (SELECT cf.name FROM configs cf WHERE cf.id = d.config_id) AS config_name
        FROM candidates c
        JOIN noted n ON n.deployment_id = c.id AND n.reason = c.why
        JOIN deployments d ON d.id = c.id
        ORDER BY c.since, c.id
    LOOP
        PERFORM grape_notify_enqueue(p_cluster, w.id, 'deployment.waiting', jsonb_build_object(
            'deployment_id', w.id, 'config_id', w.config_id, 'config_name', w.config_name,
            'action', w.action, 'status', w.status, 'requested_by', w.requested_by,
            'reason', w.why, 'waiting_since', w.since, 'expires_at', w.expires, 'blocked_by', w.blocker));
        deployment_id := w.id;
        reason := w.why;
        waiting_since := w.since;
        expires_at := w.expires;
        blocked_by := w.blocker;
        RETURN NEXT;
    END LOOP;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION grape_note_long_waits(text, interval) SET search_path = pg_catalog, %I, pg_temp', current_schema());
    EXECUTE format('ALTER FUNCTION grape_audit_notify_target() SET search_path = pg_catalog, %I, pg_temp', current_schema());
END $$;
REVOKE EXECUTE ON FUNCTION grape_note_long_waits(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION grape_note_long_waits(text, interval) TO grape_agent;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = t) THEN
            EXECUTE format('REVOKE ALL ON deployment_wait_notices FROM %I', t);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION grape_note_long_waits(text, interval) FROM %I', t);
        END IF;
    END LOOP;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (11, 'wait_notices');
