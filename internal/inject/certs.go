package inject

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// keyPair serves a TLS key pair from files and reloads it when they change:
// cert-manager (or whatever fills the Secret) rotates the certificate in
// place, and a webhook that kept the first one would start failing its
// TLS handshakes when that expires — with failurePolicy Ignore, pods would
// then silently go uninjected.
type keyPair struct {
	certFile, keyFile string
	every             time.Duration // how often the files are looked at

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string    // the files' sizes and modification times when loaded
	checked time.Time // when the files were last looked at
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile, every: 10 * time.Second}
	if err := kp.load(); err != nil {
		return nil, err
	}
	return kp, nil
}

// stampOf is what tells a changed file pair from an unchanged one.
func (kp *keyPair) stampOf() (string, error) {
	var s string
	for _, f := range []string{kp.certFile, kp.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		s += fmt.Sprintf("%d/%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return s, nil
}

// load reads the pair; the caller holds kp.mu, or kp is not shared yet.
func (kp *keyPair) load() error {
	stamp, err := kp.stampOf()
	if err != nil {
		return fmt.Errorf("inject: loading the TLS key pair: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("inject: loading the TLS key pair: %w", err)
	}
	kp.cert, kp.stamp = &cert, stamp
	return nil
}

// get is tls.Config.GetCertificate: the current pair, reloaded at most every
// kp.every when the files changed. A pair that fails to load (a rotation
// half written) keeps the previous one in service until the next look.
func (kp *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if now := time.Now(); now.Sub(kp.checked) >= kp.every {
		kp.checked = now
		if stamp, err := kp.stampOf(); err == nil && stamp != kp.stamp {
			_ = kp.load()
		}
	}
	return kp.cert, nil
}
