//go:build !unix

package testnet

import (
	"net"
	"testing"
)

// RefusedAddr is a loopback address nothing listens on (a freed port: on
// these systems another test may take it again).
func RefusedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}
