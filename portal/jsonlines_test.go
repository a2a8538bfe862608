package portal

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/grapehq/grape/render"
)

const sampleIntent = `{
  "region": "eu-central-1",
  "tags": {"team": "infra", "cost center": "42"},
  "modules": {
    "vpc": {
      "cidr": "10.0.0.1/16",
      "az_count": 9,
      "availability_zones": [
        "eu-central-1a",
        "eu-central-1b"
      ]
    },
    "eks": {"nope": 1}
  }
}
`

func TestFieldLines(t *testing.T) {
	lines := fieldLines([]byte(sampleIntent))
	cases := map[string]int{
		"region":                            2,
		"tags":                              3,
		"tags.team":                         3,
		`tags["cost center"]`:               3,
		"modules":                           4,
		"modules.vpc":                       5,
		"modules.vpc.cidr":                  6,
		"modules.vpc.az_count":              7,
		"modules.vpc.availability_zones":    8,
		"modules.vpc.availability_zones[0]": 9,
		"modules.vpc.availability_zones[1]": 10,
		"modules.eks":                       13,
		"modules.eks.nope":                  13,
	}
	for path, want := range cases {
		require.Equal(t, want, lines[path], path)
	}
	require.Len(t, lines, len(cases))
}

func TestLineForPathFallsBackToAncestor(t *testing.T) {
	lines := fieldLines([]byte(sampleIntent))
	cases := []struct {
		path string
		want int
	}{
		{"modules.vpc.cidr", 6},
		{"modules.vpc.missing_input", 5},
		{"modules.vpc.availability_zones[7]", 8},
		{`modules["weird.key"]`, 4},
		{"nothing.here", 0},
		{"", 0},
	}
	for _, c := range cases {
		require.Equal(t, c.want, lineForPath(lines, c.path), c.path)
	}
}

func TestParentPath(t *testing.T) {
	cases := map[string]string{
		"a.b.c":            "a.b",
		"a":                "",
		"a.b[2]":           "a.b",
		`a["x.y"]`:         "a",
		`a["x]"]`:          "a",
		`a["x"].b`:         `a["x"]`,
		"a.b[2][3]":        "a.b[2]",
		"modules.vpc.tags": "modules.vpc",
	}
	for in, want := range cases {
		require.Equal(t, want, parentPath(in), in)
	}
}

func TestSyntaxLine(t *testing.T) {
	cases := []struct {
		doc  string
		line int
	}{
		{`{"a": 1}`, 0},
		{"{\n  \"a\": 1,\n}", 3},
		{"{\n  \"a\": 1\n  \"b\": 2\n}", 3},
		{"{\n  \"a\": [1, 2\n", 3},
		{"{}\n trailing", 2},
	}
	for _, c := range cases {
		require.Equal(t, c.line, syntaxLine([]byte(c.doc)), "%q", c.doc)
	}
}

// TestPlaceProblemsWithRenderErrors puts the real validator's errors on the
// lines of the fields they name.
func TestPlaceProblemsWithRenderErrors(t *testing.T) {
	cat, err := render.Default()
	require.NoError(t, err)
	_, err = cat.Validate([]byte(sampleIntent))
	var ve *render.ValidationError
	require.ErrorAs(t, err, &ve)
	probs, lines := placeProblems([]byte(sampleIntent), ve.Errors)
	byPath := map[string]int{}
	for _, p := range probs {
		byPath[p.Path] = p.Line
	}
	require.Equal(t, 6, byPath["modules.vpc.cidr"], "%+v", probs)
	require.Equal(t, 7, byPath["modules.vpc.az_count"], "%+v", probs)
	require.Equal(t, 13, byPath["modules.eks.nope"], "%+v", probs)
	require.Len(t, lines, 15)
	require.NotEmpty(t, lines[5].Problems)
	require.Equal(t, `      "cidr": "10.0.0.1/16",`, lines[5].Text)

	// Invalid JSON: the document-wide error goes where parsing stopped.
	bad := "{\n  \"region\": \"eu-central-1\",\n}\n"
	_, err = cat.Validate([]byte(bad))
	require.ErrorAs(t, err, &ve)
	probs, _ = placeProblems([]byte(bad), ve.Errors)
	require.Len(t, probs, 1)
	require.Equal(t, 3, probs[0].Line)
}
