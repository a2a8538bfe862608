package ptr

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDeref(t *testing.T) {
	require.Empty(t, Deref[string](nil))
	require.Equal(t, 0, Deref[int](nil))
	require.Equal(t, "x", Deref(To("x")))
	v := 7
	p := To(v)
	v = 8
	require.Equal(t, 7, *p, "To copies")
}
