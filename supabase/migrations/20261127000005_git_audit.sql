-- The audit history cannot be rewritten silently (docs/security.md). Before
-- every commit an agent checks that the workspace branch still contains the
-- last commit its cluster pushed (the newest deployments.commit_sha). When it
-- does not — someone force-pushed — deployments fail until an operator
-- accepts the rewrite: who, why, which commit was lost and which tip is now
-- trusted are kept here, and the agents read the newest row.

CREATE TABLE workspace_rewrites (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cluster_id     text NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    -- The last commit Grape had recorded when the rewrite was accepted (NULL:
    -- none was recorded); the agents no longer require it.
    missing_commit text CONSTRAINT workspace_rewrites_missing CHECK (missing_commit ~ '^[0-9a-f]{40}$'),
    -- The tip the operator vouches for; the next commit must build on it.
    -- NULL: the next commit builds on whatever the branch holds then.
    accepted_tip   text CONSTRAINT workspace_rewrites_tip CHECK (accepted_tip ~ '^[0-9a-f]{40}$'),
    reason         text NOT NULL CONSTRAINT workspace_rewrites_reason CHECK (length(btrim(reason)) BETWEEN 1 AND 2000),
    accepted_by    text NOT NULL CONSTRAINT workspace_rewrites_by CHECK (length(btrim(accepted_by)) BETWEEN 1 AND 200),
    accepted_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workspace_rewrites_cluster ON workspace_rewrites (cluster_id, accepted_at DESC, id DESC);
COMMENT ON TABLE workspace_rewrites IS 'Rewrites of the audit branch an operator accepted (grape workspace accept-rewrite): who, why, the commit given up and the tip trusted since.';

-- The agents' "last commit we pushed" query: newest first among the
-- deployments that made a commit of their own (not drift checks or
-- re-applies of an existing commit).
CREATE INDEX deployments_cluster_commits ON deployments (cluster_id, started_at DESC)
    WHERE commit_sha IS NOT NULL AND source_commit IS NULL AND action <> 'drift';

-- The agents' sweep for outcomes to write into git notes (RecentEnds):
-- finished_at is set once, so this index costs the hot heartbeat path nothing.
CREATE INDEX deployments_cluster_finished ON deployments (cluster_id, finished_at)
    WHERE finished_at IS NOT NULL AND commit_sha IS NOT NULL;

ALTER TABLE workspace_rewrites ENABLE ROW LEVEL SECURITY;
-- Agents read their cluster's acceptances; only the owner (the admin CLI)
-- records them: an agent must not be able to excuse a rewrite it finds.
GRANT SELECT ON workspace_rewrites TO grape_agent;
CREATE POLICY agent_read ON workspace_rewrites FOR SELECT TO grape_agent
    USING (cluster_id = (SELECT grape_agent_cluster()));

-- Supabase: browser users see their clusters' acceptances, never write them.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = t) THEN
            EXECUTE format('REVOKE ALL ON workspace_rewrites FROM %I', t);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') AND to_regprocedure('auth.uid()') IS NOT NULL THEN
        GRANT SELECT ON workspace_rewrites TO authenticated;
        CREATE POLICY user_read ON workspace_rewrites FOR SELECT TO authenticated
            USING (cluster_id IN (SELECT c.id FROM clusters c));
    END IF;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (5, 'git_audit');
