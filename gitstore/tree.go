package gitstore

import (
	"fmt"
	"sort"
	"strings"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// configPath is where a config's rendering lives in the workspace.
func configPath(clusterID, configName string) []string {
	return []string{"clusters", clusterID, configName}
}

// dirNode is a directory of a rendering being turned into tree objects.
type dirNode struct {
	files map[string]plumbing.Hash
	dirs  map[string]*dirNode
}

func newDirNode() *dirNode {
	return &dirNode{files: map[string]plumbing.Hash{}, dirs: map[string]*dirNode{}}
}

// writeFiles writes the blobs and trees of a rendering (validated paths) and
// returns the hash of its root tree, or the zero hash for no files.
func (s *Store) writeFiles(files map[string][]byte) (plumbing.Hash, error) {
	if len(files) == 0 {
		return plumbing.ZeroHash, nil
	}
	root := newDirNode()
	for p, content := range files {
		blob := &plumbing.MemoryObject{}
		blob.SetType(plumbing.BlobObject)
		if _, err := blob.Write(content); err != nil {
			return plumbing.ZeroHash, err
		}
		h, err := s.writeObject(blob)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		segs := strings.Split(p, "/")
		d := root
		for _, seg := range segs[:len(segs)-1] {
			next, ok := d.dirs[seg]
			if !ok {
				next = newDirNode()
				d.dirs[seg] = next
			}
			d = next
		}
		d.files[segs[len(segs)-1]] = h
	}
	return s.writeDir(root)
}

func (s *Store) writeDir(d *dirNode) (plumbing.Hash, error) {
	entries := make([]object.TreeEntry, 0, len(d.files)+len(d.dirs))
	for name, h := range d.files {
		entries = append(entries, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h})
	}
	for name, sub := range d.dirs {
		h, err := s.writeDir(sub)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		entries = append(entries, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: h})
	}
	return s.writeTree(entries)
}

// writeTree writes a tree object; entries are sorted the way git requires
// (directories compare as if their name ended in "/").
func (s *Store) writeTree(entries []object.TreeEntry) (plumbing.Hash, error) {
	sort.Sort(object.TreeEntrySorter(entries))
	t := &object.Tree{Entries: entries}
	o := &plumbing.MemoryObject{}
	if err := t.Encode(o); err != nil {
		return plumbing.ZeroHash, fmt.Errorf("encoding tree: %w", err)
	}
	return s.writeObject(o)
}

// treeEntries returns a copy of a tree's entries; the zero hash is the empty
// tree.
func (s *Store) treeEntries(h plumbing.Hash) ([]object.TreeEntry, error) {
	if h.IsZero() {
		return nil, nil
	}
	t, err := s.treeObject(h)
	if err != nil {
		return nil, err
	}
	return append([]object.TreeEntry(nil), t.Entries...), nil
}

// replaceAt returns tree root with the directory at path replaced by sub (a
// tree hash; zero removes it). Only the trees along path are rewritten; every
// other entry keeps its hash. Directories left empty are removed, and an
// empty result is the zero hash.
func (s *Store) replaceAt(root plumbing.Hash, path []string, sub plumbing.Hash) (plumbing.Hash, error) {
	entries, err := s.treeEntries(root)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	name := path[0]
	child := plumbing.ZeroHash
	kept := entries[:0]
	for _, e := range entries {
		if e.Name == name {
			if e.Mode == filemode.Dir {
				child = e.Hash
			}
			continue
		}
		kept = append(kept, e)
	}
	newChild := sub
	if len(path) > 1 {
		if newChild, err = s.replaceAt(child, path[1:], sub); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	if !newChild.IsZero() {
		kept = append(kept, object.TreeEntry{Name: name, Mode: filemode.Dir, Hash: newChild})
	}
	if len(kept) == 0 {
		return plumbing.ZeroHash, nil
	}
	return s.writeTree(kept)
}

// ensureRootFile adds name with content to the root tree if it has no such
// entry; an existing one (perhaps edited by a person) is left alone.
func (s *Store) ensureRootFile(root plumbing.Hash, name string, content []byte) (plumbing.Hash, error) {
	entries, err := s.treeEntries(root)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	for _, e := range entries {
		if e.Name == name {
			return root, nil
		}
	}
	blob := &plumbing.MemoryObject{}
	blob.SetType(plumbing.BlobObject)
	if _, err := blob.Write(content); err != nil {
		return plumbing.ZeroHash, err
	}
	h, err := s.writeObject(blob)
	if err != nil {
		return plumbing.ZeroHash, err
	}
	return s.writeTree(append(entries, object.TreeEntry{Name: name, Mode: filemode.Regular, Hash: h}))
}

// subtreeAt returns the hash of the directory at path in tree root, or the
// zero hash if there is none.
func (s *Store) subtreeAt(root plumbing.Hash, path []string) (plumbing.Hash, error) {
	h := root
	for _, name := range path {
		entries, err := s.treeEntries(h)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		h = plumbing.ZeroHash
		for _, e := range entries {
			if e.Name == name && e.Mode == filemode.Dir {
				h = e.Hash
				break
			}
		}
		if h.IsZero() {
			return plumbing.ZeroHash, nil
		}
	}
	return h, nil
}

// treeFile is a file read from a tree.
type treeFile struct {
	content []byte
	mode    filemode.FileMode
}

// readTree reads every file below tree h, keyed by slash path. Symlinks and
// submodules are an error when strict (a checkout must not follow links out
// of its run directory) and skipped otherwise.
func (s *Store) readTree(h plumbing.Hash, strict bool) (map[string]treeFile, error) {
	out := map[string]treeFile{}
	var walk func(h plumbing.Hash, prefix string) error
	walk = func(h plumbing.Hash, prefix string) error {
		entries, err := s.treeEntries(h)
		if err != nil {
			return err
		}
		for _, e := range entries {
			p := prefix + e.Name
			switch e.Mode {
			case filemode.Dir:
				if err := walk(e.Hash, p+"/"); err != nil {
					return err
				}
			case filemode.Regular, filemode.Deprecated, filemode.Executable:
				if err := checkFilePath(p); err != nil {
					return err
				}
				b, err := s.blobContent(e.Hash)
				if err != nil {
					return err
				}
				mode := e.Mode
				if mode == filemode.Deprecated {
					mode = filemode.Regular
				}
				out[p] = treeFile{content: b, mode: mode}
			default:
				if strict {
					return fmt.Errorf("%s is a %s, which a run directory must not contain", p, modeName(e.Mode))
				}
			}
		}
		return nil
	}
	if err := walk(h, ""); err != nil {
		return nil, err
	}
	return out, nil
}

func modeName(m filemode.FileMode) string {
	switch m {
	case filemode.Symlink:
		return "symbolic link"
	case filemode.Submodule:
		return "submodule"
	default:
		return "entry of mode " + m.String()
	}
}

// diffObjects appends to out the objects of tree h that tree old (which the
// receiver already has, with everything it references) does not contain,
// walking only subtrees whose hashes differ.
func (s *Store) diffObjects(h, old plumbing.Hash, seen map[plumbing.Hash]bool, out []plumbing.Hash) ([]plumbing.Hash, error) {
	if h == old || seen[h] {
		return out, nil
	}
	seen[h] = true
	out = append(out, h)
	entries, err := s.treeEntries(h)
	if err != nil {
		return nil, err
	}
	oldEntries, err := s.treeEntries(old)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]object.TreeEntry, len(oldEntries))
	for _, e := range oldEntries {
		byName[e.Name] = e
	}
	for _, e := range entries {
		prev, had := byName[e.Name]
		if had && prev.Hash == e.Hash {
			continue
		}
		switch e.Mode {
		case filemode.Submodule:
			// A gitlink points into another repository; nothing to send.
		case filemode.Dir:
			base := plumbing.ZeroHash
			if had && prev.Mode == filemode.Dir {
				base = prev.Hash
			}
			if out, err = s.diffObjects(e.Hash, base, seen, out); err != nil {
				return nil, err
			}
		default:
			if !seen[e.Hash] {
				seen[e.Hash] = true
				out = append(out, e.Hash)
			}
		}
	}
	return out, nil
}
