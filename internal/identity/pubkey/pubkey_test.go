package pubkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

func pemOf(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }

// The keys a verifier can use, and the ones it must refuse with a reason.
func TestParse(t *testing.T) {
	t.Parallel()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	pkix := func(k any) []byte {
		b, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ecPriv, _ := x509.MarshalECPrivateKey(ec)
	for _, tc := range []struct {
		name, alg, err string
		data           []byte
	}{
		{"ES256 PKIX", "ES256", "", pemOf("PUBLIC KEY", pkix(&ec.PublicKey))},
		{"P-384", "", "needs a P-256 key", pemOf("PUBLIC KEY", pkix(&ec384.PublicKey))},
		{"RSA 1024 PKCS #1", "", "shorter than 2048", pemOf("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&small.PublicKey))},
		{"private key", "", "this is a private key (EC PRIVATE KEY); give the public key", pemOf("EC PRIVATE KEY", ecPriv)},
		{"PKCS #8 private key", "", "this is a private key (PRIVATE KEY)", pemOf("PRIVATE KEY", ecPriv)},
		{"not PEM", "", "not PEM", []byte("garbage")},
		{"bad certificate", "", "certificate:", pemOf("CERTIFICATE", []byte{1, 2, 3})},
	} {
		_, alg, err := Parse(tc.data)
		switch {
		case tc.err == "" && (err != nil || alg != tc.alg):
			t.Errorf("%s: %s, %v; want %s", tc.name, alg, err, tc.alg)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.err)
		}
	}
}

// Any bytes: an error or a usable key with its algorithm, never a panic.
func FuzzParse(f *testing.F) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := x509.MarshalPKIXPublicKey(&ec.PublicKey)
	f.Add(pemOf("PUBLIC KEY", b))
	f.Add(pemOf("RSA PUBLIC KEY", []byte{0x30, 0x03, 0x02, 0x01, 0x01}))
	f.Add(pemOf("CERTIFICATE", []byte{0x30, 0x00}))
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		key, alg, err := Parse(data)
		if err == nil && (key == nil || (alg != "RS256" && alg != "ES256")) {
			t.Fatalf("no error, key %T, alg %q", key, alg)
		}
	})
}
