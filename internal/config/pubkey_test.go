package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chatguard/chatguard/internal/config"
)

// check-config reads auth.jwt_public_key_file as serve does: a file that
// holds no usable key is a problem, not only a missing one. Garbage and a
// private key passed check-config, and serve then refused to start with
// another message and exit code 1.
func TestPublicKeyFileIsParsed(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		file string
		want string // "" = valid
	}{
		{write("good.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})), ""},
		{write("garbage.pem", []byte("garbage\n")), "the public key is not PEM"},
		{write("private.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv})), "public key:"},
		{filepath.Join(dir, "missing.pem"), "no such file"},
	} {
		c := config.Defaults()
		c.Auth.JWTPublicKeyFile = tc.file
		var got []string
		for _, p := range config.Validate(c) {
			if strings.HasPrefix(p, "auth.jwt_public_key_file") {
				got = append(got, p)
			}
		}
		switch {
		case tc.want == "" && len(got) != 0:
			t.Errorf("%s: %q, want valid", filepath.Base(tc.file), got)
		case tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)):
			t.Errorf("%s: %q, want one problem containing %q", filepath.Base(tc.file), got, tc.want)
		}
	}
}
