// Package testnet helps network tests: ports to hand to another process (a
// chatguard child, a redis-server) and a self-signed TLS certificate.
package testnet

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
)

// handedOut keeps two tests of one binary from getting the same port.
var handedOut sync.Map

// FreePort is a port nobody listens on, below the kernel's ephemeral range:
// a port from listen(0) is an ephemeral one, which any outgoing connection
// may take as its source port before the process it was handed to binds it
// (EADDRINUSE). alsoFree > 0 also wants port+alsoFree free (a Redis
// Cluster bus port).
func FreePort(t testing.TB, alsoFree int) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		_, _ = fmt.Sscan(string(b), &low)
	}
	free := func(p int) bool {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			return false
		}
		_ = l.Close()
		return true
	}
	for i := 0; low > 21000 && i < 500; i++ {
		p := 20000 + rand.IntN(low-20000)
		if _, taken := handedOut.LoadOrStore(p, true); taken {
			continue
		}
		if free(p) && (alsoFree == 0 || (p+alsoFree < 65536 && free(p+alsoFree))) {
			return p
		}
	}
	t.Fatal("testnet: no free port below the ephemeral range")
	return 0
}
