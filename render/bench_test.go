package render

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const benchSpec = `{"region": "eu-west-1", "tags": {"team": "platform"}, "modules": {"vpc": {"az_count": 3}, "eks": {"node_max_size": 6}, "rds": {"instance_class": "db.r6g.large"}, "karpenter": {}}}`

func BenchmarkLoadDefault(b *testing.B) {
	for b.Loop() {
		if _, err := Default(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	c := catalog(b)
	spec := []byte(benchSpec)
	for b.Loop() {
		if _, err := c.Validate(spec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRender(b *testing.B) {
	c := catalog(b)
	in, err := c.Validate([]byte(benchSpec))
	require.NoError(b, err)
	for b.Loop() {
		if _, err := c.Render(in, testMeta); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentUse validates and renders from many goroutines on one
// catalog, as the agent's workers do; run under -race.
func TestConcurrentUse(t *testing.T) {
	c := catalog(t)
	ref := renderSpec(t, c, []byte(benchSpec))
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				in, err := c.Validate([]byte(benchSpec))
				if !assert.NoError(t, err) {
					return
				}
				tree, err := c.Render(in, testMeta)
				if !assert.NoError(t, err) {
					return
				}
				for p, b := range ref.Files {
					assert.True(t, bytes.Equal(b, tree.Files[p]), p)
				}
			}
		}()
	}
	wg.Wait()
}

// FuzzValidate feeds arbitrary documents to Validate: it must never panic,
// and it must either accept (and then render) or return a *ValidationError.
func FuzzValidate(f *testing.F) {
	paths, _ := filepath.Glob("testdata/intents/*.json")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"modules": {"vpc": {"public_subnet_cidrs": ["10.0.0.0/8"]}}}`))
	f.Add([]byte(`{"backend": {"type": "s3", "bucket": "x", "key": "/"}}`))
	c, err := Default()
	require.NoError(f, err)
	f.Fuzz(func(t *testing.T, spec []byte) {
		in, err := c.Validate(spec)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Errors) == 0 {
				t.Fatalf("Validate returned %T %v, want *ValidationError", err, err)
			}
			return
		}
		if _, err := c.Render(in, testMeta); err != nil {
			t.Fatalf("rendering a valid intent: %v", err)
		}
		// Normalising is idempotent.
		again, err := c.Validate(in.JSON())
		if err != nil {
			t.Fatalf("the normalised intent does not validate: %v\n%s", err, in.JSON())
		}
		if !bytes.Equal(again.JSON(), in.JSON()) {
			t.Fatalf("normalising twice differs:\n%s\n%s", in.JSON(), again.JSON())
		}
	})
}
