package localstate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// StateFile is the name of the state file in a config's state directory.
const StateFile = "terraform.tfstate"

// Keep is how many previous versions of a state are kept.
const Keep = 10

// Dir is the state area of one agent's data dir.
type Dir struct {
	// DataDir is the agent's --data-dir; state lives under DataDir/state.
	DataDir string
}

// ConfigDir is the directory of one config's local state.
func (d Dir) ConfigDir(clusterID, configID string) string {
	return filepath.Join(d.DataDir, "state", clusterID, configID)
}

// Path is the state file of one config, as passed to terraform's local
// backend (-backend-config=path=…).
func (d Dir) Path(clusterID, configID string) string {
	return filepath.Join(d.ConfigDir(clusterID, configID), StateFile)
}

func (d Dir) legacyDir(clusterID, configName string) string {
	return filepath.Join(d.DataDir, "state", clusterID, configName)
}

// Adoption says what Adopt did.
type Adoption struct {
	// Moved is set when a name-keyed directory was moved to the id.
	Moved bool
	// From is the name-keyed directory that exists and was moved, or was
	// left where it is (Moved false).
	From string
	To   string
}

// Adopt makes sure the config's state directory is the id-keyed one. When
// it does not exist yet but the name-keyed directory of an older agent
// holds a state, and mayAdopt says the config is one Grape applied (so that
// state is its own, not that of another config that once had the same
// name), the directory is moved; otherwise it is left alone and reported.
func (d Dir) Adopt(clusterID, configID, configName string, mayAdopt bool) (Adoption, error) {
	to := d.ConfigDir(clusterID, configID)
	a := Adoption{To: to}
	if _, err := os.Stat(to); err == nil {
		return a, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return a, fmt.Errorf("reading local state dir %s: %w", to, err)
	}
	from := d.legacyDir(clusterID, configName)
	if configName == "" || configName == configID {
		return a, nil
	}
	if _, err := os.Stat(filepath.Join(from, StateFile)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return a, nil
		}
		return a, fmt.Errorf("reading name-keyed state dir %s: %w", from, err)
	}
	a.From = from
	if !mayAdopt {
		return a, nil
	}
	if err := os.Rename(from, to); err != nil {
		return a, fmt.Errorf("moving name-keyed state dir %s to %s: %w", from, to, err)
	}
	a.Moved = true
	return a, nil
}

// Version is one kept version of a config's state.
type Version struct {
	// Name identifies the version for Restore ("current" is the live state).
	Name string `json:"name"`
	// Time is when it was saved (the live state: its modification time).
	Time time.Time `json:"time"`
	Size int64     `json:"size"`
	// Serial and Lineage are terraform's; resources counts managed ones.
	Serial    uint64 `json:"serial"`
	Lineage   string `json:"lineage"`
	Resources int    `json:"resources"`
	// Reason says why it was kept: "before apply of deployment …", "before restore of …".
	Reason string `json:"reason,omitempty"`
	path   string
}

// Current is the name List gives the live state.
const Current = "current"

const backupsDir = "backups"

// Snapshot keeps a copy of the config's current state as a version (nothing
// when there is no state yet) and prunes the oldest beyond Keep. reason
// becomes part of the version's name ([a-z0-9-] only).
func (d Dir) Snapshot(clusterID, configID, reason string, now time.Time) (Version, bool, error) {
	src := d.Path(clusterID, configID)
	b, err := os.ReadFile(src)
	if errors.Is(err, os.ErrNotExist) {
		return Version{}, false, nil
	}
	if err != nil {
		return Version{}, false, fmt.Errorf("reading state %s: %w", src, err)
	}
	return d.keep(clusterID, configID, b, reason, now)
}

// keep stores b as a version of the config's state.
func (d Dir) keep(clusterID, configID string, b []byte, reason string, now time.Time) (Version, bool, error) {
	if len(b) == 0 {
		return Version{}, false, nil
	}
	src := d.Path(clusterID, configID)
	dir := filepath.Join(d.ConfigDir(clusterID, configID), backupsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Version{}, false, fmt.Errorf("creating state backups dir: %w", err)
	}
	name := now.UTC().Format("20060102T150405.000000000Z") + "_" + sanitize(reason)
	path := filepath.Join(dir, name+".tfstate")
	if err := writeFileAtomic(path, b); err != nil {
		return Version{}, false, fmt.Errorf("keeping a version of state %s: %w", src, err)
	}
	if err := prune(dir, Keep); err != nil {
		return Version{}, false, err
	}
	v, err := readVersion(path, name)
	return v, true, err
}

// List returns the live state (if any) and the kept versions, newest first.
func (d Dir) List(clusterID, configID string) ([]Version, error) {
	var out []Version
	live := d.Path(clusterID, configID)
	if _, err := os.Stat(live); err == nil {
		v, err := readVersion(live, Current)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	vs, err := kept(filepath.Join(d.ConfigDir(clusterID, configID), backupsDir))
	if err != nil {
		return nil, err
	}
	return append(out, vs...), nil
}

// ErrLocked: a terraform process holds the state's lock.
var ErrLocked = errors.New("a terraform process holds the state lock")

// Restore makes version name the config's live state. The state it replaces
// is kept as a version first. It refuses while terraform holds the lock.
func (d Dir) Restore(clusterID, configID, name string, now time.Time) (restored Version, saved Version, err error) {
	if name == Current || name == "" || strings.ContainsAny(name, `/\`) {
		return Version{}, Version{}, fmt.Errorf("restoring state: %q is not a kept version: pick a name from `grape state list`", name)
	}
	src := filepath.Join(d.ConfigDir(clusterID, configID), backupsDir, name+".tfstate")
	restored, err = readVersion(src, name)
	if errors.Is(err, os.ErrNotExist) {
		return Version{}, Version{}, fmt.Errorf("restoring state: no version %q of config %s: pick a name from `grape state list`", name, configID)
	}
	if err != nil {
		return Version{}, Version{}, err
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return Version{}, Version{}, fmt.Errorf("reading state version %s: %w", name, err)
	}
	live := d.Path(clusterID, configID)
	if err := os.MkdirAll(filepath.Dir(live), 0o700); err != nil {
		return Version{}, Version{}, fmt.Errorf("creating local state dir: %w", err)
	}
	// Everything on the live file goes through the locked descriptor:
	// closing any other descriptor of it would drop this process's lock.
	f, unlock, err := lockState(live)
	if err != nil {
		return Version{}, Version{}, err
	}
	defer unlock()
	cur, err := io.ReadAll(f)
	if err != nil {
		return Version{}, Version{}, fmt.Errorf("reading state %s: %w", live, err)
	}
	saved, _, err = d.keep(clusterID, configID, cur, "before-restore-of-"+name, now)
	if err != nil {
		return Version{}, Version{}, err
	}
	// Written in place, not renamed over: terraform's lock is on this file.
	if err := rewrite(f, b); err != nil {
		return Version{}, Version{}, fmt.Errorf("restoring state %s: %w", live, err)
	}
	return restored, saved, nil
}

func readVersion(path, name string) (Version, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Version{}, err
	}
	info, err := os.Stat(path)
	if err != nil {
		return Version{}, err
	}
	v := Version{Name: name, Size: int64(len(b)), Time: info.ModTime().UTC(), path: path}
	if name != Current {
		stamp, reason, _ := strings.Cut(name, "_")
		if t, err := time.Parse("20060102T150405.000000000Z", stamp); err == nil {
			v.Time = t
		}
		v.Reason = strings.ReplaceAll(reason, "_", " ")
	}
	var st struct {
		Serial    uint64 `json:"serial"`
		Lineage   string `json:"lineage"`
		Resources []struct {
			Mode      string            `json:"mode"`
			Instances []json.RawMessage `json:"instances"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return Version{}, fmt.Errorf("reading state %s: not a terraform state file: %w", path, err)
	}
	v.Serial, v.Lineage = st.Serial, st.Lineage
	for _, r := range st.Resources {
		if r.Mode == "managed" {
			v.Resources += len(r.Instances)
		}
	}
	return v, nil
}

func kept(dir string) ([]Version, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing state versions in %s: %w", dir, err)
	}
	var out []Version
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".tfstate")
		if !ok || e.IsDir() {
			continue
		}
		v, err := readVersion(filepath.Join(dir, e.Name()), name)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	// Names start with a sortable UTC time.
	sort.Slice(out, func(i, j int) bool { return out[i].Name > out[j].Name })
	return out, nil
}

func prune(dir string, keep int) error {
	vs, err := kept(dir)
	if err != nil {
		return err
	}
	for _, v := range vs[min(keep, len(vs)):] {
		if err := os.Remove(v.path); err != nil {
			return fmt.Errorf("pruning state version %s: %w", v.Name, err)
		}
	}
	return nil
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		case r == ' ' || r == '_':
			b.WriteRune('_')
		default:
			b.WriteRune('-')
		}
	}
	out := strings.Trim(b.String(), "-_")
	if len(out) > 80 {
		out = out[:80]
	}
	return out
}

func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func rewrite(f *os.File, b []byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}
