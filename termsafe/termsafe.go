// Package termsafe makes text from other people safe to write to a
// terminal.
//
// Log lines are written by terraform, providers and any agent credential
// of a cluster; printed raw, a line holding ESC[2J clears the reader's
// screen, an OSC sequence retitles the window (or, on some terminals,
// writes the clipboard or opens links), and a carriage return overwrites
// what was just printed. Clean keeps only what is needed to read the text:
// printable characters, tab and newline, and, when asked, SGR sequences
// (colours and bold, ESC [ … m), which cannot move the cursor or change
// anything outside the text they style.
package termsafe

import (
	"os"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"
)

const esc = 0x1b

// Clean returns s without control characters or escape sequences: every C0
// control except tab and newline, DEL, C1 controls (U+0080–U+009F, which
// some terminals treat as 8-bit escape introducers), bytes that are not
// UTF-8, and every escape sequence (CSI, OSC, DCS, SOS, PM, APC, and bare
// ESC with what follows it). With keepSGR, CSI sequences ending in m whose
// parameters are only digits, ';' and ':' (colours) are kept.
func Clean(s string, keepSGR bool) string {
	if safe(s) {
		return s // the common case: plain text, no copy
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == esc:
			n, sgr := sequence(s[i:])
			if sgr && keepSGR {
				b.WriteString(s[i : i+n])
			}
			i += n
		case c == '\t' || c == '\n':
			b.WriteByte(c)
			i++
		case c < 0x20 || c == 0x7f:
			i++
		case c < utf8.RuneSelf:
			b.WriteByte(c)
			i++
		default:
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError && (r < 0x80 || r > 0x9f) {
				b.WriteString(s[i : i+size])
			}
			i += size
		}
	}
	return b.String()
}

// safe reports whether s holds only printable ASCII, tab and newline.
func safe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t' && c != '\n') || c >= 0x7f {
			return false
		}
	}
	return true
}

// sequence measures the escape sequence at the start of s (s[0] is ESC)
// and reports whether it is an SGR sequence. An unterminated sequence runs
// to the end of s: half a sequence must not leak through either.
func sequence(s string) (n int, sgr bool) {
	if len(s) < 2 {
		return len(s), false
	}
	switch s[1] {
	case '[': // CSI: parameters 0x30–0x3F, intermediates 0x20–0x2F, final 0x40–0x7E
		params := true
		for i := 2; i < len(s); i++ {
			c := s[i]
			switch {
			case c >= 0x40 && c <= 0x7e:
				return i + 1, c == 'm' && params
			case c >= '0' && c <= '9', c == ';', c == ':':
			case c >= 0x20 && c <= 0x3f:
				params = false // private or intermediate bytes: not a plain colour
			default:
				return i, false // a byte no CSI may hold: the sequence is broken here
			}
		}
		return len(s), false
	case ']', 'P', 'X', '^', '_': // OSC, DCS, SOS, PM, APC: up to BEL or ST (ESC \)
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 && s[1] == ']' {
				return i + 1, false
			}
			if s[i] == esc && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2, false
			}
		}
		return len(s), false
	}
	// Bare ESC: intermediates, then one final byte (ESC c resets the
	// terminal, ESC 7 saves the cursor, ESC ( B picks a charset).
	i := 1
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i, false
}

// Colour reports whether output to f may keep colours: f is a terminal,
// colour was not turned off with a flag (noColor) and NO_COLOR
// (https://no-color.org) is unset or empty.
func Colour(f *os.File, noColor bool, getenv func(string) string) bool {
	if noColor || f == nil || getenv("NO_COLOR") != "" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
