package localstate

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// A config's local state can be handed to another agent (`grape state
// move`, package statehandoff): Export reads the live state and its kept
// versions under terraform's lock, Import writes them into another data dir,
// and MoveAway takes the sender's copy out of the live path once the
// receiver holds the state.

// File is one file of a config's state directory, by its path relative to
// that directory: StateFile or backups/<version>.tfstate.
type File struct {
	Name string `json:"name"`
	Data []byte `json:"data"`
}

// SHA256 is the hex SHA-256 of the file's content.
func (f File) SHA256() string {
	sum := sha256.Sum256(f.Data)
	return hex.EncodeToString(sum[:])
}

// MovedDir is where a sender keeps its copy of a state it handed to another
// agent: <data-dir>/state-moved/<cluster>/<config-id>/<label>/. It is out of
// the live path, so no terraform run of this agent uses it.
const MovedDir = "state-moved"

// ErrStateExists: the receiving data dir already has a live state for the config.
var ErrStateExists = errors.New("a local state of this config exists here already")

// Export reads the config's live state and kept versions, taking
// terraform's lock on the live state (ErrLocked while terraform holds it).
// The caller keeps the lock until release, so no run changes the state
// while it is being moved.
func (d Dir) Export(clusterID, configID string) (files []File, release func(), err error) {
	live := d.Path(clusterID, configID)
	if _, err := os.Stat(live); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("no local state of config %s at %s: %w", configID, live, err)
		}
		return nil, nil, fmt.Errorf("reading state %s: %w", live, err)
	}
	f, unlock, err := lockState(live)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		unlock()
		return nil, nil, fmt.Errorf("reading state %s: %w", live, err)
	}
	if len(b) == 0 {
		unlock()
		return nil, nil, fmt.Errorf("state %s is empty: nothing to move", live)
	}
	files = append(files, File{Name: StateFile, Data: b})
	vs, err := kept(filepath.Join(d.ConfigDir(clusterID, configID), backupsDir))
	if err != nil {
		unlock()
		return nil, nil, err
	}
	for _, v := range vs {
		vb, err := os.ReadFile(v.path)
		if err != nil {
			unlock()
			return nil, nil, fmt.Errorf("reading state version %s: %w", v.Name, err)
		}
		files = append(files, File{Name: backupsDir + "/" + v.Name + ".tfstate", Data: vb})
	}
	return files, unlock, nil
}

// ValidateFiles checks that files are a state directory as Export makes it:
// one live state that is a terraform state, and kept versions by plain
// names. Names come from another machine, so nothing may point outside the
// config's directory.
func ValidateFiles(files []File) error {
	live := 0
	for _, f := range files {
		switch {
		case f.Name == StateFile:
			live++
		case strings.HasPrefix(f.Name, backupsDir+"/"):
			base := strings.TrimPrefix(f.Name, backupsDir+"/")
			if base == "" || strings.ContainsAny(base, `/\`) || strings.HasPrefix(base, ".") || !strings.HasSuffix(base, ".tfstate") {
				return fmt.Errorf("state file %q: not a kept version's name", f.Name)
			}
		default:
			return fmt.Errorf("state file %q: want %s or %s/<version>.tfstate", f.Name, StateFile, backupsDir)
		}
	}
	if live != 1 {
		return fmt.Errorf("want exactly one %s, got %d", StateFile, live)
	}
	return nil
}

// Import writes a state directory received from another agent as the
// config's local state here. It refuses (ErrStateExists) when a live state
// of the config is here already; a leftover directory without one (kept
// versions only) is moved aside under MovedDir first. The files are written
// into a temporary directory next to the destination and renamed into place,
// so a failure leaves no half-written state.
func (d Dir) Import(clusterID, configID string, files []File, now time.Time) error {
	if err := ValidateFiles(files); err != nil {
		return fmt.Errorf("importing state of config %s: %w", configID, err)
	}
	dst := d.ConfigDir(clusterID, configID)
	if _, err := os.Stat(filepath.Join(dst, StateFile)); err == nil {
		return fmt.Errorf("importing state of config %s: %s: %w: move it aside (or `grape state release` it) first", configID, d.Path(clusterID, configID), ErrStateExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", dst, err)
	}
	parent := filepath.Dir(dst)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return fmt.Errorf("creating local state dir: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".incoming-")
	if err != nil {
		return fmt.Errorf("creating a directory for the incoming state: %w", err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; removes a failed attempt
	if err := os.Chmod(tmp, 0o700); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(tmp, backupsDir), 0o700); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(tmp, filepath.FromSlash(f.Name)), f.Data); err != nil {
			return fmt.Errorf("writing incoming state file %s: %w", f.Name, err)
		}
	}
	if _, err := readVersion(filepath.Join(tmp, StateFile), Current); err != nil {
		return fmt.Errorf("importing state of config %s: %w", configID, err)
	}
	if _, err := os.Stat(dst); err == nil {
		if _, err := d.MoveAway(clusterID, configID, now.UTC().Format("20060102T150405Z")+"-replaced-by-move"); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("putting the incoming state in place at %s: %w", dst, err)
	}
	return nil
}

// MovedPath is where MoveAway puts a config's state directory.
func (d Dir) MovedPath(clusterID, configID, label string) string {
	return filepath.Join(d.DataDir, MovedDir, clusterID, configID, sanitize(label))
}

// MoveAway takes the config's state directory out of the live path, to
// MovedPath: this agent no longer has a state of the config, and keeps the
// copy for recovery. It returns where the copy is.
func (d Dir) MoveAway(clusterID, configID, label string) (string, error) {
	src := d.ConfigDir(clusterID, configID)
	dst := d.MovedPath(clusterID, configID, label)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(dst), err)
	}
	if err := os.Rename(src, dst); err != nil {
		return "", fmt.Errorf("moving local state %s to %s: %w", src, dst, err)
	}
	return dst, nil
}
