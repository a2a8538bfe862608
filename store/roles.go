package store

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// AgentGroupRole is the NOLOGIN role every cluster's agent role belongs to;
// the row-level security policies of migration 0003 are written for it.
const AgentGroupRole = "grape_agent"

// AgentRoleName is the login role of a cluster's agents: grape_agent_<id>
// with '-' as '_' (cluster ids never contain '_', so the name is unique and
// needs no quoting; at most 52 of PostgreSQL's 63 bytes).
func AgentRoleName(clusterID string) string {
	return AgentGroupRole + "_" + strings.ReplaceAll(clusterID, "-", "_")
}

// AgentRole is a cluster's agent login role.
type AgentRole struct {
	Name      string
	ClusterID string
	// Password is set only when the role was created or its password
	// rotated by this call. It is stored nowhere (the server keeps a SCRAM
	// verifier), so this is the one chance to show it.
	Password string
	Created  bool
	Rotated  bool
}

// AgentRoleOptions tune CreateAgentRole.
type AgentRoleOptions struct {
	// RotatePassword gives an existing role a new password. Without it an
	// existing role keeps its password, so re-running `grape cluster create`
	// does not lock out running agents.
	RotatePassword bool
}

// ErrRoleUnsafe: a role of the agent's name exists with powers an agent
// must not have, so Grape refuses to adopt it.
var ErrRoleUnsafe = errors.New("existing role is not safe to use as an agent role")

// CreateAgentRole creates (or repairs) the login role of a cluster's agents:
// a member of grape_agent, mapped to the cluster in grape_agent_roles, with a
// generated password sent to the server only as a SCRAM-SHA-256 verifier.
// The caller needs CREATEROLE (Supabase: postgres) and the cluster must exist.
func (s *Store) CreateAgentRole(ctx context.Context, clusterID string, opts AgentRoleOptions) (AgentRole, error) {
	if err := ValidateClusterID(clusterID); err != nil {
		return AgentRole{}, err
	}
	role := AgentRole{Name: AgentRoleName(clusterID), ClusterID: clusterID}
	password := GenerateAgentPassword()
	verifier := scramVerifier(password, randomBytes(16), scramIterations)
	sql := agentRoleSQL(clusterID, verifier, opts.RotatePassword)
	var outcome string
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		// Simple protocol: the text is the same script --print-sql shows.
		if _, err := tx.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			return err
		}
		// The script reports what it did in a transaction-local setting.
		return tx.QueryRow(ctx, `SELECT current_setting('grape.agent_role', true)`).Scan(&outcome)
	})
	if err != nil {
		return AgentRole{}, agentRoleError(clusterID, role.Name, err)
	}
	switch outcome {
	case "created":
		role.Created, role.Password = true, password
	case "rotated":
		role.Rotated, role.Password = true, password
	case "kept":
	default:
		return AgentRole{}, fmt.Errorf("creating agent role %s: the role script reported %q", role.Name, outcome)
	}
	return role, nil
}

func agentRoleError(clusterID, role string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "P0002":
			return fmt.Errorf("creating agent role %s: cluster %q does not exist: create it with `grape cluster create %s`: %w", role, clusterID, clusterID, ErrNotFound)
		case pgErr.Code == "P0001" && strings.Contains(pgErr.Message, "not safe"):
			return fmt.Errorf("creating agent role %s: %s (%s): %w", role, pgErr.Message, pgErr.Hint, ErrRoleUnsafe)
		case pgErr.Code == "42501":
			return fmt.Errorf("creating agent role %s: %w (the database URL's role needs CREATEROLE; on Supabase use the postgres role, or run the SQL from --print-sql in the SQL editor)", role, err)
		case pgErr.Code == "42P01":
			return fmt.Errorf("creating agent role %s: %w (run `grape migrate` first)", role, err)
		}
	}
	return fmt.Errorf("creating agent role %s: %w", role, err)
}

// AgentRoleSQL is the script that creates or updates a cluster's agent role
// with password, for an admin to run by hand (the Supabase SQL editor, psql).
// It is what CreateAgentRole runs, with the password always set. The text
// holds only the password's SCRAM-SHA-256 verifier, so the password does not
// land in the editor's history or the server's statement log.
func AgentRoleSQL(clusterID, password string) (string, error) {
	if err := ValidateClusterID(clusterID); err != nil {
		return "", err
	}
	return agentRoleSQL(clusterID, scramVerifier(password, randomBytes(16), scramIterations), true), nil
}

// agentRoleSQL builds the role script. Literals are quoted although the
// cluster id and verifier are from a safe alphabet: the script is pasted into
// editors, and quoting is cheaper than an argument about it.
func agentRoleSQL(clusterID, verifier string, rotate bool) string {
	role := AgentRoleName(clusterID)
	r := strings.NewReplacer(
		"{{role}}", quoteLiteral(role),
		"{{cluster}}", quoteLiteral(clusterID),
		"{{verifier}}", quoteLiteral(verifier),
		"{{rotate}}", fmt.Sprint(rotate),
		"{{cluster_comment}}", clusterID,
		"{{role_comment}}", role,
	)
	return r.Replace(agentRoleTemplate)
}

const agentRoleTemplate = `-- Grape: the login role of cluster {{cluster_comment}}'s agents ({{role_comment}}).
-- Run as the owner of the Grape tables with CREATEROLE (on Supabase: the SQL
-- editor, as postgres), with the Grape schema on the search_path. It holds the
-- password's SCRAM-SHA-256 verifier only, never the password.
DO $grape$
DECLARE
    agent_role constant text := {{role}};
    agent_cluster constant text := {{cluster}};
    agent_verifier constant text := {{verifier}};
    rotate constant boolean := {{rotate}};
    outcome text := 'kept';
    mapped text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM clusters WHERE id = agent_cluster) THEN
        RAISE EXCEPTION 'cluster % does not exist', agent_cluster
            USING ERRCODE = 'no_data_found', HINT = 'create it first: grape cluster create ' || agent_cluster;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = agent_role) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %L',
                           agent_role, agent_verifier);
            outcome := 'created';
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created at this moment by another session: adopt it below
        END;
    END IF;
    -- Roles are shared by every database of the server: refuse one that can
    -- do more than an agent, or that is a member of anything but grape_agent.
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = agent_role
               AND (rolsuper OR rolbypassrls OR rolcreaterole OR rolcreatedb OR rolreplication))
       OR EXISTS (SELECT 1 FROM pg_auth_members m
                  WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = agent_role)
                    AND m.roleid <> (SELECT oid FROM pg_roles WHERE rolname = 'grape_agent')) THEN
        RAISE EXCEPTION 'role % is not safe as an agent role: it has SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB or REPLICATION, or belongs to other roles', agent_role
            USING HINT = 'drop or strip that role, then run this again';
    END IF;
    IF outcome = 'kept' AND rotate THEN
        EXECUTE format('ALTER ROLE %I WITH LOGIN PASSWORD %L', agent_role, agent_verifier);
        outcome := 'rotated';
        PERFORM grape_audit_agent_role_rotated(agent_role, agent_cluster);
    END IF;
    EXECUTE format('GRANT grape_agent TO %I', agent_role);
    -- The agent finds the Grape tables with no search_path of its own.
    EXECUTE format('ALTER ROLE %I IN DATABASE %I SET search_path = %I', agent_role, current_database(), current_schema());

    SELECT cluster_id INTO mapped FROM grape_agent_roles WHERE role_name = agent_role;
    IF mapped IS NULL THEN
        INSERT INTO grape_agent_roles (role_name, cluster_id) VALUES (agent_role, agent_cluster);
    ELSIF mapped <> agent_cluster THEN
        RAISE EXCEPTION 'role % already serves cluster %', agent_role, mapped;
    END IF;

    -- Row-level security stops at the schema: a role that can create objects
    -- could plant functions or tables for others to trip over.
    IF has_schema_privilege(agent_role, current_schema(), 'CREATE')
       OR has_database_privilege(agent_role, current_database(), 'CREATE') THEN
        RAISE EXCEPTION 'role % could create objects in schema % or database %', agent_role, current_schema(), current_database()
            USING HINT = format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC; REVOKE CREATE ON DATABASE %I FROM PUBLIC', current_schema(), current_database());
    END IF;
    PERFORM set_config('grape.agent_role', outcome, true);
    RAISE NOTICE 'grape: agent role % for cluster %: %', agent_role, agent_cluster, outcome;
END $grape$;
`

// DropAgentRole cuts a cluster's agent role off: its mapping goes first,
// which takes effect at once even for sessions still connected (the policies
// then map them to no cluster), then the role itself.
func (s *Store) DropAgentRole(ctx context.Context, clusterID string) error {
	if err := ValidateClusterID(clusterID); err != nil {
		return err
	}
	role := AgentRoleName(clusterID)
	err := pgx.BeginFunc(ctx, s.db(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM grape_agent_roles WHERE role_name = $1 AND cluster_id = $2`, role, clusterID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DROP ROLE IF EXISTS `+pgx.Identifier{role}.Sanitize())
		return err
	})
	if err != nil {
		return fmt.Errorf("dropping agent role %s: %w", role, err)
	}
	return nil
}

// ClusterOwnership says which Supabase users may see a cluster from a
// browser: the user OwnerID (auth.uid()) and members of OrgID (the JWT's
// app_metadata.org_id). Both nil: none.
type ClusterOwnership struct {
	OwnerID *uuid.UUID
	OrgID   *string
}

// SetClusterOwnership replaces a cluster's ownership.
func (s *Store) SetClusterOwnership(ctx context.Context, clusterID string, o ClusterOwnership) error {
	if o.OrgID != nil && (*o.OrgID == "" || len(*o.OrgID) > 200) {
		return fmt.Errorf("organisation id %q: %w: use 1-200 characters", *o.OrgID, ErrInvalid)
	}
	tag, err := s.db().Exec(ctx, `UPDATE clusters SET owner_id = $2, org_id = $3 WHERE id = $1`, clusterID, o.OwnerID, o.OrgID)
	if err != nil {
		return fmt.Errorf("setting owner of cluster %s: %w", clusterID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("setting owner of cluster %s: %w", clusterID, ErrNotFound)
	}
	return nil
}

// GetClusterOwnership reads a cluster's ownership.
func (s *Store) GetClusterOwnership(ctx context.Context, clusterID string) (ClusterOwnership, error) {
	var o ClusterOwnership
	err := s.db().QueryRow(ctx, `SELECT owner_id, org_id FROM clusters WHERE id = $1`, clusterID).Scan(&o.OwnerID, &o.OrgID)
	if err != nil {
		return ClusterOwnership{}, notFound(err, "cluster "+clusterID)
	}
	return o, nil
}

// appendLogsSQL stores one batch of a deployment's log lines through
// grape_append_logs: $1 deployment id, $2 seqs (bigint[]), $3 streams
// (text[]), $4 lines (text[]), $5 created (timestamptz[]). It returns how many
// rows were new (lines already stored are skipped). Agent roles must use it:
// PostgreSQL refuses COPY FROM into deployment_logs for them (row-level
// security), and it checks their right to the deployment once per batch
// instead of once per line. It works for the table owner too.
const appendLogsSQL = `SELECT grape_append_logs($1, $2, $3, $4, $5)`

// AppendLogs stores one batch of a deployment's log lines (the i-th line is
// seqs[i], streams[i], lines[i], created[i]) and returns how many were new:
// a line whose seq is already stored is skipped, so a batch retried after an
// unknown outcome never duplicates one. This is how the log pipeline writes,
// as an agent role too (see appendLogsSQL).
func (s *Store) AppendLogs(ctx context.Context, id uuid.UUID, seqs []int64, streams []Stream, lines []string, created []time.Time) (int64, error) {
	if len(seqs) == 0 {
		return 0, nil
	}
	names := make([]string, len(streams))
	for i, st := range streams {
		names[i] = string(st)
	}
	var n int64
	if err := s.db().QueryRow(ctx, appendLogsSQL, id, seqs, names, lines, created).Scan(&n); err != nil {
		return 0, fmt.Errorf("storing log lines %d-%d of deployment %s: %w", seqs[0], seqs[len(seqs)-1], id, err)
	}
	return n, nil
}

// Forbidden reports whether err is PostgreSQL refusing the request on
// privilege grounds (SQLSTATE 42501): a row-level security policy, a missing
// grant, or grape_append_logs turning away a deployment that is not the
// caller's or no longer running. Retrying cannot help.
func Forbidden(err error) bool {
	code, _ := pgCode(err)
	return code == codeInsufficientPrivilege || errors.Is(err, ErrForbidden)
}

const codeInsufficientPrivilege = "42501"

// GenerateAgentPassword returns 192 random bits as 32 URL-safe characters:
// nothing to escape in a URL, a key=value DSN or a shell.
func GenerateAgentPassword() string {
	return base64.RawURLEncoding.EncodeToString(randomBytes(24))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}

// scramIterations is PostgreSQL's own default (scram_iterations).
const scramIterations = 4096

// scramVerifier computes what PostgreSQL stores for a SCRAM-SHA-256 password
// (RFC 5802/7677): SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>.
// Given one, CREATE/ALTER ROLE … PASSWORD stores it as is. The password is
// ASCII without spaces, on which SASLprep is the identity.
func scramVerifier(password string, salt []byte, iter int) string {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iter, sha256.Size)
	if err != nil {
		panic(fmt.Sprintf("pbkdf2 with fixed valid parameters: %v", err)) // unreachable: key length is valid
	}
	clientKey := hmacSHA256(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := hmacSHA256(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iter, b64(salt), b64(storedKey[:]), b64(serverKey))
}

func hmacSHA256(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

var dsnUser = regexp.MustCompile(`(^|\s)user\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// AgentURL is the admin's connection string with the user and password
// replaced by the agent role's: same host, port, database and options. A
// Supabase pooler user (postgres.<project-ref>) keeps its project suffix, as
// the pooler routes on it. Both URL and key=value forms are accepted.
func AgentURL(adminURL, role, password string) (string, error) {
	if strings.HasPrefix(adminURL, "postgres://") || strings.HasPrefix(adminURL, "postgresql://") {
		u, err := url.Parse(adminURL)
		if err != nil {
			// url.Parse errors quote the input, password included.
			return "", fmt.Errorf("parsing the database URL: %w", ErrInvalid)
		}
		user := role
		if u.User != nil {
			user = role + poolerSuffix(u.User.Username())
		}
		q := u.Query()
		if q.Has("user") || q.Has("password") {
			if q.Has("user") {
				user = role + poolerSuffix(q.Get("user"))
			}
			q.Del("user")
			q.Del("password")
			u.RawQuery = q.Encode()
		}
		u.User = url.UserPassword(user, password)
		return u.String(), nil
	}
	if !strings.Contains(adminURL, "=") {
		return "", fmt.Errorf("database URL is neither postgres:// nor key=value: %w", ErrInvalid)
	}
	user := role
	if m := dsnUser.FindStringSubmatch(adminURL); m != nil {
		user = role + poolerSuffix(strings.Trim(m[2], "'"))
	}
	// Later keywords win over earlier ones in libpq and pgx alike.
	return strings.TrimSpace(adminURL) + " user=" + user + " password=" + password, nil
}

// poolerSuffix returns ".<project-ref>" of a Supabase pooler user name.
func poolerSuffix(user string) string {
	if i := strings.IndexByte(user, '.'); i >= 0 {
		return user[i:]
	}
	return ""
}
