package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/term"
)

type logFlags struct {
	format string
	level  string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.format, "log-format", "auto", "agent log format: text, json, or auto (text on a terminal, JSON otherwise)")
	fs.StringVar(&l.level, "log-level", "info", "debug, info, warn or error")
}

// logger builds the process logger. JSON when not on a terminal, because
// then a log collector reads it.
func (l *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.level)); err != nil {
		return nil, usagef("--log-level: want debug, info, warn or error, got %q", l.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	format := strings.ToLower(l.format)
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format: want text, json or auto, got %q", l.format)
}
