package sessions

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// BenchmarkRegistry times what runs under the registry's one lock at
// scale: a socket in 256 conversations connecting, joining and
// disconnecting among 20,000 others, and one more user joining a room of
// 20,000 (go test -run '^$' -bench Registry ./sessions/).
func BenchmarkRegistry(b *testing.B) {
	const others = 20000
	newReg := func(b *testing.B) *Registry {
		m := NewManager(ManagerOptions{})
		b.Cleanup(func() { m.Close() })
		std, err := NewStandard(m, config.Tables{
			ConnectedUsers: config.Table{MaxEntries: 100000}, ConversationUsers: config.Table{MaxEntries: 100000},
			EventRateLimits: config.Table{MaxEntries: 1024}, UserRoles: config.Table{MaxEntries: 1024},
		}, StandardOptions{})
		if err != nil {
			b.Fatal(err)
		}
		return NewRegistry(RegistryOptions{Tables: std})
	}
	ip := netip.MustParseAddr("192.0.2.1")
	b.Run("disconnect-256-conversations-among-20000", func(b *testing.B) {
		r := newReg(b)
		for i := range others {
			id := "s" + strconv.Itoa(i)
			r.Connect(SocketInfo{ID: id, User: "u" + strconv.Itoa(i) + "@example.com", IP: ip}, nopSocket{})
			r.Join(id, "c"+strconv.Itoa(i%256))
		}
		b.ResetTimer()
		for range b.N {
			r.Connect(SocketInfo{ID: "x", User: "x@example.com", IP: ip}, nopSocket{})
			for c := range 256 {
				r.Join("x", "c"+strconv.Itoa(c))
			}
			r.Disconnect("x")
		}
	})
	b.Run("join-a-room-of-20000", func(b *testing.B) {
		r := newReg(b)
		for i := range others {
			id := "s" + strconv.Itoa(i)
			r.Connect(SocketInfo{ID: id, User: "u" + strconv.Itoa(i) + "@example.com", IP: ip}, nopSocket{})
			r.Join(id, "general")
		}
		r.Connect(SocketInfo{ID: "x", User: "x@example.com", IP: ip}, nopSocket{})
		b.ResetTimer()
		for range b.N {
			r.Join("x", "general")
			r.Leave("x", "general")
		}
	})
}

type nopSocket struct{}

func (nopSocket) Disconnect(string) {}
