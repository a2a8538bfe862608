package pipeline

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/internal/testsupport"
	"github.com/grapehq/grape/store"
)

func TestMain(m *testing.M) { testsupport.Main(m) }

// TestForgetGoneConfigs: upkeep removes the kept init of a config that no
// longer exists and a half-written one a crash left, and keeps the kept init
// of a config that exists.
func TestForgetGoneConfigs(t *testing.T) {
	ctx := context.Background()
	st := store.New(testsupport.Pool(t, testsupport.DatabaseURL(t)))
	_, err := st.CreateCluster(ctx, "c1", "")
	require.NoError(t, err)
	cfg, err := st.UpsertConfig(ctx, "c1", "net", json.RawMessage(`{}`), store.ConfigSettings{})
	require.NoError(t, err)

	p := &Pipeline{Deployer: &Deployer{DataDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}, store: st}
	kept := p.initCache(cfg.ID)
	gone := p.initCache(uuid.New())
	crashed := kept + ".tmp-0a1b2c"
	for _, dir := range []string{kept, gone, crashed} {
		require.NoError(t, os.MkdirAll(filepath.Join(dir, "terraform"), 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(dir, "fingerprint"), []byte("f\n"), 0o600))
	}

	p.forgetGoneConfigs(ctx)
	assert.DirExists(t, kept)
	assert.NoDirExists(t, gone)
	assert.NoDirExists(t, crashed)
}
