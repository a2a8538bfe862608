package gitstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
)

// Upkeep thresholds. Every deployment adds ~6 loose objects (blobs, trees
// along its path, the commit), one file each; without packing, a year of
// deployments is hundreds of thousands of small files.
const (
	// looseLimit: past this many loose objects, Commit packs them into one
	// new pack (an incremental `git repack -d`: cost ∝ the loose objects).
	looseLimit = 600
	// packLimit: past this many packs, Commit repacks everything reachable
	// into one (`git repack -a -d`), so object lookups, which consult every
	// pack index, stay cheap. Cost ∝ history, paid once per
	// looseLimit×packLimit objects (~1,600 deployments).
	packLimit = 16
)

// UpkeepResult says what a Maintain call did.
type UpkeepResult struct {
	Packed     int  // loose objects moved into a new pack
	Repacked   bool // all packs merged into one
	LooseAfter int
	PacksAfter int
}

// Maintain packs the workspace's loose objects when there are more than
// looseLimit, and merges all packs into one when there are more than
// packLimit. It holds the write and object locks, so it never runs
// alongside a Commit or a Checkout; Commit calls it after publishing once
// enough objects were written, and the agent can call it at start.
func (s *Store) Maintain(ctx context.Context) (UpkeepResult, error) {
	if err := s.lockWrites(ctx); err != nil {
		return UpkeepResult{}, err
	}
	defer s.unlockWrites()
	var res UpkeepResult
	err := s.withObjects(ctx, func() (err error) {
		res, err = s.maintainLocked(ctx, looseLimit, packLimit)
		return err
	})
	if err != nil {
		return res, fmt.Errorf("packing git workspace %s: %w", s.opts.Dir, err)
	}
	return res, nil
}

func (s *Store) maintainLocked(ctx context.Context, loose, packs int) (UpkeepResult, error) {
	start := time.Now()
	var res UpkeepResult
	hashes, err := s.looseObjects()
	if err != nil {
		return res, err
	}
	if len(hashes) > loose {
		if err := s.packObjects(ctx, hashes); err != nil {
			return res, err
		}
		res.Packed = len(hashes)
		hashes = nil
	}
	res.LooseAfter = len(hashes)
	ph, err := s.st.ObjectPacks()
	if err != nil {
		return res, fmt.Errorf("listing packs: %w", err)
	}
	if len(ph) > packs {
		repo, err := git.Open(s.st, nil)
		if err != nil {
			return res, fmt.Errorf("opening repository for repack: %w", err)
		}
		// Only packs older than the new one are deleted; a pack is never
		// deleted while this store could be reading it (objSem is held).
		if err := repo.RepackObjects(&git.RepackConfig{}); err != nil {
			return res, fmt.Errorf("repacking: %w", err)
		}
		s.st.Reindex()
		res.Repacked = true
		if ph, err = s.st.ObjectPacks(); err != nil {
			return res, fmt.Errorf("listing packs: %w", err)
		}
		if hashes, err = s.looseObjects(); err != nil {
			return res, err
		}
		res.LooseAfter = len(hashes)
	}
	res.PacksAfter = len(ph)
	if res.Packed > 0 || res.Repacked {
		s.log.Info("git workspace packed", "dir", s.opts.Dir, "packed_loose", res.Packed, "repacked", res.Repacked,
			"packs", res.PacksAfter, "took", time.Since(start))
	}
	return res, nil
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

// packObjects writes hashes into one new pack and then deletes them as
// loose objects. The pack is complete (and indexed) before any loose object
// goes, so a failure in between leaves duplicates, never a missing object.
func (s *Store) packObjects(ctx context.Context, hashes []plumbing.Hash) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	w, err := s.st.PackfileWriter()
	if err != nil {
		return fmt.Errorf("opening new pack: %w", err)
	}
	enc := packfile.NewEncoder(w, s.st, false)
	if _, err := enc.Encode(hashes, 10); err != nil {
		return errors.Join(fmt.Errorf("writing pack: %w", err), w.Close())
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}
	for _, h := range hashes {
		if err := s.st.DeleteLooseObject(h); err != nil {
			return fmt.Errorf("deleting packed loose object %s: %w", h, err)
		}
	}
	return nil
}
