// Package pubkey reads the public key chatguard verifies users' tokens
// with. It needs the standard library only (the configuration checks keys
// with it without the JWT library).
package pubkey

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Parse reads a PEM public key (PKIX, PKCS #1 or a certificate) that can
// verify users' tokens: RSA of 2048 bits or more (RS256) or ECDSA P-256
// (ES256). It returns the key and its algorithm. check-config and the
// verifier both use it, so that a key check-config accepts is one serve
// starts with.
func Parse(data []byte) (any, string, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("identity: the public key is not PEM")
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY":
		// Never needed (chatguard only verifies), and a secret that
		// should not sit in its configuration.
		return nil, "", fmt.Errorf("identity: this is a private key (%s); give the public key: openssl pkey -in key.pem -pubout", block.Type)
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("identity: certificate: %w", err)
		}
		key = cert.PublicKey
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("identity: public key: %w", err)
		}
		key = k
	default:
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("identity: public key: %w", err)
		}
		key = k
	}
	switch k := key.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, "", errors.New("identity: RSA keys shorter than 2048 bits are refused")
		}
		return k, "RS256", nil
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != "P-256" {
			return nil, "", fmt.Errorf("identity: ES256 needs a P-256 key, not %s", k.Curve.Params().Name)
		}
		return k, "ES256", nil
	}
	return nil, "", fmt.Errorf("identity: unsupported public key type %T", key)
}
