package redact

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Mask replaces every secret occurrence.
const Mask = "***"

// DefaultMinLen is the shortest secret redacted when New gets minLen <= 0.
// Shorter values ("test", "admin") would turn ordinary words in terraform's
// output into ***, so they are skipped and reported instead.
const DefaultMinLen = 8

// Redactor replaces known secret values in text with ***: each secret as is,
// URL-encoded (query and path escaping), JSON/Go-quoted, and base64-encoded in
// the standard and URL alphabets, padded or raw, alone or anywhere inside a
// longer base64 string (the three byte alignments a secret can have there). A
// multi-line secret (a PEM key) is also matched line by line, because a log
// line never holds more than one of its lines.
//
// The zero value and a nil *Redactor redact nothing. A Redactor is safe for
// concurrent use; With adds secrets while other goroutines call Redact.
type Redactor struct {
	minLen int

	mu      sync.Mutex // serialises With
	secrets []string   // accepted values, kept to rebuild the matcher
	skipped []string   // names (never values) of values too short to redact
	count   int        // values passed to New/With, for naming skipped ones

	m atomic.Pointer[matcher] // immutable snapshot read by Redact
}

// New returns a Redactor for secrets. Values shorter than minLen (<= 0 means
// DefaultMinLen) are not redacted; Skipped names them so the caller can warn.
// Empty values are ignored silently (an unset variable has nothing to hide).
func New(minLen int, secrets ...string) *Redactor {
	r := &Redactor{minLen: minLen}
	if r.minLen <= 0 {
		r.minLen = DefaultMinLen
	}
	r.With(secrets...)
	return r
}

// With adds secrets (sensitive variable values learnt at run time) to r
// itself — every holder of r, such as a running log stream, redacts them from
// the next call on — and returns r.
func (r *Redactor) With(secrets ...string) *Redactor {
	named := make([]namedSecret, len(secrets))
	r.mu.Lock()
	for i, s := range secrets {
		r.count++
		named[i] = namedSecret{name: fmt.Sprintf("secret #%d", r.count), value: s}
	}
	r.mu.Unlock()
	r.add(named)
	return r
}

type namedSecret struct{ name, value string }

func (r *Redactor) add(secrets []namedSecret) {
	if len(secrets) == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.minLen <= 0 { // the zero value
		r.minLen = DefaultMinLen
	}
	changed := false
	for _, s := range secrets {
		switch {
		case s.value == "":
		case len(s.value) < r.minLen:
			r.skipped = append(r.skipped, s.name)
		default:
			r.secrets = append(r.secrets, s.value)
			changed = true
		}
	}
	if changed {
		r.m.Store(buildMatcher(r.secrets, r.minLen))
	}
}

// Skipped names the values that were too short to redact: "secret #2" for
// New and With, the variable name for FromEnviron. Never the values.
func (r *Redactor) Skipped() []string {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.skipped...)
}

// MaxLen is the length of the longest text Redact replaces. A caller cutting
// an endless text into pieces must keep that much lookahead (see SafeCut).
func (r *Redactor) MaxLen() int {
	if r == nil {
		return 0
	}
	if m := r.m.Load(); m != nil {
		return m.maxLen
	}
	return 0
}

// Redact returns s with every secret occurrence replaced by ***. Overlapping
// or adjacent occurrences become one ***. When nothing matches, s itself is
// returned without allocating.
func (r *Redactor) Redact(s string) string {
	if r == nil {
		return s
	}
	m := r.m.Load()
	if m == nil {
		return s
	}
	var b []byte
	last := 0 // s[:last] is already in b
	m.scan(s, func(start, end int) {
		if b == nil {
			b = make([]byte, 0, len(s))
		}
		b = append(b, s[last:start]...)
		b = append(b, Mask...)
		last = end
	})
	if b == nil {
		return s
	}
	b = append(b, s[last:]...)
	return string(b)
}

// SafeCut returns a position k near n at which s can be cut so that
// Redact(s[:k]) + Redact(s[k:]) == Redact(s): k is n, or, when n falls inside
// a secret occurrence, that occurrence's start (or its end if it starts at
// 0). It is meant for text that never ends (a line without a newline): call
// it with len(s) >= n+MaxLen(), so every occurrence that starts before n is
// complete in s.
func (r *Redactor) SafeCut(s string, n int) int {
	if n >= len(s) {
		return len(s)
	}
	if r == nil {
		return n
	}
	m := r.m.Load()
	if m == nil {
		return n
	}
	k := n
	m.scan(s, func(start, end int) {
		if start < n && n < end {
			if start > 0 {
				k = start
			} else {
				k = end
			}
		}
	})
	return k
}

// variants lists the forms of secret that Redact looks for, minLen or longer.
func variants(secret string, minLen int) []string {
	forms := []string{secret}
	if t := strings.TrimSpace(secret); t != secret {
		forms = append(forms, t) // a value read from a file keeps its newline
	}
	if strings.ContainsAny(secret, "\r\n") {
		forms = append(forms, strings.FieldsFunc(secret, func(r rune) bool { return r == '\n' || r == '\r' })...)
	}
	var out []string
	for _, f := range forms {
		out = append(out, f, url.QueryEscape(f), url.PathEscape(f), quotedInner(f), jsonInner(f, true), jsonInner(f, false))
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			out = append(out, enc.EncodeToString([]byte(f)))
			out = append(out, base64Fragments(f, enc.WithPadding(base64.NoPadding))...)
		}
	}
	kept := out[:0]
	for _, v := range out {
		if len(v) >= minLen {
			kept = append(kept, v)
		}
	}
	return kept
}

func quotedInner(s string) string {
	q := strconv.Quote(s)
	return q[1 : len(q)-1]
}

// jsonInner is s as a JSON string without its quotes, with or without the
// HTML escaping (\u0026 for &) that Go's encoding/json, and so terraform's
// -json output, applies by default.
func jsonInner(s string, escapeHTML bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	_ = enc.Encode(s) // a string always encodes
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// base64Fragments returns the part of enc's encoding of secret that is the
// same wherever the secret sits inside a longer encoded blob, for each of the
// three byte offsets (mod 3) it can start at. Base64 turns 3 bytes into 4
// characters of 6 bits; only characters whose 6 bits all come from the
// secret are fixed. Encoding k zero bytes followed by the secret and keeping
// characters ceil(8k/6) .. floor(8(k+n)/6)-1 gives exactly those. Offset 0
// also covers the raw (unpadded) encoding of the secret alone, minus a final
// character that depends on what follows.
func base64Fragments(secret string, enc *base64.Encoding) []string {
	n := len(secret)
	out := make([]string, 0, 3)
	for k := 0; k < 3; k++ {
		buf := make([]byte, k+n)
		copy(buf[k:], secret)
		e := enc.EncodeToString(buf)
		from := (8*k + 5) / 6
		to := 8 * (k + n) / 6
		if to > from {
			out = append(out, e[from:to])
		}
	}
	// The raw encoding alone, with its last partial character.
	out = append(out, enc.EncodeToString([]byte(secret)))
	return out
}

// FromEnviron builds a Redactor (DefaultMinLen) from the values of the
// secret-looking variables in environ ("NAME=value" pairs, as os.Environ
// returns them): those SecretName accepts, the password inside
// GRAPE_DATABASE_URL and DATABASE_URL, and the variables named in extraNames
// (exact names or path.Match patterns such as "MYCORP_*", case-insensitive).
func FromEnviron(environ []string, extraNames []string) *Redactor {
	r := &Redactor{minLen: DefaultMinLen}
	var found []namedSecret
	for _, kv := range environ {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || value == "" {
			continue
		}
		upper := strings.ToUpper(name)
		switch {
		case matchesAny(extraNames, upper):
			found = append(found, namedSecret{name, value})
			if upper == "GRAPE_DATABASE_URL" || upper == "DATABASE_URL" {
				found = append(found, namedSecret{name + " password", databasePassword(value)})
			}
		case upper == "GRAPE_DATABASE_URL" || upper == "DATABASE_URL":
			found = append(found, namedSecret{name + " password", databasePassword(value)})
		case SecretName(name):
			found = append(found, namedSecret{name, value})
		}
	}
	r.add(found)
	return r
}

// SecretName reports whether an environment variable's name says its value
// is secret: AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, *_TOKEN, TF_TOKEN_*
// (terraform's registry credentials), *_PASSWORD, PGPASSWORD,
// *_PASSPHRASE, *_SECRET*, *_PRIVATE_KEY, *_API_KEY, GRAPE_GIT_TOKEN; the
// bare words TOKEN, PASSWORD and SECRET too. Case-insensitive, so terraform's
// TF_VAR_db_password counts.
func SecretName(name string) bool {
	n := strings.ToUpper(name)
	switch n {
	case "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GRAPE_GIT_TOKEN", "PGPASSWORD",
		"TOKEN", "PASSWORD", "SECRET":
		return true
	}
	for _, suffix := range []string{"_TOKEN", "_PASSWORD", "_PASSPHRASE", "_PRIVATE_KEY", "_API_KEY"} {
		if strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return strings.Contains(n, "_SECRET") || strings.HasPrefix(n, "SECRET_") || strings.HasPrefix(n, "TF_TOKEN_")
}

func matchesAny(patterns []string, upperName string) bool {
	for _, p := range patterns {
		p = strings.ToUpper(p)
		if p == upperName {
			return true
		}
		if ok, err := path.Match(p, upperName); err == nil && ok {
			return true
		}
	}
	return false
}

// databasePassword extracts the password of a postgres:// URL or of a
// key=value DSN; "" when there is none.
func databasePassword(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		pw, _ := u.User.Password()
		return pw
	}
	m := dsnPassword.FindStringSubmatch(dsn)
	if m == nil {
		return ""
	}
	pw := m[2]
	if len(pw) >= 2 && pw[0] == '\'' && pw[len(pw)-1] == '\'' {
		pw = strings.ReplaceAll(pw[1:len(pw)-1], `\'`, `'`)
	}
	return pw
}

// The matcher finds many fixed strings in one pass. Every pattern is at
// least w bytes long (w <= 8); the first w bytes of each pattern, read as a
// little-endian integer, are its key. Redact rolls a w-byte window over the
// text and tests each window's key against a 64 Kibit bitset (8 KiB, stays in
// L1 cache) before touching the map of candidates. With a few hundred keys
// (20 secrets x ~20 variants) about 1 window in 200 gets past the bitset, so
// the cost is a handful of integer operations per byte: no allocation and no
// regexp on the path every log line takes.
type matcher struct {
	w      int
	shift  uint
	bits   [bloomWords]uint64
	cand   map[uint64][]string // longest first
	maxLen int
}

const (
	bloomBits  = 16
	bloomWords = 1 << bloomBits / 64
)

func bloomIndex(key uint64) uint64 { return (key * 0x9E3779B97F4A7C15) >> (64 - bloomBits) }

func buildMatcher(secrets []string, minLen int) *matcher {
	seen := map[string]bool{}
	var pats []string
	for _, s := range secrets {
		for _, v := range variants(s, minLen) {
			if !seen[v] {
				seen[v] = true
				pats = append(pats, v)
			}
		}
	}
	if len(pats) == 0 {
		return nil
	}
	m := &matcher{w: 8, cand: map[uint64][]string{}}
	for _, p := range pats {
		m.w = min(m.w, len(p))
		m.maxLen = max(m.maxLen, len(p))
	}
	m.shift = uint(8 * (m.w - 1))
	for _, p := range pats {
		key := windowKey(p[:m.w])
		h := bloomIndex(key)
		m.bits[h/64] |= 1 << (h % 64)
		m.cand[key] = append(m.cand[key], p)
	}
	for _, c := range m.cand {
		sort.Slice(c, func(i, j int) bool { return len(c[i]) > len(c[j]) })
	}
	return m
}

func windowKey(s string) uint64 {
	var k uint64
	for i := len(s) - 1; i >= 0; i-- {
		k = k<<8 | uint64(s[i])
	}
	return k
}

// scan calls found for each maximal run of overlapping or adjacent secret
// occurrences in s, left to right. Taking the union (not leftmost-longest
// and skip) matters: with secrets "abcdef" and "defxyz", text "abcdefxyz"
// must lose all of it, not keep "xyz".
func (m *matcher) scan(s string, found func(start, end int)) {
	runStart, runEnd := -1, -1
	var key uint64
	for j := 0; j < len(s); j++ {
		key = key>>8 | uint64(s[j])<<m.shift
		if j+1 < m.w {
			continue
		}
		h := bloomIndex(key)
		if m.bits[h/64]&(1<<(h%64)) == 0 {
			continue
		}
		i := j + 1 - m.w
		end := -1
		for _, p := range m.cand[key] {
			if strings.HasPrefix(s[i:], p) {
				end = i + len(p)
				break
			}
		}
		if end < 0 {
			continue
		}
		if runEnd >= 0 && i <= runEnd {
			runEnd = max(runEnd, end)
			continue
		}
		if runEnd >= 0 {
			found(runStart, runEnd)
		}
		runStart, runEnd = i, end
	}
	if runEnd >= 0 {
		found(runStart, runEnd)
	}
}
