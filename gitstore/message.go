package gitstore

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Trailer is one "Key: value" line at the end of a commit message, readable
// with git interpret-trailers and git log --format=%(trailers).
type Trailer struct {
	Key   string
	Value string
}

// Trailer keys Grape writes.
const (
	TrailerDeployment = "Grape-Deployment"
	TrailerConfig     = "Grape-Config"
	TrailerCluster    = "Grape-Cluster"
	TrailerAction     = "Grape-Action"
	TrailerPolicies   = "Grape-Policies"
)

// Signature is a commit author or committer.
type Signature struct {
	Name  string
	Email string
}

// DefaultAuthor signs commits when Options.Author is empty.
var DefaultAuthor = Signature{Name: "Grape Agent", Email: "grape@localhost"}

var trailerKeyRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*$`)

func (s Signature) validate() error {
	// git fsck rejects these in author and committer lines.
	if s.Name == "" || s.Email == "" || strings.ContainsAny(s.Name+s.Email, "<>\n\r\x00") {
		return fmt.Errorf("invalid commit author %q <%q>: name and email must be set and hold no <, > or newlines", s.Name, s.Email)
	}
	return nil
}

// message builds a commit message: subject, blank line, body, blank line,
// trailers — the layout git interpret-trailers parses.
func message(subject, body string, trailers []Trailer) (string, error) {
	subject = strings.TrimSpace(subject)
	if subject == "" {
		return "", errors.New("commit subject is empty")
	}
	if strings.ContainsAny(subject, "\n\r") {
		return "", fmt.Errorf("commit subject %q spans several lines", subject)
	}
	var b strings.Builder
	b.WriteString(subject)
	b.WriteString("\n")
	body = strings.TrimRight(strings.ReplaceAll(body, "\r\n", "\n"), " \t\n")
	body = strings.TrimLeft(body, "\n")
	if body != "" {
		b.WriteString("\n")
		b.WriteString(body)
		b.WriteString("\n")
	}
	if len(trailers) > 0 {
		b.WriteString("\n")
	}
	for _, t := range trailers {
		if !trailerKeyRE.MatchString(t.Key) {
			return "", fmt.Errorf("trailer key %q must be letters, digits and dashes", t.Key)
		}
		v := strings.TrimSpace(t.Value)
		if v == "" || strings.ContainsAny(v, "\n\r") {
			return "", fmt.Errorf("trailer %s: value %q must be one non-empty line", t.Key, t.Value)
		}
		fmt.Fprintf(&b, "%s: %s\n", t.Key, v)
	}
	return b.String(), nil
}
