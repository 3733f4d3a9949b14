package inject

import (
	"bytes"
	"os"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/testnet"
)

// A rotated key pair (new files in place, as a renewed Secret is) is served
// once the pair is next looked at; a rotation half written keeps the pair
// in service until it is whole.
func TestKeyPairReloadsRotatedFiles(t *testing.T) {
	t.Parallel()
	certFile, keyFile, _ := testnet.SelfSigned(t)
	kp, err := newKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := kp.get(nil)

	// The renewal: another pair written over the same paths.
	newCert, newKey, _ := testnet.SelfSigned(t)
	for _, f := range [][2]string{{newCert, certFile}, {newKey, keyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	future := time.Now().Add(time.Minute) // a stamp that surely differs
	_ = os.Chtimes(certFile, future, future)

	if got, _ := kp.get(nil); got != first {
		t.Fatal("reloaded before the next look was due")
	}
	kp.mu.Lock()
	kp.checked = time.Time{} // the next look is due
	kp.mu.Unlock()
	second, _ := kp.get(nil)
	if second == first || bytes.Equal(second.Certificate[0], first.Certificate[0]) {
		t.Fatal("the rotated certificate was not loaded")
	}

	// Half a rotation: a broken certificate file. The last good pair stays.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	kp.mu.Lock()
	kp.checked = time.Time{}
	kp.mu.Unlock()
	if got, err := kp.get(nil); err != nil || got != second {
		t.Fatalf("a broken pair replaced the good one: %v", err)
	}
}
