-- On a Supabase database, publish deployments and their log lines to Realtime so
-- a browser client can subscribe to inserts. Plain PostgreSQL has no
-- supabase_realtime publication: then this does nothing.
DO $$
DECLARE
    t text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
        FOREACH t IN ARRAY ARRAY['deployments', 'deployment_logs'] LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_publication_tables
                           WHERE pubname = 'supabase_realtime' AND schemaname = current_schema() AND tablename = t) THEN
                EXECUTE format('ALTER PUBLICATION supabase_realtime ADD TABLE %I.%I', current_schema(), t);
            END IF;
        END LOOP;
    END IF;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (2, 'supabase_realtime');
