-- Operations over months (docs/operations.md): which engine ran a deployment,
-- log retention, and approvals that expire instead of blocking a config
-- forever.

-- terraform or OpenTofu, and its version, as the agent detected them at start.
ALTER TABLE deployments
    ADD COLUMN engine text CONSTRAINT deployments_engine CHECK (engine IN ('terraform', 'opentofu')),
    ADD COLUMN engine_version text CONSTRAINT deployments_engine_version CHECK (length(engine_version) <= 64),
    -- When grape prune deleted this deployment's log lines; status, summary,
    -- outputs and error stay.
    ADD COLUMN logs_pruned_at timestamptz,
    -- When the plan was parked for a person; the approval expiry counts from here.
    ADD COLUMN awaiting_approval_at timestamptz;
COMMENT ON COLUMN deployments.engine IS 'IaC engine that ran the deployment: terraform or opentofu.';
COMMENT ON COLUMN deployments.logs_pruned_at IS 'When grape prune deleted the log lines (retention); NULL: the log is complete.';
COMMENT ON COLUMN deployments.awaiting_approval_at IS 'When the deployment started waiting for approval; expiry counts from here.';

-- How long a plan may wait for a person before it is discarded (ended
-- cancelled, "approval expired"): its config's later runs wait behind it.
ALTER TABLE configs ADD COLUMN approval_timeout interval NOT NULL DEFAULT interval '24 hours'
    CONSTRAINT configs_approval_timeout CHECK (approval_timeout >= interval '1 minute');
COMMENT ON COLUMN configs.approval_timeout IS 'How long a deployment may await approval before it expires (cancelled, plan discarded).';

-- grape prune finds finished, unpruned deployments by finish time.
CREATE INDEX deployments_prunable ON deployments (finished_at)
    WHERE finished_at IS NOT NULL AND logs_pruned_at IS NULL;
-- The expiry sweep reads the cluster's parked deployments.
CREATE INDEX deployments_awaiting ON deployments (cluster_id, awaiting_approval_at)
    WHERE status = 'awaiting_approval';

GRANT UPDATE (engine, engine_version, awaiting_approval_at) ON deployments TO grape_agent;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') AND to_regprocedure('auth.uid()') IS NOT NULL THEN
        GRANT INSERT (approval_timeout), UPDATE (approval_timeout) ON configs TO authenticated;
    END IF;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (7, 'operations');
