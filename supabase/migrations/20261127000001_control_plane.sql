-- Grape control plane: clusters, agents, configs (the intent), deployments (the
-- queue), their logs and drift reports. Everything lives in the schema on the
-- search_path (public on Supabase) so a Supabase front end can read it.
--
-- Allowed values are enforced here, not only in Go: front ends insert rows
-- directly, and a bad row must be refused by the database.

-- Which migrations ran. Each migration records itself (last statement), so the
-- same files work through `grape migrate` and through `supabase db push`.
CREATE TABLE IF NOT EXISTS grape_schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE clusters (
    id          text PRIMARY KEY
                CONSTRAINT clusters_id_format CHECK (id ~ '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$'),
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE clusters IS 'A target environment; its agents run inside its network with its own cloud credentials.';

CREATE TABLE agents (
    id                text PRIMARY KEY CONSTRAINT agents_id_length CHECK (length(id) BETWEEN 1 AND 200),
    cluster_id        text NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    hostname          text NOT NULL DEFAULT '',
    version           text NOT NULL DEFAULT '',
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
CREATE INDEX agents_cluster ON agents (cluster_id);

CREATE TABLE configs (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    cluster_id       text NOT NULL REFERENCES clusters (id),
    name             text NOT NULL
                     CONSTRAINT configs_name_format CHECK (name ~ '^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$'),
    spec             jsonb NOT NULL CONSTRAINT configs_spec_object CHECK (jsonb_typeof(spec) = 'object'),
    version          integer NOT NULL DEFAULT 1,
    require_approval boolean NOT NULL DEFAULT false,
    auto_remediate   boolean NOT NULL DEFAULT false,
    -- NULL: the agent's --drift-schedule; 'off': no drift checks; else a cron expression.
    drift_schedule   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT configs_name_unique UNIQUE (cluster_id, name),
    -- Lets deployments and drift reports reference (config, cluster) together,
    -- so a row naming another cluster's config is refused by the database.
    CONSTRAINT configs_id_cluster UNIQUE (id, cluster_id)
);

-- Every change to what a config means bumps its version and is kept, so an
-- approval can be refused when the intent moved, and a reviewer sees history.
CREATE TABLE config_versions (
    config_id  uuid NOT NULL REFERENCES configs (id) ON DELETE CASCADE,
    version    integer NOT NULL,
    spec       jsonb NOT NULL,
    require_approval boolean NOT NULL,
    auto_remediate   boolean NOT NULL,
    drift_schedule   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (config_id, version)
);

CREATE FUNCTION grape_config_bump_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.spec IS DISTINCT FROM OLD.spec
       OR NEW.require_approval IS DISTINCT FROM OLD.require_approval
       OR NEW.auto_remediate IS DISTINCT FROM OLD.auto_remediate
       OR NEW.drift_schedule IS DISTINCT FROM OLD.drift_schedule THEN
        NEW.version := OLD.version + 1;
        NEW.updated_at := now();
    ELSE
        NEW.version := OLD.version;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER configs_bump_version BEFORE UPDATE ON configs
    FOR EACH ROW EXECUTE FUNCTION grape_config_bump_version();

CREATE FUNCTION grape_config_record_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO config_versions (config_id, version, spec, require_approval, auto_remediate, drift_schedule)
        VALUES (NEW.id, NEW.version, NEW.spec, NEW.require_approval, NEW.auto_remediate, NEW.drift_schedule);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER configs_record_version AFTER INSERT OR UPDATE ON configs
    FOR EACH ROW EXECUTE FUNCTION grape_config_record_version();

CREATE TABLE deployments (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    config_id           uuid NOT NULL,
    cluster_id          text NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CONSTRAINT deployments_status CHECK (status IN
                            ('queued', 'in_progress', 'awaiting_approval', 'succeeded', 'failed', 'cancelled')),
    -- plan: stop after plan. apply/destroy: plan then apply that plan.
    -- drift: plan -detailed-exitcode of the last applied commit, never applied.
    action              text NOT NULL DEFAULT 'apply'
                        CONSTRAINT deployments_action CHECK (action IN ('plan', 'apply', 'destroy', 'drift')),
    phase               text CONSTRAINT deployments_phase CHECK (phase IN
                            ('claimed', 'render', 'commit', 'checkout', 'init', 'plan', 'cost', 'approval', 'apply', 'outputs', 'done')),
    config_version      integer,   -- filled from configs.version on insert when absent
    -- Run this commit instead of rendering the current intent (drift checks, remediation).
    source_commit       text CONSTRAINT deployments_source_commit CHECK (source_commit ~ '^[0-9a-f]{40}$'),
    require_approval    boolean NOT NULL DEFAULT false,
    approved_at         timestamptz,
    approved_by         text,
    rejected_at         timestamptz,
    cancel_requested_at timestamptz,
    cancel_requested_by text,
    requested_by        text NOT NULL DEFAULT '',
    claimed_by          text,
    claimed_at          timestamptz,
    lease_expires_at    timestamptz,
    heartbeat_at        timestamptz,
    started_at          timestamptz,
    finished_at         timestamptz,
    commit_sha          text,
    error               text,
    error_kind          text CONSTRAINT deployments_error_kind CHECK (error_kind IN
                            ('bad_config', 'git', 'init', 'plan', 'apply', 'state_lock', 'agent_lost',
                             'cancelled', 'timeout', 'rejected', 'approval_refused', 'internal')),
    attempt             integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 3 CONSTRAINT deployments_max_attempts CHECK (max_attempts BETWEEN 1 AND 20),
    plan_summary        jsonb,
    outputs             jsonb,
    cost                jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deployments_config FOREIGN KEY (config_id, cluster_id) REFERENCES configs (id, cluster_id),
    CONSTRAINT deployments_finished CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);

-- One run per config at a time: terraform state would otherwise conflict. A
-- deployment awaiting approval keeps its slot, as an HCP Terraform run awaiting
-- confirmation does, because its saved plan is only valid on unchanged state.
-- The claim query avoids this in the common case; the index makes it a guarantee.
CREATE UNIQUE INDEX deployments_one_active_per_config ON deployments (config_id)
    WHERE status IN ('in_progress', 'awaiting_approval');
CREATE INDEX deployments_queue ON deployments (cluster_id, created_at, id) WHERE status = 'queued';
CREATE INDEX deployments_running ON deployments (cluster_id, lease_expires_at) WHERE status = 'in_progress';
CREATE INDEX deployments_config_created ON deployments (config_id, created_at DESC);

CREATE FUNCTION grape_deployment_defaults() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    cfg configs%ROWTYPE;
BEGIN
    SELECT * INTO cfg FROM configs WHERE id = NEW.config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'config % does not exist', NEW.config_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'create it with grape config apply';
    END IF;
    IF NEW.status <> 'queued' THEN
        RAISE EXCEPTION 'a new deployment must be queued, not %', NEW.status
            USING ERRCODE = 'check_violation', HINT = 'insert with status queued (or leave it out)';
    END IF;
    NEW.config_version := coalesce(NEW.config_version, cfg.version);
    NEW.require_approval := NEW.require_approval OR (cfg.require_approval AND NEW.action IN ('apply', 'destroy'));
    RETURN NEW;
END $$;

CREATE TRIGGER deployments_defaults BEFORE INSERT ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_defaults();

CREATE FUNCTION grape_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

CREATE TRIGGER deployments_touch BEFORE UPDATE ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_touch_updated_at();

-- Wake the cluster's agents. Channel per cluster so an agent is only woken
-- for its own work; the payload (kind:id) stays far below the 8000-byte limit.
-- Status changes are deliberately not notified: a NOTIFY holds a
-- database-wide lock from pre-commit until its commit is flushed, so one in
-- every claim and finish would serialise all agents' commits (measured: claim
-- throughput fell by a third). Followers (grape logs --follow, the portal)
-- wake on grape_logs — every run ends with an agent line just before its
-- final status — and re-read the status on a short poll.
CREATE FUNCTION grape_deployment_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'queued' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'queued') THEN
        PERFORM pg_notify('grape_cluster_' || NEW.cluster_id, 'queued:' || NEW.id);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.cancel_requested_at IS NOT NULL AND OLD.cancel_requested_at IS NULL THEN
            PERFORM pg_notify('grape_cluster_' || NEW.cluster_id, 'cancel:' || NEW.id);
        END IF;
        IF NEW.approved_at IS NOT NULL AND OLD.approved_at IS NULL THEN
            PERFORM pg_notify('grape_cluster_' || NEW.cluster_id, 'approved:' || NEW.id);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER deployments_notify AFTER INSERT OR UPDATE ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_notify();

-- Terraform's output, line by line. seq is gapless per deployment and assigned
-- by the agent, so a retried batch is idempotent.
CREATE TABLE deployment_logs (
    deployment_id uuid NOT NULL,
    seq           bigint NOT NULL CONSTRAINT deployment_logs_seq CHECK (seq >= 1),
    stream        text NOT NULL CONSTRAINT deployment_logs_stream CHECK (stream IN ('stdout', 'stderr', 'agent')),
    line          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, seq)
);
-- No foreign key to deployments: its per-row check would cost the log
-- pipeline a lookup per line. Rows go with their deployment by trigger instead.
CREATE FUNCTION grape_deployment_delete_logs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM deployment_logs WHERE deployment_id = OLD.id;
    RETURN OLD;
END $$;

CREATE TRIGGER deployments_delete_logs AFTER DELETE ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_deployment_delete_logs();

-- One notification per inserted batch, not per line: followers then read the
-- new lines by (deployment_id, seq).
CREATE FUNCTION grape_logs_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT deployment_id, max(seq) AS last_seq FROM new_rows GROUP BY deployment_id LOOP
        PERFORM pg_notify('grape_logs', r.deployment_id || ':' || r.last_seq);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER deployment_logs_notify AFTER INSERT ON deployment_logs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION grape_logs_notify();

CREATE TABLE drift_reports (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    config_id     uuid NOT NULL,
    cluster_id    text NOT NULL,
    -- The drift-check run (action = 'drift'); its log lines are in deployment_logs.
    deployment_id uuid REFERENCES deployments (id) ON DELETE SET NULL,
    checked_at    timestamptz NOT NULL DEFAULT now(),
    status        text NOT NULL CONSTRAINT drift_reports_status CHECK (status IN ('in_sync', 'drifted', 'error')),
    commit_sha    text,
    duration_ms   integer,
    error         text,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT drift_reports_config FOREIGN KEY (config_id, cluster_id) REFERENCES configs (id, cluster_id) ON DELETE CASCADE
);
CREATE INDEX drift_reports_config_checked ON drift_reports (config_id, checked_at DESC);

INSERT INTO grape_schema_migrations (version, name) VALUES (1, 'control_plane');
