// Package localstate is where an agent keeps the terraform state of configs
// that use the local backend, and the versions it keeps of it.
//
// # Layout
//
// A config's state lives in <data-dir>/state/<cluster>/<config-id>/: keyed by
// the config's id, never its name, so a rename (through Grape or raw SQL)
// finds the same state. Directories of agents from before this layout were
// keyed by name (state/<cluster>/<name>/); Adopt moves such a directory to the
// id once, on the config's first use, and says so.
//
// # Versions
//
// Before every apply the agent snapshots the state it is about to change
// into backups/ next to it (Snapshot), keeping the newest Keep versions with
// their times. List shows them, Restore puts one back — refusing while a
// terraform process holds the state's lock, and saving the state it replaces
// as a version first, so a restore can itself be undone.
//
// State holds secrets: everything here is written 0600 in 0700 directories,
// and nothing of it leaves the agent's machine.
package localstate
