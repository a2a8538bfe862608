package portal

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/grapehq/grape/render"
)

// fieldLines maps every JSON path of a document to the 1-based line where
// its key (or, for array elements, its value) starts, so a validation error
// naming "modules.vpc.cidr" can be shown under the line that holds it. Paths
// are spelled as package render spells them: identifier keys joined by ".",
// other keys as ["key"], array elements as [i]. It reads as far as the
// document is valid; for invalid JSON, syntaxLine says where it broke.
func fieldLines(doc []byte) map[string]int {
	out := map[string]int{}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	type frame struct {
		path    string
		isArray bool
		index   int
		key     string // object: the key whose value comes next
		wantKey bool
	}
	var stack []*frame
	lineAt := newLineIndex(doc)
	// valueStart finds where the value that the decoder is about to return
	// begins: after the last offset, skipping whitespace, ':' and ','.
	valueStart := func(from int64) int {
		i := int(from)
		for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r' || doc[i] == ':' || doc[i] == ',') {
			i++
		}
		return i
	}
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		start := valueStart(before)
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && !stack[len(stack)-1].isArray {
				stack[len(stack)-1].wantKey = true
			}
			continue
		}
		if top != nil && !top.isArray && top.wantKey {
			k, _ := tok.(string)
			top.key = k
			top.wantKey = false
			p := render.JoinPath(top.path, k)
			if _, seen := out[p]; !seen {
				out[p] = lineAt(start)
			}
			continue
		}
		// tok is a value: of the top-level document, an object key or an array element.
		path := ""
		switch {
		case top == nil:
		case top.isArray:
			path = top.path + "[" + strconv.Itoa(top.index) + "]"
			if _, seen := out[path]; !seen {
				out[path] = lineAt(start)
			}
			top.index++
		default:
			path = render.JoinPath(top.path, top.key)
			top.wantKey = true
		}
		if d, ok := tok.(json.Delim); ok {
			f := &frame{path: path, isArray: d == '[', wantKey: d == '{'}
			if top != nil && !top.isArray {
				top.wantKey = false // set again when this container closes
			}
			stack = append(stack, f)
		}
	}
}

// lineForPath finds the line of path or, failing that, of its closest
// ancestor that is in the document (an error about a missing input names a
// path that is not there; its module is). 0 when none is.
func lineForPath(lines map[string]int, path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if n, ok := lines[p]; ok {
			return n
		}
	}
	return 0
}

// parentPath drops the last element of a path: "a.b[2]" → "a.b" → "a" → "".
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		depth := 0
		inString := false
		for i := len(p) - 1; i >= 0; i-- {
			switch {
			case p[i] == '"' && (i == 0 || p[i-1] != '\\'):
				inString = !inString
			case inString:
			case p[i] == ']':
				depth++
			case p[i] == '[':
				depth--
				if depth == 0 {
					return p[:i]
				}
			}
		}
		return ""
	}
	if i := strings.LastIndexAny(p, ".]"); i >= 0 {
		if p[i] == ']' {
			return p[:i+1]
		}
		return p[:i]
	}
	return ""
}

// syntaxLine returns the line where doc stops being valid JSON, or 0 when
// it is valid.
func syntaxLine(doc []byte) int {
	dec := json.NewDecoder(bytes.NewReader(doc))
	var v any
	err := dec.Decode(&v)
	if err == nil {
		if _, err2 := dec.Token(); errors.Is(err2, io.EOF) {
			return 0
		}
		return lineAt(doc, int(dec.InputOffset()))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return lineAt(doc, int(se.Offset))
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return lineAt(doc, int(te.Offset))
	}
	// Unexpected end of input: the problem is at the end.
	return lineAt(doc, len(doc))
}

// lineAt is the 1-based line of byte offset off in doc.
func lineAt(doc []byte, off int) int {
	off = min(max(off, 0), len(doc))
	return 1 + bytes.Count(doc[:off], []byte("\n"))
}

// newLineIndex returns a function from byte offset to 1-based line.
func newLineIndex(doc []byte) func(off int) int {
	var starts []int
	for i, c := range doc {
		if c == '\n' {
			starts = append(starts, i)
		}
	}
	return func(off int) int {
		lo, hi := 0, len(starts)
		for lo < hi {
			mid := (lo + hi) / 2
			if starts[mid] < off {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		return lo + 1
	}
}
