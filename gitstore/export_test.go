package gitstore

// SetBeforePublish installs a hook that runs after a commit is built and
// before it is published, so tests can push as a colleague in the race
// window between the two.
func SetBeforePublish(s *Store, f func(attempt int)) { s.beforePublish = f }

// LooseObjectCount counts the workspace's loose objects.
func LooseObjectCount(s *Store) (int, error) {
	h, err := s.looseObjects()
	return len(h), err
}
