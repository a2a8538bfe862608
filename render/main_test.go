package render

import (
	"flag"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/ and the generated part of docs/intent.md")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	defaultOnce sync.Once
	defaultCat  *Catalog
	defaultErr  error
)

// catalog returns the embedded template set, parsed once per test binary.
func catalog(t testing.TB) *Catalog {
	t.Helper()
	defaultOnce.Do(func() { defaultCat, defaultErr = Default() })
	if defaultErr != nil {
		t.Fatalf("loading embedded templates: %v", defaultErr)
	}
	return defaultCat
}

// testMeta is the config identity every rendering test uses.
var testMeta = Meta{ClusterID: "prod-eu", ConfigID: "0b6f3c1e-2d4a-4f8e-9c7b-1a2b3c4d5e6f", ConfigName: "platform"}
