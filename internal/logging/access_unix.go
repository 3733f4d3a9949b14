//go:build unix

package logging

import "syscall"

// access(2)'s modes.
const (
	wOK = 0x2
	xOK = 0x1
)

// access asks the kernel whether this process may use path so (access(2):
// the real user, which in a container is the effective one too).
func access(path string, mode uint32) error { return syscall.Access(path, mode) }
