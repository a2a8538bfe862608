package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"unicode/utf8"
)

// Limits on an intent document. Intents come from a database row anyone with
// access to the control plane can write, so the agent bounds what it parses.
const (
	MaxIntentSize  = 1 << 20 // bytes
	MaxIntentDepth = 32      // nested objects and arrays
	maxStringLen   = 64 << 10
	maxNumberLen   = 64 // characters of a JSON number
)

// object is a decoded JSON object that remembers key order, so messages
// follow the document; values are object, []any, string, json.Number
// (canonical form), bool or nil.
type object struct {
	keys []string
	m    map[string]any
}

func (o *object) get(k string) (any, bool) {
	v, ok := o.m[k]
	return v, ok
}

// decodeJSON parses a document strictly: one value, no duplicate keys, no NUL
// characters, bounded depth, valid UTF-8. Errors name the line and column.
func decodeJSON(data []byte) (any, error) {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, size := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && size <= 1 {
				break
			}
			off += size
		}
		line, col := lineCol(data, off)
		return nil, fmt.Errorf("not valid UTF-8 at line %d, column %d: save the file as UTF-8", line, col)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	d := &treeDecoder{dec: dec, data: data}
	v, err := d.value(0, "")
	if err != nil {
		return nil, err
	}
	end := int(dec.InputOffset())
	if _, err := dec.Token(); err != io.EOF {
		// Point at where the extra content starts.
		off := end
		for off < len(data) && strings.ContainsRune(" \t\r\n", rune(data[off])) {
			off++
		}
		line, col := lineCol(data, off)
		return nil, fmt.Errorf("unexpected content after the JSON value at line %d, column %d", line, col)
	}
	return v, nil
}

type treeDecoder struct {
	dec  *json.Decoder
	data []byte
}

func (d *treeDecoder) fail(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(d.data, int(se.Offset))
		return fmt.Errorf("not valid JSON at line %d, column %d: %s", line, col, se.Error())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("not valid JSON: unexpected end of input")
	}
	line, col := lineCol(d.data, int(d.dec.InputOffset()))
	return fmt.Errorf("not valid JSON at line %d, column %d: %w", line, col, err)
}

func (d *treeDecoder) value(depth int, path string) (any, error) {
	tok, err := d.dec.Token()
	if err != nil {
		return nil, d.fail(err)
	}
	return d.fromToken(tok, depth, path)
}

func (d *treeDecoder) fromToken(tok json.Token, depth int, path string) (any, error) {
	switch t := tok.(type) {
	case json.Delim:
		if depth >= MaxIntentDepth {
			return nil, &pathError{path, fmt.Sprintf("nested more than %d levels deep; flatten the structure", MaxIntentDepth)}
		}
		if t == '{' {
			obj := &object{m: map[string]any{}}
			for d.dec.More() {
				kt, err := d.dec.Token()
				if err != nil {
					return nil, d.fail(err)
				}
				k, ok := kt.(string)
				if !ok {
					return nil, d.fail(fmt.Errorf("object key is not a string"))
				}
				kp := JoinPath(path, k)
				if err := checkString(kp, k); err != nil {
					return nil, err
				}
				if _, dup := obj.m[k]; dup {
					return nil, &pathError{kp, "appears twice in the same object; keep one"}
				}
				v, err := d.value(depth+1, kp)
				if err != nil {
					return nil, err
				}
				obj.keys = append(obj.keys, k)
				obj.m[k] = v
			}
			if _, err := d.dec.Token(); err != nil {
				return nil, d.fail(err)
			}
			return obj, nil
		}
		var arr []any
		for i := 0; d.dec.More(); i++ {
			v, err := d.value(depth+1, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := d.dec.Token(); err != nil {
			return nil, d.fail(err)
		}
		if arr == nil {
			arr = []any{}
		}
		return arr, nil
	case string:
		if err := checkString(path, t); err != nil {
			return nil, err
		}
		return t, nil
	case json.Number:
		if len(t) > maxNumberLen {
			return nil, &pathError{path, fmt.Sprintf("number has more than %d characters", maxNumberLen)}
		}
		n, err := canonicalNumber(t)
		if err != nil {
			return nil, &pathError{path, err.Error()}
		}
		return n, nil
	case bool, nil:
		return t, nil
	}
	return nil, &pathError{path, fmt.Sprintf("unexpected JSON token %v", tok)}
}

func checkString(path, s string) error {
	if strings.ContainsRune(s, 0) {
		return &pathError{path, "contains a NUL character (\\u0000); remove it"}
	}
	if len(s) > maxStringLen {
		return &pathError{path, fmt.Sprintf("string is %d bytes long; the limit is %d", len(s), maxStringLen)}
	}
	return nil
}

// canonicalNumber rewrites a JSON number in one form (2.0 and 2e0 are 2), so
// an intent normalises to the same bytes however it was typed.
func canonicalNumber(n json.Number) (json.Number, error) {
	f, _, err := big.ParseFloat(string(n), 10, 512, big.ToNearestEven)
	if err != nil {
		return "", fmt.Errorf("number %s is not valid: %w", n, err)
	}
	// Far beyond any size, count or port a module takes, and beyond what
	// Terraform's own number handling keeps exact.
	if f.IsInf() || (f.Sign() != 0 && (f.MantExp(nil) > 1024 || f.MantExp(nil) < -1024)) {
		return "", fmt.Errorf("number %s is out of range", n)
	}
	if f.IsInt() {
		i, _ := f.Int(nil)
		return json.Number(i.String()), nil
	}
	return json.Number(f.Text('g', -1)), nil
}

func lineCol(data []byte, off int) (int, int) {
	if off > len(data) {
		off = len(data)
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - bytes.LastIndexByte(data[:off], '\n')
	return line, col
}

// pathError is a decoding problem at a place in the document.
type pathError struct{ path, msg string }

func (e *pathError) Error() string { return e.path + ": " + e.msg }

// plain converts a decoded tree to maps and slices for encoding/json, which
// sorts object keys.
func plain(v any) any {
	switch t := v.(type) {
	case *object:
		m := make(map[string]any, len(t.m))
		for k, x := range t.m {
			m[k] = plain(x)
		}
		return m
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = plain(x)
		}
		return out
	default:
		return v
	}
}

// encodeJSON writes v with sorted keys, two-space indentation, no HTML
// escaping and a final newline: the canonical form of every JSON file Grape
// renders.
func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// compactJSON renders a value on one line for messages and diffs.
func compactJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(plain(v)); err != nil {
		return fmt.Sprint(v)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}
