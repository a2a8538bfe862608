// Package redact keeps secrets out of everything Grape writes: log lines,
// error messages, database rows and commits.
package redact

import (
	"net/url"
	"regexp"
	"strings"
)

// urlInText finds URLs with user info inside free text (error messages).
var urlInText = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@'"]+@[^\s'"]*`)

// dsnPassword finds key=value passwords in libpq-style connection strings.
var dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)

// URL hides the password (or token) of a URL: postgres://u:***@host/db.
// A string that is not a URL is returned unchanged.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return dsnPassword.ReplaceAllString(raw, "${1}***")
	}
	if _, ok := u.User.Password(); ok {
		return strings.Replace(u.String(), ":"+escapedPassword(u)+"@", ":***@", 1)
	}
	return raw
}

func escapedPassword(u *url.URL) string {
	// u.User.String() is "user:escaped-password".
	_, pw, _ := strings.Cut(u.User.String(), ":")
	return pw
}

// Text hides the passwords of every URL and key=value DSN inside s.
func Text(s string) string {
	s = urlInText.ReplaceAllStringFunc(s, URL)
	return dsnPassword.ReplaceAllString(s, "${1}***")
}
