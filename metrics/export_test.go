package metrics

import "time"

// SetReadyTimeout shortens /readyz's deadline for tests of a hanging check.
func (h *Health) SetReadyTimeout(d time.Duration) { h.timeout = d }
