package portal

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/ from the current output")

// ansiVector is one case of testdata/ansi.json. The browser test runs the
// same cases through portal.js, so both converters must agree.
type ansiVector struct {
	Name string    `json:"name"`
	In   string    `json:"in"`
	Out  []Segment `json:"out"`
}

var ansiInputs = []struct{ name, in string }{
	{"plain", "hello world"},
	{"empty", ""},
	{"red then reset", "\x1b[31mred\x1b[0m plain"},
	{"bold green, bold off", "\x1b[1;32mbold green\x1b[22m green"},
	{"terraform plan line", "\x1b[0m\x1b[1mPlan:\x1b[0m 1 to add, 0 to change, 0 to destroy."},
	{"bright fg on bright bg", "\x1b[97;100mbright"},
	{"256 colour to nearest", "\x1b[38;5;196mx\x1b[48;5;21my"},
	{"256 colour basic index", "\x1b[38;5;3mx"},
	{"256 grey", "\x1b[38;5;244mgrey"},
	{"truecolor to nearest", "\x1b[38;2;10;10;250mblue"},
	{"malformed 38", "\x1b[38;5mbad"},
	{"colon sub-parameters ignored", "\x1b[38:5:1mx"},
	{"empty field resets", "\x1b[1;;31mx"},
	{"all attributes", "\x1b[1;2;3;4;9;44mall\x1b[mplain"},
	{"attributes off", "\x1b[3;4mx\x1b[23my\x1b[24mz"},
	{"default colours", "\x1b[31;42ma\x1b[39mb\x1b[49mc"},
	{"cursor movement dropped", "\x1b[2K\x1b[1Gcleared\x1b[1A"},
	{"OSC title dropped", "\x1b]0;window title\x07after"},
	{"OSC 8 hyperlink keeps text", "\x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ done"},
	{"charset designation dropped", "\x1b(Bx\x1b7y"},
	{"control characters dropped, tab kept", "tab\there\x07bell\x08back\x7fdel"},
	{"only a style", "\x1b[31m"},
	{"unterminated CSI", "text \x1b[31"},
	{"unterminated OSC", "text \x1b]0;title"},
	{"lone ESC at the end", "a\x1b"},
	{"markup stays text", "<script>alert(1)</script>&amp;"},
	{"unicode", "héllo ✓ \x1b[33m⚠ warn\x1b[0m done"},
	{"huge parameter ignored", "\x1b[99999mx"},
	{"same style merges", "\x1b[31ma\x1b[31mb"},
	{"malformed CSI keeps a multibyte character", "\x1b[🍇x\x1b[1\x08y"},
	{"malformed escape keeps the text", "\x1b(é\x1b"},
}

func TestANSISegmentsGolden(t *testing.T) {
	path := filepath.Join("testdata", "ansi.json")
	var got []ansiVector
	for _, c := range ansiInputs {
		got = append(got, ansiVector{Name: c.name, In: c.in, Out: ANSISegments(c.in)})
	}
	if *update {
		b, err := json.MarshalIndent(got, "", "  ")
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(path, append(b, '\n'), 0o644))
	}
	b, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./portal -run ANSI -update to create it")
	var want []ansiVector
	require.NoError(t, json.Unmarshal(b, &want))
	require.Equal(t, want, got, "ANSI output changed: check it, then refresh with -update")
}

func TestANSISegmentsRules(t *testing.T) {
	cases := []struct {
		in   string
		want []Segment
	}{
		{"\x1b[31mred\x1b[0m plain", []Segment{{"red", "ansi-f1"}, {" plain", ""}}},
		{"\x1b[38;5;196mx", []Segment{{"x", "ansi-f9"}}},
		{"\x1b[38;2;0;0;238mx", []Segment{{"x", "ansi-f4"}}},
		{"\x1b[1;4;93;41mx", []Segment{{"x", "ansi-b ansi-u ansi-f11 ansi-bg1"}}},
		{"\x1b]0;t\x07a\x1b[Kb", []Segment{{"ab", ""}}},
		{"\x1b[31m", nil},
	}
	for _, c := range cases {
		require.Equal(t, c.want, ANSISegments(c.in), "%q", c.in)
	}
	// Whatever comes in, no control character survives into the page.
	for _, c := range ansiInputs {
		for _, s := range ANSISegments(c.in) {
			require.False(t, strings.ContainsFunc(s.Text, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }), "%s: %q", c.name, s.Text)
			require.NotEmpty(t, s.Text)
		}
	}
}

func FuzzANSISegments(f *testing.F) {
	for _, c := range ansiInputs {
		f.Add(c.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var visible strings.Builder
		for _, s := range ANSISegments(in) {
			if utf8.ValidString(in) && !utf8.ValidString(s.Text) {
				t.Fatalf("valid input %q gave invalid UTF-8 %q", in, s.Text)
			}
			if strings.ContainsFunc(s.Text, func(r rune) bool { return r == 0x1b }) {
				t.Fatalf("ESC in output of %q", in)
			}
			visible.WriteString(s.Text)
		}
		if visible.Len() > len(in) {
			t.Fatalf("output longer than input for %q", in)
		}
	})
}
