package plandiff

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
)

// op is what happens to one value.
type op int

const (
	opSame op = iota
	opAdd
	opRemove
	opChange
)

func (o op) String() string {
	return [...]string{"same", "add", "remove", "change"}[o]
}

// node is one value of a change: a leaf, an object (attributes or map
// entries) or a list. Sensitive leaves never hold their values.
type node struct {
	key      string // attribute or map key; "" for list elements
	path     string // tags["team"], ports[1], ingress[0].from_port
	op       op
	list     bool // children are list elements
	object   bool // children are attributes / map entries
	old, new any  // leaf values, nil when sensitive
	hasOld   bool
	hasNew   bool
	// sensitive: before_sensitive or after_sensitive marks this value (or
	// an object holding it).
	sensitive bool
	unknown   bool // the new value is known only after apply
	forces    bool // a replace_paths entry names this value
	children  []*node
}

// side is one side (before or after) of a value with its markers.
type side struct {
	v    any
	has  bool
	sens any // before_sensitive / after_sensitive at this level
}

type builder struct {
	replace map[string]bool
	secrets secrets
}

// build compares before and after. unk is the after_unknown marker.
func (bl *builder) build(key, path string, b, a side, unk any) *node {
	n := &node{key: key, path: path, hasOld: b.has, hasNew: a.has}
	switch {
	case isTrue(b.sens) || isTrue(a.sens) || bl.holdsSecret(b, a, unk):
		// Redacted whole, on both sides: a value sensitive after may have
		// been plain before, and the old plain value must not hint at it.
		n.sensitive = true
		n.op = leafOp(b, a, isTrue(unk))
		n.unknown = isTrue(unk)
		n.forces = bl.replace[path]
		return n
	case isTrue(unk):
		n.unknown = true
		n.hasNew = true
		n.op = opAdd
		if b.has {
			n.op = opChange
			n.old = b.v
		}
		n.forces = bl.replace[path]
		return n
	}
	bm, bIsMap := b.v.(map[string]any)
	am, aIsMap := a.v.(map[string]any)
	bl2, bIsList := b.v.([]any)
	al2, aIsList := a.v.([]any)
	switch {
	case (bIsMap || !b.has) && (aIsMap || !a.has) && (bIsMap || aIsMap):
		n.object = true
		bl.object(n, bm, am, b, a, unk)
	case (bIsList || !b.has) && (aIsList || !a.has) && (bIsList || aIsList):
		n.list = true
		bl.list(n, bl2, al2, b, a, unk)
	default:
		n.old, n.new = b.v, a.v
		n.op = leafOp(b, a, false)
	}
	n.forces = bl.replace[path]
	return n
}

// holdsSecret reports whether a value that would be printed whole holds one
// of the plan's secrets: a leaf, or an old value about to be replaced by
// "(known after apply)". Containers are looked into by the walk instead.
func (bl *builder) holdsSecret(b, a side, unk any) bool {
	whole := func(s side) bool {
		switch s.v.(type) {
		case map[string]any, []any:
			return isTrue(unk)
		}
		return true
	}
	return (whole(b) && bl.secrets.in(b.v)) || (whole(a) && bl.secrets.in(a.v))
}

func leafOp(b, a side, unknown bool) op {
	switch {
	case !b.has && (a.has || unknown):
		return opAdd
	case !b.has:
		return opSame
	case !a.has && !unknown:
		return opRemove
	case unknown || !reflect.DeepEqual(b.v, a.v):
		return opChange
	}
	return opSame
}

// containerOp derives a container's op from its own presence and children.
func containerOp(n *node) op {
	switch {
	case !n.hasOld && n.hasNew:
		return opAdd
	case n.hasOld && !n.hasNew:
		return opRemove
	}
	for _, c := range n.children {
		if c.op != opSame {
			return opChange
		}
	}
	return opSame
}

func (bl *builder) object(n *node, bm, am map[string]any, b, a side, unk any) {
	keys := make([]string, 0, len(bm)+len(am))
	seen := map[string]bool{}
	um, _ := unk.(map[string]any)
	for _, m := range []map[string]any{bm, am, um} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		bv, bok := bm[k]
		av, aok := am[k]
		c := bl.build(k, joinKey(n.path, k),
			side{v: bv, has: bok && bv != nil, sens: field(b.sens, k)},
			side{v: av, has: aok && av != nil, sens: field(a.sens, k)},
			field(unk, k))
		if !c.hasOld && !c.hasNew && !c.unknown {
			continue // null on both sides: terraform does not show it
		}
		n.children = append(n.children, c)
	}
	n.op = containerOp(n)
}

func (bl *builder) list(n *node, bl2, al2 []any, b, a side, unk any) {
	// Unknown elements never equal anything, so they are shown as added.
	eq := func(i, j int) bool {
		return !isTrue(elem(unk, j)) && reflect.DeepEqual(bl2[i], al2[j]) &&
			isTrue(elem(b.sens, i)) == isTrue(elem(a.sens, j))
	}
	pairs := lcs(len(bl2), len(al2), eq)
	i, j := 0, 0
	emit := func(bi, aj int) {
		var bs, as side
		var u any
		idx := aj
		if bi >= 0 {
			bs = side{v: bl2[bi], has: true, sens: elem(b.sens, bi)}
			idx = bi
		}
		if aj >= 0 {
			as = side{v: al2[aj], has: true, sens: elem(a.sens, aj)}
			u = elem(unk, aj)
			idx = aj
		}
		n.children = append(n.children, bl.build("", fmt.Sprintf("%s[%d]", n.path, idx), bs, as, u))
	}
	// Unmatched runs between matches: objects at the same offset are shown
	// as changed in place (terraform does the same for nested blocks),
	// everything else as removed then added.
	flush := func(toI, toJ int) {
		for i < toI && j < toJ {
			_, bObj := bl2[i].(map[string]any)
			_, aObj := al2[j].(map[string]any)
			if !bObj || !aObj {
				break
			}
			emit(i, j)
			i++
			j++
		}
		for ; i < toI; i++ {
			emit(i, -1)
		}
		for ; j < toJ; j++ {
			emit(-1, j)
		}
	}
	for _, p := range pairs {
		flush(p[0], p[1])
		emit(i, j)
		i++
		j++
	}
	flush(len(bl2), len(al2))
	n.op = containerOp(n)
}

// lcs returns the index pairs of a longest common subsequence.
func lcs(n, m int, eq func(i, j int) bool) [][2]int {
	t := make([][]int, n+1)
	for i := range t {
		t[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if eq(i, j) {
				t[i][j] = t[i+1][j+1] + 1
			} else {
				t[i][j] = max(t[i+1][j], t[i][j+1])
			}
		}
	}
	var out [][2]int
	for i, j := 0, 0; i < n && j < m; {
		switch {
		case eq(i, j):
			out = append(out, [2]int{i, j})
			i++
			j++
		case t[i+1][j] >= t[i][j+1]:
			i++
		default:
			j++
		}
	}
	return out
}

// isTrue reports whether a sensitive/unknown marker marks this value as a
// whole (nested markers are followed by the walk instead).
func isTrue(v any) bool {
	b, ok := v.(bool)
	return ok && b
}

// field and elem step into a marker. A marker that is true for a whole
// object stays true for everything in it.
func field(marker any, k string) any {
	if isTrue(marker) {
		return true
	}
	if m, ok := marker.(map[string]any); ok {
		return m[k]
	}
	return nil
}

func elem(marker any, i int) any {
	if isTrue(marker) {
		return true
	}
	if l, ok := marker.([]any); ok && i >= 0 && i < len(l) {
		return l[i]
	}
	return nil
}

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

func joinKey(path, k string) string {
	switch {
	case !ident.MatchString(k):
		return path + "[" + strconv.Quote(k) + "]"
	case path == "":
		return k
	}
	return path + "." + k
}

// replacePaths turns replace_paths ([["triggers_replace"], ["ingress", 0,
// "from_port"]]) into the path strings nodes carry.
func replacePaths(rp []any) map[string]bool {
	out := map[string]bool{}
	for _, p := range rp {
		steps, ok := p.([]any)
		if !ok {
			continue
		}
		path := ""
		for _, s := range steps {
			switch x := s.(type) {
			case string:
				path = joinKey(path, x)
			case float64:
				path = fmt.Sprintf("%s[%d]", path, int(x))
			}
		}
		out[path] = true
	}
	return out
}
