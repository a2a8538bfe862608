package portal

import (
	"strconv"
	"strings"
)

// Segment is a run of a log line's text with one style. Class is a
// space-separated list of CSS classes (ansi-b bold, ansi-d dim, ansi-i
// italic, ansi-u underline, ansi-fN foreground and ansi-bgN background, N
// 0–15), "" for plain text.
//
// static/portal.js has the same converter for lines that arrive live; both
// are checked against testdata/ansi.json, so a line looks the same whether it
// was on the page when it loaded or streamed in afterwards.
type Segment struct {
	Text  string `json:"text"`
	Class string `json:"class"`
}

// ansiStyle is the SGR state while a line is read. Each line starts plain:
// lines are stored and streamed one by one, and a reader that resumes in the
// middle of a log must see the same styles as one that read it all.
type ansiStyle struct {
	fg, bg                       int // -1: default
	bold, dim, italic, underline bool
}

func (s ansiStyle) class() string {
	var parts []string
	if s.bold {
		parts = append(parts, "ansi-b")
	}
	if s.dim {
		parts = append(parts, "ansi-d")
	}
	if s.italic {
		parts = append(parts, "ansi-i")
	}
	if s.underline {
		parts = append(parts, "ansi-u")
	}
	if s.fg >= 0 {
		parts = append(parts, "ansi-f"+strconv.Itoa(s.fg))
	}
	if s.bg >= 0 {
		parts = append(parts, "ansi-bg"+strconv.Itoa(s.bg))
	}
	return strings.Join(parts, " ")
}

// ANSISegments splits a log line into styled runs. SGR sequences (ESC [ … m)
// set the style; every other escape sequence (cursor movement, OSC titles and
// links) and any other control character except tab is dropped, so nothing a
// tool prints can move or hide text in the page. Colours beyond the basic 16
// (256-colour and 24-bit) are mapped to the nearest of the 16.
func ANSISegments(line string) []Segment {
	var out []Segment
	st := ansiStyle{fg: -1, bg: -1}
	var text strings.Builder
	flush := func() {
		if text.Len() == 0 {
			return
		}
		c := st.class()
		if n := len(out); n > 0 && out[n-1].Class == c {
			out[n-1].Text += text.String()
		} else {
			out = append(out, Segment{Text: text.String(), Class: c})
		}
		text.Reset()
	}
	for i := 0; i < len(line); {
		c := line[i]
		if c != 0x1b {
			if c < 0x20 && c != '\t' || c == 0x7f {
				i++
				continue
			}
			// Copy up to the next control byte in one go.
			j := i + 1
			for j < len(line) && line[j] != 0x1b && (line[j] >= 0x20 || line[j] == '\t') && line[j] != 0x7f {
				j++
			}
			text.WriteString(line[i:j])
			i = j
			continue
		}
		if i+1 >= len(line) {
			i++ // a lone ESC at the end
			continue
		}
		switch line[i+1] {
		case '[': // CSI: parameters 0x30–0x3F, intermediates 0x20–0x2F, final 0x40–0x7E
			j := i + 2
			for j < len(line) && line[j] >= 0x30 && line[j] <= 0x3f {
				j++
			}
			params := line[i+2 : j]
			for j < len(line) && line[j] >= 0x20 && line[j] <= 0x2f {
				j++
			}
			switch {
			case j >= len(line):
				i = len(line) // unterminated: drop the rest
			case line[j] < 0x40 || line[j] > 0x7e:
				i = j // malformed: drop what was read, go on with the text
			default:
				if line[j] == 'm' {
					flush()
					st = applySGR(st, params)
				}
				i = j + 1
			}
		case ']': // OSC, ended by BEL or ESC \
			j := i + 2
			for j < len(line) && line[j] != 0x07 && !(line[j] == 0x1b && j+1 < len(line) && line[j+1] == '\\') {
				j++
			}
			switch {
			case j >= len(line):
				i = len(line)
			case line[j] == 0x07:
				i = j + 1
			default:
				i = j + 2
			}
		default: // other escapes: intermediates 0x20–0x2F, then a final byte 0x30–0x7E (ESC 7, ESC ( B)
			j := i + 1
			for j < len(line) && line[j] >= 0x20 && line[j] <= 0x2f {
				j++
			}
			if j < len(line) && line[j] >= 0x30 && line[j] <= 0x7e {
				j++
			}
			i = j // a malformed one ends where it stops making sense
		}
	}
	flush()
	return out
}

// applySGR applies the parameters of one SGR sequence ("1;31", "" = reset).
func applySGR(st ansiStyle, params string) ansiStyle {
	if params == "" {
		return ansiStyle{fg: -1, bg: -1}
	}
	fields := strings.Split(params, ";")
	num := func(k int) int {
		if k >= len(fields) || fields[k] == "" {
			return 0
		}
		n, err := strconv.Atoi(fields[k])
		if err != nil || n > 255 {
			return -1
		}
		return n
	}
	for k := 0; k < len(fields); k++ {
		n := num(k)
		switch {
		case n == 0:
			st = ansiStyle{fg: -1, bg: -1}
		case n == 1:
			st.bold = true
		case n == 2:
			st.dim = true
		case n == 3:
			st.italic = true
		case n == 4:
			st.underline = true
		case n == 22:
			st.bold, st.dim = false, false
		case n == 23:
			st.italic = false
		case n == 24:
			st.underline = false
		case n >= 30 && n <= 37:
			st.fg = n - 30
		case n == 39:
			st.fg = -1
		case n >= 40 && n <= 47:
			st.bg = n - 40
		case n == 49:
			st.bg = -1
		case n >= 90 && n <= 97:
			st.fg = n - 90 + 8
		case n >= 100 && n <= 107:
			st.bg = n - 100 + 8
		case n == 38 || n == 48:
			colour, used := extendedColour(num, k+1)
			if colour >= 0 {
				if n == 38 {
					st.fg = colour
				} else {
					st.bg = colour
				}
			}
			k += used
		}
	}
	return st
}

// extendedColour reads "5;N" or "2;R;G;B" starting at field k and returns the
// nearest basic colour (-1 when malformed) and how many fields it used.
func extendedColour(num func(int) int, k int) (colour, used int) {
	switch num(k) {
	case 5:
		n := num(k + 1)
		if n < 0 {
			return -1, 2
		}
		if n < 16 {
			return n, 2
		}
		r, g, b := xterm256(n)
		return nearestBasic(r, g, b), 2
	case 2:
		r, g, b := num(k+1), num(k+2), num(k+3)
		if r < 0 || g < 0 || b < 0 {
			return -1, 4
		}
		return nearestBasic(r, g, b), 4
	}
	return -1, 1
}

// basicPalette is xterm's default 16 colours, which portal.css also uses.
var basicPalette = [16][3]int{
	{0, 0, 0}, {205, 0, 0}, {0, 205, 0}, {205, 205, 0}, {0, 0, 238}, {205, 0, 205}, {0, 205, 205}, {229, 229, 229},
	{127, 127, 127}, {255, 0, 0}, {0, 255, 0}, {255, 255, 0}, {92, 92, 255}, {255, 0, 255}, {0, 255, 255}, {255, 255, 255},
}

// xterm256 returns the RGB value of a 256-colour index from 16 up.
func xterm256(n int) (r, g, b int) {
	if n >= 232 {
		v := 8 + (n-232)*10
		return v, v, v
	}
	n -= 16
	level := func(x int) int {
		if x == 0 {
			return 0
		}
		return 55 + x*40
	}
	return level(n / 36), level(n / 6 % 6), level(n % 6)
}

func nearestBasic(r, g, b int) int {
	best, bestDist := 0, -1
	for i, p := range basicPalette {
		dr, dg, db := r-p[0], g-p[1], b-p[2]
		d := dr*dr + dg*dg + db*db
		if bestDist < 0 || d < bestDist {
			best, bestDist = i, d
		}
	}
	return best
}

// diagClass marks the heading line of a terraform diagnostic ("Error: …",
// "Warning: …", as runner.renderDiagnostic lays it out) so the terminal
// colours it; portal.js applies the same rule to streamed lines.
func diagClass(line string) string {
	switch {
	case strings.HasPrefix(line, "Error: "):
		return " diag-error"
	case strings.HasPrefix(line, "Warning: "):
		return " diag-warning"
	}
	return ""
}
