package store

// AgentRoleSQLWithVerifier exposes the role script with a fixed verifier, so
// its text can be compared with a golden file.
var AgentRoleSQLWithVerifier = agentRoleSQL
