package config_test

import (
	"errors"
	"strings"
	"testing"

	deployconfig "github.com/chatguard/chatguard/deploy/config"
	"github.com/chatguard/chatguard/internal/config"
)

func FuzzLoadYAML(f *testing.F) {
	for _, seed := range []string{
		string(deployconfig.DefaultYAML),
		badFile,
		"",
		"---\n",
		"listen: \":1\"\nadmin_listen: \":2\"\n",
		"routes:\n  - name: a\n    methods: [get]\n    path: /a/*\n",
		"proxy:\n  trusted_proxies: [\"::ffff:10.0.0.0/104\", 10.0.0.1]\n",
		"log: {file: true, dir: \"\"}\n",
		"a: &a [*a, *a]\n",
		"routes: ~\nproxy: ~\n",
		"server:\n  max_body_bytes: 0x10\n  drain_delay: -0s\n",
		"stats_token: !!binary aGVsbG8=\n",
		"<<: {listen: \":9\"}\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Load(config.Source{
			Args:      []string{"--config=fuzz.yaml"},
			LookupEnv: env{}.lookup,
			ReadFile:  func(string) ([]byte, error) { return data, nil },
		})
		if c == nil {
			t.Fatalf("Load returned a nil config (err %v)", err)
		}
		if err == nil {
			if p := config.Validate(c); len(p) > 0 {
				t.Fatalf("Load succeeded but Validate finds %q", p)
			}
			return
		}
		var probs config.Problems
		if !errors.As(err, &probs) {
			t.Fatalf("Load error %v (%T) is not config.Problems", err, err)
		}
		if len(probs) == 0 {
			t.Fatal("Load returned an empty Problems error")
		}
		for _, p := range probs {
			if strings.TrimSpace(p) == "" {
				t.Fatalf("empty problem in %q", probs)
			}
		}
	})
}

func FuzzParsePrefix(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "1.2.3.4", "::1", "::ffff:1.2.3.4", "2001:db8::/32", "fe80::1%eth0", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return
		}
		if !p.IsValid() {
			t.Fatalf("ParsePrefix(%q) = invalid prefix without an error", s)
		}
		if p != p.Masked() {
			t.Fatalf("ParsePrefix(%q) = %v, not masked", s, p)
		}
		if !strings.Contains(s, "/") && (p.Bits() != p.Addr().BitLen() || p.Addr().Is4In6()) {
			t.Fatalf("ParsePrefix(%q) = %v, want a single unmapped address", s, p)
		}
	})
}
