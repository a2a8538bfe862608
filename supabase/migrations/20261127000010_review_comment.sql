-- The reviewer's words: a person approving or rejecting a plan may say why.
-- The comment is stored with the decision, shown wherever the decision is
-- (grape status, the portal) and written into the commit's git note, so the
-- customer's git tells who decided and why.
ALTER TABLE deployments
    ADD COLUMN review_comment text
        CONSTRAINT deployments_review_comment CHECK (
            char_length(review_comment) BETWEEN 1 AND 2000
            -- No control characters but newline and tab: the comment is
            -- printed to terminals and written into git notes.
            AND review_comment !~ '[\x01-\x08\x0b-\x1f\x7f]');

-- A comment belongs to a decision: it is written in the statement that
-- approves or rejects, and never changes afterwards — not by the approver,
-- not by an agent.
CREATE FUNCTION grape_review_comment_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.review_comment IS DISTINCT FROM OLD.review_comment
       AND NOT ((OLD.approved_at IS NULL AND NEW.approved_at IS NOT NULL)
             OR (OLD.rejected_at IS NULL AND NEW.rejected_at IS NOT NULL)) THEN
        RAISE EXCEPTION 'a review comment is written with the approval or rejection it explains, and never changed afterwards'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'deployments_review_comment';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER deployments_review_comment_guard BEFORE UPDATE OF review_comment ON deployments
    FOR EACH ROW EXECUTE FUNCTION grape_review_comment_guard();

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') AND to_regprocedure('auth.uid()') IS NOT NULL THEN
        GRANT UPDATE (review_comment) ON deployments TO authenticated;
    END IF;
END $$;

INSERT INTO grape_schema_migrations (version, name) VALUES (10, 'review_comment');
