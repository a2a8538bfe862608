package ptr

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDeref(t *testing.T) {
	require.Empty(t, Deref[string](nil))
	require.Equal(t, 0, Deref[int](nil))
	require.Equal(t, "x", Deref(To("x")))
	p, q := To(7), To(7)
	require.Equal(t, 7, *p)
	require.NotSame(t, p, q, "each call returns its own pointer")
	*p = 8
	require.Equal(t, 7, *q)
}
