package store

// AgentRoleSQLWithVerifier exposes the role script with a fixed verifier, so
// its text can be compared with a golden file.
var AgentRoleSQLWithVerifier = agentRoleSQL

// AppendLogsSQL is the statement behind AppendLogs, for tests that run it on
// a connection of their own (as a given role, or to compare it with COPY).
const AppendLogsSQL = appendLogsSQL
