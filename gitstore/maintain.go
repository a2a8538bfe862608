package gitstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// Upkeep thresholds. Every deployment adds ~6 loose objects (blobs, trees
// along its path, the commit), one file each; without packing, a year of
// deployments is hundreds of thousands of small files.
const (
	// looseLimit: past this many loose objects, Commit packs them into one
	// new pack (an incremental `git repack -d`: cost ∝ the loose objects).
	looseLimit = 600
	// mergeCap bounds the objects one merge of packs rewrites, and so the
	// time Maintain holds the store (a few seconds on a loaded 2-core
	// machine): packs are merged geometrically (`git repack --geometric=2`)
	// up to this size, and packs already this large are left as they are.
	// A year of 10,000 deployments (~60,000 objects) is then a handful of
	// packs, and lookups, which consult every pack index, stay cheap.
	mergeCap = 16_000
)

// UpkeepResult says what a Maintain call did.
type UpkeepResult struct {
	Packed     int // loose objects moved into a new pack
	Merged     int // packs merged into one
	LooseAfter int
	PacksAfter int
}

// Maintain packs the workspace's loose objects when there are more than
// looseLimit, and merges small packs (see mergeCap). It holds the write and
// object locks, so it never runs alongside a Commit or a Checkout. Commit
// packs loose objects itself once enough were written; merging, which costs
// more, is left to Maintain, which the agent calls at start and from its
// periodic upkeep — between deployments rather than inside one.
func (s *Store) Maintain(ctx context.Context) (UpkeepResult, error) {
	if err := s.lockWrites(ctx); err != nil {
		return UpkeepResult{}, err
	}
	defer s.unlockWrites()
	var res UpkeepResult
	err := s.withObjects(ctx, func() (err error) {
		if res, err = s.packLoose(ctx, looseLimit); err != nil {
			return err
		}
		res.Merged, res.PacksAfter, err = s.mergePacks(ctx, mergeCap)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("packing git workspace %s: %w", s.opts.Dir, err)
	}
	return res, nil
}

// packLoose moves the loose objects into one new pack when there are more
// than limit.
func (s *Store) packLoose(ctx context.Context, limit int) (UpkeepResult, error) {
	start := time.Now()
	hashes, err := s.looseObjects()
	if err != nil {
		return UpkeepResult{}, err
	}
	if len(hashes) <= limit {
		return UpkeepResult{LooseAfter: len(hashes)}, nil
	}
	if err := s.packObjects(ctx, hashes, nil); err != nil {
		return UpkeepResult{}, err
	}
	s.log.Debug("git workspace: loose objects packed", "dir", s.opts.Dir, "objects", len(hashes), "took", time.Since(start))
	return UpkeepResult{Packed: len(hashes)}, nil
}

// mergePacks merges the smallest packs into one while each next pack is
// less than twice their sum (git's --geometric=2), never rewriting more than
// maxObjects. It returns how many packs it merged and how many remain.
func (s *Store) mergePacks(ctx context.Context, maxObjects int) (merged, left int, err error) {
	start := time.Now()
	packs, err := s.packSizes()
	if err != nil {
		return 0, 0, err
	}
	sort.Slice(packs, func(i, j int) bool { return len(packs[i].objects) < len(packs[j].objects) })
	k, sum := 0, 0
	for k < len(packs) && sum+len(packs[k].objects) <= maxObjects && (k == 0 || len(packs[k].objects) < 2*sum) {
		sum += len(packs[k].objects)
		k++
	}
	if k < 2 {
		return 0, len(packs), nil
	}
	var hashes []plumbing.Hash
	var old []plumbing.Hash
	for _, p := range packs[:k] {
		hashes = append(hashes, p.objects...)
		old = append(old, p.hash)
	}
	if err := s.packObjects(ctx, hashes, old); err != nil {
		return 0, 0, err
	}
	s.log.Info("git workspace: packs merged", "dir", s.opts.Dir, "packs", k, "objects", len(hashes),
		"packs_left", len(packs)-k+1, "took", time.Since(start))
	return k, len(packs) - k + 1, nil
}

type packInfo struct {
	hash    plumbing.Hash
	objects []plumbing.Hash
}

// packSizes lists every pack with the objects its index names.
func (s *Store) packSizes() ([]packInfo, error) {
	hs, err := s.st.ObjectPacks()
	if err != nil {
		return nil, fmt.Errorf("listing packs: %w", err)
	}
	out := make([]packInfo, 0, len(hs))
	for _, h := range hs {
		objs, err := s.packObjectsOf(h)
		if err != nil {
			return nil, err
		}
		out = append(out, packInfo{hash: h, objects: objs})
	}
	return out, nil
}

func (s *Store) packObjectsOf(h plumbing.Hash) ([]plumbing.Hash, error) {
	f, err := s.st.Filesystem().Open(s.st.Filesystem().Join("objects", "pack", "pack-"+h.String()+".idx"))
	if err != nil {
		return nil, fmt.Errorf("opening index of pack %s: %w", h, err)
	}
	defer f.Close()
	idx := idxfile.NewMemoryIndex()
	if err := idxfile.NewDecoder(f).Decode(idx); err != nil {
		return nil, fmt.Errorf("reading index of pack %s: %w", h, err)
	}
	it, err := idx.Entries()
	if err != nil {
		return nil, fmt.Errorf("reading index of pack %s: %w", h, err)
	}
	defer it.Close()
	var objs []plumbing.Hash
	for {
		e, err := it.Next()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading index of pack %s: %w", h, err)
		}
		objs = append(objs, e.Hash)
	}
}

func (s *Store) looseObjects() ([]plumbing.Hash, error) {
	var hashes []plumbing.Hash
	err := s.st.ForEachObjectHash(func(h plumbing.Hash) error {
		hashes = append(hashes, h)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing loose objects: %w", err)
	}
	return hashes, nil
}

// packObjects writes hashes into one new pack, then deletes them where they
// were: as loose objects, and the packs in oldPacks. The new pack is complete
// and indexed before anything is deleted, so a failure in between leaves
// duplicates, never a missing object.
func (s *Store) packObjects(ctx context.Context, hashes, oldPacks []plumbing.Hash) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	w, err := s.st.PackfileWriter()
	if err != nil {
		return fmt.Errorf("opening new pack: %w", err)
	}
	enc := packfile.NewEncoder(w, s.st, false)
	newPack, err := enc.Encode(hashes, 10)
	if err != nil {
		return errors.Join(fmt.Errorf("writing pack: %w", err), w.Close())
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}
	if oldPacks == nil {
		for _, h := range hashes {
			if err := s.st.DeleteLooseObject(h); err != nil {
				return fmt.Errorf("deleting packed loose object %s: %w", h, err)
			}
		}
		return nil
	}
	for _, h := range oldPacks {
		if h == newPack {
			continue // the same objects packed again give the same pack
		}
		if err := s.st.DeleteOldObjectPackAndIndex(h, time.Time{}); err != nil {
			return fmt.Errorf("deleting merged pack %s: %w", h, err)
		}
	}
	s.st.Reindex()
	return nil
}
