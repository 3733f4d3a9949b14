package kubernetes_test

import (
	"testing"
)

// TestOptionalSecretKeys: chatguard's stats token and JWT secret are
// optional wherever it reads them, as `chatguard inject` writes them and
// the README documents: chatguard runs without them (the stats endpoint
// answers 401, users are not identified), so a Secret without those keys
// must not keep the pod from starting in one form of deployment and not
// in another.
func TestOptionalSecretKeys(t *testing.T) {
	t.Parallel()
	optional := map[string]bool{"CHATGUARD_STATS_TOKEN": true, "CHATGUARD_JWT_SECRET": true}
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for _, w := range workloads(docs) {
			c, ok := proxyOf(w)
			if !ok {
				continue
			}
			for _, e := range c.Env {
				if !optional[e.Name] || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				if ref := e.ValueFrom.SecretKeyRef; ref.Optional == nil || !*ref.Optional {
					t.Errorf("%s: %s reads key %q of Secret %q without optional: true", w, e.Name, ref.Key, ref.Name)
				}
			}
		}
	})
}
