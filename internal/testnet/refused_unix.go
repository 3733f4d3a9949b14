//go:build unix

package testnet

import (
	"fmt"
	"syscall"
	"testing"
)

// RefusedAddr is a loopback address whose connections are refused for the
// whole test: a socket is bound to it but never listens. A port merely
// freed after listen(0) is an ephemeral one, which the next listener or
// outgoing connection of any test may take, turning "refused" into someone
// else's server (a timeout, or a stranger's answer).
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("testnet: socket: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("testnet: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("testnet: getsockname: %v", err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
