// Package logstream carries a deployment's output into deployment_logs: every
// line of terraform's stdout and stderr plus Grape's own agent lines, in
// order, within a blink, and without losing one when PostgreSQL goes away.
//
// # Order and numbering
//
// A line gets its seq when it is produced, so seq is gapless and follows the
// order in which lines reached the stream (stdout and stderr are separate
// pipes: their relative order is the order their Write calls arrived). Open
// continues after the deployment's current max(seq), so a requeued deployment
// keeps the lines of its earlier attempts. created_at is the time the line was
// produced, not when it was stored, so lines held back by an outage keep
// their real time.
//
// # Batches and durability
//
// Lines are written with COPY in batches of Options.BatchLines, or after
// Options.FlushInterval when fewer arrive. Batches are written strictly in
// order: batch N+1 is never sent before batch N is committed, so a reader
// never sees a gap. A batch whose outcome is unknown (the connection died
// around the commit) is simply retried; if its rows are already there the
// unique key refuses the COPY and the batch is written again with
// INSERT … ON CONFLICT DO NOTHING, so nothing is duplicated. Stream.Close
// returns nil only after every line is committed; the agent writes the final
// status after that, so whoever sees the final status can read every line.
//
// # When the database is down
//
// Failed writes are retried with capped exponential backoff (50 ms … 5 s)
// until Close's context gives up. Meanwhile lines queue in memory, bounded by
// Options.MemoryLines and Options.MemoryBytes, and beyond that are appended
// to a spill file in Options.SpillDir; they are written in order when the
// database is back. A writer never waits on the database: while writes fail
// it spills at once, and while they succeed but cannot keep up it waits at
// most 100 ms for room (ordinary pipe back-pressure) before spilling. Without
// a SpillDir a full buffer makes writers wait instead, which is the only
// alternative to losing lines. Memory in use is at most the bound plus the
// one batch being written.
//
// # Line hygiene
//
// What is stored is what a browser terminal and `grape logs` can show:
//   - "\n" and "\r\n" end a line. A bare "\r" (progress updates redrawn in
//     place) ends a line too, so every update is its own row.
//   - Bytes that are not valid UTF-8 become U+FFFD, one per bad byte.
//   - NUL becomes U+2400 (␀): PostgreSQL text cannot hold NUL.
//   - Other control characters, ANSI escape sequences included, are kept as
//     they are. The agent runs terraform with -no-color, so there are
//     normally none; when a tool does print colours, the browser terminal
//     renders them and `grape logs` passes them to the user's terminal.
//   - A line longer than Options.MaxLineBytes (default 64 KiB) is stored as
//     consecutive rows of at most that many bytes, cut on UTF-8 boundaries.
//     64 KiB holds any line terraform prints for people, keeps a page of rows
//     light for followers, and bounds the memory a line without a newline
//     (1 MB of minified JSON, say) can take before it is cut.
//   - A partial last line (no newline before the process ended) is stored
//     when Close runs, or before the next Agentf line.
//
// # Secrets
//
// Lines are redacted with Options.Redactor when they are complete, before
// they are queued, so a secret never reaches memory beyond the writer, the
// spill file or the database. Because redaction runs on assembled lines, a
// secret split across two Write calls is caught; a line cut into rows is
// redacted before it is cut, and a line too long to hold is cut only where no
// secret spans the cut (redact.Redactor.SafeCut).
package logstream
