package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A reload reads the JWT public key file again: after a key rotation the
// old key's tokens are refused and the new key's accepted (QA: the old key
// kept working after a reload that said it succeeded).
func TestReloadAppliesARotatedPublicKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile, cfgFile := dir+"/jwt.pub", dir+"/chatguard.yaml"
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	writePub := func(k *ecdsa.PrivateKey) {
		der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	token := func(k *ecdsa.PrivateKey) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"email": "alice@example.com", "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	oldKey, newer := newKey(), newKey()
	writePub(oldKey)
	if err := os.WriteFile(cfgFile, []byte("auth:\n  jwt_public_key_file: "+keyFile+"\nroutes:\n  - {name: private, path: /p/*, auth: required}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, reload := reloadableApp(t, cfgFile)
	get := func(tok string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/p/x", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		a.srv.ServeHTTP(rec, req)
		return rec.Code
	}
	// Past the token check the request meets the (absent) upstream: 502.
	if o, n := get(token(oldKey)), get(token(newer)); o != http.StatusBadGateway || n != http.StatusUnauthorized {
		t.Fatalf("before the rotation: old key %d, new key %d", o, n)
	}
	writePub(newer)
	if out := reload(); !strings.Contains(out, "configuration reloaded") || strings.Contains(out, "restartNeededFor") {
		t.Fatalf("reload after the rotation:\n%s", out)
	}
	if o, n := get(token(oldKey)), get(token(newer)); o != http.StatusUnauthorized || n != http.StatusBadGateway {
		t.Fatalf("after the rotation: old key %d, new key %d", o, n)
	}
	if ok, good := testutil.ToFloat64(a.reloads.ok), testutil.ToFloat64(a.reloads.reloads.WithLabelValues("success")); ok != 1 || good != 1 {
		t.Errorf("after an applied reload: last_reload_successful %v, successes %v", ok, good)
	}
	// A key file that no longer parses is refused; the running key stays.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := reload(); !strings.Contains(out, "configuration reload refused") {
		t.Fatalf("a broken key file was not refused:\n%s", out)
	}
	if n := get(token(newer)); n != http.StatusBadGateway {
		t.Fatalf("after a refused reload the running key is gone: %d", n)
	}
	// The refusal shows on /metrics (ChatguardConfigReloadFailing), not
	// only in a log line.
	if ok, bad := testutil.ToFloat64(a.reloads.ok), testutil.ToFloat64(a.reloads.reloads.WithLabelValues("failure")); ok != 0 || bad != 1 {
		t.Errorf("after a refused reload: last_reload_successful %v, failures %v", ok, bad)
	}
	writePub(newer)
	if out := reload(); !strings.Contains(out, "configuration reloaded") || testutil.ToFloat64(a.reloads.ok) != 1 {
		t.Errorf("a fixed key file: last_reload_successful %v\n%s", testutil.ToFloat64(a.reloads.ok), out)
	}
}
