// Package statehandoff moves a config's local terraform state from the agent
// that holds it to another agent of the cluster (`grape state move`),
// agent to agent, never through the control plane database: a state holds
// secrets, and the database only ever carries the request and its metadata.
//
// # Protocol
//
//  1. A person asks (store.RequestStateMove): the row names the holder and
//     the receiver, which must run with --state-handoff-addr.
//  2. The receiver makes a self-signed ECDSA certificate for this move
//     alone, listens on its handoff address with TLS 1.3, and publishes the
//     address and the certificate's SHA-256 (store.ListenStateMove).
//  3. The holder takes terraform's lock on the state, draws a one-time
//     token and publishes its SHA-256 (store.SendStateMove), dials the
//     address pinning the published certificate, and sends the token with
//     the state and its kept versions, each with its SHA-256.
//  4. The receiver accepts the offer only with the token whose hash is in
//     the row, checks every digest, writes the files into its data dir
//     (localstate.Import), and in one transaction becomes the holder and
//     marks the move done (store.CompleteStateMove). Then it answers.
//  5. The holder reads the row: only when it says done does it take its copy
//     out of the live path (localstate.MoveAway, kept under state-moved/
//     for recovery). The database is the one arbiter of who holds the
//     state; neither side trusts a lost or forged answer.
//
// Any failure ends the move failed with its reason, and nothing is half
// moved: the holder keeps its state until the database says otherwise.
package statehandoff
