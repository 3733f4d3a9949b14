//go:build !unix

package logging

const (
	wOK = 0x2
	xOK = 0x1
)

// access cannot ask the system here: only what Stat sees is checked.
func access(string, uint32) error { return nil }
