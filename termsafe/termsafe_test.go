package termsafe

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestClean(t *testing.T) {
	for _, tc := range []struct {
		name, in      string
		colour, plain string
	}{
		{"plain", "Plan: 1 to add", "Plan: 1 to add", "Plan: 1 to add"},
		{"sgr kept on tty", "\x1b[1mPlan:\x1b[0m ok\x1b[31;1m!", "\x1b[1mPlan:\x1b[0m ok\x1b[31;1m!", "Plan: ok!"},
		{"truecolour sgr", "\x1b[38;2;255;0;0mred\x1b[m", "\x1b[38;2;255;0;0mred\x1b[m", "red"},
		{"clear screen", "a\x1b[2Jb\x1b[Hc", "abc", "abc"},
		{"private csi ending in m", "a\x1b[?1mb", "ab", "ab"},
		{"osc title bel", "x\x1b]0;pwned\x07y", "xy", "xy"},
		{"osc hyperlink st", "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\", "click", "click"},
		{"unterminated osc", "ok\x1b]0;title forever", "ok", "ok"},
		{"dcs", "a\x1bPq#0;2;0;0;0\x1b\\b", "ab", "ab"},
		{"bare esc reset", "a\x1bcb", "ab", "ab"},
		{"bare esc charset", "a\x1b(Bb", "ab", "ab"},
		{"lone esc at end", "a\x1b", "a", "a"},
		{"carriage return overwrite", "rm -rf /\rls", "rm -rf /ls", "rm -rf /ls"},
		{"c0 and del", "a\x00b\x07c\x08d\x7fe", "abcde", "abcde"},
		{"tab and newline kept", "a\tb\nc", "a\tb\nc", "a\tb\nc"},
		{"c1 csi", "a\u009b2Jb", "a2Jb", "a2Jb"},
		{"invalid utf8", "a\xffb\x9bc", "abc", "abc"},
		{"unicode kept", "→ ünïcode ✓", "→ ünïcode ✓", "→ ünïcode ✓"},
		{"broken csi", "a\x1b[12\nb", "a\nb", "a\nb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.colour, Clean(tc.in, true))
			assert.Equal(t, tc.plain, Clean(tc.in, false))
		})
	}
}

func BenchmarkClean(b *testing.B) {
	line := "\x1b[0m\x1b[1mmodule.vpc.aws_vpc.this: Creation complete after 2s [id=vpc-0123456789]\x1b[0m"
	for b.Loop() {
		Clean(line, true)
	}
}
