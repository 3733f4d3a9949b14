package config_test

import (
	"errors"
	"flag"
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

// FuzzLoadArgs: any command line (split on NUL) gives a configuration and
// either no error, -h's ErrHelp, or problems that each say something; the
// reading on past unknown flags never panics, and never prints a secret
// given after a mistyped flag.
func FuzzLoadArgs(f *testing.F) {
	for _, seed := range []string{
		"--upstrem\x00http://x:1\x00--max-header-count=5",
		"--bogus\x00--listen",
		"-x=1\x00-y\x00z\x00--\x00--listen=:1",
		"---\x00-=\x00--=x\x00-h",
		"--log-file\x00false\x00extra",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, line string) {
		var args []string
		if line != "" {
			args = strings.Split(line, "\x00")
		}
		// Whatever comes before it, a secret after a mistyped secret flag
		// is never printed.
		const secret = "Zq9!secret-Value"
		args = append(args, "--jwt-secrt", secret)
		c, err := config.Load(config.Source{Args: args, LookupEnv: env{}.lookup, ReadFile: noFiles})
		if c == nil {
			t.Fatalf("Load(%q) returned a nil config", args)
		}
		if err != nil && strings.Contains(err.Error(), secret) {
			t.Fatalf("Load(%q) printed the secret: %v", args, err)
		}
		var probs config.Problems
		switch {
		case err == nil, errors.Is(err, flag.ErrHelp):
		case !errors.As(err, &probs) || len(probs) == 0:
			t.Fatalf("Load(%q) error %v is no problem list", args, err)
		default:
			for _, p := range probs {
				if strings.TrimSpace(p) == "" {
					t.Fatalf("Load(%q): an empty problem in %q", args, probs)
				}
			}
		}
	})
}
