package testnet

import (
	"fmt"
	"net"
	"testing"
)

func TestFreePortIsBindableAndBelowTheEphemeralRange(t *testing.T) {
	seen := map[int]bool{}
	for range 20 {
		p := FreePort(t, 10)
		if p < 20000 || seen[p] {
			t.Fatalf("port %d (seen before: %v)", p, seen[p])
		}
		seen[p] = true
		for _, q := range []int{p, p + 10} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q))
			if err != nil {
				t.Fatalf("port %d is not free: %v", q, err)
			}
			l.Close()
		}
	}
}
