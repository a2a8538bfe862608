// Package ptr has the two helpers Go lacks for optional values, which store
// rows carry as pointers (a NULL column is a nil pointer).
package ptr

// To returns a pointer to a copy of v.
func To[T any](v T) *T { return &v }

// Deref returns *p, or T's zero value when p is nil.
func Deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
