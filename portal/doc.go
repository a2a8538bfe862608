// Package portal is Grape's control plane in a browser (`grape serve`): the
// clusters and their agents, configs with their history and an editor that
// validates intents as the agent does, buttons that queue, approve, reject
// and cancel deployments, a deployment page with a live terminal, and the
// latest drift report of every config.
//
// It reads and writes the same PostgreSQL tables as the CLI and the agents.
// Pages are rendered on the server with html/template (every value escaped);
// the only script is static/portal.js, served from the binary, which runs
// the live terminal and never puts log text into markup.
//
// The live terminal is a Server-Sent Events stream per open page, fed by one
// LISTEN connection for the whole server (grape_logs notifications) and a
// short status poll, because status changes are not notified (see the
// grape_deployment_notify trigger). Events carry the line's seq as their id,
// so a browser that reconnects resumes exactly where it stopped.
//
// Access needs a sign-in (a static token, bcrypt users from a file, or a
// Supabase Auth access token); sessions are HMAC-signed SameSite=Strict
// cookies and every state-changing request needs the session's CSRF token.
// docs/portal.md is the operator's guide.
package portal
